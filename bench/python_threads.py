"""Python threads sharing one engine (issue 14, section 4): B-AlexNet (CIFAR shape, the paper's
network, random weights), batch 1, each call one sample, Engine(threads=1).

    python bench/python_threads.py [--rounds 7] [--quick]

A call releases the GIL while the runtime works (for samples of at least 2 MFLOP), so two Python
threads calling one engine run on two cores. Throughput: samples per second over CALLS calls on one
thread, and over 2 x CALLS calls split between two threads started together; each figure the median
over interleaved rounds, after warm-up. Bar: two threads at least 1.7x one thread's throughput
(on a machine with two free cores). Writes bench/results/python-threads.json and .md; exits 1 if
the bar fails (--quick: 2 rounds, writes nowhere, checks nothing: it proves the script runs).
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from branchy_engine import Engine, models  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.timing import usable_cpus  # noqa: E402
import report  # noqa: E402

CALLS = 400
LIMIT = 1.7


def throughput(engine: Engine, samples: list, threads: int) -> float:
    """Samples per second with `threads` Python threads calling the engine, each on its own
    share of the samples, started together."""
    shares = [samples[t::threads] for t in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(share):
        start.wait()
        for s in share:
            engine(s)

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return len(samples) / (time.perf_counter() - t0)


def measure(rounds: int, calls: int, directory: str) -> dict:
    torch.manual_seed(0)
    path = os.path.join(directory, "b_alexnet.branchy")
    net = models.create("b_alexnet").eval()
    write_model(net, path, (3, 32, 32), thresholds=[0.0] * (net.num_exits - 1))  # all to the end
    engine = Engine(path, threads=1)
    samples = list(torch.randn(calls, 3, 32, 32).unbind(0))
    for t in (1, 2):
        throughput(engine, samples[:20], t)  # warm-up: each thread's context, the clocks
    runs = {1: [], 2: []}
    for _ in range(rounds):
        for t in (1, 2):
            runs[t].append(throughput(engine, samples, t))
    one, two = statistics.median(runs[1]), statistics.median(runs[2])
    return {"model": "b_alexnet (random weights), every sample to the last exit",
            "us_per_call": 1e6 / one, "one_thread_per_s": one, "two_threads_per_s": two,
            "ratio": two / one, "limit": LIMIT, "ok": two / one >= LIMIT,
            "cpus": usable_cpus(), "calls": calls}


def markdown(result: dict) -> str:
    r = result["row"]
    return (f"# Python threads sharing one engine\n\n"
            f"{result['machine']['cpu']}, {result['machine']['isa']} kernels, {r['cpus']} CPUs; "
            f"{result['date']}; `{result['command']}`. {result['timing']}\n\n"
            f"| model | one call | 1 thread | 2 threads | ratio | bar |\n|---|---|---|---|---|---|\n"
            f"| {r['model']} | {r['us_per_call']:.0f} us | {r['one_thread_per_s']:.0f} /s | "
            f"{r['two_threads_per_s']:.0f} /s | {r['ratio']:.2f}x | >= {r['limit']}x "
            f"{'PASS' if r['ok'] else 'FAIL'} |\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 40 calls; writes nothing, checks no bar")
    p.add_argument("--out", default=report.RESULTS, help="where the results go (default: bench/results)")
    args = p.parse_args(argv)
    rounds, calls = (2, 40) if args.quick else (args.rounds, CALLS)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        row = measure(rounds, calls, directory)
    timing = (f"Throughput over {calls} calls (batch 1) on one thread and split between two threads "
              f"started together; medians over {rounds} interleaved rounds after warm-up; "
              f"Engine(threads=1).")
    report.write_run(__file__, argv, {"timing": timing, "row": row}, markdown, args.out, args.quick)
    return 0 if args.quick or row["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
