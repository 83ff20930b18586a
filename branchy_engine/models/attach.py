"""attach_exits: any traceable classifier as a BranchyNet, cut on its torch.fx graph."""
import difflib
import operator
from typing import Callable, Iterable, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from branchy_engine.models.branchy import BranchyNet
from branchy_engine.models.cut import boundary, split
from branchy_engine.models.trace import TracedModel, probe, trace

HeadFactory = Callable[[int, int], nn.Module]

_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
_REDUCTIONS = ("mean", "amax", "sum")  # global pooling where they reduce over H and W


def default_head(channels: int, num_classes: int) -> nn.Sequential:
    """[B, channels, H, W] -> global average pool -> [B, num_classes] via one Linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ExitOnCut(nn.Module):
    """An exit head fed the cut's value out of what its stage returns.

    A stage returns a tuple when more than one value crosses its end (a skip connection across
    the cut); the cut's value is then its first item. `clone` gives the head its own copy where
    a later stage changes the value in place (an inplace ReLU), which would otherwise spoil the
    tensors the head saved for backward.
    """

    def __init__(self, head: nn.Module, first: bool, clone: bool):
        super().__init__()
        self.head = head
        self.first = first
        self.clone = clone

    def forward(self, boundary):
        value = boundary[0] if self.first else boundary
        return self.head(value.clone() if self.clone else value)


def _reduces_space(traced: TracedModel, node: fx.Node) -> bool:
    """Whether `node` pools [B, C, H, W] globally (adaptive pooling, or mean/amax/sum over H, W)."""
    if node.op == "call_module":
        target = traced.graph_module.get_submodule(node.target)
        return isinstance(target, _POOL_MODULES)
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        return True
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op not in ("call_method", "call_function") or name not in _REDUCTIONS:
        return False
    source = node.args[0] if node.args else None
    shape = traced.shapes.get(source) if isinstance(source, fx.Node) else None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if shape is None or len(shape) != 4 or not isinstance(dims, (list, tuple)):
        return False
    return sorted(d % 4 for d in dims) == [2, 3]


def _flattens(traced: TracedModel, node: fx.Node) -> bool:
    """Whether `node` flattens its input to [B, features]."""
    if node.op == "call_module":
        flattens = isinstance(traced.graph_module.get_submodule(node.target), nn.Flatten)
    else:
        flattens = (node.op, node.target) in (("call_function", torch.flatten),
                                              ("call_method", "flatten"))
    shape = traced.shapes.get(node)
    return flattens and shape is not None and len(shape) == 2


def _trunk_end(traced: TracedModel) -> tuple[fx.Node, Optional[fx.Node]]:
    """(the trunk's last value, the node where the classifier starts, or None if it has none).

    The classifier starts at the last global pooling after which nothing reads a value from
    before it (so a squeeze-excitation's pooling never counts), or failing one, at such a last
    flatten to [B, features]; the trunk ends at that node's input. Without either (a model that
    picks a class token, say), the trunk ends at the output and the classifier is empty.
    """
    nodes = traced.nodes
    output = nodes[-1].args[0]
    if not isinstance(output, fx.Node):
        raise ValueError(f"{traced.model.__class__.__name__}.forward() returns "
                         f"{type(output).__name__} in eval mode; attach_exits needs one tensor "
                         f"of logits [B, classes]")
    for starts_classifier in (_reduces_space, _flattens):
        for position in range(len(nodes) - 2, -1, -1):
            node = nodes[position]
            source = node.args[0] if node.args else None
            if (isinstance(source, fx.Node) and starts_classifier(traced, node)
                    and boundary(nodes, position, node) == [node]):
                return source, node
    return output, None


def _mutated_after(node: fx.Node, traced: TracedModel) -> bool:
    """Whether a node after `node` changes its value in place (inplace modules and functions,
    Tensor methods ending in '_', item assignment)."""
    for user in node.users:
        if not user.args or user.args[0] is not node:
            continue
        if user.op == "call_module":
            if getattr(traced.graph_module.get_submodule(user.target), "inplace", False):
                return True
        elif user.op in ("call_method", "call_function"):
            name = user.target if user.op == "call_method" else getattr(user.target, "__name__", "")
            if (user.kwargs.get("inplace") or user.target is operator.setitem
                    or (name.endswith("_") and not name.endswith("__"))):
                return True
    return False


class _CutPoints:
    """The values of a traced, probed model that an exit may be put on, and why others may not."""

    def __init__(self, traced: TracedModel):
        self.traced = traced
        self.nodes = traced.nodes
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.trunk_end, self.classifier = _trunk_end(traced)
        self.names = traced.names()

    def valid(self, node: fx.Node) -> bool:
        return (node.op not in ("placeholder", "get_attr", "output")
                and self.traced.shapes.get(node) is not None
                and self.order[node] < self.order[self.trunk_end])

    def listing(self, ops: bool) -> list[str]:
        """Valid names in graph order; module calls only, or with ops every op's name too."""
        names = list(self.traced.module_calls)
        if ops:
            names += [(name, node) for node, name in self.traced.op_names.items()]
        unique = dict.fromkeys((self.order[node], -name.count("."), name)
                               for name, node in names if self.valid(node))
        return [name for _, _, name in sorted(unique)]

    def resolve(self, name: str) -> fx.Node:
        """The node `name` names; ValueError saying why, where it names no valid cut."""
        traced, model = self.traced, type(self.traced.model).__name__
        node = self.names.get(name)
        if node is None:
            for leaf, module in traced.leaves.items():
                if name.startswith(leaf + "."):
                    instead = (f"cut at {leaf!r}" if self.valid(self.names[leaf])
                               else "cut at a value after it")
                    raise ValueError(
                        f"cannot attach an exit at {name!r}: it is inside {leaf} "
                        f"({type(module).__name__}), which the trace keeps whole (a leaf module, "
                        f"one node); {instead}")
            module = dict(traced.model.named_modules()).get(name)
            if module is not None:
                raise ValueError(
                    f"cannot attach an exit at {name!r}: {model}.forward() never calls it "
                    f"({type(module).__name__}) in eval mode")
            valid = self.listing(ops=True)
            near = difflib.get_close_matches(name, valid, n=8, cutoff=0.6)
            shown = near or [n for n in self.listing(ops=False) if n.count(".") <= 1]
            raise ValueError(
                f"cannot attach an exit at {name!r}: {model} has no module or graph node of that "
                f"name; {'nearest ' if near else ''}valid names: {', '.join(shown)} "
                f"(exit_points(model, ops=True) lists them all)")
        where = f"cannot attach an exit at {name!r}"
        if self.order[node] >= self.order[self.trunk_end]:
            starts = (f", where the classifier ({traced.display_name(self.classifier)}) starts"
                      if self.classifier is not None else "")
            raise ValueError(
                f"{where}: nothing of the trunk would remain after it; the trunk of {model} ends "
                f"at {traced.display_name(self.trunk_end)}{starts}")
        if traced.shapes.get(node) is None:
            raise ValueError(f"{where}: its value is not a tensor")
        return node


def exit_points(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), ops: bool = False,
                leaf_modules: Iterable[type] = ()) -> list[str]:
    """The names attach_exits accepts, in the order the model computes them.

    Args:
        model: the classifier; it is traced and run once in eval mode (its modes are kept).
        input_shape: one input's (C, H, W) for that run.
        ops: also list every op's name ("layer1.0.add", "features.3.block.2.mul"), not only
            module calls ("layer1", "layer1.0", "layer1.0.conv1").
        leaf_modules: module classes to trace whole (their insides cannot be cut).

    Returns:
        names before the end of the trunk whose values are tensors; a value named several ways
        lists its names together, the shortest last ("layer1.1.relu_1", "layer1.1", "layer1").
    """
    traced = trace(model, leaf_modules)
    probe(traced, input_shape)
    return _CutPoints(traced).listing(ops)


