"""`branchy reproduce`: the whole pipeline for the paper's three networks, resumable.

For each network: train the baseline, then the BranchyNet jointly (training/ resumes a killed run);
measure the engine's costs; calibrate on the validation split (the knee); export; run the test set
at batch 1 through the engine against ONNX Runtime and PyTorch eager; profile (Figure 6). Every
step skips its work when its output already exists, so re-running continues where the last run
stopped. Outputs as
`branchy demo`, per network under OUT/NAME/, and OUT/table1.{json,md} for all.
"""
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from branchy_engine import data as datasets
from branchy_engine.commands import pipeline
from branchy_engine.fileio import write_text
from training import TrainConfig, train

FAMILIES = ("lenet", "alexnet", "resnet110")
# Where the data is absent: Fashion-MNIST for LeNet, its 3-channel 32x32 stand-in for the others.
DEFAULT_DATA = {"lenet": ("mnist", "fashion-mnist"), "alexnet": ("cifar10", "fashion-mnist-32x3"),
                "resnet110": ("cifar10", "fashion-mnist-32x3")}
BATCH = {"lenet": 512, "alexnet": 512, "resnet110": 128}  # the authors' batch sizes


@dataclass
class ReproduceOptions:
    networks: List[str] = field(default_factory=lambda: list(FAMILIES))
    dataset: Optional[str] = None         # one data set for all; default: per network, see DEFAULT_DATA
    data_dir: Optional[str] = None
    out: str = "reproduce"
    epochs: int = 50                      # per phase
    threads: int = 1                      # for timing; training uses torch's default threads
    limit: Optional[int] = None           # test samples timed per network
    train_limit: Optional[int] = None     # train on the first N samples of each split (quick runs)
    sim_samples: int = 30                 # Figure 6: samples a point runs under the cache simulator
    device: str = "cpu"                   # for training


def dataset_for(family: str, opts: ReproduceOptions) -> str:
    """The data set given, else the paper's where it can be read, else the stand-in."""
    if opts.dataset:
        return opts.dataset
    wanted, fallback = DEFAULT_DATA[family]
    try:
        datasets.load(wanted, data_dir=opts.data_dir, limit=1)
        return wanted
    except FileNotFoundError:
        return fallback


def run(opts: ReproduceOptions) -> dict:
    unknown = [n for n in opts.networks if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown network(s) {unknown}; choose from {', '.join(FAMILIES)}")
    steps = 8 + torch.cuda.is_available()  # per network; the GPU engine's run where there is one
    progress = pipeline.Progress("branchy reproduce", steps * len(opts.networks))
    tables = []
    for family in opts.networks:
        out = os.path.join(opts.out, family)
        name = dataset_for(family, opts)
        command = f"branchy reproduce --networks {family} --epochs {opts.epochs}"
        what = f"{opts.epochs} epochs per phase"
        if opts.train_limit:
            command += f" --train-limit {opts.train_limit}"
            what += f", the first {opts.train_limit} samples of each split"
        progress.step(f"b_{family}: training on {name} ({what})")
        checkpoints = os.path.join(out, "checkpoints")
        trained = train(TrainConfig(
            model=f"b_{family}", dataset=name, data_dir=opts.data_dir, out=checkpoints,
            limit=opts.train_limit, baseline_epochs=opts.epochs, epochs=opts.epochs,
            batch_size=BATCH[family], device=opts.device,
            resume=os.path.exists(os.path.join(checkpoints, f"{family}.pt")),
            command=command))
        paths = pipeline.prepare(family, trained[f"b_{family}"], trained[family], out, opts.threads,
                                 opts.data_dir, progress)
        table_path = os.path.join(out, "table.json")
        if os.path.exists(table_path):
            progress.step(f"b_{family}: evaluated before", count=3 + torch.cuda.is_available())
            with open(table_path) as f:
                table = json.load(f)
        else:
            torch.set_num_threads(opts.threads)
            table = pipeline.evaluate(family, paths, trained[family], opts.threads, opts.data_dir,
                                      opts.limit, progress)
            write_text(table_path, json.dumps(table, indent=2) + "\n")
        if "figure6" in table and os.path.exists(table["figure6"]["figure"]):
            progress.step(f"b_{family}: Figure 6 drawn before")
        else:
            table["figure6"] = pipeline.figure6(family, paths, out, opts.threads, opts.data_dir,
                                                opts.limit, progress, opts.sim_samples)
            write_text(table_path, json.dumps(table, indent=2) + "\n")
        tables.append(table)
    result = pipeline.write_tables(opts.out, tables, opts.threads)
    progress.close()
    return result
