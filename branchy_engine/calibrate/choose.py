"""Choosing exit parameters from a grid's outcome: the Pareto frontier, its knee, or a target.

Frontier: the grid points no other point beats on both accuracy and expected cost. Sorted by cost,
each frontier point is strictly more accurate than every cheaper point.

Knee: scale the frontier's costs and accuracies to [0, 1] (cheapest..dearest, least..most accurate),
draw the chord from the cheapest frontier point to the most accurate one, and take the frontier
point farthest above that chord (most accuracy for its cost relative to the straight trade-off).
With fewer than three frontier points there is no bend: the most accurate point is the knee.

Targets hold with a stated confidence (default 95%, one-sided): validation is a sample, and a
choice that meets a target on it by a hair often misses it on new data. --min-accuracy A needs
acc - z*se(acc) >= A with se(acc) = sqrt(acc (1 - acc) / N); --max-drop D needs the paired drop
against the final exit, drop + z*se(drop) <= D, with se(drop) from the per-sample differences
(right at the final exit, wrong at the exit taken, and the other way round). z is the normal
quantile of the confidence; 0.5 gives z = 0, the plain rule.
"""
from statistics import NormalDist
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from branchy_engine.calibrate.outcome import Outcome


def _order(primary, secondary):
    """Indices sorting by `primary` ascending, ties by `secondary` ascending."""
    return np.lexsort((np.asarray(secondary), np.asarray(primary)))


def frontier(outcome: Outcome) -> torch.Tensor:
    """Indices of the Pareto-optimal grid points, cheapest first."""
    order = _order(outcome.cost, -outcome.accuracy)  # cheapest first; ties: most accurate first
    acc = outcome.accuracy.numpy()[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]])
    return torch.from_numpy(order[acc > best_before])


def knee(outcome: Outcome) -> int:
    """The grid index of the frontier's knee (module docstring)."""
    points = frontier(outcome)
    if len(points) < 3:
        return int(points[-1])
    cost = outcome.cost[points].double()
    acc = outcome.accuracy[points].double()
    x = (cost - cost[0]) / (cost[-1] - cost[0])
    y = (acc - acc[0]) / (acc[-1] - acc[0])
    # Height above the chord y = x between the two ends, proportional to the distance from it.
    return int(points[int(torch.argmax(y - x))])


@dataclass
class Target:
    """What the user asks for; at most one of the three, none meaning the knee."""
    min_accuracy: Optional[float] = None    # %: the cheapest parameters reaching it
    max_drop: Optional[float] = None        # points below the final exit alone: likewise
    latency_budget: Optional[float] = None  # cost units: the most accurate parameters within it
    confidence: float = 0.95                # for min_accuracy and max_drop (module docstring)

    def describe(self) -> str:
        sure = f" ({100 * self.confidence:g}% confidence on validation)"
        if self.min_accuracy is not None:
            return f"min accuracy {self.min_accuracy:g}%" + sure
        if self.max_drop is not None:
            return f"at most {self.max_drop:g} points below the final exit" + sure
        if self.latency_budget is not None:
            return f"latency budget {self.latency_budget:g}"
        return "knee of the accuracy-cost frontier"


def choose(outcome: Outcome, target: Target, final_exit_accuracy: float, unit: str) -> int:
    """The grid index meeting `target` on this outcome (the validation split's).

    Raises ValueError when no grid point meets it, naming the best that can be had.
    """
    given = [v for v in (target.min_accuracy, target.max_drop, target.latency_budget) if v is not None]
    if len(given) > 1:
        raise ValueError("give at most one of --min-accuracy, --max-drop, --latency-budget")
    if target.max_drop is not None and target.max_drop < 0:
        raise ValueError(f"--max-drop must be >= 0 points, got {target.max_drop}")
    if not 0.5 <= target.confidence < 1:
        raise ValueError(f"--confidence must be in [0.5, 1), got {target.confidence}")
    if not given:
        return knee(outcome)
    g = torch.arange(len(outcome.cost))
    if target.latency_budget is not None:
        fits = g[outcome.cost <= target.latency_budget]
        if len(fits) == 0:
            raise ValueError(f"no exit thresholds fit a latency budget of {target.latency_budget:g} "
                             f"{unit}: the cheapest costs {float(outcome.cost.min()):.4g} {unit}")
        # Most accurate; among those, cheapest.
        return int(fits[_order(-outcome.accuracy[fits], outcome.cost[fits])[0]])
    z = NormalDist().inv_cdf(target.confidence)
    n = outcome.samples
    p = outcome.accuracy / 100.0
    if target.min_accuracy is not None:
        floor = target.min_accuracy
        bound = 100.0 * (p - z * torch.sqrt(p * (1 - p) / n))
    else:
        floor = final_exit_accuracy - target.max_drop
        drop = final_exit_accuracy / 100.0 - p
        se = torch.sqrt((outcome.disagreement / 100.0 - drop ** 2).clamp(min=0) / n)
        bound = final_exit_accuracy - 100.0 * (drop + z * se)
    # A hair of slack so that "no drop" accepts the final exit's own accuracy despite rounding.
    meets = g[bound >= floor - 1e-9]
    if len(meets) == 0:
        raise ValueError(f"no exit thresholds reach {floor:.3f}% on the validation split at "
                         f"{100 * target.confidence:g}% confidence: the best is "
                         f"{float(outcome.accuracy.max()):.3f}% (lower bound {float(bound.max()):.3f}%)")
    # Cheapest; among those, most accurate.
    return int(meets[_order(outcome.cost[meets], -outcome.accuracy[meets])[0]])
