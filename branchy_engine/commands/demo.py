"""`branchy demo`: Table I on the embedded default, end to end, against real peers.

On Fashion-MNIST with the shipped LeNet and B-LeNet (or freshly trained ones with --retrain):
measure the engine's per-segment costs, calibrate the thresholds on the validation split (the knee
of the accuracy-cost frontier), export, run the whole test set at batch 1 through the CPU engine,
and time the baseline through the engine, ONNX Runtime and PyTorch eager; then sweep the threshold
for Figure 6 (runtime and cache misses). Then the same for the shipped B-MobileNetV3-small (a
torchvision network with exits, trained on fashion-mnist-32x3) on MOBILENET_SAMPLES test samples.
Every time is end to end (branches, decisions and copies included). Writes results/ (JSON,
Markdown, plots).
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch

from branchy_engine.commands import pipeline

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
MOBILENET = "mobilenet_v3_small"
MOBILENET_SAMPLES = 1000  # its eager baseline takes milliseconds a sample: the demo stays short


@dataclass
class DemoOptions:
    out: str = "results"
    retrain: bool = False
    limit: Optional[int] = None      # test samples (default: the whole test set)
    threads: int = 1
    data_dir: Optional[str] = None
    epochs: int = 50                 # per phase, with --retrain


def run(opts: DemoOptions) -> dict:
    torch.set_num_threads(opts.threads)
    mobilenet = [os.path.join(SHIPPED, f"b_{MOBILENET}.pt"), os.path.join(SHIPPED, f"{MOBILENET}.pt")]
    with_mobilenet = all(os.path.exists(p) for p in mobilenet)
    per_network = 6 + torch.cuda.is_available()
    progress = pipeline.Progress("branchy demo", 1 + per_network * (1 + with_mobilenet) + opts.retrain)
    if opts.retrain:
        from training import TrainConfig, train
        progress.step(f"training LeNet, then B-LeNet ({opts.epochs} epochs each)")
        out = os.path.join(opts.out, "checkpoints")
        trained = train(TrainConfig(model="b_lenet", out=out, baseline_epochs=opts.epochs,
                                    epochs=opts.epochs, data_dir=opts.data_dir,
                                    resume=os.path.exists(os.path.join(out, "lenet.pt")),
                                    command=f"branchy demo --retrain --epochs {opts.epochs}"))
        baseline, branchy = trained["lenet"], trained["b_lenet"]
    else:
        baseline, branchy = os.path.join(SHIPPED, "lenet.pt"), os.path.join(SHIPPED, "b_lenet.pt")
    # The demo measures afresh each time: costs and calibration belong to this machine and run.
    for stale in ("costs.json", "b_lenet-calibrated.pt", "b_lenet.branchy", "lenet.branchy",
                  f"{MOBILENET}/costs.json", f"{MOBILENET}/b_{MOBILENET}-calibrated.pt",
                  f"{MOBILENET}/b_{MOBILENET}.branchy", f"{MOBILENET}/{MOBILENET}.branchy"):
        if os.path.exists(os.path.join(opts.out, stale)):
            os.remove(os.path.join(opts.out, stale))
    paths = pipeline.prepare("lenet", branchy, baseline, opts.out, opts.threads, opts.data_dir, progress)
    table = pipeline.evaluate("lenet", paths, baseline, opts.threads, opts.data_dir, opts.limit, progress)
    table["figure6"] = pipeline.figure6("lenet", paths, opts.out, opts.threads, opts.data_dir, opts.limit, progress)
    tables = [table]
    if with_mobilenet:  # its files in their own folder: costs.json and the plots are per network
        out = os.path.join(opts.out, MOBILENET)
        limit = min(opts.limit or MOBILENET_SAMPLES, MOBILENET_SAMPLES)
        paths = pipeline.prepare(MOBILENET, *mobilenet, out, opts.threads, opts.data_dir, progress)
        tables.append(pipeline.evaluate(MOBILENET, paths, mobilenet[1], opts.threads, opts.data_dir,
                                        limit, progress))
    result = pipeline.write_tables(opts.out, tables, opts.threads)
    progress.close()
    return result
