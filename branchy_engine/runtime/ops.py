"""The fused exit-decision ops: thin typed wrappers over torch.ops.branchy_engine.

At exit n of a BranchyNet a sample leaves when the entropy of its softmax is below the exit's
threshold. These ops compute, in one pass per row and without a temporary softmax tensor:
score (entropy or max probability), the decision whether the row leaves (`leave`, a bool mask; not
to be confused with an engine's `exit`, the index of the exit a sample left at) and the argmax
prediction.
"""
from typing import Tuple, Union

import torch
from torch import Tensor

from branchy_engine._extension import load
from torch.compiler import is_compiling

_C = load()

Threshold = Union[float, Tensor]


def _through_torch_ops(packet, logits, threshold):
    return (packet.tensor if isinstance(threshold, Tensor) else packet.default)(logits, threshold)


# The wrappers call _C's direct entry (the same op through the C++ dispatcher, without the Python
# overhead of torch.ops, which is most of the cost at batch 1). It answers NotImplemented for
# tensor subclasses and torch-function modes, and torch.compile traces torch.ops instead.

def exit_decision(logits: Tensor, threshold: Threshold) -> Tuple[Tensor, Tensor, Tensor]:
    """Entropy exit rule: a row leaves iff H(softmax(logits)) < threshold (strictly).

    Args:
        logits: [B, C] float32, float16 or bfloat16, on CPU or CUDA; C >= 1.
        threshold: entropy threshold in nats, a Python float or a one-element floating tensor on
            the logits' device (a tensor can change between replays of a captured CUDA graph).
            Compared in float32. An eager call with a CUDA tensor threshold reads it back once to
            check it is not NaN (a synchronisation); under graph capture it is not checked, and a
            NaN threshold lets no row leave.

    Returns:
        entropy [B] float32 (nats, natural log; NaN for a row holding NaN),
        leave [B] bool: the row leaves at this exit (never a row holding NaN),
        prediction [B] int64 (argmax, first index on ties; a NaN's index if the row has one).
    """
    if not is_compiling():
        out = _C.exit_decision(logits, threshold)
        if out is not NotImplemented:
            return out
    return _through_torch_ops(torch.ops.branchy_engine.exit_decision, logits, threshold)


def exit_decision_maxprob(logits: Tensor, threshold: Threshold) -> Tuple[Tensor, Tensor, Tensor]:
    """Max-probability exit rule: a row leaves iff max softmax(logits) >= threshold.

    As in Shallow-Deep Networks and MSDNet. Arguments as exit_decision; returns
    (max_prob [B] float32, leave [B] bool, prediction [B] int64).
    """
    if not is_compiling():
        out = _C.exit_decision_maxprob(logits, threshold)
        if out is not NotImplemented:
            return out
    return _through_torch_ops(torch.ops.branchy_engine.exit_decision_maxprob, logits, threshold)


def cpu_isa() -> str:
    """The instruction set the CPU kernels use now: 'avx512', 'avx2', 'neon' (aarch64) or
    'portable'."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> str:
    """Selects the CPU kernels: 'portable', 'avx2', 'avx512', 'neon' or 'best' (the CPU's best
    where it lacks the one asked for). The exit decision ops use it at once; engines built
    afterwards pack for it. Returns the one now in use."""
    return _C.set_cpu_isa(name)


def _fake(logits, threshold):
    # Also the Meta kernel, which the dispatcher picks when only the threshold is on "meta".
    torch._check(logits.dim() == 2,
                 lambda: f"exit_decision: logits must be 2-D [batch, classes], got {tuple(logits.shape)}")
    if isinstance(threshold, Tensor):
        torch._check(threshold.device == logits.device,
                     lambda: f"exit_decision: threshold is on {threshold.device} but logits are on "
                             f"{logits.device}")
        torch._check(threshold.numel() == 1,
                     lambda: f"exit_decision: threshold must have one element, got {tuple(threshold.shape)}")
    rows = logits.shape[0]
    return (logits.new_empty(rows, dtype=torch.float32), logits.new_empty(rows, dtype=torch.bool),
            logits.new_empty(rows, dtype=torch.int64))


for _name in ("exit_decision", "exit_decision.tensor", "exit_decision_maxprob",
              "exit_decision_maxprob.tensor"):
    torch.library.register_fake(f"branchy_engine::{_name}")(_fake)
