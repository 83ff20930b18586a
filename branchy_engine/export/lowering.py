"""A BranchyNet's modules as the model file's graph: BatchNorm folded into the convolution before it,
ReLU fused into the op before it as its activation, dropout removed (inference only)."""
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from branchy_engine.export.model_file import Exit, Op, Stage, Value
from branchy_engine.models import BranchyNet, ResBlock

SUPPORTED = ("Conv2d (zeros padding < kernel, dilation 1, groups 1; a BatchNorm2d and a ReLU right "
             "after it fold in), MaxPool2d and AvgPool2d (dilation 1, count_include_pad, no "
             "divisor_override; a ReLU after fuses), LocalResponseNorm, ReLU, Linear (+ReLU), "
             "Flatten(1, -1), ResBlock, and Dropout/Identity (removed)")

_REMOVED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_FUSES_ACTIVATION = ("conv2d", "max_pool2d", "avg_pool2d", "linear")  # have an `activation`


def _pair(v) -> Tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _f64(t: Optional[torch.Tensor], n: int) -> np.ndarray:
    """A parameter as float64 numpy; a missing bias is zeros."""
    return np.zeros(n) if t is None else t.detach().cpu().double().numpy()


def _unsupported(path: str, module: nn.Module, why: str = "") -> ValueError:
    return ValueError(f"{path} ({type(module).__name__}){': ' + why if why else ''} is not supported "
                      f"by the engine; it runs: {SUPPORTED}")


def fold_batch_norm(weight: np.ndarray, bias: np.ndarray,
                    bn: nn.BatchNorm2d) -> Tuple[np.ndarray, np.ndarray]:
    """Conv weight [out, in, kh, kw] and bias [out] with an eval-mode BatchNorm2d after it folded in.

    w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta, all in float64.
    """
    n = weight.shape[0]
    scale = _f64(bn.weight, n) if bn.affine else np.ones(n)
    shift = _f64(bn.bias, n) if bn.affine else np.zeros(n)
    scale = scale / np.sqrt(_f64(bn.running_var, n) + bn.eps)
    return weight * scale[:, None, None, None], (bias - _f64(bn.running_mean, n)) * scale + shift


def _conv(path: str, m: nn.Conv2d, x: Value) -> Op:
    (kh, kw), pad = m.kernel_size, m.padding
    if isinstance(pad, str) or m.padding_mode != "zeros":
        raise _unsupported(path, m, f"padding {pad!r}, padding_mode {m.padding_mode!r}")
    if m.groups != 1 or _pair(m.dilation) != (1, 1):
        raise _unsupported(path, m, f"groups {m.groups}, dilation {m.dilation}")
    if pad[0] >= kh or pad[1] >= kw:
        raise _unsupported(path, m, f"padding {pad} not smaller than the kernel {m.kernel_size}")
    attrs = dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_h=kh, kernel_w=kw,
                 stride_h=m.stride[0], stride_w=m.stride[1], pad_top=pad[0], pad_left=pad[1],
                 pad_bottom=pad[0], pad_right=pad[1], dilation_h=1, dilation_w=1, groups=1)
    return Op("conv2d", [x], attrs, [_f64(m.weight, 0), _f64(m.bias, m.out_channels)], path)


def _pool(path: str, m: nn.Module, x: Value) -> Op:
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.return_indices:
            raise _unsupported(path, m, f"dilation {m.dilation}, return_indices {m.return_indices}")
        kind = "max_pool2d"
    else:
        if not m.count_include_pad or m.divisor_override is not None:
            raise _unsupported(path, m, f"count_include_pad {m.count_include_pad}, divisor_override "
                                       f"{m.divisor_override}")
        kind = "avg_pool2d"
    (kh, kw), (sh, sw), (ph, pw) = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
    attrs = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                 ceil_mode=int(m.ceil_mode))
    return Op(kind, [x], attrs, source=path)


def _linear(path: str, m: nn.Linear, x: Value) -> Op:
    return Op("linear", [x], dict(in_features=m.in_features, out_features=m.out_features),
              [_f64(m.weight, 0), _f64(m.bias, m.out_features)], path)


def _flatten(path: str, m: nn.Flatten, x: Value) -> Op:
    if m.start_dim != 1 or m.end_dim not in (-1, 3):
        raise _unsupported(path, m, f"start_dim {m.start_dim}, end_dim {m.end_dim}")
    return Op("flatten", [x], source=path)


def _lrn(path: str, m: nn.LocalResponseNorm, x: Value) -> Op:
    return Op("lrn", [x], dict(size=m.size, alpha=m.alpha, beta=m.beta, k=m.k), source=path)


def _res_block(path: str, m: ResBlock, x: Value) -> Op:
    tensors = []
    for conv, bn in ((m.conv1, m.bn1), (m.conv2, m.bn2)):
        tensors += fold_batch_norm(_f64(conv.weight, 0), _f64(conv.bias, conv.out_channels), bn)
    return Op("res_block", [x], dict(in_channels=m.in_channels, out_channels=m.out_channels,
                                     stride=m.stride), tensors, path)


_LOWER = {nn.Conv2d: _conv, nn.MaxPool2d: _pool, nn.AvgPool2d: _pool, nn.Linear: _linear,
          nn.Flatten: _flatten, nn.LocalResponseNorm: _lrn, ResBlock: _res_block,
          nn.ReLU: lambda path, m, x: Op("activation", [x], dict(activation=1), source=path)}


def _leaves(path: str, module: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(path, module) in forward order, opening Sequentials that only chain their children."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return [leaf for name, child in module.named_children() for leaf in _leaves(f"{path}.{name}", child)]
    return [(path, module)]


def lower(path: str, module: nn.Module, x: Value) -> Tuple[List[Op], Value]:
    """The ops of one stage or exit head reading `x`, and the value it ends in. Fusion stays inside
    it: the stage or head is one module.

    Raises ValueError naming the module path and type of anything the engine cannot run.
    """
    ops: List[Op] = []
    for p, m in _leaves(path, module):
        if isinstance(m, _REMOVED):
            continue
        last = ops[-1] if ops else None
        if type(m) is nn.BatchNorm2d:
            if last is None or last.kind != "conv2d" or last.attrs.get("activation"):
                raise _unsupported(p, m, "not right after a Conv2d, so it cannot be folded")
            if m.running_mean is None:
                raise _unsupported(p, m, "no running statistics (track_running_stats=False)")
            last.tensors = list(fold_batch_norm(*last.tensors, m))
        elif (type(m) is nn.ReLU and last is not None and last.kind in _FUSES_ACTIVATION
              and not last.attrs.get("activation")):
            last.attrs["activation"] = 1
        elif type(m) in _LOWER:
            ops.append(_LOWER[type(m)](p, m, ops[-1].output if ops else x))
        else:
            raise _unsupported(p, m)
    return ops, (ops[-1].output if ops else x)


def lower_network(net: BranchyNet, x: Value) -> Tuple[List[Stage], List[Exit]]:
    """The stages and exits of a BranchyNet reading the model's input `x`: each stage passes on
    its last value, which the next stage and its exit read."""
    stages, exits, outputs = [], [], {}
    for i, stage in enumerate(net.stages):
        ops, x = lower(f"stages.{i}", stage, x)
        stages.append(Stage(ops, [x]))
        outputs[i] = x
    for s in net.exit_stages:
        ops, _ = lower(f"exits.{s}", net.exits[str(s)], outputs[s])
        exits.append(Exit(s, outputs[s], ops))
    return stages, exits
