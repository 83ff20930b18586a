"""The GPU profiler (CUDA events and NVTX ranges per stage and exit, in each GpuEngine mode) and
its ncu workload entry point. Without a GPU only the errors, the option checks, the raw-file
reader, --help and `branchy profile --device cuda` over a stand-in profiler run; the profile
itself skips (and fails with BRANCHY_REQUIRE_CUDA=1)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from branchy_engine.commands.cli import main as branchy
from branchy_engine.export import write_model
from branchy_engine.runtime.gpu import GpuEngine
from branchy_engine.runtime.gpu.engine import MODES
from branchy_engine.profiling import gpu, ncu, profile
from branchy_engine.runtime.reference import exit_decision_reference

from fake_data import write_fashion_mnist
from test_ncu import CAPTURED, DATA, fake_ncu
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
    with pytest.raises(ValueError, match="^mode must be one of eager, graphs, conditional, got 'fast'$"):
        gpu.profile_gpu(path, x, mode="fast")


def test_workload_help():
    run = subprocess.run([sys.executable, "-m", "branchy_engine.profiling.gpu", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for option in ("--raw", "--samples", "--thresholds", "--warmup", "--mode", "NVTX"):
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


# ---- `branchy profile --device cuda --gpu-mode`, its checks and its report ----

@pytest.mark.parametrize("argv, says", [
    (["--gpu-mode", "graphs"], "--gpu-mode graphs picks the GPU engine's mode: add --device cuda"),
    (["--gpu-mode", "eager", "--device", "cpu"], "--gpu-mode eager picks the GPU engine's mode"),
], ids=["no-device", "device-cpu"])
def test_gpu_mode_needs_device_cuda(tiny, tmp_path, capsys, argv, says):
    path, _ = tiny
    assert branchy(["profile", path, "--out", str(tmp_path)] + argv) == 2
    assert says in capsys.readouterr().err


def test_gpu_mode_is_one_of_the_engine_modes(tiny, tmp_path, capsys):
    path, _ = tiny
    with pytest.raises(SystemExit) as e:
        branchy(["profile", path, "--device", "cuda", "--gpu-mode", "fast"])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--gpu-mode must be one of eager, graphs, conditional, got 'fast'"):
        profile.check(profile.ProfileOptions(model=path, device="cuda", gpu_mode="fast"))
    assert profile.GPU_MODE in MODES


@pytest.fixture(scope="module")
def b_lenet_data(tmp_path_factory):
    """A directory of Fashion-MNIST files in the real format, for the shipped b_lenet."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=10, n_test=12)


def stand_in_profile_gpu(calls, fallback=""):
    """A profile_gpu without a GPU: every sample leaves at exit 0 after 5 us; records its mode."""
    def profile_gpu(model, x, thresholds=None, device="cuda", warmup=20, progress=None, mode="eager"):
        calls.append(mode)
        ran = "graphs" if fallback else mode
        n, timed = x.shape[0], ran != "conditional"
        parts = torch.full((n, 2), math.nan, dtype=torch.float64)
        if timed:
            parts[:, 0], parts[:, 1] = 2.0, 0.0
        progress(n)
        return {"prediction": torch.zeros(n, dtype=torch.int64), "exit": torch.zeros(n, dtype=torch.int64),
                "score": torch.zeros(n), "total_us": torch.full((n,), 5.0, dtype=torch.float64),
                "stage_us": parts, "exit_us": parts.clone(), "backend": gpu.BACKEND, "device": "Stand-in GPU",
                "mode": ran, "fallback_reason": fallback, "part_timing": gpu.PART_TIMING[ran]}
    return profile_gpu


