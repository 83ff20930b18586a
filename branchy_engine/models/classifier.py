"""Networks users bring: a torchvision classifier by name, or any nn.Module, with exits attached.

Such a network is described by its source and the exits' places, which is what a checkpoint
records (model_args) to rebuild it:
    source       "torchvision:NAME" (torchvision.models.NAME), or "module:CLASS" (a module of
                 the user's, which the user passes back in to rebuild it)
    num_classes  the final exit's width
    input_shape  one input's (C, H, W), which the graph was probed with
    exits        the names attach_exits took
"""
from typing import Optional

from torch import nn

from branchy_engine.models.attach import attach_exits
from branchy_engine.models.branchy import BranchyNet
from branchy_engine.models.trace import trace

TORCHVISION = "torchvision:"
MODULE = "module:"

# Built without their auxiliary classifiers (the exits take their place), as torchvision's own
# trained weights are, so that those weights' state_dict fits (--init-from).
_WITHOUT_AUX = {"googlenet": {"aux_logits": False, "init_weights": True},
                "inception_v3": {"aux_logits": False, "init_weights": True}}


def torchvision_names() -> list[str]:
    """The classification models torchvision.models builds, by constructor name."""
    import torchvision.models
    return torchvision.models.list_models(module=torchvision.models)


def torchvision_classifier(name: str, num_classes: int) -> nn.Module:
    """torchvision.models.NAME(weights=None, num_classes=num_classes), randomly initialised.

    A constructor that takes no num_classes is called without it and its last nn.Linear (in
    named_modules() order) is replaced by a freshly initialised one of num_classes outputs.
    """
    import torchvision.models
    names = torchvision_names()
    if name not in names:
        raise ValueError(f"unknown torchvision classification model {name!r}; choose one of "
                         f"{', '.join(names)}")
    build = torchvision.models.get_model_builder(name)
    extra = _WITHOUT_AUX.get(name, {})
    try:
        return build(weights=None, num_classes=num_classes, **extra)
    except TypeError as e:
        if "num_classes" not in str(e):
            raise
    model = build(weights=None, **extra)
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision.models.{name} takes no num_classes and has no nn.Linear "
                         f"classifier to replace")
    path, last = linears[-1]
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, nn.Linear(last.in_features, num_classes))
    return model


def input_channels(model: nn.Module) -> Optional[int]:
    """in_channels of the first nn.Conv2d `model` calls (in its traced graph), None if it calls
    none: how many channels the data must have."""
    traced = trace(model)
    for node in traced.nodes:
        if node.op == "call_module":
            module = traced.graph_module.get_submodule(node.target)
            if isinstance(module, nn.Conv2d):
                return module.in_channels
    return None


def base_name(source: str) -> str:
    """The baseline's name: "resnet18" for torchvision:resnet18, the class name in lower case for
    a module; the BranchyNet is "b_" + it, as in the zoo."""
    if source.startswith(TORCHVISION):
        return source.removeprefix(TORCHVISION)
    return source.removeprefix(MODULE).lower()


def attach(model: nn.Module, source: str, exits: list[str], input_shape) -> BranchyNet:
    """attach_exits(model, exits, input_shape=input_shape), named "b_" + base_name(source)."""
    net = attach_exits(model, list(exits), input_shape=tuple(input_shape))
    net.name = f"b_{base_name(source)}"
    return net


def create(name: str, source: str, num_classes: int, input_shape, exits: list[str],
           module: Optional[nn.Module] = None) -> BranchyNet:
    """The network a checkpoint's model and model_args describe, with fresh weights.

    Args:
        name: "b_" + base name for the BranchyNet, the base name alone for its baseline (the same
            stages with the final exit only).
        source, num_classes, input_shape, exits: as recorded (see the module's docstring).
        module: for source "module:CLASS", an instance of the user's CLASS to attach to (its
            weights are replaced when the checkpoint's are loaded).
    """
    if source.startswith(TORCHVISION):
        model = torchvision_classifier(source.removeprefix(TORCHVISION), num_classes)
    elif source.startswith(MODULE):
        cls = source.removeprefix(MODULE)
        if module is None:
            raise ValueError(f"the network {name} has exits on a module of the user's own "
                             f"({cls}); pass an instance to rebuild it: "
                             f"build_model(checkpoint, module={cls}(...))")
        if type(module).__name__ != cls:
            raise ValueError(f"the network {name} was trained on a {cls}, not a "
                             f"{type(module).__name__}")
        model = module
    else:
        raise ValueError(f"unknown network source {source!r}: 'torchvision:NAME' or 'module:CLASS'")
    net = attach(model, source, exits, input_shape)
    return net if name.startswith("b_") else net.baseline()
