"""Exit criteria, and the exit each sample takes under a grid of their parameters.

A criterion turns a parameter vector into, per sample and early exit, "may leave here". A sample
leaves at the first exit that allows it; the last exit takes every sample left.
    entropy   exit e allows a sample iff its entropy H_e < T_e (the paper's rule), E-1 thresholds
    maxprob   iff its max softmax p_e >= T_e (Shallow-Deep Networks, MSDNet), E-1 thresholds
    patience  iff the predictions of the last k exits up to e agree (PABEE), one integer k >= 1
"""
import math
from typing import List

import torch
from torch import Tensor

from branchy_engine.calibrate.table import ExitTable

CRITERIA = ("entropy", "maxprob", "patience")

# The authors' screening grids (architectures.md), per exit.
AUTHORS_GRID = {
    "lenet": [1e-4, 5e-4, 1e-3, 5e-3, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2, 3, 5, 10],
    "alexnet": [1e-4, 1e-3, 5e-3, .01, .05, .1, .5, .75, 1, 5, 10],
}
AUTHORS_GRID["resnet110"] = AUTHORS_GRID["lenet"]

# Most grid points evaluated in one chunk: G x N x (E - 1) booleans in memory at once.
_CHUNK_ELEMENTS = 1 << 25


def num_parameters(criterion: str, num_exits: int) -> int:
    check_criterion(criterion)
    return 1 if criterion == "patience" else num_exits - 1


def check_criterion(criterion: str):
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def check_parameters(criterion: str, params: List[float], num_exits: int):
    """Raises ValueError naming what is wrong with one parameter vector."""
    want = num_parameters(criterion, num_exits)
    if len(params) != want:
        what = "one patience k" if criterion == "patience" else f"{want} thresholds (exits - 1)"
        raise ValueError(f"{criterion} on a network with {num_exits} exits takes {what}, "
                         f"got {len(params)}: {list(params)}")
    for t in params:
        if math.isnan(t):
            raise ValueError(f"threshold is NaN: {list(params)}")
        if t < 0:
            raise ValueError(f"thresholds must be >= 0, got {list(params)}")
    if criterion == "patience" and (params[0] < 1 or params[0] != int(params[0])):
        raise ValueError(f"patience k must be a whole number >= 1, got {params[0]}")


def _agreement_run(prediction: Tensor) -> Tensor:
    """[N, E] int: how many consecutive exits up to e predict what exit e predicts."""
    run = torch.ones_like(prediction)
    for e in range(1, prediction.shape[1]):
        run[:, e] = torch.where(prediction[:, e] == prediction[:, e - 1], run[:, e - 1] + 1, 1)
    return run


def exit_taken(table: ExitTable, criterion: str, grid: Tensor) -> Tensor:
    """The exit each sample takes under each parameter vector.

    Args:
        table: the ExitTable of a split.
        criterion: one of CRITERIA.
        grid: [G, P] float64 parameter vectors (P = num_parameters(criterion, E)).
    Returns:
        [G, N] int64 exit indices in [0, E-1].
    """
    check_criterion(criterion)
    n, e = table.num_samples, table.num_exits
    if e == 1:
        return torch.zeros(grid.shape[0], n, dtype=torch.long)
    if criterion == "entropy":
        score, below = table.entropy[:, :-1], True
    elif criterion == "maxprob":
        score, below = table.max_prob[:, :-1], False
    else:
        score, below = _agreement_run(table.prediction)[:, :-1].double(), False
    # Compare in float32 as the engine does (a float32 threshold against a float32 score).
    if criterion != "patience":
        grid = grid.float()
        score = score.float()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * (e - 1)))
    out = []
    for g in grid.split(chunk):
        params = g[:, None, :] if criterion != "patience" else g[:, None, :1].expand(-1, 1, e - 1)
        allowed = score[None] < params if below else score[None] >= params
        # The last exit takes everyone left: append an always-true column, take the first true.
        allowed = torch.cat([allowed, allowed.new_ones(allowed.shape[:2] + (1,))], 2)
        out.append(allowed.to(torch.uint8).argmax(2))
    return torch.cat(out)


def default_grid(table: ExitTable, criterion: str, family: str = None, max_points: int = 200_000) -> Tensor:
    """Per-exit candidate values (the authors' grid, a log-spaced grid and the observed scores'
    quantiles, plus 'everyone leaves' and 'nobody leaves'), as a Cartesian product [G, P] of about
    max_points at most (more only if the authors' grid alone exceeds it)."""
    e = table.num_exits
    if criterion == "patience":
        return torch.arange(1, e + 1, dtype=torch.float64)[:, None]
    p = num_parameters(criterion, e)
    candidates = []
    for i in range(p):
        scores = (table.entropy if criterion == "entropy" else table.max_prob)[:, i]
        # Observed scores at evenly spaced ranks, and the next float32 above each, so the grid can
        # put those samples on either side of a threshold.
        ranked = scores.sort().values[torch.linspace(0, len(scores) - 1, 65).round().long()]
        observed = torch.cat([ranked, torch.nextafter(ranked, torch.tensor(math.inf))]).double()
        if criterion == "entropy":
            top = math.log10(max(float(scores.max()), 1e-4))
            spaced = torch.logspace(-5, top, 40, dtype=torch.float64)
            authors = AUTHORS_GRID.get(family, [])
        else:
            spaced = 1 - torch.logspace(-5, 0, 40, dtype=torch.float64)
            authors = []
        # 0: nobody leaves (entropy) / everyone leaves (maxprob); inf: the other way round.
        kept = torch.tensor(authors + [0.0, math.inf], dtype=torch.float64)
        candidates.append((kept, torch.unique(torch.cat([observed, spaced]))))
    # Thin each exit's own candidates evenly to stay near max_points; the authors' grid and the
    # extremes always stay.
    limit = max(2, int(max_points ** (1.0 / p)))
    per_exit = []
    for kept, values in candidates:
        room = max(2, limit - len(kept))
        if len(values) > room:
            values = values[torch.linspace(0, len(values) - 1, room).round().long()]
        values = torch.unique(torch.cat([kept, values]))
        per_exit.append(values[values >= 0])
    return torch.cartesian_prod(*per_exit).reshape(-1, p)