@pytest.mark.parametrize("argv, asked, ran, fallback", [
    ([], "graphs", "graphs", ""),
    (["--gpu-mode", "conditional"], "conditional", "conditional", ""),
    (["--gpu-mode", "conditional"], "conditional", "graphs", "this PyTorch has no begin_capture_to_if_node"),
], ids=["default", "conditional", "conditional-fallback"])
def test_profile_threads_the_gpu_mode_and_reports_it(b_lenet_data, tmp_path, monkeypatch, capsys,
                                                     argv, asked, ran, fallback):
    calls = []
    monkeypatch.setattr(gpu, "profile_gpu", stand_in_profile_gpu(calls, fallback))
    monkeypatch.setattr(ncu, "find_ncu", lambda: fake_ncu(tmp_path / "ncu", CAPTURED))
    out = tmp_path / "out"
    assert branchy(["profile", "b_lenet", "--thresholds", "0.5", "--device", "cuda", "--ncu",
                    "--samples", "12", "--data-dir", b_lenet_data, "--out", str(out)] + argv) == 0
    assert calls == [asked]
    text = capsys.readouterr().out
    record = json.loads((out / "profile-b_lenet-cuda.json").read_text())  # no NaN in it
    assert record["gpu_mode"] == {"asked": asked, "ran": ran, "fallback_reason": fallback,
                                  "part_timing": gpu.PART_TIMING[ran]}
    assert record["timing"] == f"cuda events, GpuEngine mode {ran}"
    assert f"parts: {gpu.PART_TIMING[ran]}" in text
    assert (f"mode {asked} fell back to {ran}: {fallback}" in text) == bool(fallback)
    assert record["ncu_run"]["note"] == "profiled 8 of 12 samples under ncu, clock control base"
    assert "Nsight Compute (profiled 8 of 12 samples under ncu, clock control base;" in text
    assert "\n  stage 1 " in text and "\n  exit 2 " in text and "stage0" not in text  # numbered from 1
    assert record["ncu"] == ncu.parse_ncu_csv(DATA.read_text())
    if ran == "conditional":
        assert all(part["us"] is None for part in record["stages"] + record["exit_heads"])
        assert "stages" not in record["files"]
        assert "stage 1        12         -        -        -" in text
    else:
        assert record["stages"][0]["us"]["mean"] == 2.0 and "stages" in record["files"]


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


@pytest.mark.parametrize("mode", MODES)
def test_profile_each_mode_on_a_gpu(tiny, cuda, mode):
    path, x = tiny
    result = gpu.profile_gpu(path, x, warmup=2, mode=mode)
    n, exits = x.shape[0], 2
    ran = result["mode"]
    assert ran == mode or (mode == "conditional" and ran == "graphs" and result["fallback_reason"])
    assert result["fallback_reason"] == "" or ran != mode
    assert result["part_timing"] == gpu.PART_TIMING[ran]
    engine = GpuEngine(path, device="cuda", mode=mode)
    singles = [engine(s.cuda()) for s in x]
    assert result["exit"].tolist() == [s.exit for s in singles]
    assert len(set(result["exit"].tolist())) == exits, "the test needs samples at every exit"
    assert result["prediction"].tolist() == [s.prediction for s in singles]
    torch.testing.assert_close(result["score"], torch.tensor([s.score for s in singles]))
    assert bool((result["total_us"] > 0).all())
    ran_part = torch.arange(exits)[None, :] <= result["exit"][:, None]  # [N, E]: part e ran
    for key in ("stage_us", "exit_us"):
        assert result[key].shape == (n, exits) and result[key].dtype == torch.float64
        if ran == "conditional":
            assert bool(result[key].isnan().all()), key
        else:
            assert bool((result[key][ran_part] > 0).all()) and bool((result[key][~ran_part] == 0).all()), key


def test_profile_command_in_each_mode_on_a_gpu(b_lenet_data, cuda, tmp_path, capsys):
    for mode in MODES:
        out = tmp_path / mode
        assert branchy(["profile", "b_lenet", "--thresholds", "0.5", "--device", "cuda", "--gpu-mode", mode,
                        "--samples", "12", "--data-dir", b_lenet_data, "--out", str(out)]) == 0
        record = json.loads((out / "profile-b_lenet-cuda.json").read_text())
        assert record["gpu_mode"]["asked"] == mode and record["latency_us"]["mean"] > 0
        assert f"parts: {record['gpu_mode']['part_timing']}" in capsys.readouterr().out


def test_workload_in_graphs_mode_on_a_gpu(tiny, cuda, tmp_path, capsys):
    path, x = tiny
    raw = tmp_path / "x.f32"
    x.numpy().tofile(raw)
    assert gpu.main([path, "--raw", str(raw), "--samples", "4", "--warmup", "1", "--mode", "graphs"]) == 0
    assert "(cuda events, mode graphs)" in capsys.readouterr().out
