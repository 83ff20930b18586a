"""What a long `branchy profile` says while it works: up front, what it will run and about how
long that takes; then a line as each sweep point is timed and as each is simulated, with the time
left. The estimates come from the runtimes the profile itself measured, scaled for valgrind."""
import sys
import threading
import time
from typing import Callable, Optional, Sequence

from tqdm import tqdm

# callgrind with its cache simulation runs an inference roughly this many times slower than the
# engine runs it natively. Measured on this repository's 2-CPU build machine (2026-12-07, under
# varying load): B-LeNet 0.26 s a call against 30 us natively (8,500x); B-AlexNet 1.7-2.4 s
# against 0.47-0.63 ms (3,800-5,200x), and 3,200x over a whole default sweep (4 min 55 s of
# simulation where 6,000x had predicted 9 min 13 s). An estimate from it is good to a factor of two.
SIM_SLOWDOWN = 4000
SIM_START_S = 3.0  # valgrind's start and first translation of the code (B-AlexNet: 2.6 s)


def duration(seconds: float) -> str:
    """A duration for people: 'under 1 s', '45 s', '3 min 20 s', '12 min', '1 h 5 min'."""
    s = int(round(max(0.0, seconds)))
    if s < 1:
        return "under 1 s"
    if s < 60:
        return f"{s} s"
    if s < 600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    m = int(round(s / 60))
    if m < 60:
        return f"{m} min"
    return f"{m // 60} h {m % 60} min" if m % 60 else f"{m // 60} h"


def simulated_point_seconds(native_us: float, samples: int, warmup_calls: int) -> float:
    """Expected valgrind seconds of one point: its warm-up calls, its samples and about one call's
    worth for building its plan, each SIM_SLOWDOWN times its native microseconds per sample."""
    return (warmup_calls + samples + 1) * native_us * 1e-6 * SIM_SLOWDOWN


class Progress:
    """Lines on stderr (through tqdm, so that a live bar stays intact), each starting with the
    label; nothing when quiet. `clock` is for tests."""

    def __init__(self, label: str, points: int, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.points, self.quiet, self.clock = label, points, quiet, clock
        self.lock = threading.Lock()  # simulated() is called from the simulation's threads
        self.timed_count = 0
        self.timing_started = clock()

    def say(self, text: str):
        if not self.quiet:
            tqdm.write(f"{self.label}: {text}", file=sys.stderr)
            sys.stderr.flush()

    def start_timing(self):
        self.timing_started = self.clock()

    def timed(self, i: int, value: float, report: dict):
        """Sweep point i (0-based) at threshold `value` has been timed."""
        self.timed_count += 1
        elapsed = self.clock() - self.timing_started
        left = elapsed / self.timed_count * (self.points - self.timed_count)
        first = report["exits"][0]["percent"]
        self.say(f"point {i + 1}/{self.points} (T = {value:g}) timed: "
                 f"{report['latency_us']['mean']:.1f} us per sample, {first:.0f}% leave at exit 1"
                 + (f"; about {duration(left)} of timing left" if self.timed_count < self.points else ""))

    def start_simulation(self, jobs: Sequence[Sequence[int]], seconds: Sequence[float],
                         samples: int, values: Optional[Sequence[float]] = None):
        """The simulation begins: jobs[w] lists the points valgrind process w runs in turn,
        seconds[i] is point i's expected time (simulated_point_seconds)."""
        self.jobs, self.seconds, self.values = [list(j) for j in jobs], list(seconds), values
        self.worker_of = {i: w for w, job in enumerate(self.jobs) for i in job}
        self.expected_done = [SIM_START_S] * len(self.jobs)  # per process: start + points done
        self.elapsed_done = [None] * len(self.jobs)          # per process: when its last ended
        self.simulated_count = 0
        self.sim_started = self.clock()
        total = self._expected_total()
        n = sum(len(j) for j in self.jobs)
        what = f"{n} point{'s' * (n != 1)} x {samples} samples" if values is not None else f"{samples} samples"
        self.say(f"cache simulation of {what} under valgrind, {len(self.jobs)} process"
                 f"{'es' * (len(self.jobs) != 1)}: roughly {duration(total)}")

    def _expected_total(self) -> float:
        return max(SIM_START_S + sum(self.seconds[i] for i in job) for job in self.jobs)

    def simulated(self, i: int, sim: dict):
        """Point i's simulation has ended (from whichever thread ran it)."""
        with self.lock:
            now = self.clock() - self.sim_started
            w = self.worker_of[i]
            self.expected_done[w] += self.seconds[i]
            self.elapsed_done[w] = now
            self.simulated_count += 1
            done = [w for w, e in enumerate(self.elapsed_done) if e is not None]
            # How the estimate has fared so far, applied to what is left.
            scale = sum(self.elapsed_done[w] for w in done) / sum(self.expected_done[w] for w in done)
            left = max(0.0, scale * self._expected_total() - now)
            n = sum(len(j) for j in self.jobs)
            q = sim["per_inference"]
            exits = " / ".join(str(c) for c in sim["exit_counts"])
            where = (f"point {i + 1}/{self.points} (T = {self.values[i]:g}) simulated"
                     if self.values is not None else "simulated")
            self.say(f"{where}: {q['d1_misses']:,.0f} D1 misses per inference, leaving {exits} at "
                     f"each exit" + (f"; {self.simulated_count} of {n} simulated, about "
                                     f"{duration(left)} left" if self.simulated_count < n else ""))

