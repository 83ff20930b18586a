"""Threshold calibration (layer 3): per-exit outputs collected once on the validation split, then
any threshold vector's accuracy, exit fractions and expected cost without re-running the network;
the Pareto frontier, its knee, or the cheapest thresholds meeting a stated target."""
from branchy_engine.calibrate.choose import Target, choose, frontier, knee
from branchy_engine.calibrate.criteria import CRITERIA, default_grid, exit_taken
from branchy_engine.calibrate.outcome import Outcome, evaluate
from branchy_engine.calibrate.table import ExitTable, collect

__all__ = ["CRITERIA", "ExitTable", "Outcome", "Target", "choose", "collect", "default_grid",
           "evaluate", "exit_taken", "frontier", "knee"]
