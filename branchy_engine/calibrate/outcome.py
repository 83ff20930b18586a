"""What a grid of exit parameters yields on a split: accuracy, exit fractions, expected cost."""
from dataclasses import dataclass

import torch
from torch import Tensor

from branchy_engine.calibrate.criteria import exit_taken
from branchy_engine.calibrate.table import ExitTable

# Grid points per chunk: about this many (sample, exit) entries in memory at once.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class Outcome:
    """Per grid point g."""
    grid: Tensor        # [G, P] the parameter vectors
    accuracy: Tensor    # [G] % of samples whose exit predicts right
    fractions: Tensor   # [G, E] % of samples leaving at each exit
    cost: Tensor        # [G] expected cost per sample, in the costs' unit
    disagreement: Tensor  # [G] % of samples right at their exit but wrong at the final one, or
                          # the other way round (for the paired standard error of the drop)
    samples: int        # N, the split's size

    def row(self, g: int) -> dict:
        return {"params": self.grid[g].tolist(), "accuracy": float(self.accuracy[g]),
                "exit_percent": self.fractions[g].tolist(), "cost": float(self.cost[g])}


def path_costs(segment_costs) -> Tensor:
    """[E] cost of a sample that leaves at exit e: every segment up to and including e.

    segment_costs[e] is the cost of the stages between exit e-1 and exit e, plus exit e's head and
    decision; so expected cost = sum_e P(reach exit e) * segment_costs[e].
    """
    return torch.cumsum(torch.as_tensor(segment_costs, dtype=torch.float64), 0)


def evaluate(table: ExitTable, criterion: str, grid: Tensor, segment_costs) -> Outcome:
    """The outcome of every parameter vector in `grid` [G, P] on `table`, without the network."""
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(len(grid), -1)
    costs = path_costs(segment_costs)
    if len(costs) != table.num_exits:
        raise ValueError(f"{len(costs)} segment costs for a network with {table.num_exits} exits")
    accuracy, counts, disagreement = [], [], []
    final = table.correct[:, -1]
    for g in grid.split(max(1, _CHUNK_ELEMENTS // max(1, table.num_samples * table.num_exits))):
        taken = exit_taken(table, criterion, g)                      # [g, N]
        correct = table.correct.gather(1, taken.T).T                 # [g, N]
        accuracy.append(100.0 * correct.double().mean(1))
        disagreement.append(100.0 * (correct != final).double().mean(1))
        c = torch.zeros(len(g), table.num_exits, dtype=torch.float64)
        counts.append(c.scatter_add_(1, taken, torch.ones_like(taken, dtype=torch.float64)))
    fractions = 100.0 * torch.cat(counts) / table.num_samples
    return Outcome(grid=grid, accuracy=torch.cat(accuracy), fractions=fractions,
                   cost=(fractions / 100.0) @ costs, disagreement=torch.cat(disagreement),
                   samples=table.num_samples)
