"""The CPU engine against its peers, per path and per baseline, in one run (issue 5's bars).

    python bench/cpu_engine.py [--networks lenet,alexnet,resnet110] [--threads 1,2] [--quick]

Times, at batch 1 and per thread count: every path of each B-network and its baseline through the
engine (Python call, and the runtime alone in a C++ loop), ONNX Runtime and the PyTorch eager loop
(bench/peers.py defines them). From the path times: the expected time per sample at the paper's
exit profiles; from counted FLOPs: the ratios the bars compare. Writes bench/results/cpu-engine.json
and .md; prints the table; exits 1 if a bar fails.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from branchy_engine import _C, checkpoint, models  # noqa: E402
from branchy_engine.calibrate import costs as costs_mod  # noqa: E402
from branchy_engine.fileio import write_text  # noqa: E402
from branchy_engine.timing import median_us, warm_up  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "branchy_engine",
                       "checkpoints", "b_lenet.pt")
INPUT = {"lenet": (1, 28, 28), "alexnet": (3, 32, 32), "resnet110": (3, 32, 32)}
# Table I's exit profiles (% leaving at each exit).
PROFILE = {"lenet": [94.3, 5.7], "alexnet": [65.6, 25.2, 9.2], "resnet110": [41.5, 13.8, 44.7]}
DESIGN_PEAK_GFLOPS = 78.0  # the design brief's figure for one core of this machine (AVX2 at 2.45 GHz)
PEERS = ("engine", "engine_cpp", "onnxruntime", "eager")


def network(name: str):
    """The B-network: the shipped trained B-LeNet, random weights for the others (timing does
    not depend on the values)."""
    if name == "lenet" and os.path.exists(SHIPPED):
        return checkpoint.build_model(checkpoint.load(SHIPPED)), "shipped checkpoint (trained)"
    torch.manual_seed(0)
    return models.create(f"b_{name}").eval(), "random weights"


def time_peers(runners, engine, x, timing) -> dict:
    out = {peer: median_us(fn, **timing) for peer, fn in runners.items()}
    warm_up(lambda: engine.time_run(x, warmup=0, rounds=1, calls=timing["calls"]), 1)
    cpp = engine.time_run(x, warmup=timing["warmup"], rounds=timing["rounds"], calls=timing["calls"])
    out["engine_cpp"] = sorted(cpp)[len(cpp) // 2]
    return out


def measure_network(name: str, threads_list, timing, directory) -> dict:
    net, weights = network(name)
    shape = INPUT[name]
    n = peers.Network(net, shape, directory)
    flops = costs_mod.count_flops(net, shape)
    path_flops = torch.cumsum(torch.tensor(flops.segments), 0).tolist()
    record = {"network": f"b_{name}", "weights": weights, "input": list(shape),
              "flops_mflop": {"paths": path_flops, "baseline": flops.baseline},
              "profile_percent": PROFILE[name], "threads": {}}
    for threads in threads_list:
        torch.set_num_threads(threads)
        paths = []
        for e in range(net.num_exits):
            runners, engine = n.runners(e, threads)
            times = time_peers(runners, engine, n.x, timing)
            times["plan"] = engine.describe()
            paths.append(times)
            print(f"  b_{name} path {e + 1}, {threads} thread(s): "
                  + ", ".join(f"{p} {times[p]:.1f} us" for p in PEERS), flush=True)
        runners, engine = n.baseline_runners(threads)
        base = time_peers(runners, engine, n.x, timing)
        print(f"  {name} baseline, {threads} thread(s): "
              + ", ".join(f"{p} {base[p]:.1f} us" for p in PEERS), flush=True)
        fractions = [p / 100.0 for p in PROFILE[name]]
        expected = {peer: sum(f * path[peer] for f, path in zip(fractions, paths)) for peer in PEERS}
        record["threads"][str(threads)] = {"paths_us": paths, "baseline_us": base,
                                           "expected_us_at_profile": expected}
    torch.set_num_threads(threads_list[0])
    expected_flops = sum(p / 100.0 * f for p, f in zip(PROFILE[name], path_flops))
    record["flops_mflop"]["expected_at_profile"] = expected_flops
    record["flop_ratio"] = flops.baseline / expected_flops
    return record


def bars(records: dict, peak_gflops: float) -> list:
    """(description, measured, required, passed) for each bar of the issue, one thread."""
    out = []
    for name, r in records.items():
        t = r["threads"]["1"]
        base, paths, expected = t["baseline_us"], t["paths_us"], t["expected_us_at_profile"]
        limit = 0.5 if name == "lenet" else 1.1
        ratio = base["engine"] / base["onnxruntime"]
        out.append((f"{name} baseline: engine / ONNX Runtime", ratio, f"<= {limit}", ratio <= limit))
        if name == "lenet":
            ratio = paths[0]["engine"] / paths[0]["onnxruntime"]
            out.append(("B-LeNet exit-1 path: engine / ONNX Runtime", ratio, "<= 1/3", ratio <= 1 / 3))
            # The roofline is about the runtime's compute: its C++-loop time, without Python's call.
            roofline = r["flops_mflop"]["paths"][0] / peak_gflops * 1e3  # us
            ratio = paths[0]["engine_cpp"] / roofline
            out.append((f"B-LeNet exit-1 path: engine_cpp / roofline ({r['flops_mflop']['paths'][0]:.2f} "
                        f"MFLOP at {peak_gflops:.0f} GFLOP/s = {roofline:.2f} us)", ratio, "<= 2.5",
                        ratio <= 2.5))
            gain = base["onnxruntime"] / expected["engine"]
            out.append(("B-LeNet expected at 94.3/5.7: ONNX Runtime LeNet / engine", gain, ">= 7", gain >= 7))
            gain = base["eager"] / expected["engine"]
            out.append(("B-LeNet expected at 94.3/5.7: PyTorch eager LeNet / engine", gain, ">= 25", gain >= 25))
        else:
            gain = base["onnxruntime"] / expected["engine"]
            need = 0.9 * r["flop_ratio"]
            out.append((f"B-{name} expected at {'/'.join(map(str, r['profile_percent']))}: ONNX Runtime "
                        f"baseline / engine (FLOP ratio {r['flop_ratio']:.2f})", gain,
                        f">= {need:.2f}", gain >= need))
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# CPU engine vs peers ({result['date']})", "",
             f"Machine: {m['cpu']}, {m['cpus']} logical CPUs, {m['system']}; torch {m['torch']}, "
             f"ONNX Runtime {m['onnxruntime']}, {m['dnnl'] or 'no oneDNN'}; CPU kernels {m['cpu_isa']}.",
             f"Measured fp32 FMA peak of one thread: {m['peak_gflops']['avx2']:.0f} GFLOP/s (AVX2), "
             f"{m['peak_gflops']['avx512']:.0f} GFLOP/s (AVX-512); the design brief assumed "
             f"{DESIGN_PEAK_GFLOPS:.0f}.",
             f"Command: `{result['command']}`. Batch 1; each figure is the median over "
             f"{result['timing']['rounds']} rounds of {result['timing']['calls']} calls after "
             f"{result['timing']['warmup']} warm-up calls. engine: branchy_engine.Engine called from "
             "Python; engine_cpp: the same runtime timed in a C++ loop; onnxruntime: the same path "
             "as one ONNX graph; eager: the PyTorch early-exit loop. A path is everything a sample "
             "leaving at that exit pays (earlier heads and decisions included). Bars against peers "
             "use engine (both sides called from Python); the roofline bar uses engine_cpp (the "
             "runtime's compute without Python's call), against the measured AVX-512 peak.", ""]
    for threads in result["threads"]:
        lines += [f"## {threads} thread(s)", "",
                  "| network | path | engine us | engine_cpp us | onnxruntime us | eager us | ORT / engine | eager / engine |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in result["networks"].items():
            t = r["threads"][threads]
            rows = [(f"exit {e + 1} path", p) for e, p in enumerate(t["paths_us"])]
            rows += [("baseline", t["baseline_us"]), (f"expected at {'/'.join(map(str, r['profile_percent']))}",
                                                    t["expected_us_at_profile"])]
            for label, p in rows:
                lines.append(f"| b_{name} | {label} | {p['engine']:.1f} | {p['engine_cpp']:.1f} | "
                             f"{p['onnxruntime']:.1f} | {p['eager']:.1f} | "
                             f"{p['onnxruntime'] / p['engine']:.2f}x | {p['eager'] / p['engine']:.2f}x |")
        lines.append("")
    lines += ["## Bars (one thread)", "", "| bar | measured | required | |", "|---|---|---|---|"]
    for what, value, need, ok in result["bars"]:
        lines.append(f"| {what} | {value:.3f} | {need} | {'PASS' if ok else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="lenet,alexnet,resnet110")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="few rounds: to check the script runs")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    timing = ({"warmup": 2, "rounds": 3, "calls": 2} if args.quick
              else {"warmup": 100, "rounds": 31, "calls": 20})
    threads = [int(t) for t in args.threads.split(",")]
    names = args.networks.split(",")
    unknown = [n for n in names if n not in INPUT]
    if unknown:
        ap.error(f"unknown network(s) {unknown}; choose from {', '.join(INPUT)}")
    import onnxruntime
    peak = {"avx2": _C.fma_peak_gflops(8), "avx512": _C.fma_peak_gflops(16)}
    records = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            print(f"b_{name}:", flush=True)
            records[name] = measure_network(name, threads, timing, directory)
    peak_for_roofline = max(peak.values()) or DESIGN_PEAK_GFLOPS
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/cpu_engine.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": costs_mod.cpu_model(),
                    "cpus": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
                    "torch": str(torch.__version__), "onnxruntime": onnxruntime.__version__,
                    "dnnl": _C.dnnl_version(), "cpu_isa": _C.cpu_isa(), "peak_gflops": peak},
        "timing": timing, "threads": [str(t) for t in threads], "networks": records,
    }
    if "1" in result["threads"] and not args.quick:
        result["bars"] = [list(b) for b in bars(records, peak_for_roofline)]
    else:
        result["bars"] = []
    os.makedirs(args.out, exist_ok=True)
    stem = "cpu-engine-quick" if args.quick else "cpu-engine"
    write_text(os.path.join(args.out, f"{stem}.json"), json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_text(os.path.join(args.out, f"{stem}.md"), text)
    print(text)
    return 1 if any(not ok for *_, ok in result["bars"]) else 0


if __name__ == "__main__":
    sys.exit(main())
