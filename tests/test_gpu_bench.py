"""bench/gpu_engine.py without a GPU: its bars from constructed records, quick runs included, and
its refusal to measure where no GPU is; the scripts bench/gpu_check.sh runs by path, uninstalled."""
import importlib.util
import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")
sys.path.insert(0, BENCH)
spec = importlib.util.spec_from_file_location("bench_gpu_engine", os.path.join(BENCH, "gpu_engine.py"))
gpu_engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_engine)


def records(lenet=(300.0, 60.0, 40.0), resnet=(3000.0, 1500.0, 1400.0), throughput=(9000.0, 5000.0)):
    def batch1(eager, graphs, conditional):
        return {m: {"paths": [t], "expected": t} for m, t in
                (("eager", eager), ("graphs", graphs), ("conditional", conditional))}
    return {"lenet": {"batch1_us": batch1(*lenet)},
            "resnet110": {"batch1_us": batch1(*resnet),
                          f"batch{gpu_engine.BATCH}": {"samples_per_s": dict(zip(("per-sample", "whole-batch"), throughput))}}}


def test_the_bars_of_issue_12():
    bars = {what.split(":")[0] + what.split(":")[1][:12]: (value, ok) for what, value, _, ok in gpu_engine.bars(records())}
    assert len(bars) == 4 and all(ok for _, ok in bars.values())
    values = sorted(round(v, 3) for v, _ in bars.values())
    assert values == sorted([1.5, 5.0, round(1500 / 1400, 3), 1.8])


@pytest.mark.parametrize("bad, failing", [
    ({"lenet": (300.0, 60.0, 50.0)}, "graphs / conditional"),       # conditional only 1.2x
    ({"lenet": (150.0, 60.0, 40.0)}, "eager loop / graphs"),         # graphs only 2.5x
    ({"resnet": (3000.0, 1500.0, 1600.0)}, "B-ResNet-110 batch 1"),  # conditional slower
    ({"throughput": (7000.0, 5000.0)}, "throughput"),                # per-sample only 1.4x
])
def test_each_bar_can_fail(bad, failing):
    failed = [what for what, _, _, ok in gpu_engine.bars(records(**bad)) if not ok]
    assert len(failed) == 1 and failing in failed[0], failed


def test_bars_cover_only_the_networks_measured():
    only_lenet = {"lenet": records()["lenet"]}
    assert [w.split(" ")[0] for w, *_ in gpu_engine.bars(only_lenet)] == ["B-LeNet", "B-LeNet"]


def test_without_a_gpu_nothing_is_measured(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert gpu_engine.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and os.listdir(tmp_path) == []


@pytest.mark.parametrize("argument", ["3", "--dryrun", ""])
def test_the_gpu_check_refuses_an_unknown_phase(argument):
    import subprocess
    script = os.path.join(BENCH, "gpu_check.sh")
    run = subprocess.run(["bash", script] + ([argument] if argument else []), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert f"expected 1, 2 or --dry-run, got '{argument}'" in run.stderr and "--prepare" in run.stderr


@pytest.mark.parametrize("script, argv, code", [("bench/gpu_engine.py", ["--help"], 0),
                                                ("tests/gpu/sanitize_kernels.py", [], 3)])
def test_the_scripts_the_gpu_check_runs_by_path_need_no_install(tmp_path, script, argv, code):
    # The GPU machine builds the checkout in place and installs nothing. python -S reads no .pth
    # file, so an editable install of branchy_engine is not seen; torch's folder is given instead.
    if code == 3 and torch.cuda.is_available():
        pytest.skip("a GPU is here: the workload would run (exit 3 says CUDA is unusable)")
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = os.path.dirname(os.path.dirname(torch.__file__))
    run = subprocess.run([sys.executable, "-S", os.path.join(root, script), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": site})
    assert run.returncode == code, run.stderr[-2000:]
