"""pytest-benchmark: B-LeNet's paths and LeNet through the engine and its peers, batch 1, one thread.

The full comparison (every network, 1 and 2 threads, the bars) is bench/cpu_engine.py; this file
keeps the peers runnable in CI (--benchmark-disable) and gives per-call statistics.
"""
import pytest
import torch

import peers

CASES = [("path", 0), ("path", 1), ("baseline", None)]


@pytest.mark.parametrize("peer", ["engine", "onnxruntime", "eager"])
@pytest.mark.parametrize("kind, e", CASES, ids=["exit1-path", "exit2-path", "baseline"])
def test_lenet(benchmark, lenet_network, kind, e, peer):
    torch.set_num_threads(1)
    runners, _ = (lenet_network.runners(e, 1) if kind == "path" else lenet_network.baseline_runners(1))
    benchmark.group = f"b_lenet {kind}" + (f" exit {e + 1}" if e is not None else "") + " (cpu, 1 thread)"
    benchmark.extra_info.update(impl=peer, threads=1, batch=1)
    benchmark(runners[peer])
