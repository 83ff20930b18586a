"""The BranchyNet paper's networks (B-LeNet, B-AlexNet, B-ResNet-110) and their baselines.

Layer for layer as in shared/design/architectures.md. A baseline is its B-net without the branch
heads: same stages, same state_dict keys, only the final exit.
"""
import math
from typing import Callable, Optional

from torch import nn

from branchy_engine.models.branchy import BranchyNet
from branchy_engine.models.resblock import ResBlock, batch_norm


def _lrn() -> nn.LocalResponseNorm:
    """x / (2 + 5e-5 * sum over 3 channels of x^2)^0.75; PyTorch divides alpha by n, Chainer not."""
    return nn.LocalResponseNorm(3, alpha=1.5e-4, beta=0.75, k=2.0)


def _maxpool(kernel: int) -> nn.MaxPool2d:
    """Stride-2 max pooling that rounds the output size up, as Chainer's does."""
    return nn.MaxPool2d(kernel, 2, ceil_mode=True)


def _conv(cin: int, cout: int, kernel: int, padding: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=padding)


Exits = dict[int, nn.Sequential]
Stages = list[nn.Sequential]


def _lenet(in_channels: int, num_classes: int) -> tuple[Stages, Exits]:
    """Input [B, in_channels, 28, 28] (MNIST). The branch reads the first conv before pool/ReLU."""
    stages = [
        nn.Sequential(_conv(in_channels, 5, 5, 3)),  # 5x30x30
        nn.Sequential(
            _maxpool(2), nn.ReLU(), _conv(5, 10, 5, 3),  # 10x17x17
            _maxpool(2), nn.ReLU(), _conv(10, 20, 5, 3),  # 20x11x11
            _maxpool(2), nn.ReLU()),  # 20x6x6
    ]
    exits = {
        0: nn.Sequential(
            _maxpool(2), nn.ReLU(), _conv(5, 10, 3, 1),  # 10x15x15
            _maxpool(2), nn.ReLU(), nn.Flatten(), nn.Linear(640, num_classes)),  # 10x8x8
        1: nn.Sequential(nn.Flatten(), nn.Linear(720, 84), nn.Linear(84, num_classes)),
    }
    return stages, exits


def _alexnet(in_channels: int, num_classes: int) -> tuple[Stages, Exits]:
    """Input [B, in_channels, 32, 32] (CIFAR-10). Branches read conv outputs before ReLU."""
    stages = [
        nn.Sequential(
            _conv(in_channels, 32, 5, 2), nn.ReLU(), _maxpool(3), _lrn(),  # 32x16x16
            _conv(32, 64, 5, 2)),  # 64x16x16
        nn.Sequential(nn.ReLU(), _maxpool(3), _lrn(), _conv(64, 96, 3, 1)),  # 96x8x8
        nn.Sequential(
            nn.ReLU(), _conv(96, 96, 3, 1), nn.ReLU(), _conv(96, 64, 3, 1), nn.ReLU(),
            _maxpool(3)),  # 64x4x4
    ]
    exits = {
        0: nn.Sequential(
            nn.ReLU(), _maxpool(3), _lrn(), _conv(64, 32, 3, 1), nn.ReLU(),  # 32x8x8
            _conv(32, 32, 3, 1), nn.ReLU(), _maxpool(3),  # 32x4x4
            nn.Flatten(), nn.Linear(512, num_classes)),
        1: nn.Sequential(
            nn.ReLU(), _maxpool(3), _lrn(), _conv(96, 32, 3, 1), nn.ReLU(),  # 32x4x4
            _maxpool(3), nn.Flatten(), nn.Linear(128, num_classes)),  # 32x2x2
        2: nn.Sequential(
            nn.Flatten(), nn.Linear(1024, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)),
    }
    return stages, exits


def _resnet110(in_channels: int, num_classes: int) -> tuple[Stages, Exits]:
    """Input [B, in_channels, 32, 32] (CIFAR-10). 110 = 1 conv + 54 blocks x 2 convs + 1 FC."""
    stages = [
        nn.Sequential(_conv(in_channels, 16, 3, 0), batch_norm(16), nn.ReLU()),  # 16x30x30
        nn.Sequential(*[ResBlock(16, 16) for _ in range(18)]),
        nn.Sequential(
            ResBlock(16, 32, 2), *[ResBlock(32, 32) for _ in range(17)],  # 32x15x15
            ResBlock(32, 64, 2), *[ResBlock(64, 64) for _ in range(17)]),  # 64x8x8
    ]
    exits = {
        0: nn.Sequential(
            _conv(16, 64, 5, 2), nn.ReLU(), _lrn(), _conv(64, 32, 3, 1), nn.ReLU(),
            _conv(32, 32, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 30 * 30, num_classes)),
        1: nn.Sequential(ResBlock(16, 16), nn.Flatten(), nn.Linear(16 * 30 * 30, num_classes)),
        # Not a global pool: the original pools 8x8 with k6 s1 to 3x3 and keeps all of it.
        2: nn.Sequential(nn.AvgPool2d(6, 1), nn.Flatten(), nn.Linear(64 * 3 * 3, num_classes)),
    }
    return stages, exits


# baseline name -> (builder, default in_channels, conv init gain)
_FAMILIES: dict[str, tuple[Callable[[int, int], tuple[Stages, Exits]], int, float]] = {
    "lenet": (_lenet, 1, 1.0),
    "alexnet": (_alexnet, 3, 1.0),
    # The authors' ResNet code scales its convs' init by sqrt(sqrt(2)).
    "resnet110": (_resnet110, 3, 2 ** 0.25),
}


def init_parameters(model: nn.Module, conv_gain: float = 1.0) -> None:
    """The original's init, in place: weights ~ N(0, 1 / fan_in), biases 0, BN weight 1 bias 0.

    Conv2d weights get std conv_gain / sqrt(fan_in); Linear weights always 1 / sqrt(fan_in).
    fan_in = in_channels * kernel area (conv) or in_features (linear).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            gain = conv_gain if isinstance(m, nn.Conv2d) else 1.0
            nn.init.normal_(m.weight, 0.0, gain / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def names() -> list[str]:
    """The zoo: each baseline and its B-net ("b_" + baseline name)."""
    return [f"b_{base}" for base in _FAMILIES] + list(_FAMILIES)


def create(name: str, num_classes: int = 10, in_channels: Optional[int] = None) -> BranchyNet:
    """A freshly initialised zoo network; its exits give logits [B, num_classes].

    Args:
        name: one of names().
        num_classes: width of every exit's logits.
        in_channels: input channels; default 1 for the LeNet family, 3 for the others.
            The input height and width are fixed by the FC layers: 28x28 LeNet, 32x32 the others.
    """
    base = name.removeprefix("b_")
    if name not in names():
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    build, default_channels, conv_gain = _FAMILIES[base]
    stages, exits = build(default_channels if in_channels is None else in_channels, num_classes)
    if name == base:
        final = len(stages) - 1
        exits = {final: exits[final]}
    model = BranchyNet(stages, exits, name=name)
    init_parameters(model, conv_gain)
    return model
