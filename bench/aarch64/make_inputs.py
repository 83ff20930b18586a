"""Writes bench/aarch64/count.sh's models and inputs: LeNet, B-LeNet, MobileNetV3-small and
B-MobileNetV3-small from the shipped checkpoints, exported with the thresholds `make demo`
calibrated (bench/results/demo-table1.md), and the first SAMPLES test images of their data
(Fashion-MNIST; the 32x32x3 stand-in for MobileNet) prepared as in training: NAME.branchy and
NAME.inputs (float32 [SAMPLES, C, H, W]) in OUT_DIR.
Usage: make_inputs.py OUT_DIR SAMPLES"""
import os
import sys

from branchy_engine import checkpoint, data
from branchy_engine.export import write_model

CHECKPOINTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "branchy_engine",
                           "checkpoints")
# The thresholds of bench/results/demo-table1.md (make demo, 2026-12-06).
NETWORKS = {"lenet": [], "b_lenet": [1.299], "mobilenet_v3_small": [],
            "b_mobilenet_v3_small": [0.9254, 1.803]}


def main(out_dir, samples):
    os.makedirs(out_dir, exist_ok=True)
    for name, thresholds in NETWORKS.items():
        ckpt = checkpoint.load(os.path.join(CHECKPOINTS, f"{name}.pt"))
        net = checkpoint.build_model(ckpt)
        shape = tuple(ckpt["dataset"]["input_shape"])
        write_model(net, os.path.join(out_dir, f"{name}.branchy"), shape, "entropy", thresholds)
        d = data.load(ckpt["dataset"]["name"], limit=samples)
        d.mean, d.std = tuple(ckpt["dataset"]["mean"]), tuple(ckpt["dataset"]["std"])  # training's
        images, _ = d.test.batch(range(samples))
        x = d.prepare(images).contiguous()
        assert tuple(x.shape[1:]) == shape, (name, x.shape, shape)
        x.numpy().astype("<f4").tofile(os.path.join(out_dir, f"{name}.inputs"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
