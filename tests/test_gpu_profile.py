"""The GPU profiler (CUDA events and NVTX ranges per stage and exit) and its ncu workload entry
point. Without a GPU only the errors, the raw-file reader and --help run; the profile itself
skips (and fails with BRANCHY_REQUIRE_CUDA=1)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from branchy_engine.export import write_model
from branchy_engine.gpu import GpuEngine
from branchy_engine.profiling import gpu
from branchy_engine.reference import exit_decision_reference

from tiny_models import INPUT_SHAPE, tiny_net


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-exit model file and samples with thresholds that send some samples to each exit."""
    net = tiny_net()
    x = torch.randn(24, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        entropy = exit_decision_reference(net(x)[0], 0.0)[0]
    path = tmp_path_factory.mktemp("profile") / "tiny.branchy"
    write_model(net, path, INPUT_SHAPE, "entropy", [float(entropy.median())])
    return str(path), x


def test_profile_needs_a_cuda_gpu(tiny, monkeypatch):
    path, x = tiny
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="^profile --device cuda needs a CUDA GPU; torch sees none$"):
        gpu.profile_gpu(path, x)
    with pytest.raises(ValueError, match="needs a CUDA device, got 'cpu'"):
        gpu.profile_gpu(path, x, device="cpu")


def test_workload_help():
    run = subprocess.run([sys.executable, "-m", "branchy_engine.profiling.gpu", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for option in ("--raw", "--samples", "--thresholds", "--warmup", "NVTX"):
        assert option in run.stdout


def test_read_raw(tmp_path):
    data = np.arange(3 * 2 * 6 * 6, dtype="<f4").reshape(3, 2, 6, 6)
    path = tmp_path / "x.f32"
    data.tofile(path)
    got = gpu.read_raw(str(path), 2, INPUT_SHAPE)
    assert got.dtype == torch.float32 and got.shape == (2, *INPUT_SHAPE)
    assert torch.equal(got, torch.from_numpy(data[:2].astype(np.float32)))
    with pytest.raises(ValueError, match="holds 3 samples of \\[2, 6, 6\\], fewer than the 4 asked for"):
        gpu.read_raw(str(path), 4, INPUT_SHAPE)
    with open(path, "ab") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(ValueError, match="not a whole number of float32 samples of \\[2, 6, 6\\] \\(288 bytes"):
        gpu.read_raw(str(path), 1, INPUT_SHAPE)


def test_workload_errors_are_one_line(tiny, tmp_path, monkeypatch, capsys):
    path, x = tiny
    raw = tmp_path / "x.f32"
    x.numpy().tofile(raw)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([path, "--raw", str(raw), "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("error: profile --device cuda needs a CUDA GPU; torch sees none")
    assert gpu.main([path, "--raw", str(raw), "--samples", "25"]) == 2
    assert "holds 24 samples" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.main([path, "--raw", str(raw), "--samples", "0"])


# ---- on a GPU ----

def test_profile_on_a_gpu(tiny, cuda):
    path, x = tiny
    done = []
    result = gpu.profile_gpu(path, x, warmup=3, progress=done.append)
    n, exits = x.shape[0], 2
    assert done == list(range(1, n + 1))
    assert result["backend"] == "cuda events" and result["device"] == torch.cuda.get_device_name()
    for key, dtype, shape in (("prediction", torch.int64, (n,)), ("exit", torch.int64, (n,)),
                              ("score", torch.float32, (n,)), ("total_us", torch.float64, (n,)),
                              ("stage_us", torch.float64, (n, exits)), ("exit_us", torch.float64, (n, exits))):
        value = result[key]
        assert value.dtype == dtype and tuple(value.shape) == shape and value.device.type == "cpu", key

    engine = GpuEngine(path, device="cuda", mode="eager")
    singles = [engine(s.cuda()) for s in x]
    assert result["exit"].tolist() == [s.exit for s in singles]
    assert len(set(result["exit"].tolist())) == exits, "the test needs samples at every exit"
    assert result["prediction"].tolist() == [s.prediction for s in singles]
    torch.testing.assert_close(result["score"], torch.tensor([s.score for s in singles]))

    ran = torch.arange(exits)[None, :] <= result["exit"][:, None]  # [N, E]: part e ran
    for key in ("stage_us", "exit_us"):
        assert bool((result[key][ran] > 0).all()) and bool((result[key][~ran] == 0).all()), key
    assert bool((result["total_us"] > 0).all())


def test_profile_checks_its_inputs_on_a_gpu(tiny, cuda):
    path, x = tiny
    with pytest.raises(TypeError, match="float32"):
        gpu.profile_gpu(path, x.double(), warmup=0)
    with pytest.raises(ValueError, match="x must be \\[N, C, H, W\\] = \\[N, 2, 6, 6\\] with N >= 1, got \\[2, 6,"):
        gpu.profile_gpu(path, x[0], warmup=0)
    with pytest.raises(ValueError, match="got \\[1, 3, 6, 6\\]"):
        gpu.profile_gpu(path, torch.randn(4, 3, 6, 6), warmup=0)
    with pytest.raises(ValueError, match="thresholds: expected 1"):
        gpu.profile_gpu(path, x, thresholds=[0.1, 0.2], warmup=0)
    everyone_leaves = gpu.profile_gpu(path, x[:3], thresholds=[float("inf")], warmup=0)
    assert everyone_leaves["exit"].tolist() == [0, 0, 0]
    assert bool((everyone_leaves["stage_us"][:, 1] == 0).all())


def test_workload_on_a_gpu(tiny, cuda, tmp_path, capsys):
    path, x = tiny
    raw = tmp_path / "x.f32"
    x.numpy().tofile(raw)
    assert gpu.main([path, "--raw", str(raw), "--samples", "5", "--warmup", "0", "--thresholds", "inf"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"5 samples of {path} on {torch.cuda.get_device_name()}")
    assert "samples per exit [5, 0]" in out
