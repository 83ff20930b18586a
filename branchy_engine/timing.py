"""Timing at batch 1, shared by the cost measurements, the benchmarks and the demo."""
import os
import statistics
import time
from typing import Callable

WARMUP_SECONDS = 0.2  # the core reaches its steady clock within this; 100 calls of 4 us do not


def warm_up(fn: Callable, calls: int = 100):
    """Calls fn at least `calls` times and for at least WARMUP_SECONDS."""
    start = time.perf_counter()
    done = 0
    while done < calls or time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        done += 1


def median_us(fn: Callable, warmup: int = 100, rounds: int = 31, calls: int = 20) -> float:
    """Median over `rounds` rounds of the mean time of `calls` calls, in microseconds, after
    warm_up(fn, warmup)."""
    warm_up(fn, warmup)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return 1e6 * statistics.median(times)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
