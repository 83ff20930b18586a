"""attach_exits: turn a torchvision-style classifier into a BranchyNet by cutting its trunk."""
from typing import Callable, Optional

import torch
from torch import nn

from branchy_engine.models.branchy import BranchyNet

HeadFactory = Callable[[int, int], nn.Module]

# Where a torchvision classifier's head starts; its forward() flattens right after this pool.
_HEAD_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_head(channels: int, num_classes: int) -> nn.Sequential:
    """[B, channels, H, W] -> global average pool -> [B, num_classes] via one Linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _is_plain_sequential(module: nn.Module) -> bool:
    # A subclass that overrides forward() may do more than chain its children; keep it whole.
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) in forward order, opening plain Sequentials down to their members."""
    if not _is_plain_sequential(module):
        return [(name, module)]
    children = module.named_children()
    return [leaf for child, sub in children for leaf in _leaves(f"{name}.{child}", sub)]


def _split_trunk(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Sequential]:
    """The trunk's leaves, and the final head: pool -> flatten -> the children after the pool."""
    children = list(model.named_children())
    start = next((i for i, (_, m) in enumerate(children) if isinstance(m, _HEAD_POOLS)), None)
    if start is None:
        raise ValueError(
            f"{type(model).__name__} has no top-level adaptive pooling child where its classifier "
            f"starts (children: {[n for n, _ in children]})")
    trunk = [leaf for name, m in children[:start] for leaf in _leaves(name, m)]
    pool, *rest = (m for _, m in children[start:])
    return trunk, nn.Sequential(pool, nn.Flatten(1), *rest)


@torch.no_grad()
def _probe(model: nn.Module, stages: list[nn.Sequential], final: nn.Module,
           input_shape: tuple[int, ...]) -> tuple[list[torch.Size], int]:
    """Output shape of each stage and the number of classes, from one eval-mode forward."""
    modes = {m: m.training for m in model.modules()}
    model.eval()  # batch 1 through train-mode BatchNorm would fail and update its running stats
    try:
        param = next(model.parameters())
        x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
        shapes = []
        for stage in stages:
            x = stage(x)
            shapes.append(x.shape)
        return shapes, final(x).shape[-1]
    finally:
        for m, training in modes.items():
            m.training = training


def attach_exits(model: nn.Module, at: list[str], head: Optional[HeadFactory] = None,
                 input_shape: tuple[int, ...] = (3, 32, 32)) -> BranchyNet:
    """A BranchyNet over `model`'s own modules (shared, not copied) with an exit after each of `at`.

    The model must run its top-level children in order, with a flatten after the adaptive pool
    that starts its classifier (torchvision's ResNet, MobileNet, VGG, EfficientNet, ...). The final
    exit is pool -> flatten -> the rest, so the last exit reproduces model(x) exactly.

    Args:
        model: the classifier, input [B, *input_shape] -> logits [B, num_classes].
        at: names as in named_modules() of the modules to put an exit after; dotted names cut
            inside plain nn.Sequential containers ("features.3", "layer2.0"). Any order.
        head: (channels, num_classes) -> module mapping [B, channels, H, W] to [B, num_classes];
            default global average pool -> Linear. num_classes is read from the model's output.
        input_shape: one input's (C, H, W), used to probe the channels at each cut.

    Returns:
        a BranchyNet with len(at) + 1 exits, named "b_" + the model's class name in lower case.
    """
    trunk, final = _split_trunk(model)
    # A name's cut falls after the last leaf inside it; a cut at the very end would leave the
    # final stage empty, duplicating the final exit.
    end = {}
    for i, (leaf, _) in enumerate(trunk):
        parts = leaf.split(".")
        for depth in range(1, len(parts) + 1):
            end[".".join(parts[:depth])] = i
    valid = [name for name, i in end.items() if i < len(trunk) - 1]
    unknown = [name for name in at if name not in valid]
    if unknown:
        raise ValueError(f"cannot attach exits at {unknown}; valid names: {', '.join(valid)}")
    cuts = sorted(end[name] for name in at)
    if len(set(cuts)) != len(cuts):
        raise ValueError(f"two names in {at} cut the trunk at the same place")

    bounds = [0, *(c + 1 for c in cuts), len(trunk)]
    stages = [nn.Sequential(*(m for _, m in trunk[a:b])) for a, b in zip(bounds, bounds[1:])]
    shapes, num_classes = _probe(model, stages, final, input_shape)
    param = next(model.parameters())
    exits = {}
    for i, shape in enumerate(shapes[:-1]):
        if len(shape) != 4:
            raise ValueError(f"exit {i} would see output {tuple(shape)}; heads need [B, C, H, W]")
        exits[i] = (head or default_head)(shape[1], num_classes).to(param.device, param.dtype)
    exits[len(stages) - 1] = final
    return BranchyNet(stages, exits, name=f"b_{type(model).__name__.lower()}")
