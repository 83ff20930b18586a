"""BranchyNet: an early-exit network held as data, a trunk of stages with exit heads after some."""
import copy

from torch import Tensor, nn


class BranchyNet(nn.Module):
    """An early-exit network as data: trunk `stages` run in order; `exits` are heads after stages.

    Exit n is the n-th head in stage order. The last stage always has an exit, the final classifier,
    so a BranchyNet whose only exit is the final one is an ordinary network (a baseline).

    Args:
        stages: trunk segments; stage i consumes stage i-1's output (a tensor, or a tuple where
            several values cross between two stages, as attach_exits makes them).
        exits: {stage index: head}; a head maps that stage's output to logits [B, classes].
        name: the zoo name, e.g. "b_lenet"; B-nets are named "b_<baseline name>".
    """

    def __init__(self, stages: list[nn.Module], exits: dict[int, nn.Module], name: str = "custom"):
        super().__init__()
        if not stages:
            raise ValueError("a BranchyNet needs at least one stage")
        last = len(stages) - 1
        bad = [i for i in exits if not (isinstance(i, int) and 0 <= i <= last)]
        if bad:
            raise ValueError(f"exit keys must be stage indices in [0, {last}], got {bad}")
        if last not in exits:
            raise ValueError(f"the last stage ({last}) must have an exit: the final classifier")
        self.stages = nn.ModuleList(stages)
        # Inserted in stage order, so iterating the dict visits exits in exit order.
        self.exits = nn.ModuleDict({str(i): exits[i] for i in sorted(exits)})
        self.name = name
        self.backbone_frozen = False

    @property
    def exit_stages(self) -> list[int]:
        """The stage index after which each exit sits, ascending."""
        return sorted(int(k) for k in self.exits)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def backbone(self) -> list[nn.Module]:
        """The trunk's stages and the final exit: the network without its early-exit heads."""
        return [*self.stages, self.exits[str(len(self.stages) - 1)]]

    def freeze_backbone(self) -> "BranchyNet":
        """Fixes backbone() so that training changes the early-exit heads only: its parameters
        get requires_grad False, and it stays in eval mode whatever train() says (BatchNorm
        normalises with its running statistics and keeps them, dropout is off), so the heads
        learn from the features inference computes. Returns self."""
        self.backbone_frozen = True
        for module in self.backbone():
            module.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "BranchyNet":
        super().train(mode)
        if self.backbone_frozen:
            for module in self.backbone():
                module.train(False)
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits [B, classes] of every exit, in exit order (for training): the whole trunk runs."""
        logits = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if str(i) in self.exits:
                logits.append(self.exits[str(i)](x))
        return logits

    def forward_to(self, x: Tensor, n: int) -> Tensor:
        """Logits [B, classes] of exit n (0-based), running only the stages before that exit."""
        if not 0 <= n < self.num_exits:
            raise ValueError(f"exit n must be in [0, {self.num_exits - 1}], got {n}")
        stage = self.exit_stages[n]
        for s in self.stages[: stage + 1]:
            x = s(x)
        return self.exits[str(stage)](x)

    def baseline(self) -> "BranchyNet":
        """A deep copy with the same stages and only the final exit: the network without branches.

        Its state_dict keys are a subset of this network's, so the two load each other's weights
        with strict=False; only the branch heads are left out.
        """
        last = str(len(self.stages) - 1)
        stages, head = copy.deepcopy((list(self.stages), self.exits[last]))
        name = self.name.removeprefix("b_")
        return BranchyNet(stages, {int(last): head}, name=name)
