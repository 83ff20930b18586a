"""pytest-benchmark: B-LeNet's paths and LeNet through the engine and its peers, batch 1, one thread.

The full comparison (every network, 1 and 2 threads, the bars) is bench/cpu_engine.py; this file
keeps the peers runnable in CI (--benchmark-disable) and gives per-call statistics.
"""
import pytest
import torch

import branchy_engine as be
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


@pytest.fixture(scope="module")
def b_lenet_on_test_data(tmp_path_factory):
    """The shipped B-LeNet exported with threshold 0.5, and the first 200 Fashion-MNIST test
    samples prepared as in training."""
    import os
    from branchy_engine.data import engine_samples
    from branchy_engine.export import export
    from branchy_engine.profiling.profile import SHIPPED
    path = str(tmp_path_factory.mktemp("bench") / "b_lenet.branchy")
    export(os.path.join(SHIPPED, "b_lenet.pt"), path, thresholds=[0.5])
    engine = be.Engine(path, threads=1)
    x, _ = engine_samples(engine, limit=200)
    return engine, x


def test_b_lenet_test_split(benchmark, branchy_profile, b_lenet_on_test_data):
    """200 test samples one at a time (batch 1) per round: the expected time per sample over the
    data, with exit fractions and cache figures in extra_info["branchy"]."""
    torch.set_num_threads(1)
    engine, x = b_lenet_on_test_data
    samples = list(x.unbind(0))
    benchmark.group = "b_lenet test split, T = 0.5 (cpu, 1 thread)"
    benchmark.extra_info.update(impl="engine", threads=1, batch=1, samples_per_round=len(samples))
    benchmark(lambda: [engine(s) for s in samples])
    info = branchy_profile(engine, x)
    assert sum(info["exit_percent"]) == pytest.approx(100.0)
