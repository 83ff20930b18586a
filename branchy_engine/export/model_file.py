"""The .branchy model file, format version 2 (docs/model-format.md): a graph of values and ops cut
into stages and exit heads, as data; its bytes; and the file read back through the C++ reader (the
runtime's own checks) as a summary or a table. Op kinds come from the runtime's registry."""
import functools
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"BRANCHY\0"
VERSION = 2
FLAG_INPUT_PREP = 0x1  # the graph section records the input preparation after the class names
HEADER = struct.Struct("<8sIIQQQQQQQ")  # magic, version, flags, file size, 3 x (offset, size)
ALIGN = 64
CRITERIA = ("entropy", "maxprob")  # index = the criterion's code in the file
# The fused activation's codes (docs/model-format.md, "Activations").
ACTIVATIONS = ("none", "relu", "clamp", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu_erf",
               "gelu_tanh")


@functools.lru_cache(maxsize=None)
def registry() -> Dict[str, dict]:
    """Every op kind the runtime reads, by name: code, ints, floats, tensors, min/max inputs and
    semantics, from the declarations in csrc/runtime/ops/ (the one place op kinds are listed)."""
    from branchy_engine._extension import load
    return {d["name"]: d for d in json.loads(load().op_registry_json())}


class Value:
    """A tensor of the graph: the model's input, or the output of `op`. Ids are given when the
    graph is written (value 0 the input, value i + 1 the output of the i-th op written)."""
    __slots__ = ("op",)

    def __init__(self, op: Optional["Op"] = None):
        self.op = op


@dataclass(eq=False)
class Op:
    """One op: a kind of the registry, the values it reads, its attributes by name (the kind's ints
    and floats; the activation and its bounds default to 0) and its tensors in the kind's order.

    Tensors are float64 until written (BatchNorm folding happens in float64), then float32; equal
    tensors are stored once. `source` names what the op came from, e.g. "stages.1.3".
    """
    kind: str
    inputs: List[Value]
    attrs: Dict[str, float] = field(default_factory=dict)
    tensors: List[np.ndarray] = field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        self.output = Value(self)


@dataclass
class Stage:
    ops: List[Op]
    outputs: List[Value]  # what the later stages and the stage's exit read


@dataclass
class Exit:
    stage: int
    input: Value          # one of the stage's outputs
    ops: List[Op]         # the head; its last op gives the logits (none: the input is the logits)


