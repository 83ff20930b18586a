"""`branchy demo`: Table I on the embedded default, end to end, against real peers.

On Fashion-MNIST with the shipped LeNet and B-LeNet (or freshly trained ones with --retrain):
measure the engine's per-segment costs, calibrate the thresholds on the validation split (the knee
of the accuracy-cost frontier), export, run the whole test set at batch 1 through the CPU engine,
and time the baselines through the engine, ONNX Runtime and PyTorch eager. Every time is end to
end (branches, decisions and copies included). Writes results/ (JSON, Markdown, plots).
"""
import datetime
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from branchy_engine import data as datasets
from branchy_engine.calibrate import costs as costs_mod
from branchy_engine.calibrate.choose import Target
from branchy_engine.calibrate.run import Options, calibrate
from branchy_engine.engine import Engine
from branchy_engine.engine_costs import measure_engine
from branchy_engine.export import export
from branchy_engine.fileio import write_text
from branchy_engine.timing import warm_up
from training import checkpoint

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")


@dataclass
class DemoOptions:
    out: str = "results"
    retrain: bool = False
    limit: Optional[int] = None      # test samples (default: the whole test set)
    threads: int = 1
    data_dir: Optional[str] = None
    epochs: int = 50                 # per phase, with --retrain


def _checkpoints(opts: DemoOptions, step) -> tuple:
    if not opts.retrain:
        return os.path.join(SHIPPED, "lenet.pt"), os.path.join(SHIPPED, "b_lenet.pt")
    from training import TrainConfig, train
    step(f"training LeNet, then B-LeNet ({opts.epochs} epochs each)")
    out = os.path.join(opts.out, "checkpoints")
    paths = train(TrainConfig(model="b_lenet", out=out, baseline_epochs=opts.epochs, epochs=opts.epochs,
                              data_dir=opts.data_dir, resume=os.path.exists(os.path.join(out, "lenet.pt")),
                              command=f"branchy demo --retrain --epochs {opts.epochs}"))
    return paths["lenet"], paths["b_lenet"]


