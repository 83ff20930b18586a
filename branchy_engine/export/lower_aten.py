"""Lowering any network to the model file's graph from its ATen ops.

Each stage and exit head of a BranchyNet is exported with torch.export (static shapes, at the
model's input size) and its ATen ops are matched one by one, with a few small patterns, never
module classes: a hand-written module, a torchvision model and another library's model lower alike.
On the way: BatchNorm folded into the convolution before it (else a channel_affine), activations,
residual adds' ReLU and the like fused into the op before them where nothing else reads its
output, squeeze-excitation's per-channel multiply into the convolution after it (its input scale), dropout and identities dropped, ConvNeXt's channels-last blocks (permute, layer_norm,
linear, permute) as per-pixel ops, ShuffleNet's view/transpose/view as a channel_shuffle.

Each part is lowered from torch.export's own graph (the training IR) where that reads as the
graph run_decompositions({}) would make of it (_lowers_undecomposed: every op one the lowering knows
in both forms, each in-place op on a fresh tensor only it reads), which spares the decomposition's
retrace; else, and wherever that graph is refused, from the decomposed graph.

An op it cannot lower raises ValueError naming the stage, the node, its ATen op and the module it
came from.
"""
import math
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from branchy_engine.export.model_file import Exit, Op, Stage, Value

aten = torch.ops.aten

def _bound(args, i, keyword, missing):
    value = args[i] if len(args) > i else keyword
    return missing if value is None else float(value)


# ATen activations -> (code, lo, hi) of the file's activation (docs/model-format.md).
_ACTIVATIONS: Dict[Any, Callable[[tuple, dict], Tuple[int, float, float]]] = {
    aten.relu.default: lambda a, k: (1, 0.0, 0.0),
    aten.hardtanh.default: lambda a, k: (2, float(a[1] if len(a) > 1 else -1.0), float(a[2] if len(a) > 2 else 1.0)),
    aten.clamp.default: lambda a, k: (2, _bound(a, 1, k.get("min"), -math.inf), _bound(a, 2, k.get("max"), math.inf)),
    aten.relu6.default: lambda a, k: (2, 0.0, 6.0),
    aten.hardswish.default: lambda a, k: (3, 0.0, 0.0),
    aten.hardsigmoid.default: lambda a, k: (4, 0.0, 0.0),
    aten.silu.default: lambda a, k: (5, 0.0, 0.0),
    aten.sigmoid.default: lambda a, k: (6, 0.0, 0.0),
    aten.gelu.default: lambda a, k: (8 if k.get("approximate", "none") == "tanh" else 7, 0.0, 0.0),
}
# Ops whose output equals their input at inference.
_IDENTITIES = (aten.clone.default, aten.dropout.default, aten.alias.default, aten.contiguous.default,
               aten.detach.default, aten.lift_fresh_copy.default)
# In-place ops of the training IR -> the functional op run_decompositions({}) makes of each.
_IN_PLACE = {
    aten.relu_.default: aten.relu.default,
    aten.hardtanh_.default: aten.hardtanh.default,
    aten.clamp_.default: aten.clamp.default,
    aten.hardswish_.default: aten.hardswish.default,
    aten.hardsigmoid_.default: aten.hardsigmoid.default,
    aten.silu_.default: aten.silu.default,
    aten.sigmoid_.default: aten.sigmoid.default,
    aten.gelu_.default: aten.gelu.default,
    aten.dropout_.default: aten.dropout.default,
}
# Kinds that take an activation after themselves.
_FUSES = ("conv2d", "linear", "max_pool2d", "avg_pool2d", "add", "mul", "channel_affine")


class ChannelsLast:
    """A value seen through permute(0, 2, 3, 1): per-pixel ops (layer_norm and linear over the last
    dimension, activations, scaling by a [C] vector) act on its channels."""

    def __init__(self, value: Value):
        self.value = value


