"""Per-segment costs measured with the CPU engine: the costs file `branchy calibrate --costs`
reads (branchy_engine/calibrate/costs.py defines the format and the segments).

Segment e costs path(e) - path(e-1), where path(e) is the engine's time, in a C++ loop at batch 1,
for a sample that leaves at exit e (earlier heads and decisions included).
"""
import os
import statistics
import tempfile

import torch

from branchy_engine.calibrate.costs import Costs, machine, today
from branchy_engine.runtime.engine import Engine, thresholds_for_exit
from branchy_engine.export import write_model
from branchy_engine.timing import warm_up


def measure_engine(net, input_shape, threads: int = 1, warmup: int = 100, rounds: int = 31,
                   calls: int = 20) -> Costs:
    """Costs of `net` (a BranchyNet) and of its baseline, timed through the engine."""
    net = net.eval()
    x = torch.rand(*input_shape)

    def median(engine):
        warm_up(lambda: engine.time_run(x, warmup=0, rounds=1, calls=calls), 1)
        return statistics.median(engine.time_run(x, warmup=warmup, rounds=rounds, calls=calls))

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "net.branchy")
        base_path = os.path.join(directory, "baseline.branchy")
        write_model(net, path, input_shape, "entropy", [0.0] * (net.num_exits - 1))
        write_model(net.baseline(), base_path, input_shape)
        # The kernels measured once; each path's engine makes the same choices, pinned.
        choices = "pin:" + Engine(path, threads=threads).choices
        paths = [median(Engine(path, threads=threads, thresholds=thresholds_for_exit(net.num_exits, e),
                               kernels=choices))
                 for e in range(net.num_exits)]
        baseline = median(Engine(base_path, threads=threads))
    # Timing noise can make a longer path measure a hair faster; a segment never costs less than 0.
    segments = [paths[0]] + [max(0.0, b - a) for a, b in zip(paths, paths[1:])]
    method = (f"branchy-engine CPU runtime timed in a C++ loop, batch 1, {threads} thread(s); each "
              f"path the median of {rounds} rounds of {calls} calls after {warmup} warm-up calls; "
              f"segment e = path(e) - path(e-1); path(e) includes earlier exits' heads and decisions")
    return Costs(net.name, "us", segments, baseline, method, machine(), today())