def _onnx_baseline(net, shape, threads):
    import onnxruntime as ort

    class Baseline(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[-1].argmax(1)

    buffer = io.BytesIO()
    torch.onnx.export(Baseline(net.eval()), (torch.rand(1, *shape),), buffer, dynamo=False,
                      input_names=["x"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def _mean_time_per_sample(fn, samples: list) -> tuple:
    """Calls fn on each prepared sample, timing each call from Python the same way for every
    contender (inputs made beforehand, outside the timing): (mean us, predictions)."""
    warm_up(lambda: fn(samples[0]))
    predictions, micros = [], []
    for sample in samples:
        start = time.perf_counter()
        predictions.append(fn(sample))
        micros.append(1e6 * (time.perf_counter() - start))
    return statistics.fmean(micros), torch.tensor(predictions)


def run(opts: DemoOptions) -> dict:
    os.makedirs(opts.out, exist_ok=True)
    torch.set_num_threads(opts.threads)
    total = 7 + opts.retrain
    # A live bar on a terminal; plain lines in a log.
    steps = tqdm(total=total, desc="branchy demo", bar_format="{desc} {n}/{total}: {postfix}",
                 disable=not sys.stderr.isatty())
    done = [0]

    def step(what):
        done[0] += 1
        if steps.disable:
            print(f"branchy demo [{done[0]}/{total}]: {what}", file=sys.stderr, flush=True)
        steps.set_postfix_str(what)
        steps.update(1)

    lenet_ckpt, blenet_ckpt = _checkpoints(opts, step)
    ckpt = checkpoint.load(blenet_ckpt, model="b_lenet")
    net = checkpoint.build_model(ckpt)
    shape = ckpt["dataset"]["input_shape"]

    step("measuring the engine's per-segment costs at batch 1")
    costs = measure_engine(net, shape, threads=opts.threads)
    costs_path = os.path.join(opts.out, "costs.json")
    costs_mod.save(costs_path, costs)

    step("calibrating on the validation split (knee of the frontier)")
    calibrated = os.path.join(opts.out, "b_lenet-calibrated.pt")
    record = calibrate(Options(checkpoint=blenet_ckpt, costs_file=costs_path, data_dir=opts.data_dir,
                               out_dir=opts.out, output=calibrated, target=Target()))

    step("exporting")
    model_path = os.path.join(opts.out, "b_lenet.branchy")
    baseline_path = os.path.join(opts.out, "lenet.branchy")
    export(calibrated, model_path)
    export(lenet_ckpt, baseline_path)

    step("loading the test set")
    d = datasets.load("fashion-mnist", data_dir=opts.data_dir or ckpt["config"].get("data_dir"),
                      val_fraction=ckpt["config"]["val_fraction"], seed=ckpt["config"]["seed"])
    n = min(opts.limit or len(d.test), len(d.test))
    images, labels = d.test.batch(torch.arange(n))
    x = d.prepare(images).contiguous()

    step(f"running {n} test samples at batch 1 through the engine")
    samples = list(x.unbind(0))                     # [C, H, W] each
    batches = [s[None] for s in samples]            # [1, C, H, W] each
    engine = Engine(model_path, threads=opts.threads)
    _, exit, _, micros = engine.run_timed(x)        # the runtime alone, timed in C++
    engine.reset_stats()
    mean_us, prediction = _mean_time_per_sample(lambda s: engine(s).prediction, samples)
    base_engine = Engine(baseline_path, threads=opts.threads)
    _, _, _, base_micros = base_engine.run_timed(x)
    base_us, base_prediction = _mean_time_per_sample(lambda s: base_engine(s).prediction, samples)

    step("timing the baselines in ONNX Runtime and PyTorch eager")
    lenet = checkpoint.build_model(checkpoint.load(lenet_ckpt, model="lenet"))
    session = _onnx_baseline(lenet, shape, opts.threads)
    feeds = [{"x": b.numpy()} for b in batches]
    ort_us, ort_pred = _mean_time_per_sample(lambda feed: int(session.run(None, feed)[0][0]), feeds)

    @torch.inference_mode()
    def eager(s):
        return int(lenet(s)[-1].argmax(1))
    eager_us, eager_pred = _mean_time_per_sample(eager, batches)

    step("writing results")
    exit_percent = [100.0 * float((exit == e).double().mean()) for e in range(engine.num_exits)]
    right = prediction == labels
    leaver_accuracy = [100.0 * float(right[exit == e].double().mean()) if (exit == e).any() else None
                       for e in range(engine.num_exits)]
    table = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": dict(costs_mod.machine(), threads=opts.threads),
        "dataset": f"{d.description}; {n} test samples",
        "checkpoints": {"lenet": lenet_ckpt, "b_lenet": blenet_ckpt},
        "rows": [
            {"network": "LeNet (engine)", "accuracy": 100.0 * float((base_prediction == labels).double().mean()),
             "time_us": base_us},
            {"network": "LeNet (ONNX Runtime)", "accuracy": 100.0 * float((ort_pred == labels).double().mean()),
             "time_us": ort_us},
            {"network": "LeNet (PyTorch eager)", "accuracy": 100.0 * float((eager_pred == labels).double().mean()),
             "time_us": eager_us},
            {"network": "B-LeNet (engine)", "accuracy": 100.0 * float((prediction == labels).double().mean()),
             "time_us": mean_us, "gain_vs_own_baseline": base_us / mean_us,
             "gain_vs_onnxruntime": ort_us / mean_us, "gain_vs_eager": eager_us / mean_us,
             "thresholds": engine.thresholds, "exit_percent": exit_percent,
             "accuracy_of_samples_leaving_at_each_exit": leaver_accuracy},
        ],
        "calibration": {k: record[k] for k in ("criterion", "values", "target", "val", "test")},
        # The runtime alone, each call timed in C++ (what an embedding C++ program pays).
        "runtime_latency_us": {
            "b_lenet": {"mean": float(micros.mean()), "p50": float(micros.median()),
                        "p99": float(micros.quantile(0.99))},
            "lenet": {"mean": float(base_micros.mean()), "p50": float(base_micros.median()),
                      "p99": float(base_micros.quantile(0.99))}},
        "files": dict(record["files"], model=model_path, costs=costs_path),
    }
    write_text(os.path.join(opts.out, "table1.json"), json.dumps(table, indent=2) + "\n")
    write_text(os.path.join(opts.out, "table1.md"), markdown(table))
    steps.close()
    return table


def markdown(table: dict) -> str:
    m = table["machine"]
    rt = table["runtime_latency_us"]
    lines = [f"Fashion-MNIST test set, batch 1, {m['threads']} thread(s); {m['processor']}, "
             f"{m['cpus']} CPUs; {table['date']}. Times are end to end per sample (branches, exit "
             "decisions and copies included): the mean over the test set of each call, made from "
             "Python the same way for every contender, inputs prepared beforehand. The runtime "
             f"alone, timed in C++: B-LeNet mean {rt['b_lenet']['mean']:.1f} us (p50 "
             f"{rt['b_lenet']['p50']:.1f}, p99 {rt['b_lenet']['p99']:.1f}); LeNet mean "
             f"{rt['lenet']['mean']:.1f} us.", "",
             "| network | accuracy % | time per sample | gain over LeNet (engine) | over ONNX Runtime LeNet "
             "| over PyTorch eager LeNet | thresholds | exit % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        gains = ([f"{r['gain_vs_own_baseline']:.2f}x", f"{r['gain_vs_onnxruntime']:.2f}x",
                  f"{r['gain_vs_eager']:.2f}x"] if "gain_vs_eager" in r else ["", "", ""])
        thresholds = ", ".join(f"{t:.4g}" for t in r.get("thresholds", []))
        exits = " / ".join(f"{p:.1f}" for p in r.get("exit_percent", []))
        lines.append(f"| {r['network']} | {r['accuracy']:.2f} | {r['time_us']:.1f} us | "
                     + " | ".join(gains) + f" | {thresholds} | {exits} |")
    return "\n".join(lines) + "\n"
