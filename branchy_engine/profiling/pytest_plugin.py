"""A pytest plugin (registered as `branchy` through the pytest11 entry point) that attaches the
engine's exit fractions and cache figures to pytest-benchmark's extra_info, so they land in
`--benchmark-json` beside the timings:

    def test_b_lenet(benchmark, branchy_profile):
        engine = Engine("b_lenet.branchy")
        benchmark(engine, x[0])
        branchy_profile(engine, x)   # extra_info["branchy"]: exits, counters, backend

The samples are run once more, outside the timed rounds, each alone through the instrumented
plan. Cache figures follow --branchy-counters: perf (the default: the CPU's hardware counters
where the kernel grants them, else none and the reason), sim (valgrind's cache simulator on the
first --branchy-sim-samples samples, about a second each), auto (perf, else sim), off.
"""
from typing import Optional

import pytest
import torch

COUNTER_MODES = ("perf", "sim", "auto", "off")


def pytest_addoption(parser):
    group = parser.getgroup("branchy", "branchy-engine figures in pytest-benchmark's extra_info")
    group.addoption("--branchy-counters", default="perf", choices=COUNTER_MODES,
                    help="cache figures attached by the branchy_profile fixture: perf (hardware "
                         "counters where granted; default), sim (valgrind cache simulator), auto "
                         "(perf, else sim), off")
    group.addoption("--branchy-sim-samples", type=int, default=10,
                    help="samples run under the cache simulator per benchmark (default 10)")


def profile_info(engine, x: torch.Tensor, counters: str = "perf", sim_samples: int = 10) -> dict:
    """Exit fractions of the samples x [N, C, H, W] and, for the CPU engine, cache figures per
    inference with the backend that produced them."""
    from branchy_engine.runtime.engine import Engine
    from branchy_engine.profiling import cachesim, cpu
    if counters not in COUNTER_MODES:
        raise ValueError(f"counters must be one of {COUNTER_MODES}, got {counters!r}")
    if x.dim() == 3:
        x = x[None]
    if not isinstance(engine, Engine):  # the GPU engine: exits only
        exits = engine(x).exit.cpu()
        return {"samples": int(x.shape[0]), "exit_percent": _percent(exits, engine.num_exits),
                "counters_backend": "none: cache figures come from the CPU engine"}
    status = cpu.perf_status()
    use_perf = counters in ("perf", "auto") and status.startswith("available")
    raw = cpu.profile_cpu(engine, x.contiguous(), counters=use_perf, warmup=10)
    info = {"samples": int(x.shape[0]), "exit_percent": _percent(raw["exit"], engine.num_exits),
            "mean_us_instrumented": float(raw["total_us"].mean())}
    if "counters" in raw:
        info["counters_backend"] = f"{cpu.PERF_BACKEND}: {raw['counters_status']}"
        info["counters_per_inference"] = {event: float(c["total"].double().mean())
                                          for event, c in raw["counters"].items()}
    elif counters == "sim" or (counters == "auto" and not use_perf):
        sim = cachesim.simulate(engine.path, x[:sim_samples].contiguous(), thresholds=engine.thresholds,
                                kernels="pin:" + engine.choices)
        info["counters_backend"] = f"{sim['backend']} ({sim['samples']} samples; {'; '.join(sim['notes'])})"
        info["counters_per_inference"] = sim["per_inference"]
    else:
        info["counters_backend"] = "off" if counters == "off" else f"none: {status}"
    return info


def _percent(exits: torch.Tensor, num_exits: int) -> list:
    counts = torch.bincount(exits.to(torch.int64), minlength=num_exits).double()
    return (100.0 * counts / counts.sum()).tolist()


@pytest.fixture
def branchy_profile(request, benchmark):
    """branchy_profile(engine, x): runs x through the engine once more, untimed, and puts its exit
    fractions and cache figures into benchmark.extra_info["branchy"]; returns them."""
    mode = request.config.getoption("--branchy-counters")
    sim_samples = request.config.getoption("--branchy-sim-samples")

    def attach(engine, x: torch.Tensor, counters: Optional[str] = None) -> dict:
        info = profile_info(engine, x, counters or mode, sim_samples)
        benchmark.extra_info["branchy"] = info
        return info
    return attach
