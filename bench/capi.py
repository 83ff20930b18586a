"""What the C API's layer costs per call: branchy_classify (include/branchy.h) against Plan::run,
the C++ API it wraps, at batch 1 on one thread, in one process.

    python bench/capi.py [--plans 5] [--rounds 101] [--build BUILD] [--quick]

Builds bench/capi_bench.cpp with CMake (target bench_capi in BUILD, default $BUILD or build/,
configured Release where it is not yet), then runs it on two models exported here: the smallest
graph (bench/any_network.py's: input [1, 1, 1], one linear op), where the run itself costs little
and the layer's cost shows, and the shipped B-LeNet with every sample leaving at exit 1 (the
exit-1 path, which Table I's profile takes for 94% of samples). PLANS plans through each API, all
through libbranchy.so with the same kernels: two plans of one model can differ by a few percent
by where their memory lies, which one plan a side would pass off as the APIs' difference. Rounds
interleave every plan (bench/capi_bench.cpp says how). The figures: per plan the median over
rounds of a round's mean ns per call, per API the median over its plans; the layer's cost, the
smallest graph's C - C++, in ns and as a fraction of B-LeNet's exit-1 call (C++). No bar: the
figure is recorded, not checked. Writes bench/results/capi.json and .md (--quick: 2 plans a side,
3 short rounds, writes nowhere: it proves the script and the program run).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from branchy_engine.argtypes import positive  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.runtime.engine import thresholds_for_exit  # noqa: E402
from any_network import write_smallest  # noqa: E402
from cpu_engine import network  # noqa: E402
import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (("smallest", "smallest graph: one linear op, input [1, 1, 1]"),
          ("b_lenet_exit1", "B-LeNet (shipped checkpoint), exit-1 path"))


def build(directory: str) -> str:
    """bench_capi built (CMake, -j 2) in `directory`, configured Release if it is not yet; its path."""
    if not os.path.exists(os.path.join(directory, "CMakeCache.txt")):
        subprocess.run(["cmake", "-S", ROOT, "-B", directory, "-DCMAKE_BUILD_TYPE=Release"], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", directory, "--target", "bench_capi", "-j", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(directory, "bench_capi")


def write_models(directory: str) -> list:
    """The models' paths, in MODELS' order: the smallest graph and B-LeNet exported with thresholds
    that make every sample leave at exit 1."""
    net, _ = network("lenet")
    b_lenet = os.path.join(directory, "b_lenet_exit1.branchy")
    write_model(net, b_lenet, (1, 28, 28), "entropy", thresholds_for_exit(net.num_exits, 0))
    return [write_smallest(directory), b_lenet]


def per_api(rounds_per_plan: list) -> dict:
    """One API's figures from each plan's rounds (ns per call): per plan the median over rounds; the
    API's figure, the median over plans; their least and greatest."""
    plans = [statistics.median(rounds) for rounds in rounds_per_plan]
    return {"median": statistics.median(plans), "min": min(plans), "max": max(plans), "plans": plans}


def fmt_ns(ns: float) -> str:
    return f"{ns:.1f} ns" if abs(ns) < 1e3 else f"{ns / 1e3:.2f} us"


def markdown(result: dict) -> str:
    m, t = result["machine"], result["timing"]
    lines = ["# The C API's cost per call: branchy_classify against Plan::run",
             "",
             f"{m['cpu']}, {m['isa']} kernels, {m['threads']} thread, batch {t['batch']}; {result['date']}; "
             f"`{result['command']}`. Each figure: per plan the median over {t['rounds']} interleaved "
             f"rounds of the mean of a round's calls (about {t['round_ms']:g} ms of calls per plan a round, "
             f"the plan timed first rotating), after {t['warmup']} warm-up calls per plan; per API the "
             f"median over its {t['plans']} plans. All plans called from one C++ program "
             f"(bench/capi_bench.cpp, built Release by CMake) through libbranchy.so, with the same "
             f"kernels (measured once, pinned), on one sample of 0.5s.",
             "",
             "| model | exit taken | branchy_classify (C) | Plan::run (C++) | C - C++ | C / C++ | "
             "range over plans, C / C++ | calls a round |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        c, cpp = r["c_ns"], r["cpp_ns"]
        lines.append(f"| {r['label']} | {r['exit'] + 1} | {fmt_ns(c['median'])} | {fmt_ns(cpp['median'])} | "
                     f"{fmt_ns(c['median'] - cpp['median'])} | {c['median'] / cpp['median']:.3f}x | "
                     f"{fmt_ns(c['max'] - c['min'])} / {fmt_ns(cpp['max'] - cpp['min'])} | {r['calls']} |")
    o = result["layer"]
    lines += ["", f"The C layer's cost per call (the smallest graph's C - C++): {fmt_ns(o['ns'])}, "
              f"{100 * o['fraction_of_b_lenet_exit1']:.2f}% of a B-LeNet exit-1 call "
              f"({fmt_ns(o['b_lenet_exit1_ns'])} through Plan::run). On B-LeNet itself C - C++ is "
              f"{fmt_ns(o['b_lenet_c_minus_cpp_ns'])}, where plans of one API differ by up to "
              f"{fmt_ns(o['b_lenet_plan_range_ns'])}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=positive, default=5, help="plans through each API (default: %(default)s)")
    p.add_argument("--rounds", type=positive, default=101, help="timing rounds (default: %(default)s)")
    p.add_argument("--build", default=os.environ.get("BUILD", os.path.join(ROOT, "build")),
                   help="CMake build folder (default: $BUILD or build/)")
    p.add_argument("--quick", action="store_true",
                   help="2 plans a side, 3 rounds of about 1 ms; writes nothing")
    p.add_argument("--out", default=report.RESULTS, help="where the results go (default: bench/results)")
    args = p.parse_args(argv)
    timing = {"batch": 1, "plans": 2 if args.quick else args.plans,
              "rounds": 3 if args.quick else args.rounds, "round_ms": 1.0 if args.quick else 10.0,
              "warmup": 20 if args.quick else 2000}
    torch.set_num_threads(1)
    binary = build(args.build)
    with tempfile.TemporaryDirectory() as directory:
        paths = write_models(directory)
        command = [binary]
        for key in ("plans", "rounds", "round_ms", "warmup"):
            command += [f"--{key.replace('_', '-')}", str(timing[key])]
        out = subprocess.run(command + paths, check=True, stdout=subprocess.PIPE, text=True).stdout
    models = []
    for (name, label), line in zip(MODELS, out.splitlines()):
        r = json.loads(line)
        models.append({"model": name, "label": label, "exit": r["exit"], "choices": r["choices"],
                       "calls": r["calls"], "c_ns": per_api(r["c_ns"]), "cpp_ns": per_api(r["cpp_ns"])})
    smallest, b_lenet = models
    layer_ns = smallest["c_ns"]["median"] - smallest["cpp_ns"]["median"]
    layer = {"ns": layer_ns, "b_lenet_exit1_ns": b_lenet["cpp_ns"]["median"],
             "fraction_of_b_lenet_exit1": layer_ns / b_lenet["cpp_ns"]["median"],
             "b_lenet_c_minus_cpp_ns": b_lenet["c_ns"]["median"] - b_lenet["cpp_ns"]["median"],
             "b_lenet_plan_range_ns": max(api["max"] - api["min"]
                                          for api in (b_lenet["c_ns"], b_lenet["cpp_ns"]))}
    report.write_run(__file__, argv, {"timing": timing, "models": models, "layer": layer}, markdown,
                     args.out, args.quick, indent=2, threads=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
