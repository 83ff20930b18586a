"""Cache behaviour without hardware counters: the CPU engine's inference calls run under valgrind's
cache simulator (callgrind --cache-sim=yes), collecting only inside Plan::run.

The workload is build/branchy-run (the C++ runtime, no Python) on the same samples, thresholds and
kernel choices ("pin:" + Engine.choices) as the engine being profiled; warm-up calls go through
Plan::run_instrumented, which the collection leaves out, and run every sample once (at least
`warmup` calls), so the figures are steady state. The simulated caches take the host's
geometry (sysfs), or the caller's. simulate_points runs several sets of thresholds (a sweep's
points) in one valgrind process, a plan and a warm-up each, each point's counts dumped apart.

Caveats, reported with every figure: valgrind 3.19 does not emulate AVX-512, so under it the own
kernels and oneDNN take their AVX2 paths (the same data, fewer wider accesses natively); the
simulated LL is one inclusive level (the host's last one), with no prefetcher.
"""
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
TOGGLE = "branchy::Plan::run(*"  # Plan::run and what it calls, nothing else
WARMUP = 5  # calls before collection at least; every simulated sample runs once (steady state)
BACKEND = "callgrind cache simulation"


class SimulatorUnavailable(RuntimeError):
    """valgrind or build/branchy-run is missing."""


@dataclass(frozen=True)
class Cache:
    size: int   # bytes
    assoc: int  # ways
    line: int   # bytes

    @property
    def sets(self) -> int:
        return self.size // (self.assoc * self.line)

    def valgrind(self) -> str:
        return f"{self.size},{self.assoc},{self.line}"

    def text(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size < 1 << 20 else f"{self.size // (1 << 20)} MiB"
        return f"{size}, {self.assoc}-way, {self.line} B lines"


def parse_cache(text: str) -> Cache:
    """'SIZE,ASSOC,LINE' in bytes (valgrind's spelling), e.g. '49152,12,64'."""
    try:
        size, assoc, line = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"a cache is SIZE,ASSOC,LINE in bytes (e.g. 49152,12,64), got {text!r}") from None
    if min(size, assoc, line) <= 0 or size % (assoc * line):
        raise ValueError(f"cache {text!r}: size must be a positive multiple of assoc * line")
    return Cache(size, assoc, line)


def _size_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"unreadable cache size {text!r}")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]


def host_caches(sysfs: str = SYSFS_CACHE) -> Dict[str, Cache]:
    """The host's I1, D1 and last-level caches from sysfs: {'I1': Cache, 'D1': ..., 'LL': ...}."""
    found = {}
    for index in sorted(Path(sysfs).glob("index*")):
        def read(name):
            return (index / name).read_text().strip()
        try:
            level, kind = int(read("level")), read("type")
            cache = Cache(_size_bytes(read("size")), int(read("ways_of_associativity")),
                          int(read("coherency_line_size")))
        except (OSError, ValueError):
            continue
        if level == 1 and kind in ("Data", "Instruction"):
            found["D1" if kind == "Data" else "I1"] = cache
        elif kind in ("Unified", "Data") and level > found.get("_ll_level", 1):
            found["LL"], found["_ll_level"] = cache, level
    found.pop("_ll_level", None)
    missing = [k for k in ("I1", "D1", "LL") if k not in found]
    if missing:
        raise RuntimeError(f"cannot read the {', '.join(missing)} cache geometry from {sysfs}; "
                           f"give it with --cache-{missing[0].lower()} SIZE,ASSOC,LINE")
    return found


def simulable(cache: Cache) -> Cache:
    """valgrind needs a power-of-two number of sets: keep the line and the number of ways and
    round the sets down (a 30 MiB 20-way LL becomes 20 MiB), so the change stays visible."""
    sets = cache.sets
    if sets & (sets - 1) == 0:
        return cache
    return Cache((1 << (sets.bit_length() - 1)) * cache.assoc * cache.line, cache.assoc, cache.line)