def attach_exits(model: nn.Module, at: list[str], head: Optional[HeadFactory] = None,
                 input_shape: tuple[int, ...] = (3, 32, 32),
                 leaf_modules: Iterable[type] = ()) -> BranchyNet:
    """A BranchyNet over `model`'s own modules (shared, not copied) with an exit after each of `at`.

    The model is traced with torch.fx (in eval mode, see trace.trace) and its graph cut after each
    named value, so functional calls, reshapes, concatenations and skip connections are fine.
    Stage i is a GraphModule running the graph from the previous cut to cut i; it returns the
    cut's value, or a tuple (the cut's value first) where later nodes still read other values
    too. The last stage runs to the end of the trunk (see _trunk_end: the input of the final
    global pooling). The final exit is the model's own classifier from there (pooling, flatten,
    linear layers, as a GraphModule): the last exit then reproduces model(x) exactly and
    baseline() is the model itself, while, as in the zoo's networks, every exit is a head on a
    trunk value and every stage holds trunk work (no cut can leave the last stage empty).

    Args:
        model: the classifier, input [B, *input_shape] -> logits [B, num_classes].
        at: names of values to put an exit on, any order: named_modules() names of the modules
            whose output it is ("layer2", "layer3.1", "features.6"), op names ("layer1.0.add"),
            or fx node names; exit_points(model) lists them.
        head: (channels, num_classes) -> module mapping the value to [B, num_classes]; channels
            is dim 1 of a [B, C, H, W] value, the last dim of any other ([B, tokens, dim]). Default:
            default_head, global average pool -> Linear, for [B, C, H, W] values only.
        input_shape: one input's (C, H, W), for one eval-mode probe of the shapes.
        leaf_modules: module classes to trace whole, e.g. one fx cannot trace.

    Returns:
        a BranchyNet with len(at) + 1 exits, named "b_" + the model's class name in lower case.

    Raises:
        ValueError naming the problem: an unknown name (with the nearest valid ones), a name
        inside a leaf module, a cut with nothing of the trunk after it, two names of one value,
        a value the head cannot take, or the module and line fx could not trace.
    """
    traced = trace(model, leaf_modules)
    probe(traced, input_shape)
    points = _CutPoints(traced)
    nodes = {}
    for name in at:
        node = points.resolve(name)
        if node in nodes:
            raise ValueError(f"{nodes[node]!r} and {name!r} cut the trunk at the same place "
                             f"(both name the value of {traced.display_name(node)})")
        nodes[node] = name
    cuts = sorted(nodes, key=points.order.get)
    class_names = [f"{type(model).__name__}Stage{i}" for i in range(len(cuts) + 1)]
    pieces, boundaries = split(model, traced.graph_module.graph, [*cuts, points.trunk_end],
                               [*class_names, f"{type(model).__name__}Classifier"])
    num_classes = traced.shapes[points.nodes[-1].args[0]][-1]
    param = next(model.parameters(), torch.empty(0))
    exits = {}
    for i, (cut, carried) in enumerate(zip(cuts, boundaries)):
        shape = traced.shapes[cut]
        if head is None and len(shape) != 4:
            raise ValueError(
                f"the exit at {nodes[cut]!r} would see a value of shape "
                f"[B, {', '.join(map(str, shape[1:]))}]; the default head (global average pool + "
                f"linear) needs [B, C, H, W]: pass head=(channels, num_classes) -> module")
        channels = shape[1] if len(shape) == 4 else shape[-1]
        module = (head or default_head)(channels, num_classes).to(param.device, param.dtype)
        first, clone = len(carried) > 1, _mutated_after(cut, traced)
        exits[i] = ExitOnCut(module, first, clone) if first or clone else module
    exits[len(cuts)] = pieces[-1]
    return BranchyNet(pieces[:-1], exits, name=f"b_{type(model).__name__.lower()}")


