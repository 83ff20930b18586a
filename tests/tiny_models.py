"""Small BranchyNets for the tests: a tiny one with every op the model file has (for the exporter
tests and the fuzz corpus), and one just heavy enough for Python threads to run in parallel (the
thread stress tests)."""
import torch
from torch import nn

from branchy_engine.models import BranchyNet, ResBlock

INPUT_SHAPE = (2, 6, 6)
NUM_CLASSES = 3


def randomize_batch_norm(net: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from the identity, so folding them shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))


def tiny_net(seed: int = 0) -> BranchyNet:
    """[B, 2, 6, 6] -> two exits of 3 classes, in eval mode.

    stage 0: conv+BN+ReLU [4,6,6], max pool (ceil) [4,3,3], LRN
    stage 1: ResBlock stride 2 [6,2,2], avg pool pad 1 +ReLU [6,3,3], max pool pad 1, dropout
    exit 0: flatten, linear.  exit 1: flatten, standalone ReLU, linear+ReLU, linear
    """
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.MaxPool2d(2, 2, ceil_mode=True),
                      nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)),
        nn.Sequential(ResBlock(4, 6, 2), nn.AvgPool2d(2, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 1, 1),
                      nn.Dropout(0.5)),
    ]
    exits = {
        0: nn.Sequential(nn.Flatten(), nn.Linear(36, NUM_CLASSES)),
        1: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(54, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES)),
    }
    net = BranchyNet(stages, exits, name="tiny")
    randomize_batch_norm(net, seed)
    return net.eval()


STRESS_INPUT_SHAPE = (3, 16, 16)


def stress_net(seed: int = 0) -> BranchyNet:
    """[B, 3, 16, 16] -> three exits of 10 classes, in eval mode: 2.7 MFLOP a sample as the plan
    estimates it, over the 2 MFLOP from which an engine call releases the GIL
    (csrc/ops/engine_binding.cpp), so that single-sample calls from Python threads run in parallel.

    stage 0: conv+BN+ReLU [16,16,16], max pool [16,8,8]
    stage 1: ResBlock [32,8,8], LRN
    stage 2: conv+ReLU [32,8,8], avg pool [32,4,4], dropout
    exit 0: flatten, linear.  exit 1: avg pool, flatten, linear.  exit 2: flatten, linear+ReLU, linear
    """
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(ResBlock(16, 32), nn.LocalResponseNorm(5, alpha=1e-3, beta=0.75, k=1.0)),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.5)),
    ]
    exits = {
        0: nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 10)),
        1: nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10)),
        2: nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)),
    }
    net = BranchyNet(stages, exits, name="stress")
    randomize_batch_norm(net, seed)
    return net.eval()
