"""Networks users bring, on the CPU engine, against ONNX Runtime, OpenVINO and PyTorch eager
(issue 13, section 6).

    python bench/any_network.py [--models mobilenet_v3_small,...] [--size 224] [--quick]

Per torchvision model (random weights, randomised BatchNorm statistics), batch 1, one thread, at
size x size:
  baseline   the model without exits: the engine (its C++ loop and a Python call), ONNX Runtime
             (one intra-op thread, all graph optimisations), OpenVINO (convert_model; CPU, one
             thread, one stream, LATENCY hint, f32 precision hint), PyTorch eager (inference_mode).
  exits      two exits attached where default_exits puts them (a third and two thirds into the
             trunk, default heads): the engine's time for a sample leaving at each exit, and the
             expected time per sample at the exit profile PROFILE.
Bars: the engine's baseline at most BARS[model] times the faster of ONNX Runtime and OpenVINO; with
exits, the saving against that peer's baseline at least 90% of the FLOP saving (FLOPs counted by
torch.utils.flop_counter); the Python call at most 1.5 us over the C++ loop. All timings of a model
interleave their rounds so that clock drift hits every runner alike. Writes
bench/results/any-network.json, .md and .png; exits 1 if a bar fails (--quick writes nowhere and
checks nothing: it proves the script runs).
"""
import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from branchy_engine import Engine  # noqa: E402
from branchy_engine.calibrate import costs as costs_mod  # noqa: E402
from branchy_engine.runtime.engine import thresholds_for_exit  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.models import attach_exits, default_exits  # noqa: E402
from branchy_engine.timing import warm_up  # noqa: E402
from tiny_models import randomize_batch_norm  # noqa: E402
import report  # noqa: E402

MODELS = ("mobilenet_v3_small", "mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50")
BARS = {"mobilenet_v3_small": 1.0, "mobilenet_v2": 1.0, "efficientnet_b0": 1.0, "resnet18": 1.1,
        "resnet50": 1.1}
PROFILE = (50.0, 25.0, 25.0)  # % of samples leaving at exits 1, 2 and 3
PEERS = ("onnxruntime", "openvino")
PYTHON_OVERHEAD_US = 1.5


def onnxruntime_runner(model, x):
    import onnxruntime as ort
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed), ort.__version__


def openvino_runner(model, x):
    import openvino as ov
    converted = ov.convert_model(model, example_input=x)
    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    feed = {0: x.numpy()}
    return lambda: request.infer(feed), ov.__version__


def eager_runner(model, x):
    def run():
        with torch.inference_mode():
            model(x)
    return run, torch.__version__


