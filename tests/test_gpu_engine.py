"""The GPU engine: its network loader and batching logic on the CPU; every mode on a GPU.

Without a GPU the CUDA tests skip (and fail with BRANCHY_REQUIRE_CUDA=1)."""
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

import branchy_engine as be
from branchy_engine import _C, models
from branchy_engine.export import write_model
from branchy_engine.gpu import GpuEngine
from branchy_engine.gpu.layers import LoadedNet
from branchy_engine.reference import exit_decision_reference

from tiny_models import INPUT_SHAPE, randomize_batch_norm, tiny_net

SHAPES = {"tiny": INPUT_SHAPE, "b_lenet": (1, 28, 28), "b_alexnet": (3, 32, 32), "b_resnet110": (3, 32, 32)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            net = tiny_net() if name == "tiny" else models.create(name).eval()
            randomize_batch_norm(net)
            path = tmp_path_factory.mktemp("gpu") / f"{name}.branchy"
            write_model(net, path, SHAPES[name], "entropy", [0.5] * (net.num_exits - 1))
            cache[name] = (net, str(path))
        return cache[name]
    return get


def reference(net, x, thresholds):
    """The paper's rule on the PyTorch network's logits: (exit, prediction, near-threshold mask)."""
    with torch.no_grad():
        logits = net(x)
    n = x.shape[0]
    exit = torch.full((n,), len(logits) - 1)
    decided = torch.zeros(n, dtype=torch.bool)
    near = torch.zeros(n, dtype=torch.bool)
    for e, t in enumerate(thresholds):
        h = exit_decision_reference(logits[e].cpu(), 0.0)[0]
        near |= ~decided & ((h - t).abs() <= 1e-4)
        leave = ~decided & (h < t)
        exit = torch.where(leave, e, exit)
        decided |= leave
    prediction = torch.stack([z.argmax(1).cpu() for z in logits], 1)[torch.arange(n), exit]
    return exit, prediction, near


def median_thresholds(net, x):
    with torch.no_grad():
        return [float(exit_decision_reference(z.cpu(), 0.0)[0].median()) for z in net(x)[:-1]]


@pytest.mark.parametrize("name", list(SHAPES))
def test_loaded_network_equals_the_original(exported, name):
    net, path = exported(name)
    loaded = LoadedNet(_C.load_model_ops(path)).eval()
    x = torch.randn(3, *SHAPES[name])
    with torch.no_grad():
        for got, want in zip(loaded(x), net(x)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
@pytest.mark.parametrize("name", ["tiny", "b_alexnet"])
def test_batching_logic_on_the_cpu(exported, name, policy):
    net, path = exported(name)
    x = torch.randn(23, *SHAPES[name], generator=torch.Generator().manual_seed(5))
    thresholds = median_thresholds(net, x)
    engine = GpuEngine(path, device="cpu", mode="eager", thresholds=thresholds, max_batch=32, policy=policy)
    out = engine(x)
    exit, prediction, near = reference(net, x, thresholds)
    assert len(set(exit.tolist())) > 1, "the test needs mixed exits"
    assert torch.equal(out.exit[~near], exit[~near])
    assert torch.equal(out.prediction[~near], prediction[~near])
    singles = [engine(s) for s in x]
    assert out.exit.tolist() == [s.exit for s in singles]
    assert engine.stats()["samples"] == 2 * 23


def test_engine_device_switch_and_errors(exported):
    _, path = exported("tiny")
    assert isinstance(be.Engine(path), be.Engine)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GpuEngine(path, device="cpu", mode="graphs")
    with pytest.raises(ValueError, match="mode must be one of"):
        GpuEngine(path, device="cpu", mode="fast")
    with pytest.raises(ValueError, match="policy must be one of"):
        GpuEngine(path, device="cpu", mode="eager", policy="some")
    engine = GpuEngine(path, device="cpu", mode="eager", max_batch=4)
    with pytest.raises(ValueError, match="batch 5 is larger than max_batch 4"):
        engine(torch.randn(5, *INPUT_SHAPE))
    with pytest.raises(ValueError, match="got \\[2, 5, 6\\]"):
        engine(torch.randn(2, 5, 6))
    with pytest.raises(TypeError, match="float32"):
        engine(torch.randn(*INPUT_SHAPE).double())
    with pytest.raises(ValueError, match="thresholds: expected 1"):
        engine.set_thresholds([0.1, 0.2])
    with pytest.raises(ValueError, match="not NaN"):
        engine.set_thresholds([math.nan])
    assert engine(torch.randn(4, *INPUT_SHAPE)).exit.shape == (4,)  # still usable


def test_thresholds_change_without_rebuilding(exported):
    _, path = exported("b_lenet")
    engine = GpuEngine(path, device="cpu", mode="eager")
    x = torch.randn(8, 1, 28, 28)
    engine.set_thresholds([math.inf])
    assert engine(x).exit.tolist() == [0] * 8
    engine.set_thresholds([0.0])
    assert engine(x).exit.tolist() == [1] * 8
    assert engine.thresholds == [0.0]


# ---- on a GPU ----

@pytest.mark.parametrize("mode", ["eager", "graphs", "conditional"])
@pytest.mark.parametrize("name", ["tiny", "b_lenet", "b_alexnet", "b_resnet110"])
def test_every_mode_matches_the_model_on_a_gpu(exported, cuda, name, mode):
    net, path = exported(name)
    x = torch.randn(16, *SHAPES[name], generator=torch.Generator().manual_seed(7))
    thresholds = median_thresholds(net, x)
    engine = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=16)
    if mode == "conditional":
        assert engine.mode == "conditional", engine.fallback_reason
    exit, prediction, near = reference(net, x, thresholds)
    singles = [engine(s.cuda()) for s in x]
    got_exit = torch.tensor([s.exit for s in singles])
    got_pred = torch.tensor([s.prediction for s in singles])
    assert torch.equal(got_exit[~near], exit[~near]) and torch.equal(got_pred[~near], prediction[~near])
    batched = engine(x.cuda())  # per-sample exits with compaction, bucketed graphs
    assert torch.equal(batched.exit.cpu()[~near], exit[~near])
    assert torch.equal(batched.prediction.cpu()[~near], prediction[~near])
    whole = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=16, policy="whole-batch")(x.cuda())
    assert torch.equal(whole.exit, batched.exit)
    # Thresholds changed between replays, and many replays.
    engine.set_thresholds([math.inf] * (net.num_exits - 1))
    for _ in range(50):
        assert engine(x[0].cuda()).exit == 0
    assert engine(x.cuda()).exit.tolist() == [0] * 16
    engine.set_thresholds(thresholds)
    assert [engine(s.cuda()).exit for s in x] == got_exit.tolist()


