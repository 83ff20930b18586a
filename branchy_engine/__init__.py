"""branchy_engine: BranchyNet early-exit networks, trained in PyTorch, served by a compiled engine."""
from branchy_engine.runtime.engine import Engine
from branchy_engine.runtime.ops import cpu_isa, exit_decision, exit_decision_maxprob, set_cpu_isa

__version__ = "0.1.0"

__all__ = ["Engine", "exit_decision", "exit_decision_maxprob", "cpu_isa", "set_cpu_isa", "__version__"]