class ShuffleView:
    """A value seen through view [B, groups, C / groups, H, W], transposed once it swaps 1 and 2."""

    def __init__(self, value: Value, groups: int, transposed: bool = False):
        self.value, self.groups, self.transposed = value, groups, transposed


class Split:
    """The chunks of split(x, size, dim=1): getitem gives a channel_slice."""

    def __init__(self, value: Value, size: int, channels: int):
        self.value, self.size, self.channels = value, size, channels


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _pair(v) -> Tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1]))


class Lowering:
    """Lowers exported programs into ops, keeping what it knows of each value (its shape and the fx
    node that made it, for fusion)."""

    def __init__(self):
        self.ops: List[Op] = []                 # of the part being lowered
        self.shape: Dict[int, tuple] = {}       # id(Value) -> per-sample shape (C, H, W) or (n,)
        self.maker: Dict[int, Tuple[Op, Any]] = {}  # id(Value) -> (its op, its fx node)

    # ---- the exported program ----

    def part(self, program, inputs: Sequence[Any], where: str) -> Tuple[List[Op], List[Any]]:
        """Lowers one stage or head: `inputs` are what its user inputs are (Values, or constants);
        returns its ops and what its user outputs are."""
        self.ops, self.where = [], where
        sig = program.graph_signature
        params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        constants = getattr(sig, "inputs_to_lifted_tensor_constants", {})
        env: Dict[Any, Any] = {}
        user = iter(inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder":
                if node.name in params:
                    env[node] = program.state_dict[params[node.name]]
                elif node.name in constants:
                    env[node] = program.constants[constants[node.name]]
                else:
                    env[node] = next(user)
            elif node.op == "call_function":
                env[node] = self.node(node, env)
                if node.target in _IN_PLACE:  # who reads the mutated tensor later reads the result
                    env[node.args[0]] = env[node]
            elif node.op == "output":
                outputs = [env[a] if isinstance(a, torch.fx.Node) else a for a in node.args[0]]
        return self.ops, [self.plain(o) for o in outputs]

    def plain(self, v):
        """A value a stage passes on or a head ends in, as a Value."""
        if isinstance(v, ChannelsLast):
            raise self.refuse(None, "a channels-last view (permute) crosses a cut")
        return v

    # ---- one node ----

    def refuse(self, node, why: str) -> ValueError:
        if node is None:
            return ValueError(f"{self.where}: {why}")
        stack = node.meta.get("nn_module_stack") or {}
        module = ""
        if stack:
            path, kind = list(stack.values())[-1]
            kind = getattr(kind, "__name__", str(kind)).split(".")[-1]
            module = f", from module {path} ({kind})" if path else ""
        return ValueError(f"{self.where}: node {node.name} ({node.target}{module}): {why}; the engine "
                          f"lowers convolutions, BatchNorm, pooling (max, average, adaptive, global "
                          f"mean), linear, add, mul, cat, activations (ReLU, ReLU6/hardtanh, "
                          f"hardswish, hardsigmoid, SiLU, sigmoid, GELU), layer_norm over channels, "
                          f"channel shuffle and split, flatten/view, dropout")

    def emit(self, node, kind: str, inputs: List[Value], attrs: dict, tensors=(), shape=None) -> Value:
        source = self.source(node)
        op = Op(kind, list(inputs), dict(attrs), [np.asarray(t, dtype=np.float64) for t in tensors], source)
        self.ops.append(op)
        self.shape[id(op.output)] = _engine_shape(shape if shape is not None else self.meta_shape(node))
        self.maker[id(op.output)] = (op, node)
        return op.output

    def passes(self, x, node):
        """`node` hands x on unchanged (an identity, a getitem, a reshape): fusion into x's op then
        depends on who reads `node`."""
        made = self.maker.get(id(x)) if isinstance(x, Value) else None
        if made is not None and len(made[1].users) == 1:
            self.maker[id(x)] = (made[0], node)
        return x

    def source(self, node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return f"{self.where}:{node.name}" + (f" ({path})" if path else "")

    @staticmethod
    def meta_shape(node) -> tuple:
        val = node.meta.get("val")
        return tuple(int(d) for d in val.shape[1:]) if isinstance(val, torch.Tensor) else ()

    def value(self, node, x, what="input") -> Value:
        if isinstance(x, Value):
            return x
        raise self.refuse(node, f"its {what} is {type(x).__name__}, not an activation")

    def fusable(self, v: Value, kinds=_FUSES) -> Optional[Op]:
        """The op that made v, if an activation or BatchNorm may fold into it: it is of this part
        (a stage or head: another part's value is read as it is), it has no activation yet and
        nothing else reads v."""
        made = self.maker.get(id(v))
        if made is None:
            return None
        op, node = made
        if op.kind not in kinds or op.attrs.get("activation", 0) or len(node.users) != 1:
            return None
        return op if any(o is op for o in self.ops) else None

    def node(self, node, env) -> Any:
        args = [self.arg(a, env) for a in node.args]
        kwargs = {k: self.arg(v, env) for k, v in node.kwargs.items()}
        t = _IN_PLACE.get(node.target, node.target)
        if t is operator.getitem:
            return self.getitem(node, *args)
        if t in _IDENTITIES:
            x = args[0]
            if isinstance(x, ChannelsLast):
                return ChannelsLast(self.passes(x.value, node))
            return self.passes(x, node)
        if t in _ACTIVATIONS:
            return self.activation(node, t, args, kwargs)
        handler = _HANDLERS.get(t)
        if handler is None:
            raise self.refuse(node, "this ATen op has no lowering")
        return handler(self, node, args, kwargs)

    def arg(self, a, env):
        if isinstance(a, torch.fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x, env) for x in a)
        return a

    def getitem(self, node, whole, i):
        if isinstance(whole, Split):
            start = i * whole.size
            count = min(whole.size, whole.channels - start)
            c, h, w = self.shape[id(whole.value)]
            return self.emit(node, "channel_slice", [whole.value], dict(start=start, count=count),
                             shape=(count, h, w))
        if isinstance(whole, (list, tuple)):
            return self.passes(whole[i], node)
        raise self.refuse(node, f"indexes a {type(whole).__name__}")

    def activation(self, node, target, args, kwargs):
        code, lo, hi = _ACTIVATIONS[target](args, kwargs)
        x = args[0]
        if isinstance(x, ChannelsLast):
            return ChannelsLast(self.activation_on(node, x.value, code, lo, hi))
        return self.activation_on(node, self.value(node, x), code, lo, hi)

    def activation_on(self, node, x: Value, code, lo, hi) -> Value:
        op = self.fusable(x)
        if op is not None:
            op.attrs.update(activation=code, activation_lo=lo, activation_hi=hi)
            self.maker[id(x)] = (op, node)  # the fused op's output is now this node's
            return x
        return self.emit(node, "activation", [x], dict(activation=code, activation_lo=lo, activation_hi=hi),
                         shape=self.shape[id(x)])


# ---- handlers: (lowering, node, args, kwargs) -> what the node's value is ----

def _conv(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    weight, bias = args[1], args[2] if len(args) > 2 else None
    stride = _pair(args[3] if len(args) > 3 else 1)
    padding = args[4] if len(args) > 4 else 0
    dilation = _pair(args[5] if len(args) > 5 else 1)
    groups = int(args[6] if len(args) > 6 else 1)
    if isinstance(padding, str):
        raise L.refuse(node, f"padding {padding!r} (export the model with numeric padding)")
    ph, pw = _pair(padding)
    cout, cin_g, kh, kw = weight.shape
    b = _f64(bias) if bias is not None else np.zeros(cout)
    for pad, k, d, name in ((ph, kh, dilation[0], "height"), (pw, kw, dilation[1], "width")):
        if pad >= (k - 1) * d + 1:
            raise L.refuse(node, f"padding {pad} is not smaller than the dilated kernel {(k - 1) * d + 1} "
                                 f"({name}); the engine's windows always overlap the input")
    attrs = dict(in_channels=cin_g * groups, out_channels=cout, kernel_h=kh, kernel_w=kw,
                 stride_h=stride[0], stride_w=stride[1], pad_top=ph, pad_left=pw, pad_bottom=ph,
                 pad_right=pw, dilation_h=dilation[0], dilation_w=dilation[1], groups=groups)
    inputs = [x]
    # Squeeze-excitation: x = y * s with s [C, 1, 1] read by nothing else becomes the convolution's
    # input scale, so that the engine never writes y * s (it scales the weights instead).
    mul = L.fusable(x, ("mul",))
    if mul is not None and L.shape[id(mul.inputs[1])] == (cin_g * groups, 1, 1):
        L.ops.remove(mul)
        inputs, attrs["input_scale"] = list(mul.inputs), 1
    return L.emit(node, "conv2d", inputs, attrs, [_f64(weight), b])


def _has_residual(conv: Op) -> bool:
    return len(conv.inputs) > 1 + int(conv.attrs.get("input_scale", 0))


def _batch_norm(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    weight, bias, mean, var = args[1:5]
    eps = float(args[6])
    c = mean.shape[0]
    scale = (_f64(weight) if weight is not None else np.ones(c)) / np.sqrt(_f64(var) + eps)
    shift = (_f64(bias) if bias is not None else np.zeros(c)) - _f64(mean) * scale
    conv = L.fusable(x, ("conv2d",))
    if conv is not None and not _has_residual(conv):  # not past a residual fused into it
        w, b = conv.tensors
        conv.tensors = [w * scale[:, None, None, None], b * scale + shift]
        L.maker[id(x)] = (conv, node)
        return (x, None, None)
    return (L.emit(node, "channel_affine", [x], {}, [scale, shift], shape=L.shape[id(x)]), None, None)


def _batch_norm_eval(L: Lowering, node, args, kwargs):
    """The training IR's batch_norm, lowered as what run_decompositions({}) makes of it at
    inference: _native_batch_norm_legit_no_training's output."""
    x, weight, bias, mean, var, training, momentum, eps = args[:8]
    if training or mean is None or var is None:
        raise L.refuse(node, "BatchNorm on batch statistics")
    return _batch_norm(L, node, [x, weight, bias, mean, var, momentum, eps], kwargs)[0]


def _pool(maximum: bool):
    def lower(L: Lowering, node, args, kwargs):
        x = L.value(node, args[0])
        kernel = _pair(args[1])
        stride = _pair(args[2] if len(args) > 2 and args[2] else kernel)
        pad = _pair(args[3] if len(args) > 3 else 0)
        if maximum:
            dilation = _pair(args[4] if len(args) > 4 else 1)
            ceil = bool(args[5] if len(args) > 5 else False)
            if dilation != (1, 1):
                raise L.refuse(node, f"dilation {dilation}")
        else:
            ceil = bool(args[4] if len(args) > 4 else False)
            include_pad = bool(args[5] if len(args) > 5 else True)
            divisor = args[6] if len(args) > 6 else None
            if divisor is not None:
                raise L.refuse(node, f"divisor_override {divisor}")
            if not include_pad and (pad != (0, 0) or ceil):
                raise L.refuse(node, "count_include_pad=False with padding or ceil_mode")
        if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
            raise L.refuse(node, f"padding {pad} is more than half the kernel {kernel}")
        attrs = dict(kernel_h=kernel[0], kernel_w=kernel[1], stride_h=stride[0], stride_w=stride[1],
                     pad_h=pad[0], pad_w=pad[1], ceil_mode=int(ceil))
        out = L.emit(node, "max_pool2d" if maximum else "avg_pool2d", [x], attrs)
        return out
    return lower


def _adaptive(maximum: bool):
    def lower(L: Lowering, node, args, kwargs):
        x = L.value(node, args[0])
        c, h, w = L.shape[id(x)]
        oh, ow = _pair(args[1])
        oh, ow = oh or h, ow or w
        if (oh, ow) == (1, 1) and not maximum:
            out = L.emit(node, "mean", [x], {}, shape=(c, 1, 1))
        elif h % oh == 0 and w % ow == 0:
            attrs = dict(kernel_h=h // oh, kernel_w=w // ow, stride_h=h // oh, stride_w=w // ow,
                         pad_h=0, pad_w=0, ceil_mode=0)
            out = L.emit(node, "max_pool2d" if maximum else "avg_pool2d", [x], attrs, shape=(c, oh, ow))
        else:
            raise L.refuse(node, f"adaptive pooling of {h}x{w} to {oh}x{ow} (sizes not divisible)")
        return (out, None) if maximum else out
    return lower


def _mean(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    dims = sorted(int(d) % 4 for d in args[1])
    if len(L.shape[id(x)]) != 3 or dims != [2, 3]:
        raise L.refuse(node, f"mean over dims {list(args[1])} (the engine averages over H and W)")
    c = L.shape[id(x)][0]
    return L.emit(node, "mean", [x], {}, shape=(c, 1, 1))


def _numel(shape) -> int:
    return int(math.prod(shape))


def _engine_shape(shape: tuple) -> tuple:
    """A per-sample shape as the engine holds it: [C, H, W], vectors [n, 1, 1]."""
    if len(shape) == 1:
        return (int(shape[0]), 1, 1)
    return tuple(shape)


def _vector(shape: tuple) -> bool:
    return len(shape) <= 1 or all(d == 1 for d in shape[1:])


def _view(L: Lowering, node, args, kwargs):
    x = args[0]  # the target shape is node.meta["val"]: static
    out_shape = L.meta_shape(node)
    if isinstance(x, ShuffleView):
        if x.transposed and len(out_shape) == 3:
            return L.emit(node, "channel_shuffle", [x.value], dict(groups=x.groups), shape=out_shape)
        raise L.refuse(node, "a view of a grouped view that is not a channel shuffle")
    x = L.value(node, x)
    shape = L.shape[id(x)]
    if len(out_shape) == 4 and len(shape) == 3 and out_shape[2:] == shape[1:] and out_shape[0] * out_shape[1] == shape[0]:
        return ShuffleView(x, out_shape[0])
    return _reshape(L, node, x, shape, out_shape)


def _reshape(L: Lowering, node, x: Value, shape, out_shape):
    """A reshape that keeps the per-sample order: flatten ([C, H, W] -> [n]) or one of the shapes
    the engine holds alike ([n], [n, 1, 1])."""
    if _numel(shape) != _numel(out_shape):
        raise L.refuse(node, f"reshape of {shape} to {out_shape}")
    if _vector(shape) and _vector(out_shape):
        return L.passes(x, node)
    if len(out_shape) == 1:
        return L.emit(node, "flatten", [x], {}, shape=(_numel(shape),))
    raise L.refuse(node, f"reshape of {shape} to {out_shape}")


def _flatten(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    start = int(args[1] if len(args) > 1 else 0)
    if start != 1:
        raise L.refuse(node, f"flatten from dim {start} (the engine flattens each sample)")
    return _reshape(L, node, x, L.shape[id(x)], L.meta_shape(node))


def _squeeze(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    return _reshape(L, node, x, L.shape[id(x)], L.meta_shape(node))


def _transpose(L: Lowering, node, args, kwargs):
    x = args[0]
    dims = sorted(int(d) % 5 for d in args[1:3])
    if isinstance(x, ShuffleView) and dims == [1, 2]:
        return ShuffleView(x.value, x.groups, not x.transposed)
    raise L.refuse(node, "transpose outside a channel shuffle")


def _permute(L: Lowering, node, args, kwargs):
    x, dims = args[0], [int(d) % 4 for d in args[1]]
    if dims == [0, 2, 3, 1] and isinstance(x, Value) and len(L.shape[id(x)]) == 3:
        return ChannelsLast(L.passes(x, node))
    if dims == [0, 3, 1, 2] and isinstance(x, ChannelsLast):
        return L.passes(x.value, node)
    raise L.refuse(node, f"permute {dims} (the engine takes NCHW <-> channels-last around per-pixel ops)")


def _linear(L: Lowering, node, args, kwargs):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    out, inp = weight.shape
    b = _f64(bias) if bias is not None else np.zeros(out)
    if isinstance(x, ChannelsLast):  # per pixel: a 1x1 convolution
        c, h, w = L.shape[id(x.value)]
        attrs = dict(in_channels=inp, out_channels=out, kernel_h=1, kernel_w=1, stride_h=1, stride_w=1,
                     pad_top=0, pad_left=0, pad_bottom=0, pad_right=0, dilation_h=1, dilation_w=1, groups=1)
        v = L.emit(node, "conv2d", [x.value], attrs, [_f64(weight)[:, :, None, None], b], shape=(out, h, w))
        return ChannelsLast(v)
    x = L.value(node, x)
    if not _vector(L.shape[id(x)]):
        raise L.refuse(node, f"linear over the last dimension of a {L.shape[id(x)]} activation")
    return L.emit(node, "linear", [x], dict(in_features=inp, out_features=out), [_f64(weight), b],
                  shape=(out,))


def _layer_norm(L: Lowering, node, args, kwargs):
    x, normalized = args[0], list(args[1])
    weight = args[2] if len(args) > 2 else None
    bias = args[3] if len(args) > 3 else None
    eps = float(args[4] if len(args) > 4 else 1e-5)
    if not isinstance(x, ChannelsLast) or len(normalized) != 1:
        raise L.refuse(node, "layer_norm other than over the channels of each pixel")
    c = L.shape[id(x.value)][0]
    w = _f64(weight) if weight is not None else np.ones(c)
    b = _f64(bias) if bias is not None else np.zeros(c)
    return ChannelsLast(L.emit(node, "layer_norm", [x.value], dict(eps=eps), [w, b], shape=L.shape[id(x.value)]))


def _binary(kind: str):
    def lower(L: Lowering, node, args, kwargs):
        a, b = args[0], args[1]
        if kwargs.get("alpha", 1) != 1 or (len(args) > 2 and args[2] != 1):
            raise L.refuse(node, "add with alpha")
        channels_last = isinstance(a, ChannelsLast) or isinstance(b, ChannelsLast)
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):  # a constant: per-channel scale/shift
            const, x = (a, b) if isinstance(a, torch.Tensor) else (b, a)
            x = x.value if isinstance(x, ChannelsLast) else L.value(node, x)
            c = L.shape[id(x)][0]
            t = _f64(const)
            shape = tuple(const.shape)
            # Only a scalar or a constant along the channel axis: [C, 1, 1] on NCHW, [C] (the last
            # dimension) on a channels-last view.
            per_channel = (shape[-1:] == (c,) and all(d == 1 for d in shape[:-1])) if channels_last else \
                (len(shape) >= 3 and shape[-3:] == (c, 1, 1) and all(d == 1 for d in shape[:-3]))
            if t.size == 1:
                t = np.full(c, float(t.reshape(())))
            elif not per_channel:
                raise L.refuse(node, f"{kind} by a constant of shape {shape} (the engine takes a "
                                     f"scalar or one value per channel)")
            t = t.reshape(c)
            scale, shift = (t, np.zeros(c)) if kind == "mul" else (np.ones(c), t)
            v = L.emit(node, "channel_affine", [x], {}, [scale, shift], shape=L.shape[id(x)])
            return ChannelsLast(v) if channels_last else v
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            raise L.refuse(node, f"{kind} with a Python number")
        if channels_last:
            if not (isinstance(a, ChannelsLast) and isinstance(b, ChannelsLast)):
                raise L.refuse(node, f"{kind} of a channels-last and an NCHW value")
            a, b = a.value, b.value
        a, b = L.value(node, a), L.value(node, b)
        sa, sb = L.shape[id(a)], L.shape[id(b)]
        if kind == "mul" and _numel(sa) < _numel(sb):
            a, b, sa, sb = b, a, sb, sa
        if sa != sb and not (kind == "mul" and sb == (sa[0], 1, 1)):
            raise L.refuse(node, f"{kind} of {sa} and {sb} (the engine broadcasts only a [C, 1, 1] "
                                 f"multiplier)")
        if kind == "add" and not channels_last:
            # A residual: into the convolution that made one side, as its second input (added
            # before its activation), where nothing else reads that convolution's output.
            position = {id(op.output): i for i, op in enumerate(L.ops)}
            for conv_side, other in ((a, b), (b, a)):
                conv = L.fusable(conv_side, ("conv2d",))
                # The residual must exist before the convolution runs.
                ready = position.get(id(other), -1) < position.get(id(conv_side), -1)
                if conv is not None and not _has_residual(conv) and other is not conv_side and ready:
                    conv.inputs.append(other)
                    L.maker[id(conv_side)] = (conv, node)
                    return conv_side
        out = L.emit(node, kind, [a, b], {}, shape=sa)
        return ChannelsLast(out) if channels_last else out
    return lower


def _cat(L: Lowering, node, args, kwargs):
    xs = [L.value(node, x, "input") for x in args[0]]
    dim = int(args[1] if len(args) > 1 else kwargs.get("dim", 0))
    if dim % 4 != 1:
        raise L.refuse(node, f"cat along dim {dim} (the engine concatenates channels)")
    shapes = [L.shape[id(x)] for x in xs]
    if len(xs) == 1:
        return L.passes(xs[0], node)
    return L.emit(node, "concat", xs, {}, shape=(sum(s[0] for s in shapes), *shapes[0][1:]))


def _split(L: Lowering, node, args, kwargs):
    x = L.value(node, args[0])
    size, dim = int(args[1]), int(args[2] if len(args) > 2 else kwargs.get("dim", 0))
    if dim % 4 != 1:
        raise L.refuse(node, f"split along dim {dim} (the engine splits channels)")
    return Split(x, size, L.shape[id(x)][0])


def _chunk(L: Lowering, node, args, kwargs):
    """chunk(x, n, dim): split(x, ceil(size / n), dim), as run_decompositions({}) writes it."""
    chunks, dim = int(args[1]), int(args[2] if len(args) > 2 else kwargs.get("dim", 0))
    size = -(-node.args[0].meta["val"].shape[dim] // chunks)
    return _split(L, node, [args[0], size, dim], {})


_HANDLERS = {
    aten.conv2d.default: _conv,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.batch_norm.default: _batch_norm_eval,
    aten.max_pool2d.default: _pool(True),
    aten.avg_pool2d.default: _pool(False),
    aten.adaptive_avg_pool2d.default: _adaptive(False),
    aten.adaptive_max_pool2d.default: _adaptive(True),
    aten.mean.dim: _mean,
    aten.view.default: _view,
    aten.reshape.default: _view,
    aten._unsafe_view.default: _view,
    aten.flatten.using_ints: _flatten,
    aten.squeeze.dim: _squeeze,
    aten.squeeze.dims: _squeeze,
    aten.unsqueeze.default: _squeeze,
    aten.transpose.int: _transpose,
    aten.permute.default: _permute,
    aten.linear.default: _linear,
    aten.layer_norm.default: _layer_norm,
    aten.add.Tensor: _binary("add"),
    aten.mul.Tensor: _binary("mul"),
    aten.cat.default: _cat,
    aten.split.Tensor: _split,
    aten.chunk.default: _chunk,
}


def _fresh(node) -> bool:
    """Whether node's value is a tensor of its own: not a view or alias of another, not an input, a
    parameter or a buffer."""
    t = node.target
    if t in _IN_PLACE:  # the tensor it mutates (or, dropout at inference, passes on)
        return _fresh(node.args[0])
    if t is aten.batch_norm.default:  # tagged for its running statistics; its output is new
        return True
    return (isinstance(t, torch._ops.OpOverload) and torch.Tag.maybe_aliasing_or_mutating not in t.tags
            and all(r.alias_info is None for r in t._schema.returns))


def _lowers_undecomposed(graph) -> bool:
    """Whether the lowering reads this graph of torch.export (the training IR) as it reads the graph
    run_decompositions({}) makes of it: every op is one that decomposition keeps or rewrites into
    ops lowered alike (batch_norm, chunk, flatten, reshape, contiguous, dropout, in-place
    activations), none is dead (an identity that decomposition drops must not change who reads
    what), and each in-place op mutates a fresh tensor (_fresh) that nothing else reads."""
    known = {operator.getitem, *_IDENTITIES, *_ACTIVATIONS, *_HANDLERS, *_IN_PLACE}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target not in known or not node.users:
            return False
        if node.target in (aten.dropout.default, aten.dropout_.default):
            if node.args[2:] != (False,):
                return False  # dropout that drops
            continue  # at inference: changes nothing, in place or not
        if node.target in _IN_PLACE:
            x = node.args[0]
            if not isinstance(x, torch.fx.Node) or len(x.users) != 1 or not _fresh(x):
                return False
    return True


def _part(L: Lowering, module: nn.Module, h: torch.Tensor, inputs: Sequence[Any], where: str):
    """L.part of `module` exported at input h: from torch.export's graph where _lowers_undecomposed
    says that is safe (run_decompositions is most of the time an export takes); else, and where the
    lowering refuses it (its error then names the decomposed graph's ops), after
    run_decompositions({})."""
    from torch.export import export
    with torch.no_grad():
        program = export(module, (h,))
    if _lowers_undecomposed(program.graph):
        known = dict(L.shape), dict(L.maker)
        try:
            return L.part(program, inputs, where)
        except Exception:  # any doubt: lowered again from the decomposed graph
            L.shape, L.maker = known
    with torch.no_grad():
        program = program.run_decompositions({})
    return L.part(program, inputs, where)


def lower_network(net, input_shape: Sequence[int], x: Value) -> Tuple[List[Stage], List[Exit]]:
    """The stages and exits of any BranchyNet (stages and heads that torch.export can export),
    reading the model's input `x` [C, H, W] = input_shape."""
    net = net.eval()
    param = next(net.parameters(), torch.zeros(()))
    sample = torch.randn(1, *input_shape, dtype=param.dtype, device=param.device)
    L = Lowering()
    L.shape[id(x)] = tuple(input_shape)
    stages, exits, passed = [], [], {}
    h, carried = sample, [x]
    for i, stage in enumerate(net.stages):
        ops, outputs = _part(L, stage, h, carried, f"stages.{i}")
        outputs = [o for o in outputs if isinstance(o, Value)]
        if not outputs:
            raise ValueError(f"stages.{i}: passes on no tensor")
        stages.append(Stage(ops, outputs))
        with torch.no_grad():
            h = stage(h)
        passed[i] = (h, outputs)
        carried = outputs
    for s in net.exit_stages:
        head = net.exits[str(s)]
        h, outputs = passed[s]
        ops, logits = _part(L, head, h, outputs, f"exits.{s}")
        if len(logits) != 1 or not isinstance(logits[0], Value):
            raise ValueError(f"exits.{s}: gives {len(logits)} outputs, expected one logits tensor")
        reads = {id(v) for op in ops for v in op.inputs}
        inputs = [v for v in outputs if id(v) in reads] or [logits[0]]
        if len(inputs) != 1:
            raise ValueError(f"exits.{s}: reads {len(inputs)} of the values its stage passes on; a "
                             f"head reads one")
        exits.append(Exit(s, inputs[0], ops))
    return stages, exits