def parse_callgrind(text: str) -> Dict[str, int]:
    """Event totals of a callgrind output file: {'Ir': ..., 'Dr': ..., 'D1mr': ..., ...}."""
    events = totals = None
    for line in text.splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:"):
            totals = [int(v) for v in line.split()[1:]]
        elif line.startswith("summary:") and totals is None:
            summary = [int(v) for v in line.split()[1:]]
            totals = summary + [0] * (len(events or []) - len(summary))
    if events is None or totals is None:
        raise ValueError("not a callgrind output file: no 'events:' and 'totals:' lines")
    if len(totals) > len(events):
        raise ValueError(f"callgrind totals have {len(totals)} values for {len(events)} events")
    counts = dict(zip(events, totals + [0] * (len(events) - len(totals))))
    needed = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
    missing = [e for e in needed if e not in counts]
    if missing:
        raise ValueError(f"callgrind output lacks the events {missing}: was --cache-sim=yes given?")
    return counts


def per_inference(counts: Dict[str, int], samples: int) -> Dict[str, float]:
    """Instructions, data accesses and I1/D1/LL misses per inference, and miss rates as valgrind
    defines them (D1: of data accesses; LL: of all accesses)."""
    if samples <= 0:
        raise ValueError("samples must be > 0")
    data = counts["Dr"] + counts["Dw"]
    d1 = counts["D1mr"] + counts["D1mw"]
    ll = counts["ILmr"] + counts["DLmr"] + counts["DLmw"]
    return {
        "instructions": counts["Ir"] / samples,
        "data_accesses": data / samples,
        "i1_misses": counts["I1mr"] / samples,
        "d1_misses": d1 / samples,
        "ll_misses": ll / samples,
        "d1_miss_rate": d1 / data if data else 0.0,
        "ll_miss_rate": ll / (counts["Ir"] + data) if counts["Ir"] + data else 0.0,
    }


