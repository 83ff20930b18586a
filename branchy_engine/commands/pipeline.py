"""One network from checkpoints to its Table I rows: engine costs, calibration on the validation
split, export, and the test set at batch 1 through the engine against ONNX Runtime and PyTorch
eager. `branchy demo` and `branchy reproduce` run it; each step skips its work when its output
file already exists (so a re-run resumes where the last one stopped)."""
import datetime
import io
import json
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from branchy_engine import checkpoint
from branchy_engine import data as datasets
from branchy_engine.calibrate import costs as costs_mod
from branchy_engine.calibrate.choose import Target
from branchy_engine.calibrate.run import Options, calibrate
from branchy_engine.runtime.engine import Engine
from branchy_engine.runtime.engine_costs import measure_engine
from branchy_engine.export import export
from branchy_engine.fileio import write_text
from branchy_engine.timing import usable_cpus, warm_up

NAMES = {"lenet": ("LeNet", "B-LeNet"), "alexnet": ("AlexNet", "B-AlexNet"),
         "resnet110": ("ResNet-110", "B-ResNet-110"),
         "mobilenet_v3_small": ("MobileNetV3-small", "B-MobileNetV3-small")}


class Progress:
    """Numbered steps: a live bar on a terminal, plain lines in a log."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.bar = tqdm(total=total, desc=label, bar_format="{desc} {n}/{total}: {postfix}",
                        disable=not sys.stderr.isatty())

    def step(self, what: str, count: int = 1):
        """Announces the next step (`count` steps when a skipped stretch counts for several)."""
        self.done += count
        if self.bar.disable:
            print(f"{self.label} [{self.done}/{self.total}]: {what}", file=sys.stderr, flush=True)
        self.bar.set_postfix_str(what)
        self.bar.update(count)

    def close(self):
        self.bar.close()


def _onnx_baseline(net, shape, threads):
    import onnxruntime as ort

    class Baseline(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[-1].argmax(1)

    buffer = io.BytesIO()
    # The wrapper in eval mode too: the exporter restores each module's mode afterwards, and a
    # wrapper left in training mode would put the network's BatchNorms back in training mode.
    torch.onnx.export(Baseline(net.eval()).eval(), (torch.rand(1, *shape),), buffer, dynamo=False,
                      input_names=["x"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def _mean_time_per_sample(fn: Callable, samples: list) -> tuple:
    """Calls fn on each prepared sample, timing each call from Python the same way for every
    contender (inputs made beforehand, outside the timing): (mean us, predictions)."""
    warm_up(lambda: fn(samples[0]))
    predictions, micros = [], []
    for sample in samples:
        start = time.perf_counter()
        predictions.append(fn(sample))
        micros.append(1e6 * (time.perf_counter() - start))
    return statistics.fmean(micros), torch.tensor(predictions)


def _latency(micros: torch.Tensor) -> dict:
    return {"mean": float(micros.mean()), "p50": float(micros.median()),
            "p99": float(micros.quantile(0.99))}


def prepare(family: str, branchy_ckpt: str, baseline_ckpt: str, out: str, threads: int,
            data_dir: Optional[str], progress: Progress) -> dict:
    """Costs, calibration (the knee) and export of one network; returns the paths and record."""
    os.makedirs(out, exist_ok=True)
    name = f"b_{family}"
    paths = {"costs": os.path.join(out, "costs.json"),
             "calibrated": os.path.join(out, f"{name}-calibrated.pt"),
             "model": os.path.join(out, f"{name}.branchy"),
             "baseline_model": os.path.join(out, f"{family}.branchy")}
    ckpt = checkpoint.load(branchy_ckpt, model=name)
    progress.step(f"{name}: the engine's per-segment costs at batch 1")
    if not os.path.exists(paths["costs"]):
        costs_mod.save(paths["costs"], measure_engine(checkpoint.build_model(ckpt),
                                                      ckpt["dataset"]["input_shape"], threads=threads))
    progress.step(f"{name}: calibrating on the validation split (knee of the frontier)")
    if not os.path.exists(paths["calibrated"]):
        # Nothing here is timed: PyTorch's passes over the validation and test splits use every CPU.
        before = torch.get_num_threads()
        torch.set_num_threads(usable_cpus())
        try:
            calibrate(Options(checkpoint=branchy_ckpt, costs_file=paths["costs"], data_dir=data_dir,
                              out_dir=out, output=paths["calibrated"], target=Target()))
        finally:
            torch.set_num_threads(before)
    progress.step(f"{name}: exporting")
    if not os.path.exists(paths["model"]):
        export(paths["calibrated"], paths["model"])
    if not os.path.exists(paths["baseline_model"]):
        export(baseline_ckpt, paths["baseline_model"])
    paths["calibration"] = checkpoint.load(paths["calibrated"])["thresholds"]
    return paths


def evaluate(family: str, paths: dict, baseline_ckpt: str, threads: int, data_dir: Optional[str],
             limit: Optional[int], progress: Progress) -> dict:
    """Table I rows of one network on its test split at batch 1 (end to end per sample)."""
    baseline_name, branchy_name = NAMES[family]
    ckpt = checkpoint.load(paths["calibrated"])
    cfg = ckpt["config"]
    progress.step(f"b_{family}: loading the test set")
    d = datasets.load(ckpt["dataset"]["name"], data_dir=data_dir or cfg.get("data_dir"),
                      val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    n = min(limit or len(d.test), len(d.test))
    images, labels = d.test.batch(torch.arange(n))
    x = d.prepare(images).contiguous()
    samples = list(x.unbind(0))                     # [C, H, W] each
    batches = [s[None] for s in samples]            # [1, C, H, W] each

    progress.step(f"b_{family}: {n} test samples at batch 1 through the engine")
    engine = Engine(paths["model"], threads=threads)
    _, exit, _, micros = engine.run_timed(x)        # the runtime alone, timed in C++
    mean_us, prediction = _mean_time_per_sample(lambda s: engine(s).prediction, samples)
    base_engine = Engine(paths["baseline_model"], threads=threads)
    _, _, _, base_micros = base_engine.run_timed(x)
    base_us, base_prediction = _mean_time_per_sample(lambda s: base_engine(s).prediction, samples)

    progress.step(f"{family}: the baseline in ONNX Runtime and PyTorch eager")
    baseline = checkpoint.build_model(checkpoint.load(baseline_ckpt, model=family))
    session = _onnx_baseline(baseline, tuple(d.input_shape), threads)
    baseline.eval()
    feeds = [{"x": b.numpy()} for b in batches]
    ort_us, ort_pred = _mean_time_per_sample(lambda feed: int(session.run(None, feed)[0][0]), feeds)

    @torch.inference_mode()
    def eager(s):
        return int(baseline(s)[-1].argmax(1))
    eager_us, eager_pred = _mean_time_per_sample(eager, batches)

    def accuracy(p):
        return 100.0 * float((p == labels).double().mean())

    right = prediction == labels
    rows_gpu = []
    if torch.cuda.is_available():  # the GPU engine at batch 1, inputs already on the GPU
        progress.step(f"b_{family}: {n} test samples at batch 1 through the GPU engine")
        gpu = Engine(paths["model"], device="cuda")
        gpu.prepare([])  # the batch-1 graphs, captured before timing
        on_gpu = [s.to(gpu.device) for s in samples]
        gpu_us, out = _mean_time_per_sample(lambda s: tuple(gpu(s)[:2]), on_gpu)  # (prediction, exit)
        rows_gpu.append({"network": f"{branchy_name} (GPU engine, {gpu.mode}; "
                                    f"{torch.cuda.get_device_name(gpu.device)})",
                         "accuracy": accuracy(out[:, 0]), "time_us": gpu_us,
                         "exit_percent": [100.0 * float((out[:, 1] == e).double().mean())
                                          for e in range(gpu.num_exits)]})
    return {
        "family": family, "dataset": f"{d.description}; {n} test samples", "stand_in": d.stand_in,
        "rows": [
            {"network": f"{baseline_name} (engine)", "accuracy": accuracy(base_prediction), "time_us": base_us},
            {"network": f"{baseline_name} (ONNX Runtime)", "accuracy": accuracy(ort_pred), "time_us": ort_us},
            {"network": f"{baseline_name} (PyTorch eager)", "accuracy": accuracy(eager_pred), "time_us": eager_us},
            {"network": f"{branchy_name} (engine)", "accuracy": accuracy(prediction), "time_us": mean_us,
             "gain_vs_own_baseline": base_us / mean_us, "gain_vs_onnxruntime": ort_us / mean_us,
             "gain_vs_eager": eager_us / mean_us, "thresholds": engine.thresholds,
             "exit_percent": [100.0 * float((exit == e).double().mean()) for e in range(engine.num_exits)],
             "accuracy_of_samples_leaving_at_each_exit": [
                 100.0 * float(right[exit == e].double().mean()) if (exit == e).any() else None
                 for e in range(engine.num_exits)]},
        ] + rows_gpu,
        "calibration": {k: paths["calibration"][k] for k in ("criterion", "values", "target", "val", "test")},
        # The runtime alone, each call timed in C++ (what an embedding C++ program pays).
        "runtime_latency_us": {f"b_{family}": _latency(micros), family: _latency(base_micros)},
        "files": {k: v for k, v in paths.items() if k != "calibration"},
    }


def figure6(family: str, paths: dict, out: str, threads: int, data_dir: Optional[str],
            limit: Optional[int], progress: Progress, sim_samples: int = 30) -> dict:
    """The paper's Figure 6 for b_FAMILY: runtime per sample and cache misses per inference as
    every early exit's threshold sweeps from "none leave early" to "all leave at the first",
    on up to 1000 test samples (the first `sim_samples` under the cache simulator where the CPU
    grants no counters). Returns a summary for the table."""
    from branchy_engine.profiling import profile
    progress.step(f"b_{family}: Figure 6, runtime and cache misses against the threshold")
    record = profile.run(profile.ProfileOptions(
        model=paths["model"], sweep=True, samples=min(limit or 1000, 1000), rounds=3,
        sim_samples=sim_samples, threads=threads, data_dir=data_dir, out=out, quiet=True))
    series = profile.figure6_series(record)
    return {"figure": record["files"]["figure6"], "json": record["files"]["json"],
            "thresholds": series["thresholds"], "runtime_us": series["runtime_us"],
            "first_exit_percent": series["exit_percent"], "misses": series["misses"],
            "miss_label": series["miss_label"], "backend": series["backend"]}


def write_tables(out: str, tables: list, threads: int) -> dict:
    """table1.json and table1.md for the networks evaluated."""
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": dict(costs_mod.machine(), threads=threads), "networks": tables}
    write_text(os.path.join(out, "table1.json"), json.dumps(result, indent=2) + "\n")
    write_text(os.path.join(out, "table1.md"), markdown(result))
    return result


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Batch 1, {m['threads']} thread(s); {m['processor']}, {m['cpus']} CPUs; {result['date']}. "
             "Times are end to end per sample (branches, exit decisions and copies included): the "
             "mean over the test set of each call, made from Python the same way for every "
             "contender, inputs prepared beforehand.", "",
             "| network | accuracy % | time per sample | gain over own baseline (engine) | over ONNX Runtime "
             "baseline | over PyTorch eager baseline | thresholds | exit % |",
             "|---|---|---|---|---|---|---|---|"]
    for table in result["networks"]:
        for r in table["rows"]:
            gains = ([f"{r['gain_vs_own_baseline']:.2f}x", f"{r['gain_vs_onnxruntime']:.2f}x",
                      f"{r['gain_vs_eager']:.2f}x"] if "gain_vs_eager" in r else ["", "", ""])
            thresholds = ", ".join(f"{t:.4g}" for t in r.get("thresholds", []))
            exits = " / ".join(f"{p:.1f}" for p in r.get("exit_percent", []))
            lines.append(f"| {r['network']} | {r['accuracy']:.2f} | {r['time_us']:.1f} us | "
                         + " | ".join(gains) + f" | {thresholds} | {exits} |")
    lines.append("")
    for table in result["networks"]:
        rt = table["runtime_latency_us"]
        fam = table["family"]
        lines.append(f"- {table['dataset']}{' (a stand-in, not the data set of the paper)' if table['stand_in'] else ''}; "
                     f"the runtime alone, timed in C++: b_{fam} mean {rt['b_' + fam]['mean']:.1f} us "
                     f"(p50 {rt['b_' + fam]['p50']:.1f}, p99 {rt['b_' + fam]['p99']:.1f}), {fam} mean "
                     f"{rt[fam]['mean']:.1f} us.")
        f6 = table.get("figure6")
        if f6:
            misses = (f"; {f6['miss_label']} per inference {f6['misses'][0]:,.0f} -> {f6['misses'][-1]:,.0f} "
                      f"({f6['backend']})" if f6["misses"] else "")
            lines.append(f"- Figure 6 (`{os.path.basename(f6['figure'])}`), b_{fam}, every early exit at T from "
                         f"{f6['thresholds'][0]:g} to {f6['thresholds'][-1]:g}: first exit "
                         f"{f6['first_exit_percent'][0]:.0f}% -> {f6['first_exit_percent'][-1]:.0f}% of samples, "
                         f"runtime {f6['runtime_us'][0]:.1f} -> {f6['runtime_us'][-1]:.1f} us per sample" + misses + ".")
    return "\n".join(lines) + "\n"
