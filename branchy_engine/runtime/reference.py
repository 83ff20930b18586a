"""Plain-PyTorch references for the compiled ops, computed in float64. Tests compare against them."""
from typing import Tuple, Union

import torch
from torch import Tensor


def _softmax_stats(logits: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(entropy, max_prob, prediction) per row, with the op's rules for NaN and infinities."""
    z = logits.double()
    rows, classes = z.shape
    nan = z.isnan()
    pos_inf = z == float("inf")
    n_inf = pos_inf.sum(1)
    all_neg_inf = (z == float("-inf")).all(1)
    p = torch.softmax(z, 1)
    entropy = -torch.special.xlogy(p, p).sum(1)
    max_prob = p.max(1).values if classes else torch.zeros(rows, dtype=torch.float64)
    prediction = z.argmax(1) if rows else torch.zeros(0, dtype=torch.int64)

    # Several equal +inf logits: uniform over them. All -inf: uniform over the row.
    k = n_inf.clamp(min=1).double()
    entropy = torch.where(n_inf > 0, k.log(), entropy)
    max_prob = torch.where(n_inf > 0, 1 / k, max_prob)
    if rows:
        prediction = torch.where(n_inf > 0, pos_inf.int().argmax(1), prediction)
    entropy = torch.where(all_neg_inf, torch.tensor(float(classes)).log().double(), entropy)
    max_prob = torch.where(all_neg_inf, torch.tensor(1.0 / classes).double(), max_prob)
    prediction = torch.where(all_neg_inf, 0, prediction)

    has_nan = nan.any(1)
    entropy = torch.where(has_nan, float("nan"), entropy)
    max_prob = torch.where(has_nan, float("nan"), max_prob)
    if rows:
        prediction = torch.where(has_nan, nan.int().argmax(1), prediction)
    return entropy.float(), max_prob.float(), prediction


def _threshold_value(threshold: Union[float, Tensor]) -> Tensor:
    return torch.tensor(float(threshold), dtype=torch.float32)


def exit_decision_reference(logits: Tensor, threshold: Union[float, Tensor]):
    """Reference for exit_decision: entropy in nats, leave iff entropy < threshold (float32)."""
    entropy, _, prediction = _softmax_stats(logits.cpu())
    leave = entropy < _threshold_value(threshold)
    return entropy.to(logits.device), leave.to(logits.device), prediction.to(logits.device)


def exit_decision_maxprob_reference(logits: Tensor, threshold: Union[float, Tensor]):
    """Reference for exit_decision_maxprob: leave iff max softmax >= threshold (float32)."""
    _, max_prob, prediction = _softmax_stats(logits.cpu())
    leave = max_prob >= _threshold_value(threshold)
    return max_prob.to(logits.device), leave.to(logits.device), prediction.to(logits.device)


def compact_survivors_reference(leave: Tensor, count: Tensor, rows: Tensor, activations: Tensor,
                                next_activations: Tensor, next_rows: Tensor, next_count: Tensor):
    """Reference for compact_survivors: returns (next_activations, next_rows, next_count) as the op
    leaves them, as new tensors; the arguments are not changed."""
    keep = (~leave[:int(count[0])]).nonzero().flatten()
    k = keep.numel()
    out_activations, out_rows = next_activations.clone(), next_rows.clone()
    out_activations[:k] = activations[keep]
    out_rows[:k] = rows[keep]
    return out_activations, out_rows, torch.full_like(next_count, k)


def scatter_exits_reference(leave: Tensor, count: Tensor, rows: Tensor, prediction: Tensor,
                            score: Tensor, exit: int, everyone: bool, out_prediction: Tensor,
                            out_exit: Tensor, out_score: Tensor):
    """Reference for scatter_exits: returns (out_prediction, out_exit, out_score) as the op leaves
    them, as new tensors; the arguments are not changed."""
    n = int(count[0])
    chosen = torch.ones(n, dtype=torch.bool, device=leave.device) if everyone else leave[:n]
    at = rows[:n][chosen]
    pred, exits, scores = out_prediction.clone(), out_exit.clone(), out_score.clone()
    pred[at] = prediction[:n][chosen]
    exits[at] = exit
    scores[at] = score[:n][chosen]
    return pred, exits, scores