def find_runner() -> str:
    """build/branchy-run, or $BRANCHY_RUN, or branchy-run on PATH."""
    candidates = [os.environ.get("BRANCHY_RUN"),
                  str(Path(__file__).resolve().parents[2] / "build" / "branchy-run"),
                  shutil.which("branchy-run")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise SimulatorUnavailable(
        "the cache simulator runs the C++ runtime build/branchy-run, which is not built: run "
        "`cmake -S . -B build && cmake --build build --target branchy-run` (make demo and make "
        "test build it), or set BRANCHY_RUN")


def find_valgrind() -> str:
    path = shutil.which("valgrind")
    if not path:
        raise SimulatorUnavailable("the cache simulator needs valgrind (apt-get install valgrind)")
    return path


def simulate(model: str, x: torch.Tensor, thresholds: Optional[Sequence[float]] = None,
             kernels: str = "own", caches: Optional[Dict[str, Cache]] = None,
             warmup: int = WARMUP, timeout: float = 1800.0) -> dict:
    """Runs the samples x [N, C, H, W] (float32) one by one through the C++ runtime under
    callgrind's cache simulator, collecting only inside Plan::run. Returns the totals, the figures
    per inference (per_inference), the exits taken, the caches simulated and the caveats."""
    return simulate_points(model, x, [thresholds], kernels, caches, warmup, timeout)[0]


def simulate_points(model: str, x: torch.Tensor, points: Sequence[Optional[Sequence[float]]],
                    kernels: str = "own", caches: Optional[Dict[str, Cache]] = None,
                    warmup: int = WARMUP, timeout: float = 1800.0,
                    on_point: Optional[Callable[[int, dict], None]] = None) -> list:
    """simulate() at each set of thresholds in `points` (None: the file's), in one valgrind
    process: a plan per point, each with its own warm-up, its counts dumped apart (valgrind's
    start and the translation of the code are paid once, not per point). One result per point;
    on_point(i, result) is called as soon as point i is done (a sweep's progress)."""
    x = x.detach().to(torch.float32).contiguous().cpu()
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"simulate takes samples [N, C, H, W] with N > 0, got {tuple(x.shape)}")
    if not points:
        raise ValueError("simulate_points takes at least one point")
    valgrind, runner = find_valgrind(), find_runner()
    host = caches or host_caches()
    used = {k: simulable(c) for k, c in host.items()}
    notes = [f"{k} {host[k].text()} simulated as {used[k].text()} (valgrind needs a power-of-two "
             f"number of sets)" for k in used if used[k] != host[k]]
    notes += ["valgrind does not emulate AVX-512: the kernels ran their AVX2 paths",
              "LL: the host's last level, simulated alone, no prefetcher"]
    # Every sample once at least, so that samples reaching deeper stages than the first do not
    # count those stages' first touch (cold misses) as theirs.
    warmup_calls = max(warmup, int(x.shape[0]))
    tool = _first_line([valgrind, "--version"])
    caches_used = {k: {"size": c.size, "assoc": c.assoc, "line": c.line} for k, c in used.items()}
    n = int(x.shape[0])
    results = []
    with tempfile.TemporaryDirectory(prefix="branchy-sim-") as tmp:
        raw, out, log = Path(tmp) / "samples.f32", Path(tmp) / "callgrind.out", Path(tmp) / "valgrind.log"
        x.numpy().tofile(raw)
        cmd = [valgrind, "--tool=callgrind", "--cache-sim=yes", f"--callgrind-out-file={out}",
               f"--toggle-collect={TOGGLE}", f"--I1={used['I1'].valgrind()}",
               f"--D1={used['D1'].valgrind()}", f"--LL={used['LL'].valgrind()}",
               runner, str(model), "--raw", str(raw), "--kernels", kernels, "--warmup", str(warmup_calls)]
        if any(t is not None for t in points):
            if any(t is None for t in points):
                raise ValueError("simulate_points: give every point's thresholds, or none")
            cmd += ["--points", ";".join(",".join(repr(float(t)) for t in ts) for ts in points)]
        with open(log, "w") as stderr:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        timed_out = threading.Event()
        timer = threading.Timer(timeout, lambda: (timed_out.set(), proc.kill()))
        timer.start()
        try:
            # The runner prints a point's "exits:" line after dumping its counts to
            # callgrind.out.N (N from 1), so each point is read as soon as it ends.
            for line in proc.stdout:
                if line.startswith("exits:") and len(results) < len(points):
                    results.append(_point_result(Path(f"{out}.{len(results) + 1}"), line, runner, n))
                    results[-1].update(tool=tool, warmup_calls=warmup_calls, kernels=kernels,
                                       caches=caches_used, notes=notes)
                    if on_point is not None:
                        on_point(len(results) - 1, results[-1])
        except BaseException:
            proc.kill()
            raise
        finally:
            code = proc.wait()
            timer.cancel()
        if timed_out.is_set():
            raise RuntimeError(f"the cache simulation took over {timeout:.0f} s; use fewer samples")
        if code != 0 or len(results) != len(points):
            tail = "\n".join(log.read_text().strip().splitlines()[-8:])
            raise RuntimeError(f"the cache simulation failed (exit {code}) after {len(results)} of "
                               f"{len(points)} points:\n{tail}")
    return results


def _point_result(dump: Path, exits_line: str, runner: str, samples: int) -> dict:
    """One point's figures from its callgrind dump and the runner's "exits:" line."""
    if not dump.exists():
        raise RuntimeError(f"{runner} wrote no counts for a point ({dump.name}): is it built with "
                           f"valgrind's headers (valgrind/callgrind.h)?")
    counts = parse_callgrind(dump.read_text())
    if counts["Ir"] == 0:
        raise RuntimeError(f"the simulator collected nothing inside {TOGGLE!r}: is {runner} built "
                           f"with symbols for branchy::Plan::run?")
    return {"backend": BACKEND, "samples": samples, "totals": counts,
            "per_inference": per_inference(counts, samples),
            "exit_counts": [int(v) for v in re.findall(r"\s\d+: (\d+) \(", exits_line)]}


def _line(text: str, prefix: str) -> str:
    return next((line for line in text.splitlines() if line.startswith(prefix)), "")


def _first_line(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