@dataclass
class InputPrep:
    """How raw 8-bit pixels become the network's input, as training prepared them:
    x / pixel_max, then (x - mean[c]) / std[c] per channel (255 and the dataset's statistics)."""
    pixel_max: float
    mean: Sequence[float]
    std: Sequence[float]

    def check(self, channels: int):
        if not (math.isfinite(self.pixel_max) and self.pixel_max > 0):
            raise ValueError(f"input preparation: pixel_max must be finite and > 0, got {self.pixel_max}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != channels:
                raise ValueError(f"input preparation: {len(values)} {name} values for {channels} channels")
            if not all(math.isfinite(v) for v in values) or (name == "std" and not all(v > 0 for v in values)):
                raise ValueError(f"input preparation: {name} must be finite{' and > 0' * (name == 'std')}, "
                                 f"got {list(values)}")


@dataclass
class Graph:
    """Everything but the metadata: input [C, H, W] (the Value `input`), exit rule, stages, exits."""
    input_shape: Tuple[int, int, int]
    num_classes: int
    criterion: str
    thresholds: Sequence[float]
    class_names: Sequence[str]
    input: Value
    stages: List[Stage]
    exits: List[Exit]
    input_prep: Optional[InputPrep] = None  # recorded in the file (header flag 0x1) when given


_DEFAULT_ZERO = ("activation", "activation_lo", "activation_hi", "input_scale")


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 of `data`, the file's checksum (about 0.1 s per MB in CPython)."""
    h, prime, mask = 0xCBF29CE484222325, 0x100000001B3, 0xFFFFFFFFFFFFFFFF
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _attribute_words(op: Op) -> Tuple[List[int], List[float]]:
    """op.attrs in the kind's file order; a missing or unknown name is a writer bug."""
    spec = registry().get(op.kind)
    if spec is None:
        raise ValueError(f"{op.source or op.kind}: op kind {op.kind!r} is not in the runtime's "
                         f"registry ({', '.join(registry())})")
    unknown = set(op.attrs) - set(spec["ints"]) - set(spec["floats"])
    if unknown:
        raise ValueError(f"{op.source or op.kind}: {op.kind} has no attributes {sorted(unknown)}; "
                         f"it has {spec['ints'] + spec['floats']}")
    missing = [n for n in spec["ints"] + spec["floats"] if n not in op.attrs and n not in _DEFAULT_ZERO]
    if missing:
        raise ValueError(f"{op.source or op.kind}: {op.kind} needs attributes {missing}")
    if len(op.tensors) != len(spec["tensors"]):
        raise ValueError(f"{op.source or op.kind}: {op.kind} takes {len(spec['tensors'])} tensors "
                         f"({spec['tensors']}), got {len(op.tensors)}")
    return ([int(op.attrs.get(n, 0)) for n in spec["ints"]],
            [float(op.attrs.get(n, 0.0)) for n in spec["floats"]])


def first_non_finite(values) -> Optional[Tuple[int, str]]:
    """Where an array first holds NaN or +-inf: (flat index in C order, as the C++ reader counts,
    "NaN", "+inf" or "-inf"); None if every element is finite."""
    flat = np.asarray(values).reshape(-1)
    if np.isfinite(flat).all():
        return None
    i = int(np.flatnonzero(~np.isfinite(flat))[0])
    return i, "NaN" if np.isnan(flat[i]) else "+inf" if flat[i] > 0 else "-inf"


def _ordered_ops(g: Graph) -> List[Op]:
    return [op for s in g.stages for op in s.ops] + [op for e in g.exits for op in e.ops]


def serialize(graph: Graph, metadata_json: str, check_finite: bool = True) -> bytes:
    """The whole file: header, graph, metadata, weights (each distinct tensor once, 64-byte
    aligned), checksum.

    Raises ValueError naming the op (its index in the file, kind and source), the tensor and the
    element if a weight is NaN or +-inf as written (float32: a finite float64 past its range
    counts), since the C++ reader refuses such a file. check_finite=False writes it anyway: how
    tests make the file the reader must refuse.
    """
    ops = _ordered_ops(graph)
    ids = {id(graph.input): 0}
    for i, op in enumerate(ops):
        ids[id(op.output)] = i + 1

    def value_id(v: Value, reader: str) -> int:
        if id(v) not in ids:
            raise ValueError(f"{reader} reads a value that no op of the graph writes")
        return ids[id(v)]

    weights, table, tensor_ids = bytearray(), [], {}
    out = [struct.pack("<IIIII", *graph.input_shape, graph.num_classes, CRITERIA.index(graph.criterion)),
           struct.pack(f"<I{len(graph.thresholds)}f", len(graph.thresholds), *graph.thresholds),
           struct.pack("<I", len(graph.class_names))]
    for name in graph.class_names:
        raw = name.encode("utf-8")
        out.append(struct.pack("<I", len(raw)) + raw + b"\0" * (-len(raw) % 4))
    flags = 0
    if graph.input_prep is not None:
        prep = graph.input_prep
        prep.check(graph.input_shape[0])
        flags |= FLAG_INPUT_PREP
        out.append(struct.pack(f"<f{2 * len(prep.mean)}f", prep.pixel_max, *prep.mean, *prep.std))
    op_words = []
    for n, op in enumerate(ops):
        ints, floats = _attribute_words(op)
        refs = []
        for k, t in enumerate(op.tensors):
            with np.errstate(over="ignore"):  # past float32's range: inf, refused just below
                f32 = np.ascontiguousarray(t, dtype="<f4")
            bad = first_non_finite(f32) if check_finite else None
            if bad:
                i, what = bad
                name = registry()[op.kind]["tensors"][k].split(" [")[0]
                value = np.asarray(t).reshape(-1)[i]
                overflow = f" ({value:g} is past float32's range)" if np.isfinite(value) else ""
                raise ValueError(f"op {n} ({op.kind}{' from ' + op.source if op.source else ''}): "
                                 f"tensor {k} ({name}) holds {what} at element {i}{overflow} "
                                 f"(weights must be finite)")
            raw = f32.tobytes()
            key = hashlib.sha256(raw).digest()
            if key not in tensor_ids:
                weights.extend(b"\0" * (_align(len(weights)) - len(weights)))
                tensor_ids[key] = len(table)
                table.append((len(weights), len(raw) // 4))
                weights.extend(raw)
            refs.append(tensor_ids[key])
        inputs = [value_id(v, op.source or op.kind) for v in op.inputs]
        op_words.append(struct.pack(f"<II{len(inputs)}I", registry()[op.kind]["code"], len(inputs), *inputs)
                        + struct.pack(f"<I{len(ints)}i", len(ints), *ints)
                        + struct.pack(f"<I{len(floats)}f", len(floats), *floats)
                        + struct.pack(f"<I{len(refs)}I", len(refs), *refs))
    out.append(struct.pack("<I", len(table)))
    out.extend(struct.pack("<QQ", offset, count) for offset, count in table)
    out.append(struct.pack("<I", len(ops)))
    out.extend(op_words)
    out.append(struct.pack("<I", len(graph.stages)))
    for n, stage in enumerate(graph.stages):
        outputs = [value_id(v, f"stage {n}'s outputs") for v in stage.outputs]
        out.append(struct.pack(f"<II{len(outputs)}I", len(stage.ops), len(outputs), *outputs))
    out.append(struct.pack("<I", len(graph.exits)))
    for n, e in enumerate(graph.exits):
        out.append(struct.pack("<III", e.stage, value_id(e.input, f"exit {n}"), len(e.ops)))
    graph_bytes = b"".join(out)
    metadata = metadata_json.encode("utf-8")
    graph_at = HEADER.size
    metadata_at = graph_at + len(graph_bytes)
    weights_at = _align(metadata_at + len(metadata))
    size = weights_at + len(weights) + 8
    header = HEADER.pack(MAGIC, VERSION, flags, size, graph_at, len(graph_bytes), metadata_at,
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
    """The op's attributes that say something: non-zero ones, activation by name."""
    parts = []
    for name, value in op["attrs"].items():
        if name == "activation":
            if value:
                parts.append(f"+{ACTIVATIONS[value] if 0 <= value < len(ACTIVATIONS) else value}")
        elif name in ("activation_lo", "activation_hi"):
            if value:
                parts.append(f"{name} {value:g}")
        else:
            parts.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return " ".join(parts)


def _ops_table(ops: List[dict]) -> List[str]:
    def shape(s):
        return "x".join(map(str, s))
    lines = [f"  {'value':>5}  {'op':<15}{'reads':<12}{'out':<13}{'weights':>9}  attributes"]
    for op in ops:
        reads = ",".join(map(str, op["inputs"]))
        lines.append(f"  {op['output']:>5}  {op['kind']:<15}{reads:<12}{shape(op['out']):<13}"
                     f"{sum(op['tensors']):>9}  {_attributes(op)}".rstrip())
    return lines if ops else ["  (no ops)"]


def describe(s: dict, title: Optional[str] = None) -> str:
    """A readable form of summary(): header, thresholds, class names, one op table per stage and
    exit (each op: the value it writes, the values it reads), weight count and the metadata's keys."""
    thresholds = ", ".join(str(t) for t in s["thresholds"]) or "none (a single exit)"
    lines = [f"{title or 'model'}: format {s['version']}, input {'x'.join(map(str, s['input']))} "
             f"(value 0), {s['num_classes']} classes, {len(s['stages'])} stages, {len(s['exits'])} exits",
             f"exit rule: {s['criterion']}, thresholds {thresholds}",
             f"class names: {', '.join(s['class_names']) or 'none'}"]
    exits = {e["stage"]: (n, e) for n, e in enumerate(s["exits"])}
    for i, stage in enumerate(s["stages"]):
        lines += [f"stage {i + 1} (passes on value {', '.join(map(str, stage['outputs']))})"]
        lines += _ops_table(stage["ops"])
        if i in exits:
            n, e = exits[i]
            lines += [f"exit {n + 1} (after stage {i + 1}, reads value {e['input']})"] + _ops_table(e["head"])
    lines.append(f"weights: {s['weights']:,} f32 ({s['weights'] * 4 / 2**20:.2f} MiB) in "
                 f"{len(s['tensors'])} tensors, each stored once")
    lines.append(f"metadata: {', '.join(s['metadata'])}")
    return "\n".join(lines)


def op_table() -> str:
    """The op kinds as the Markdown table of docs/model-format.md, from the registry (the doc's table
    is this text; a test keeps them equal)."""
    def inputs(d):
        lo, hi = d["min_inputs"], d["max_inputs"]
        return f"{lo} or more" if hi < 0 else (str(lo) if lo == hi else f"{lo} to {hi}")
    lines = ["| code | kind | inputs | ints | floats | tensors | computes; output shape |",
             "|---|---|---|---|---|---|---|"]
    for d in sorted(registry().values(), key=lambda d: d["code"]):
        cells = [str(d["code"]), d["name"], inputs(d), ", ".join(d["ints"]), ", ".join(d["floats"]),
                 "; ".join(f"`{t}`" for t in d["tensors"]), d["semantics"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--op-table"]:
        sys.exit("usage: python -m branchy_engine.export.model_file --op-table  (prints the op kinds table of "
                 "docs/model-format.md from the runtime's registry)")
    print(op_table())
