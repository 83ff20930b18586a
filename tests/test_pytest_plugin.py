"""The pytest plugin (entry point pytest11 'branchy'): `pytest --benchmark-json` carries the exit
fractions and the cache figures (or why there are none) in each benchmark's extra_info."""
import json
import os
import subprocess
import sys

from branchy_engine.profiling import cpu

BENCH = '''
import torch
from branchy_engine.runtime.engine import Engine
from branchy_engine.export import write_model
from tiny_models import INPUT_SHAPE, tiny_net

def test_tiny(benchmark, branchy_profile, tmp_path):
    path = tmp_path / "tiny.branchy"
    write_model(tiny_net(), path, INPUT_SHAPE, "entropy", [float("inf")])  # all leave at exit 1
    engine = Engine(str(path))
    x = torch.randn(12, *INPUT_SHAPE)
    benchmark(engine, x[0])
    branchy_profile(engine, x)
'''


def run_bench(tmp_path, *options):
    (tmp_path / "test_tiny_bench.py").write_text(BENCH)
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_tiny_bench.py"), "--benchmark-min-rounds=2",
                           f"--benchmark-json={out}", *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (bench,) = json.loads(out.read_text())["benchmarks"]
    return bench["extra_info"]["branchy"]


def test_extra_info_holds_exits_and_the_counter_backend(tmp_path):
    info = run_bench(tmp_path)
    assert info["samples"] == 12 and info["exit_percent"] == [100.0, 0.0]
    if cpu.perf_available():
        assert info["counters_per_inference"]["instructions"] > 0
    else:
        assert info["counters_backend"].startswith("none: perf_event_open(cycles)")
        assert "counters_per_inference" not in info


def test_simulated_counters_when_asked(tmp_path):
    info = run_bench(tmp_path, "--branchy-counters=sim", "--branchy-sim-samples=3")
    assert info["counters_backend"].startswith("callgrind cache simulation (3 samples")
    assert info["counters_per_inference"]["instructions"] > 0


def test_unknown_counter_mode_is_refused(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(tmp_path / "test_x.py"),
                           "--branchy-counters=pmu"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "invalid choice: 'pmu'" in proc.stderr
