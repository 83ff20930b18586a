"""The GPU engine on a GPU: batch 1 per mode, batches of 256 per policy, and the bars of issue 12.

    python bench/gpu_engine.py [--networks lenet,alexnet,resnet110] [--quick]

Batch 1, per network: every path in each mode (eager loop, graphs, conditional) and the baseline as
one CUDA graph; the expected time per sample at the paper's exit profiles comes from the path
times. Batches of 256 at the paper's profiles (thresholds set on the batch so that its exit fractions
match them): per-sample exits vs whole-batch-waits vs the baseline graph, in samples per second.
Every timed call ends in a device synchronisation; everything computes in fp32 (TF32 off).
Writes bench/results/gpu-engine.json and .md (gpu-engine-quick.* with --quick: fewer rounds, the
same bars) with the device, driver, CUDA, torch and date; exits 1 if a bar fails, 2 without a GPU.

Bars: B-LeNet at batch 1 (expected time per sample at Table I's exit profile): conditional at
least 1.3x faster than per-stage graphs, graphs at least 3x faster than the eager loop;
B-ResNet-110 at batch 1: conditional no slower than graphs; batches of 256 at the profiles:
per-sample exits at least 1.5x the throughput of whole-batch waiting on B-ResNet-110.
"""
import argparse
import datetime
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The repository root: the GPU check runs this file from a checkout built in place, not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cpu_engine import INPUT, PROFILE, network  # noqa: E402
from branchy_engine import Engine  # noqa: E402
from branchy_engine.calibrate import costs as costs_mod  # noqa: E402
from branchy_engine.runtime.engine import thresholds_for_exit  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.fileio import write_text  # noqa: E402
from branchy_engine.runtime.gpu.capture import fp32_math  # noqa: E402
from branchy_engine.runtime.gpu.layers import LoadedNet  # noqa: E402
from branchy_engine.runtime.ops import _C, exit_decision  # noqa: E402
from branchy_engine.timing import median_us  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODES = ("eager", "graphs", "conditional")
BATCH = 256


