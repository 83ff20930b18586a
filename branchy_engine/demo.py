"""`branchy demo`: Table I on the embedded default, end to end, against real peers.

On Fashion-MNIST with the shipped LeNet and B-LeNet (or freshly trained ones with --retrain):
measure the engine's per-segment costs, calibrate the thresholds on the validation split (the knee
of the accuracy-cost frontier), export, run the whole test set at batch 1 through the CPU engine,
and time the baseline through the engine, ONNX Runtime and PyTorch eager; then sweep the threshold
for Figure 6 (runtime and cache misses). Every time is end to end (branches, decisions and copies
included). Writes results/ (JSON, Markdown, plots).
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch

from branchy_engine import pipeline

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")


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
    progress = pipeline.Progress("branchy demo", 7 + opts.retrain + torch.cuda.is_available())
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
    for stale in ("costs.json", "b_lenet-calibrated.pt", "b_lenet.branchy", "lenet.branchy"):
        if os.path.exists(os.path.join(opts.out, stale)):
            os.remove(os.path.join(opts.out, stale))
    paths = pipeline.prepare("lenet", branchy, baseline, opts.out, opts.threads, opts.data_dir, progress)
    table = pipeline.evaluate("lenet", paths, baseline, opts.threads, opts.data_dir, opts.limit, progress)
    table["figure6"] = pipeline.figure6("lenet", paths, opts.out, opts.threads, opts.data_dir, opts.limit, progress)
    result = pipeline.write_tables(opts.out, [table], opts.threads)
    progress.close()
    return result
