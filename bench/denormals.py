"""Denormal inputs against normal ones (issue 14, section 3): a 32->32 3x3 convolution at 56x56
through the CPU engine, batch 1, one thread, with the own kernels and with oneDNN.

    python bench/denormals.py [--rounds 15] [--quick]

Without flush-to-zero a denormal input made this convolution 117x slower (193 us -> 22.6 ms;
oneDNN 119 us -> 21.7 ms). Every run now sets FTZ and DAZ on the calling thread (and restores the
caller's MXCSR). Each figure: the median over interleaved rounds (normal and denormal input of a
kernel choice in the same round) of Engine.time_run's mean of a round's calls, after warm-up.
Bar: denormal input at most 1.5x normal input's time, for each kernel choice. Writes
bench/results/denormals.json and .md; exits 1 if a bar fails (--quick: 3 rounds, writes nowhere,
checks nothing: it proves the script runs).
"""
import argparse
import os
import statistics
import sys
import tempfile

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from branchy_engine import Engine  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.models import attach_exits  # noqa: E402
import report  # noqa: E402

SHAPE = (32, 56, 56)
LIMIT = 1.5
DENORMAL = 1e-39  # times a standard normal: every input value below 2^-126 (1.18e-38)


class OneConv(nn.Module):
    """The convolution (no bias) and a small head (mean, linear): the head's cost is negligible."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        nn.init.zeros_(self.conv.bias)  # so that the sums of denormal products stay denormal
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def measure(rounds: int, directory: str) -> list:
    torch.manual_seed(0)
    path = os.path.join(directory, "conv.branchy")
    write_model(attach_exits(OneConv().eval(), [], input_shape=SHAPE).eval(), path, SHAPE)
    normal = torch.randn(*SHAPE)
    denormal = normal * DENORMAL
    assert bool((denormal.abs() < 1.1754944e-38).all() and (denormal != 0).any())
    rows = []
    for kernels in ("own", "dnnl"):
        engine = Engine(path, threads=1, kernels=kernels)
        one = engine.time_run(normal, warmup=5, rounds=1, calls=5)[0]
        calls = max(1, int(20_000 / max(one, 1.0)))  # rounds of about 20 ms
        times = {"normal": [], "denormal": []}
        for _ in range(rounds):
            for name, x in (("normal", normal), ("denormal", denormal)):
                times[name].append(engine.time_run(x, warmup=2, rounds=1, calls=calls)[0])
        us = {k: statistics.median(v) for k, v in times.items()}
        ratio = us["denormal"] / us["normal"]
        rows.append({"kernels": kernels, "layer": next(line for line in engine.describe().splitlines() if "conv2d" in line).split("  ")[0],
                     "normal_us": us["normal"], "denormal_us": us["denormal"], "ratio": ratio,
                     "limit": LIMIT, "ok": ratio <= LIMIT})
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Denormal inputs vs normal ones\n",
             f"{result['machine']['cpu']}, {result['machine']['isa']} kernels, 1 thread, batch 1, "
             f"input {'x'.join(map(str, SHAPE))}; {result['date']}; `{result['command']}`. "
             f"{result['timing']}\n",
             "| kernels | layer | normal input | denormal input | ratio | bar |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kernels']} | {r['layer']} | {r['normal_us']:.1f} us | {r['denormal_us']:.1f} us "
                     f"| {r['ratio']:.2f}x | <= {r['limit']}x {'PASS' if r['ok'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="3 rounds; writes nothing, checks no bar")
    p.add_argument("--out", default=report.RESULTS, help="where the results go (default: bench/results)")
    args = p.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        rows = measure(rounds, directory)
    timing = (f"Each figure: median over {rounds} interleaved rounds of Engine.time_run's mean over "
              f"a round's calls (about 20 ms a round, 2 warm-up calls each); denormal input: a "
              f"standard normal times {DENORMAL:g}.")
    report.write_run(__file__, argv, {"timing": timing, "rows": rows}, markdown, args.out, args.quick)
    return 0 if args.quick or all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
