"""Early-exit networks: the BranchyNet container, the paper's model zoo, and attach_exits."""
from branchy_engine.models.attach import attach_exits, default_exits, exit_points
from branchy_engine.models.branchy import BranchyNet
from branchy_engine.models.resblock import ResBlock
from branchy_engine.models.zoo import create, names

__all__ = ["BranchyNet", "create", "names", "attach_exits", "default_exits", "exit_points", "ResBlock"]
