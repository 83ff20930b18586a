"""What the C API's layer costs per call: branchy_classify (include/branchy.h) against Plan::run,
the C++ API it wraps, at batch 1 on one thread, in one process.

    python bench/capi.py [--rounds 101] [--build BUILD] [--quick]

Builds bench/capi_bench.cpp with CMake (target bench_capi in BUILD, default $BUILD or build/,
configured Release where it is not yet), then runs it on two models exported here: the smallest
graph (bench/any_network.py's: input [1, 1, 1], one linear op), where the run itself costs little
and the layer's cost shows, and the shipped B-LeNet with every sample leaving at exit 1 (the
exit-1 path, which Table I's profile takes for 94% of samples). Both APIs run through
libbranchy.so with the same kernels, and a second C++ plan of the same model runs beside them as
a control (how far two plans differ by where their memory lies); rounds interleave the three
(bench/capi_bench.cpp says how). The figures: per plan the median over rounds of a round's mean ns
per call; the layer's cost, the smallest graph's C - C++ difference of medians, in ns and as a
fraction of B-LeNet's exit-1 call (C++). No bar: the figure is recorded, not checked. Writes
bench/results/capi.json and .md (--quick: 3 short rounds, writes nowhere: it proves the script and
the program run).
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


def quartiles(values: list) -> dict:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q1, "q3": q3}


def fmt_ns(ns: float) -> str:
    return f"{ns:.1f} ns" if abs(ns) < 1e3 else f"{ns / 1e3:.2f} us"


def markdown(result: dict) -> str:
    m, t = result["machine"], result["timing"]
    lines = ["# The C API's cost per call: branchy_classify against Plan::run",
             "",
             f"{m['cpu']}, {m['isa']} kernels, {m['threads']} thread, batch {t['batch']}; {result['date']}; "
             f"`{result['command']}`. Each figure: median over {t['rounds']} interleaved rounds of the "
             f"mean of a round's calls (about {t['round_ms']:g} ms of calls per plan a round, the plan "
             f"timed first rotating), after {t['warmup']} warm-up calls per plan; all called from one "
             f"C++ program (bench/capi_bench.cpp, built Release by CMake) through libbranchy.so, three "
             f"plans per model with the same kernels (measured once, pinned): one through the C API, "
             f"two through the C++ API (the second a control: two plans of one model differ by where "
             f"their memory lies); one sample of 0.5s.",
             "",
             "| model | exit taken | branchy_classify (C) | Plan::run (C++) | C - C++ | C / C++ | "
             "second C++ plan - first | calls a round |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        c, cpp, control = r["c_ns"]["median"], r["cpp_ns"]["median"], r["control_ns"]["median"]
        lines.append(f"| {r['label']} | {r['exit'] + 1} | {fmt_ns(c)} | {fmt_ns(cpp)} | {fmt_ns(c - cpp)} | "
                     f"{c / cpp:.3f}x | {fmt_ns(control - cpp)} | {r['calls']} |")
    o = result["layer"]
    within = abs(o["b_lenet_c_minus_cpp_ns"]) <= abs(o["b_lenet_control_ns"])
    lines += ["", f"The C layer's cost per call (the smallest graph's C - C++): {fmt_ns(o['ns'])}, "
              f"{100 * o['fraction_of_b_lenet_exit1']:.2f}% of a B-LeNet exit-1 call "
              f"({fmt_ns(o['b_lenet_exit1_ns'])} through Plan::run). On B-LeNet itself C - C++ "
              f"({fmt_ns(o['b_lenet_c_minus_cpp_ns'])}) {'lies within' if within else 'exceeds'} what two "
              f"C++ plans differ by there ({fmt_ns(o['b_lenet_control_ns'])})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=101, help="timing rounds (default: %(default)s)")
    p.add_argument("--build", default=os.environ.get("BUILD", os.path.join(ROOT, "build")),
                   help="CMake build folder (default: $BUILD or build/)")
    p.add_argument("--quick", action="store_true", help="3 rounds of about 1 ms; writes nothing")
    p.add_argument("--out", default=report.RESULTS, help="where the results go (default: bench/results)")
    args = p.parse_args(argv)
    timing = {"batch": 1, "rounds": 3 if args.quick else args.rounds, "round_ms": 1.0 if args.quick else 10.0,
              "warmup": 20 if args.quick else 2000}
    torch.set_num_threads(1)
    binary = build(args.build)
    with tempfile.TemporaryDirectory() as directory:
        paths = write_models(directory)
        command = [binary, "--rounds", str(timing["rounds"]), "--round-ms", str(timing["round_ms"]),
                   "--warmup", str(timing["warmup"]), *paths]
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    models = []
    for (name, label), line in zip(MODELS, out.splitlines()):
        r = json.loads(line)
        models.append({"model": name, "label": label, "exit": r["exit"], "choices": r["choices"],
                       "calls": r["calls"],
                       **{key: quartiles(r[key]) for key in ("c_ns", "cpp_ns", "control_ns")}})
    smallest, b_lenet = ({key: m[key]["median"] for key in ("c_ns", "cpp_ns", "control_ns")} for m in models)
    layer_ns = smallest["c_ns"] - smallest["cpp_ns"]
    layer = {"ns": layer_ns, "b_lenet_exit1_ns": b_lenet["cpp_ns"],
             "fraction_of_b_lenet_exit1": layer_ns / b_lenet["cpp_ns"],
             "b_lenet_c_minus_cpp_ns": b_lenet["c_ns"] - b_lenet["cpp_ns"],
             "b_lenet_control_ns": b_lenet["control_ns"] - b_lenet["cpp_ns"]}
    report.write_run(__file__, argv, {"timing": timing, "models": models, "layer": layer}, markdown,
                     args.out, args.quick, indent=2, threads=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
