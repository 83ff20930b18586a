"""The .branchy model file (docs/model-format.md): ops and a graph as data, their bytes, and the
file read back through the C++ reader (the runtime's own checks) as a summary or a table."""
import json
import os
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"BRANCHY\0"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQQQQQ")  # magic, version, flags, file size, 3 x (offset, size)
ALIGN = 64
CRITERIA = ("entropy", "maxprob")  # index = the criterion's code in the file
KINDS = ("conv2d", "max_pool2d", "avg_pool2d", "lrn", "relu", "linear", "flatten", "res_block")


@dataclass
class Op:
    """One op: a kind from KINDS, its ints and floats, and its tensors in the format table's order.

    Tensors are float64 until written (BatchNorm folding happens in float64), then float32.
    `source` is the module path the op came from, e.g. "stages.1.3".
    """
    kind: str
    ints: List[int] = field(default_factory=list)
    floats: List[float] = field(default_factory=list)
    tensors: List[np.ndarray] = field(default_factory=list)
    source: str = ""


@dataclass
class Graph:
    """Everything but the metadata: input [C, H, W], exit rule, stages, and exits as (stage, head)."""
    input_shape: Tuple[int, int, int]
    num_classes: int
    criterion: str
    thresholds: Sequence[float]
    class_names: Sequence[str]
    stages: List[List[Op]]
    exits: List[Tuple[int, List[Op]]]


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 of `data`, the file's checksum (about 0.1 s per MB in CPython)."""
    h, prime, mask = 0xCBF29CE484222325, 0x100000001B3, 0xFFFFFFFFFFFFFFFF
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _ops_words(ops: List[Op], offsets) -> bytes:
    out = [struct.pack("<I", len(ops))]
    for op in ops:
        out.append(struct.pack(f"<II{len(op.ints)}i", KINDS.index(op.kind) + 1, len(op.ints), *op.ints))
        out.append(struct.pack(f"<I{len(op.floats)}f", len(op.floats), *op.floats))
        out.append(struct.pack("<I", len(op.tensors)))
        for t in op.tensors:
            out.append(struct.pack("<QQ", next(offsets), t.size))
    return b"".join(out)


def _graph_words(g: Graph, offsets) -> bytes:
    out = [struct.pack("<IIIII", *g.input_shape, g.num_classes, CRITERIA.index(g.criterion)),
           struct.pack(f"<I{len(g.thresholds)}f", len(g.thresholds), *g.thresholds),
           struct.pack("<I", len(g.class_names))]
    for name in g.class_names:
        raw = name.encode("utf-8")
        out.append(struct.pack("<I", len(raw)) + raw + b"\0" * (-len(raw) % 4))
    out.append(struct.pack("<I", len(g.stages)))
    out.extend(_ops_words(ops, offsets) for ops in g.stages)
    out.append(struct.pack("<I", len(g.exits)))
    for stage, head in g.exits:
        out.append(struct.pack("<I", stage) + _ops_words(head, offsets))
    return b"".join(out)


def serialize(graph: Graph, metadata_json: str) -> bytes:
    """The whole file: header, graph, metadata, weights (each tensor 64-byte aligned), checksum."""
    tensors = [t for ops in graph.stages + [head for _, head in graph.exits] for op in ops
               for t in op.tensors]
    weights, offsets = bytearray(), []
    for t in tensors:
        weights.extend(b"\0" * (_align(len(weights)) - len(weights)))
        offsets.append(len(weights))
        weights.extend(np.ascontiguousarray(t, dtype="<f4").tobytes())
    graph_bytes = _graph_words(graph, iter(offsets))
    metadata = metadata_json.encode("utf-8")
    graph_at = HEADER.size
    metadata_at = graph_at + len(graph_bytes)
    weights_at = _align(metadata_at + len(metadata))
    size = weights_at + len(weights) + 8
    header = HEADER.pack(MAGIC, VERSION, 0, size, graph_at, len(graph_bytes), metadata_at,
                         len(metadata), weights_at, len(weights))
    body = b"".join([header, graph_bytes, metadata, b"\0" * (weights_at - metadata_at - len(metadata)),
                     weights])
    return body + struct.pack("<Q", fnv1a64(body))


def summary_json(path) -> str:
    """The model file as the C++ runtime reads it, as JSON text (summarize() in
    csrc/runtime/model_file.h). Raises ValueError naming the problem if the runtime refuses it."""
    from branchy_engine._extension import load
    return load().model_summary(os.fspath(path))


def summary(path) -> dict:
    """summary_json() parsed; thresholds that are +inf are the string "inf"."""
    return json.loads(summary_json(path))


def _attributes(op: dict) -> str:
    kind = op["kind"]
    relu = " +relu" if op.get("relu") else ""
    if kind in ("conv2d", "max_pool2d", "avg_pool2d"):
        k, s, p = ("x".join(map(str, op[key])) for key in ("kernel", "stride", "padding"))
        ceil = " ceil" if op.get("ceil_mode") else ""
        return f"kernel {k} stride {s} pad {p}{ceil}{relu}"
    if kind == "lrn":
        return f"size {op['size']} alpha {op['alpha']:g} beta {op['beta']:g} k {op['k']:g}"
    if kind == "res_block":
        return f"stride {op['stride']}"
    return relu.strip()


def _ops_table(ops: List[dict]) -> List[str]:
    def shape(s):
        return "x".join(map(str, s))
    lines = [f"  {'#':>3}  {'op':<11}{'in':>12}  {'out':<12}{'weights':>9}  attributes"]
    for i, op in enumerate(ops):
        lines.append(f"  {i:>3}  {op['kind']:<11}{shape(op['in']):>12}  {shape(op['out']):<12}"
                     f"{sum(op['tensors']):>9}  {_attributes(op)}".rstrip())
    return lines if ops else ["  (no ops)"]


def describe(s: dict, title: Optional[str] = None) -> str:
    """A readable form of summary(): header, thresholds, class names, one op table per stage and
    exit, weight count and the metadata's keys."""
    thresholds = ", ".join(str(t) for t in s["thresholds"]) or "none (a single exit)"
    lines = [f"{title or 'model'}: format {s['version']}, input {'x'.join(map(str, s['input']))}, "
             f"{s['num_classes']} classes, {len(s['stages'])} stages, {len(s['exits'])} exits",
             f"exit rule: {s['criterion']}, thresholds {thresholds}",
             f"class names: {', '.join(s['class_names']) or 'none'}"]
    exits = {e["stage"]: (n, e) for n, e in enumerate(s["exits"])}
    for i, ops in enumerate(s["stages"]):
        lines += [f"stage {i}"] + _ops_table(ops)
        if i in exits:
            n, e = exits[i]
            lines += [f"exit {n} (after stage {i})"] + _ops_table(e["head"])
    lines.append(f"weights: {s['weights']:,} f32 ({s['weights'] * 4 / 2**20:.2f} MiB)")
    lines.append(f"metadata: {', '.join(s['metadata'])}")
    return "\n".join(lines)