def test_bad_input_on_a_gpu_leaves_the_engine_usable(exported, cuda):
    _, path = exported("b_lenet")
    engine = be.Engine(path, device="cuda", mode="graphs", max_batch=8)
    with pytest.raises(ValueError, match="must be on cuda"):
        engine(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="batch 9 is larger than max_batch 8"):
        engine(torch.randn(9, 1, 28, 28, device="cuda"))
    with pytest.raises(TypeError, match="float32"):
        engine(torch.randn(1, 28, 28, device="cuda").half())
    assert engine(torch.randn(1, 28, 28, device="cuda")).exit in (0, 1)


@pytest.mark.parametrize("tool", ["memcheck", "racecheck"])
def test_compute_sanitizer_reports_nothing(exported, cuda, tool, tmp_path):
    sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not os.path.exists(sanitizer):
        pytest.skip("compute-sanitizer not installed")
    _, path = exported("b_lenet")
    script = tmp_path / "run.py"
    script.write_text(
        "import torch, branchy_engine as be\n"
        f"x = torch.randn(16, 1, 28, 28, device='cuda')\n"
        f"for mode in ('eager', 'graphs', 'conditional'):\n"
        f"    e = be.Engine({path!r}, device='cuda', mode=mode, thresholds=[0.3], max_batch=16)\n"
        f"    e(x[0]); e(x)\n"
        f"torch.cuda.synchronize()\n")
    run = subprocess.run([sanitizer, "--tool", tool, "--error-exitcode", "9", sys.executable, str(script)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