def synced(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def baseline_graph(path: str, shape, batch: int):
    """The baseline network (the file's final path, no early exits) as one CUDA graph + argmax."""
    net = LoadedNet(_C.load_model_ops(path)).cuda().eval()
    x = torch.randn(batch, *shape, device="cuda")

    @torch.inference_mode()
    def forward():
        h = x
        for segment in net.segments:
            h = segment(h)
        return net.heads[-1](h).argmax(1)

    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with fp32_math():
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            forward()
    return synced(graph.replay)


def profile_thresholds(net, x, profile):
    """Entropy thresholds under which the batch x leaves at each exit in the profile's shares."""
    with torch.inference_mode():
        logits = net(x)
    alive = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    thresholds, left = [], 0.0
    for e, share in enumerate(profile[:-1]):
        h = exit_decision(logits[e], 0.0)[0]
        want = share / 100.0 / max(1e-9, 1.0 - left)  # of the samples still here
        t = float(torch.quantile(h[alive], min(1.0, want))) if alive.any() else 0.0
        thresholds.append(t)
        alive &= ~(h < t)
        left += share / 100.0
    return thresholds


def measure(name: str, timing, directory) -> dict:
    net, weights = network(name)
    shape = INPUT[name]
    path = os.path.join(directory, f"b_{name}.branchy")
    write_model(net, path, shape, "entropy", [0.0] * (net.num_exits - 1))
    base_path = os.path.join(directory, f"{name}.branchy")
    write_model(net.baseline(), base_path, shape)
    flops = costs_mod.count_flops(net, shape)
    path_flops = torch.cumsum(torch.tensor(flops.segments), 0).tolist()
    expected_flops = sum(p / 100 * f for p, f in zip(PROFILE[name], path_flops))
    x1 = torch.randn(*shape, device="cuda")
    record = {"network": f"b_{name}", "weights": weights, "profile_percent": PROFILE[name],
              "flop_ratio": flops.baseline / expected_flops, "batch1_us": {}, "modes_used": {}}
    for mode in MODES:
        paths = []
        for e in range(net.num_exits):
            engine = Engine(path, device="cuda", mode=mode, thresholds=thresholds_for_exit(net.num_exits, e))
            engine.prepare([])  # the batch-1 graphs, captured before timing
            record["modes_used"][mode] = (engine.mode + (f" ({engine.if_nodes} IF nodes)" if engine.if_nodes else "")
                                          + (f" (fell back: {engine.fallback_reason})" if engine.fallback_reason else ""))
            paths.append(median_us(lambda: engine(x1), **timing))  # one sample: ends in a host read
        record["batch1_us"][mode] = {"paths": paths,
                                     "expected": sum(p / 100 * t for p, t in zip(PROFILE[name], paths))}
        print(f"  b_{name} batch 1, {mode}: " + ", ".join(f"{t:.1f}" for t in paths) + " us per path", flush=True)
    record["batch1_us"]["baseline_graph"] = median_us(baseline_graph(base_path, shape, 1), **timing)
    xb = torch.randn(BATCH, *shape, device="cuda")
    loaded = LoadedNet(_C.load_model_ops(path)).cuda().eval()
    with fp32_math():  # the engine's own math: TF32 would move the profile's thresholds
        thresholds = profile_thresholds(loaded, xb, PROFILE[name])
    per_sample = Engine(path, device="cuda", mode="graphs", thresholds=thresholds, max_batch=BATCH)
    whole = Engine(path, device="cuda", mode="graphs", thresholds=thresholds, max_batch=BATCH, policy="whole-batch")
    per_sample.prepare([BATCH])  # every exit's bucket graphs, captured before timing
    whole.prepare([BATCH])
    fractions = (100.0 * torch.bincount(per_sample(xb).exit.cpu(), minlength=net.num_exits) / BATCH).tolist()
    batch_us = {"per-sample": median_us(synced(lambda: per_sample(xb)), **timing),
                "whole-batch": median_us(synced(lambda: whole(xb)), **timing),
                "baseline_graph": median_us(baseline_graph(base_path, shape, BATCH), **timing)}
    record[f"batch{BATCH}"] = {"thresholds": thresholds, "exit_percent": fractions,
                               "samples_per_s": {k: BATCH / v * 1e6 for k, v in batch_us.items()},
                               "us_per_batch": batch_us}
    print(f"  b_{name} batch {BATCH}: " + ", ".join(f"{k} {BATCH / v * 1e6:.0f}/s" for k, v in batch_us.items()),
          flush=True)
    return record


def bars(records) -> list:
    """(what, measured, required, passed) for each bar whose network was measured. A mode that
    fell back (modes_used says why) is measured as what ran, so its bar fails honestly."""
    out = []

    def bar(what, value, need):
        out.append((what, value, f">= {need}", value >= need))
    if "lenet" in records:
        r = records["lenet"]["batch1_us"]
        bar("B-LeNet batch 1 at 94.3/5.7: graphs / conditional (time per sample)",
            r["graphs"]["expected"] / r["conditional"]["expected"], 1.3)
        bar("B-LeNet batch 1 at 94.3/5.7: eager loop / graphs (time per sample)",
            r["eager"]["expected"] / r["graphs"]["expected"], 3)
    if "resnet110" in records:
        rec = records["resnet110"]
        r = rec["batch1_us"]
        bar("B-ResNet-110 batch 1 at 41.5/13.8/44.7: graphs / conditional (time per sample)",
            r["graphs"]["expected"] / r["conditional"]["expected"], 1.0)
        t = rec[f"batch{BATCH}"]["samples_per_s"]
        bar(f"B-ResNet-110 batch {BATCH} at its profile: per-sample / whole-batch throughput",
            t["per-sample"] / t["whole-batch"], 1.5)
    return out


def device_record() -> dict:
    props = torch.cuda.get_device_properties(0)
    driver = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    return {"gpu": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "driver": driver,
            "cuda": torch.version.cuda, "torch": str(torch.__version__)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="lenet,alexnet,resnet110")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_engine.py: no CUDA GPU here; nothing measured", file=sys.stderr)
        return 2
    timing = {"warmup": 3, "rounds": 3, "calls": 3} if args.quick else {"warmup": 30, "rounds": 15, "calls": 10}
    records = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in args.networks.split(","):
            print(f"b_{name}:", flush=True)
            records[name] = measure(name, timing, directory)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_record(), "timing": timing, "networks": records,
              "bars": [list(b) for b in bars(records)],
              "command": "python bench/gpu_engine.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    stem = "gpu-engine-quick" if args.quick else "gpu-engine"
    write_text(os.path.join(args.out, f"{stem}.json"), json.dumps(result, indent=1) + "\n")
    lines = [f"# GPU engine ({result['date']}{', --quick' if args.quick else ''})", "",
             f"Device: {result['device']}", f"Command: `{result['command']}`; timing {timing} "
             "(median of rounds of the mean of calls, after warm-up; each call ends in a device "
             "synchronisation)", "", "| network | mode | us per path (exit 1, 2, ...) | expected at profile | IF nodes / fallback |",
             "|---|---|---|---|---|"]
    for name, rec in records.items():
        for mode in MODES:
            r = rec["batch1_us"][mode]
            lines.append(f"| b_{name} | {mode} | {', '.join(f'{t:.1f}' for t in r['paths'])} | "
                         f"{r['expected']:.1f} | {rec['modes_used'][mode]} |")
        b = rec[f"batch{BATCH}"]
        lines.append(f"| b_{name} | batch {BATCH} at {[round(p, 1) for p in b['exit_percent']]} % | "
                     + ", ".join(f"{k} {v:.0f}/s" for k, v in b["samples_per_s"].items()) + " | | |")
    lines += ["",
             "| bar | measured | required | |", "|---|---|---|---|"]
    lines += [f"| {w} | {v:.3f} | {n} | {'PASS' if ok else 'FAIL'} |" for w, v, n, ok in result["bars"]]
    write_text(os.path.join(args.out, f"{stem}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(not ok for *_, ok in result["bars"]) else 0


if __name__ == "__main__":
    sys.exit(main())