def python_timer(fn):
    """A timer of a Python call: (calls) -> mean microseconds per call."""
    def timer(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return 1e6 * (time.perf_counter() - start) / calls
    return timer


def cpp_timer(engine: Engine, x):
    """A timer of the engine's C++ loop (Engine.time_run: no Python between calls)."""
    return lambda calls: engine.time_run(x, warmup=0, rounds=1, calls=calls)[0]


def interleaved(timers: dict, rounds: int, calls: dict) -> dict:
    """Median over rounds of each timer's mean call time (us); a round runs every timer once,
    `calls[name]` calls each, so slow drift of the clock or the host hits them all alike."""
    for timer in timers.values():
        warm_up(lambda: timer(1), 5)
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer(calls[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def cpp_loop(engine: Engine, x, rounds: int, calls: int) -> float:
    us = engine.time_run(x, warmup=5, rounds=rounds, calls=calls)
    return sorted(us)[len(us) // 2]


def write_smallest(directory: str) -> str:
    """Writes the smallest graph, input [1, 1, 1] and one linear op (one exit), to
    DIRECTORY/smallest.branchy and returns its path: a run takes well under a microsecond, so a
    call's cost around the run shows."""
    from branchy_engine.export import model_file
    from branchy_engine.export.model_file import Exit, Graph, Op, Stage, Value
    x = Value()
    op = Op("linear", [x], dict(in_features=1, out_features=2), [np.ones((2, 1)), np.zeros(2)])
    graph = Graph((1, 1, 1), 2, "entropy", [], [], x, [Stage([op], [op.output])], [Exit(0, op.output, [])])
    path = os.path.join(directory, "smallest.branchy")
    with open(path, "wb") as f:
        f.write(model_file.serialize(graph, "{}"))
    return path


def python_overhead(directory: str, rounds: int) -> dict:
    """The Python call's cost over the C++ loop at batch 1, on the smallest graph (write_smallest):
    Engine(x) timed from Python against Engine.time_run, in interleaved rounds."""
    engine, sample = Engine(write_smallest(directory)), torch.zeros(1, 1, 1)
    py, cpp = [], []
    warm_up(lambda: engine(sample), 1000)
    for _ in range(max(rounds, 11)):
        start = time.perf_counter()
        for _ in range(2000):
            engine(sample)
        py.append(1e6 * (time.perf_counter() - start) / 2000)
        cpp.append(cpp_loop(engine, sample, 1, 2000))
    overhead = statistics.median(py) - statistics.median(cpp)
    return {"python_call_us": statistics.median(py), "cpp_loop_us": statistics.median(cpp),
            "overhead_us": overhead, "limit": PYTHON_OVERHEAD_US, "ok": overhead <= PYTHON_OVERHEAD_US}


def build(name: str, size: int):
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=1000).eval()
    randomize_batch_norm(model)
    shape = (3, size, size)
    baseline = attach_exits(model, [], input_shape=shape).eval()
    at = default_exits(model, shape)
    branchy = attach_exits(model, at, input_shape=shape).eval()
    return model, baseline, branchy, at


def measure(name: str, size: int, rounds: int, directory: str, say) -> dict:
    model, baseline, branchy, at = build(name, size)
    shape = (3, size, size)
    x = torch.randn(1, *shape)
    base_file = os.path.join(directory, f"{name}.branchy")
    exits_file = os.path.join(directory, f"b_{name}.branchy")
    t0 = time.perf_counter()
    write_model(baseline, base_file, shape)
    write_model(branchy, exits_file, shape, thresholds=[0.0] * (branchy.num_exits - 1))
    say(f"  exported in {time.perf_counter() - t0:.1f} s; planning (kernels measured)")
    t0 = time.perf_counter()
    engine = Engine(base_file)
    choices = Engine(exits_file).choices  # measured once; each path's engine makes the same choices
    paths = [Engine(exits_file, thresholds=thresholds_for_exit(branchy.num_exits, e), kernels="pin:" + choices)
             for e in range(branchy.num_exits)]
    plan_s = time.perf_counter() - t0
    say(f"  planned in {plan_s:.1f} s; timing")
    timers, versions = {}, {}
    for peer, make in (("onnxruntime", onnxruntime_runner), ("openvino", openvino_runner),
                       ("eager", eager_runner)):
        fn, versions[peer] = make(model, x)
        timers[peer] = python_timer(fn)
    sample = x[0].contiguous()
    timers["engine"] = python_timer(lambda: engine(sample))
    timers["engine_cpp"] = cpp_timer(engine, sample)
    for e, p in enumerate(paths):
        timers[f"exit{e}"] = cpp_timer(p, sample)
    one = engine.time_run(sample, warmup=2, rounds=1, calls=1)[0]
    calls = {k: max(1, int(20_000 / max(one, 1.0))) for k in timers}  # rounds of about 20 ms
    calls["eager"] = max(1, calls["eager"] // 3)
    times = interleaved(timers, rounds, calls)
    exit_us = [times.pop(f"exit{e}") for e in range(len(paths))]
    assert all(p(sample).exit == e for e, p in enumerate(paths))
    flops = costs_mod.count_flops(branchy, shape)
    path_flops = [sum(flops.segments[: e + 1]) for e in range(len(flops.segments))]
    expected_us = sum(p / 100 * t for p, t in zip(PROFILE, exit_us))
    expected_flops = sum(p / 100 * f for p, f in zip(PROFILE, path_flops))
    best_peer = min(PEERS, key=lambda p: times[p])
    flop_saving = 1 - expected_flops / flops.baseline
    time_saving = 1 - expected_us / times[best_peer]
    bars = {
        "baseline_vs_eager": {"engine_us": times["engine_cpp"], "eager_us": times["eager"],
                              "ratio": times["engine_cpp"] / times["eager"], "limit": 1.0},
        "baseline": {"engine_us": times["engine_cpp"], "peer": best_peer, "peer_us": times[best_peer],
                     "ratio": times["engine_cpp"] / times[best_peer], "limit": BARS.get(name, 1.0)},
        "exits": {"expected_us": expected_us, "peer_baseline_us": times[best_peer],
                  "time_saving": time_saving, "flop_saving": flop_saving,
                  "limit": 0.9 * flop_saving},
    }
    bars["baseline_vs_eager"]["ok"] = bars["baseline_vs_eager"]["ratio"] <= 1.0
    bars["baseline"]["ok"] = bars["baseline"]["ratio"] <= bars["baseline"]["limit"]
    bars["exits"]["ok"] = time_saving >= bars["exits"]["limit"]
    return {"model": name, "input": list(shape), "exits_at": at, "plan_seconds": plan_s,
            "baseline_us": times, "exit_us": exit_us, "profile_percent": list(PROFILE),
            "mflops": {"baseline": flops.baseline, "paths": path_flops, "expected": expected_flops},
            "choices": engine.choices, "versions": versions, "bars": bars}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Networks users bring: engine vs ONNX Runtime, OpenVINO, eager",
             "",
             f"{m['cpu']}, {m['isa']} kernels, {m['threads']} thread, batch 1, "
             f"{result['input_size']}x{result['input_size']}, random weights; {result['date']}; "
             f"`{result['command']}`. {result['timing']}",
             "",
             "| model | engine (C++ loop) | engine (Python call) | ONNX Runtime | OpenVINO | eager | "
             "engine / faster peer | bar |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        t, b = r["baseline_us"], r["bars"]["baseline"]
        lines.append(f"| {r['model']} | {t['engine_cpp'] / 1e3:.2f} ms | {t['engine'] / 1e3:.2f} ms | "
                     f"{t['onnxruntime'] / 1e3:.2f} ms | {t['openvino'] / 1e3:.2f} ms | "
                     f"{t['eager'] / 1e3:.2f} ms | {b['ratio']:.2f}x ({b['peer']}) | "
                     f"<= {b['limit']:.1f}x {'PASS' if b['ok'] else 'FAIL'} |")
    lines += ["", f"With two exits (at the default places, default heads), exit profile "
              f"{'/'.join(f'{p:g}' for p in PROFILE)} %:", "",
              "| model | exits at | ms to exit 1 / 2 / 3 | expected ms | saving vs faster peer | "
              "FLOP saving | bar (>= 90% of FLOP saving) |", "|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        e = r["bars"]["exits"]
        lines.append(f"| {r['model']} | {', '.join(r['exits_at'])} | "
                     f"{' / '.join(f'{u / 1e3:.2f}' for u in r['exit_us'])} | {e['expected_us'] / 1e3:.2f} | "
                     f"{100 * e['time_saving']:.1f}% | {100 * e['flop_saving']:.1f}% | "
                     f"{'PASS' if e['ok'] else 'FAIL'} |")
    o = result["python_call"]
    lines += ["", f"Python call over the C++ loop at batch 1, on the smallest graph (one linear op): "
              f"{o['python_call_us']:.2f} us per call from Python, {o['cpp_loop_us']:.2f} us in the C++ "
              f"loop: {o['overhead_us']:.2f} us (bar: at most {PYTHON_OVERHEAD_US} us) "
              f"{'PASS' if o['ok'] else 'FAIL'}.",
              "", "Engine vs PyTorch eager (baseline): " + ", ".join(
                  f"{r['model']} {r['bars']['baseline_vs_eager']['ratio']:.2f}x" for r in result["models"]) + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["model"] for r in result["models"]]
    runners = [("engine_cpp", "engine"), ("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO"),
               ("eager", "PyTorch eager")]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.16
    for i, (key, label) in enumerate(runners):
        ax.bar(np.arange(len(names)) + i * width, [r["baseline_us"][key] / 1e3 for r in result["models"]],
               width, label=label)
    ax.bar(np.arange(len(names)) + 4 * width, [r["bars"]["exits"]["expected_us"] / 1e3 for r in result["models"]],
           width, label=f"engine with exits ({'/'.join(f'{p:g}' for p in PROFILE)})", hatch="//")
    ax.set_xticks(np.arange(len(names)) + 2 * width, names, fontsize=8)
    ax.set_ylabel("ms per sample (batch 1, 1 thread)")
    ax.set_yscale("log")
    ax.set_title(f"{result['machine']['cpu']}, {result['input_size']}x{result['input_size']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="torchvision model names (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="timing rounds per runner (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="mobilenet_v3_small at 64x64, 3 rounds; writes nothing, checks no bar")
    p.add_argument("--out", default=report.RESULTS, help="where the results go (default: bench/results)")
    args = p.parse_args(argv)
    models = ["mobilenet_v3_small"] if args.quick else args.models.split(",")
    size, rounds = (64, 3) if args.quick else (args.size, args.rounds)
    torch.set_num_threads(1)
    timing = (f"Each figure: median over {rounds} interleaved rounds of the mean of a round's calls "
              f"(about 20 ms a round), after warm-up; every runner of a model, the engine's exit "
              f"paths included, timed in the same rounds; engine C++ loop: Engine.time_run; kernels "
              f"measured per layer at plan time.")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        python_call = python_overhead(directory, rounds)
        failed = not python_call["ok"]
        print(f"python call: {json.dumps(python_call)}", flush=True)
        for name in models:
            print(f"{name}:", flush=True)
            r = measure(name, size, rounds, directory, lambda s: print(s, flush=True))
            results.append(r)
            for bar, v in r["bars"].items():
                failed |= not v["ok"]
                print(f"  {bar}: {'PASS' if v['ok'] else 'FAIL'} {json.dumps(v)}", flush=True)
    result = report.write_run(__file__, argv, {"input_size": size, "timing": timing, "models": results,
                                               "python_call": python_call},
                              markdown, args.out, args.quick, indent=2, threads=1)
    if args.quick:
        return 0
    plot(result, os.path.join(args.out, "any-network.png"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