def default_exits(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), count: int = 2,
                  leaf_modules: Iterable[type] = ()) -> list[str]:
    """Where `count` exits go when the user names none (`branchy train` without --exits).

    The rule: of the n values exit_points(model) lists (each value once, in graph order), the
    candidates are the block outputs, [B, C, H, W] values that are the only value crossing a cut
    after them (not the middle of a residual block or a squeeze-excitation), named by their
    shortest module name; of those, the ones at the shallowest nesting depth (dots in the name)
    that has at least count + 2 of them ("layer2", "features.6", rather than "layer2.0.conv1").
    Exit k (1-based) goes on the candidate after exit k-1 nearest position k * n / (count + 1):
    for two exits, about a third and two thirds into the trunk. resnet18: layer1, layer3;
    mobilenet_v3_small: features.4, features.8; efficientnet_b0: features.3, features.5.

    Raises ValueError where fewer than `count` candidates exist (a model whose trunk values are
    not [B, C, H, W], a vision transformer say): name the exits then.
    """
    traced = trace(model, leaf_modules)
    probe(traced, input_shape)
    points = _CutPoints(traced)
    values = list(dict.fromkeys(points.names[name] for name in points.listing(ops=False)))
    candidates = []  # (position among the values, name)
    for position, node in enumerate(values):
        shape = traced.shapes[node]
        if len(shape) == 4 and boundary(points.nodes, points.order[node], node) == [node]:
            candidates.append((position, traced.display_name(node)))
    if len(candidates) < count:
        raise ValueError(
            f"{type(model).__name__} has {len(candidates)} values where a default exit head "
            f"(global average pool + linear) can go between blocks, {count} are needed; name the "
            f"exits (exit_points(model) lists the valid names)")
    depth = 0
    while sum(name.count(".") <= depth for _, name in candidates) < min(count + 2, len(candidates)):
        depth += 1
    candidates = [c for c in candidates if c[1].count(".") <= depth]
    chosen, start = [], 0
    for k in range(1, count + 1):
        target = k * len(values) / (count + 1)
        window = candidates[start:len(candidates) - (count - k)]
        best = min(range(len(window)), key=lambda i: abs(window[i][0] - target))
        chosen.append(window[best][1])
        start += best + 1
    return chosen
