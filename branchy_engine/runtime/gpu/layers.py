"""A .branchy model as torch modules (for the GPU engine): the graph the C++ reader checked, with its
weights, run by PyTorch's kernels (cuDNN on a GPU). Same semantics as the CPU runtime
(docs/model-format.md), so on the CPU it must agree with the network the file came from.

TORCH_OPS holds, per op kind of the runtime's registry, its computation in torch; a test checks
that it covers the registry exactly."""
import math
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The fused activation by its code (docs/model-format.md, "Activations"): f(x, lo, hi).
ACTIVATIONS: Sequence[Callable] = (
    lambda x, lo, hi: x,
    lambda x, lo, hi: F.relu(x),
    lambda x, lo, hi: x.clamp(lo, hi),
    lambda x, lo, hi: F.hardswish(x),
    lambda x, lo, hi: F.hardsigmoid(x),
    lambda x, lo, hi: F.silu(x),
    lambda x, lo, hi: torch.sigmoid(x),
    lambda x, lo, hi: F.gelu(x),
    lambda x, lo, hi: F.gelu(x, approximate="tanh"),
)


def _act(x, a: dict):
    return ACTIVATIONS[a.get("activation", 0)](x, a.get("activation_lo", 0.0), a.get("activation_hi", 0.0))


def _conv2d(xs, a, t):
    x, rest = xs[0], list(xs[1:])
    if a.get("input_scale"):  # squeeze-excitation: input 1 scales the input's channels
        x = x * rest.pop(0)
    x = F.pad(x, (a["pad_left"], a["pad_right"], a["pad_top"], a["pad_bottom"]))
    w = t[0].view(a["out_channels"], a["in_channels"] // a["groups"], a["kernel_h"], a["kernel_w"])
    y = F.conv2d(x, w, t[1], (a["stride_h"], a["stride_w"]), 0, (a["dilation_h"], a["dilation_w"]),
                 a["groups"])
    return _act(y + rest[0] if rest else y, a)


def _pool(maximum: bool):
    def run(xs, a, t):
        args = ((a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"]), (a["pad_h"], a["pad_w"]))
        pool = F.max_pool2d if maximum else F.avg_pool2d
        kwargs = {} if maximum else {"count_include_pad": True}
        return _act(pool(xs[0], *args, ceil_mode=bool(a["ceil_mode"]), **kwargs), a)
    return run


def _res_block(xs, a, t):
    x, cin, cout, s = xs[0], a["in_channels"], a["out_channels"], a["stride"]
    h = F.relu(F.conv2d(x, t[0].view(cout, cin, 3, 3), t[1], s, 1))
    h = F.conv2d(h, t[2].view(cout, cout, 3, 3), t[3], 1, 1)
    shortcut = x[:, :, ::s, ::s]
    if cout > cin:
        shortcut = torch.cat([shortcut.new_zeros(shortcut.shape[0], cout - cin, *shortcut.shape[2:]),
                              shortcut], 1)
    return F.relu(h + shortcut)


def _channels(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def _layer_norm(xs, a, t):
    x = xs[0].permute(0, 2, 3, 1)
    return F.layer_norm(x, x.shape[-1:], t[0], t[1], a["eps"]).permute(0, 3, 1, 2)


def _shuffle(xs, a, t):
    x, g = xs[0], a["groups"]
    b, c, h, w = x.shape
    return x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)


TORCH_OPS: Dict[str, Callable] = {
    "conv2d": _conv2d,
    "max_pool2d": _pool(True),
    "avg_pool2d": _pool(False),
    "lrn": lambda xs, a, t: F.local_response_norm(xs[0], a["size"], a["alpha"], a["beta"], a["k"]),
    "activation": lambda xs, a, t: _act(xs[0], a),
    "linear": lambda xs, a, t: _act(F.linear(xs[0].flatten(1), t[0].view(a["out_features"], -1), t[1]), a),
    "flatten": lambda xs, a, t: xs[0].flatten(1).view(xs[0].shape[0], -1, 1, 1),
    "res_block": _res_block,
    "add": lambda xs, a, t: _act(xs[0] + xs[1], a),
    "mul": lambda xs, a, t: _act(xs[0] * xs[1], a),
    "concat": lambda xs, a, t: torch.cat(list(xs), 1),
    "mean": lambda xs, a, t: xs[0].mean((2, 3), keepdim=True),
    "channel_affine": lambda xs, a, t: _act(xs[0] * _channels(t[0]) + _channels(t[1]), a),
    "channel_shuffle": _shuffle,
    "layer_norm": _layer_norm,
    "channel_slice": lambda xs, a, t: xs[0][:, a["start"]:a["start"] + a["count"]],
}


def _four_d(x: torch.Tensor) -> torch.Tensor:
    """[B, n] logits or vectors as the runtime's [B, n, 1, 1]."""
    return x if x.dim() == 4 else x.view(x.shape[0], -1, 1, 1)


class Ops(nn.Module):
    """A run of the graph's ops: reads the values in `reads`, computes `ops` in order, returns the
    values in `gives`. Tensors are buffers (they move with .to())."""

    def __init__(self, ops: List[dict], tensors: List[torch.Tensor], reads: List[int], gives: List[int]):
        super().__init__()
        self.ops = ops
        self.reads, self.gives = list(reads), list(gives)
        used = sorted({t for op in ops for t in op["tensor_ids"]})
        for t in used:
            self.register_buffer(f"t{t}", tensors[t].clone())
        for op in ops:
            if op["kind"] not in TORCH_OPS:
                raise ValueError(f"op kind {op['kind']!r} is not known to the GPU engine")

    def run(self, values: Dict[int, torch.Tensor]) -> List[torch.Tensor]:
        for op in self.ops:
            xs = [values[v] for v in op["inputs"]]
            t = [getattr(self, f"t{i}") for i in op["tensor_ids"]]
            values[op["output"]] = _four_d(TORCH_OPS[op["kind"]](xs, op["attrs"], t))
        return [values[v] for v in self.gives]


def _pack(values: List[torch.Tensor]) -> torch.Tensor:
    """The values a stage passes on as one tensor: itself when there is one, else each flattened
    and concatenated ([B, total]), as the CPU runtime's slot."""
    if len(values) == 1:
        return values[0]
    return torch.cat([v.flatten(1) for v in values], 1)


def _unpack(h: torch.Tensor, ids: List[int], shapes: Dict[int, tuple]) -> Dict[int, torch.Tensor]:
    if len(ids) == 1:
        return {ids[0]: h}
    out, at = {}, 0
    for v in ids:
        n = math.prod(shapes[v])
        out[v] = h[:, at:at + n].view(h.shape[0], *shapes[v])
        at += n
    return out


class Segment(nn.Module):
    """The stages from one exit's to the next: reads the values the stage before passes on (packed
    in one tensor), returns those its last stage passes on (packed)."""

    def __init__(self, spec: dict, first_stage: int, last_stage: int, shapes: Dict[int, tuple]):
        super().__init__()
        stages = spec["stages"]
        self.reads = [0] if first_stage == 0 else list(stages[first_stage - 1]["outputs"])
        self.gives = list(stages[last_stage]["outputs"])
        begin = stages[first_stage]["first_op"]
        end = stages[last_stage]["first_op"] + stages[last_stage]["num_ops"]
        self.body = Ops(spec["ops"][begin:end], spec["tensors"], self.reads, self.gives)
        self.shapes = shapes

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return _pack(self.body.run(_unpack(h, self.reads, self.shapes)))


class Head(nn.Module):
    """An exit head: reads its stage's packed values, returns the logits [B, classes]."""

    def __init__(self, spec: dict, exit: dict, shapes: Dict[int, tuple]):
        super().__init__()
        self.reads = list(spec["stages"][exit["stage"]]["outputs"])
        ops = spec["ops"][exit["first_op"]:exit["first_op"] + exit["num_ops"]]
        self.body = Ops(ops, spec["tensors"], self.reads, [exit["logits"]])
        self.shapes = shapes

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body.run(_unpack(h, self.reads, self.shapes))[0].flatten(1)


class LoadedNet(nn.Module):
    """The model file's network: segments (the stages between consecutive exits) and heads.

    Segment e holds the stages after exit e-1's stage up to exit e's stage, so running segments
    0..e then head e is the path of a sample that leaves at exit e.
    """

    def __init__(self, spec: dict):
        super().__init__()
        shapes = {0: tuple(spec["input_shape"])}
        for op in spec["ops"]:
            shapes[op["output"]] = tuple(op["out_shape"])
        bounds = [-1] + [e["stage"] for e in spec["exits"]]
        self.segments = nn.ModuleList(Segment(spec, bounds[e] + 1, bounds[e + 1], shapes)
                                      for e in range(len(spec["exits"])))
        self.heads = nn.ModuleList(Head(spec, e, shapes) for e in spec["exits"])
        self.input_shape = tuple(spec["input_shape"])
        self.num_classes = spec["num_classes"]

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x) -> List[torch.Tensor]:
        """Every exit's logits [B, classes] (no early exit)."""
        logits = []
        for segment, head in zip(self.segments, self.heads):
            x = segment(x)
            logits.append(head(x))
        return logits
