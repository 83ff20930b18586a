"""Writes the model-level equality test's data (make test-aarch64): networks exported on this host
with their inputs and PyTorch's logits, for tests/aarch64/check_models.cpp to run through the
engine built for another CPU (aarch64 under qemu) and compare.

Networks: the paper's three with the shipped checkpoints (b_lenet, b_alexnet, b_resnet110) and the
shipped B-MobileNetV3-small, and torchvision's resnet18, mobilenet_v3_small and shufflenet_v2_x0_5
with random weights, exits where `branchy train` puts them, at 32x32 input (small: qemu runs the
check). Their BatchNorm statistics are those of a batch of random inputs and their affine
parameters random: statistics drawn at random (tests/tiny_models.randomize_batch_norm) leave
MobileNet's outputs nearly the same for every input, which would hide a wrong
trunk. Each early exit's threshold lies halfway between two
of the samples' entropies there, so that some samples leave early and some go on, none of them
at the threshold.

Per network NAME, in OUT_DIR: NAME.branchy; NAME.inputs, float32 [samples, C, H, W]; NAME.logits,
float64, per sample every exit's logits in exit order (PyTorch in double precision); and a line
"NAME samples" in manifest.txt. Three samples a network, two of B-ResNet-110 (under qemu its
checks take most of the time).
Usage: make_models.py OUT_DIR"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from branchy_engine import checkpoint  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from branchy_engine.models import attach_exits, default_exits  # noqa: E402

CHECKPOINTS = os.path.join(os.path.dirname(HERE), "..", "branchy_engine", "checkpoints")
SHIPPED = ["b_lenet", "b_alexnet", "b_resnet110", "b_mobilenet_v3_small"]
TORCHVISION = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"]
TORCHVISION_INPUT = (3, 32, 32)
SAMPLES = {"b_resnet110": 2}


def shipped(name):
    ckpt = checkpoint.load(os.path.join(CHECKPOINTS, f"{name}.pt"))
    return checkpoint.build_model(ckpt), tuple(ckpt["dataset"]["input_shape"])


def torchvision_net(name):
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    net = attach_exits(model, default_exits(model, TORCHVISION_INPUT), input_shape=TORCHVISION_INPUT)
    batch_norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net.eval()
    for m in batch_norms:  # BatchNorm alone in training mode: no dropout, no stochastic depth
        m.reset_running_stats()
        m.momentum = None  # the batch's statistics exactly
        m.train()
    with torch.no_grad():
        net(torch.randn(32, *TORCHVISION_INPUT))
        for m in batch_norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
    return net.eval(), TORCHVISION_INPUT


def entropy(logits):
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def threshold(logits):
    """Halfway between the entropies of the samples ranked n // 2 and n // 2 + 1 (n >= 2)."""
    h = entropy(logits).sort().values
    k = max(len(h) // 2, 1)
    return ((h[k - 1] + h[k]) / 2).item()


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for name in SHIPPED + TORCHVISION:
        samples = SAMPLES.get(name, 3)
        net, shape = shipped(name) if name in SHIPPED else torchvision_net(name)
        gen = torch.Generator().manual_seed(1)
        # The shipped networks take Fashion-MNIST prepared as [0, 1]; the random ones anything.
        x = (torch.rand if name in SHIPPED else torch.randn)(samples, *shape, generator=gen)
        with torch.no_grad():
            logits = [z.double() for z in net.double()(x.double())]
        thresholds = [threshold(z) for z in logits[:-1]]
        write_model(net.float(), os.path.join(out_dir, f"{name}.branchy"), shape, "entropy", thresholds)
        x.numpy().astype("<f4").tofile(os.path.join(out_dir, f"{name}.inputs"))
        torch.cat(logits, 1).numpy().astype("<f8").tofile(os.path.join(out_dir, f"{name}.logits"))
        lines.append(f"{name} {samples}\n")
        print(name, "thresholds", [round(t, 4) for t in thresholds], flush=True)
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main(sys.argv[1])
