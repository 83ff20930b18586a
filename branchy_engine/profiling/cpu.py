"""The CPU engine, profiled: each sample alone (batch 1) through Plan::run_instrumented, with a
timer around every stage and exit head and, where the kernel allows, the thread's hardware counters
(perf_event_open) switched on around each inference call and nowhere else."""
from typing import Callable, Optional

import torch

from branchy_engine.runtime.engine import Engine
from branchy_engine.runtime.ops import _C

PERF_BACKEND = "perf_event_open (hardware counters, user space, the calling thread)"
CHUNK = 256  # samples per call into C++, between progress updates


def perf_status() -> str:
    """'available' (with notes on events left out), or why this thread cannot count."""
    return _C.perf_counters_status()


def perf_available() -> bool:
    return perf_status().startswith("available")


def profile_cpu(engine: Engine, x: torch.Tensor, counters: bool = False, warmup: int = 50,
                rounds: int = 1, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Runs every sample of x [N, C, H, W] alone through the engine's plan, on this thread.

    Returns tensors: prediction, exit (0-based), score [N]; total_us [N]; stage_us [N, S] and
    exit_us [N, E] (0 where the part did not run); with counters=True and counters available,
    counters = {event: {"total": [N], "stage": [N, S], "exit": [N, E]}}; counters_status says
    whether they were, and why not. `warmup` calls on the first sample come first, unrecorded.
    With rounds > 1 the samples are run that many times over, one chunk at a time, and each
    figure is the sample's median over the rounds (a 2-core machine's noise, damped).
    """
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"profile takes samples [N, C, H, W] with N > 0, got {list(x.shape)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    context = engine._context()
    x = x.contiguous()
    for _ in range(-(-warmup // 10)):  # warm-up calls, in batches of 10
        _C.profile_plan(engine.plan, context, x[:1].expand(10, *x.shape[1:]).contiguous(), False)
    parts = []
    for start in range(0, x.shape[0], CHUNK):
        chunk = x[start:start + CHUNK]
        parts.append(_median([_C.profile_plan(engine.plan, context, chunk, counters) for _ in range(rounds)]))
        if progress:
            progress(min(start + CHUNK, x.shape[0]))
    out = {key: torch.cat([p[key] for p in parts])
           for key in ("prediction", "exit", "score", "total_us", "stage_us", "exit_us")}
    out["counters_status"] = parts[0]["counters_status"]
    if "counters" in parts[0]:
        out["counters"] = {event: {k: torch.cat([p["counters"][event][k] for p in parts])
                                   for k in ("total", "stage", "exit")}
                           for event in parts[0]["counters"]}
    out["backend"] = ("steady_clock around each stage and exit head, in C++" +
                      (f"; each sample's median of {rounds} rounds" if rounds > 1 else ""))
    out["rounds"] = rounds
    return out


def _median(runs: list) -> dict:
    """One run's figures from several runs of the same samples: the per-sample medians (the
    decisions are the same in every run)."""
    first = dict(runs[0])
    if len(runs) == 1:
        return first
    for key in ("total_us", "stage_us", "exit_us"):
        first[key] = torch.stack([r[key] for r in runs]).median(dim=0).values
    if "counters" in first:
        first["counters"] = {event: {k: torch.stack([r["counters"][event][k] for r in runs]).median(dim=0).values
                                     for k in ("total", "stage", "exit")}
                             for event in first["counters"]}
    return first
