"""A model's torch.fx graph, with a name for every value an exit may be put on.

Names follow the module hierarchy, as torchvision's feature extraction names them: a module call
is named by its named_modules() name ("layer2", "layer3.1", "features.6"), an op by the module
it runs in and its own name ("layer1.0.add", "features.3.block.2.mul", "flatten" at the top
level). A second call of one module, or a second op of one name in one module, gets "_1", then
"_2", and so on ("layer1.0.relu_1"). A module's name and its last op's name are two names of one
value ("layer1.1" and "layer1.1.relu_1").
"""
import contextlib
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
import torch.fx as fx
from torch import nn

# Traced whole although fx would open them: their forward() branches on self.training, which a
# trace would freeze in the mode it was traced in; as one node they follow .train()/.eval().
# Matched by class name: torchvision's StochasticDepth, timm's DropPath and the many copies of it
# in hand-written models, without importing either library.
TRAINING_DEPENDENT_LEAVES = ("StochasticDepth", "DropPath")

_SKIP_FRAMES = (os.path.dirname(fx.__file__), __file__)


@dataclass
class TracedModel:
    """A model's eval-mode graph and the names of its values.

    graph_module: the graph, over the model's own modules and parameters (shared, not copied).
    op_names: node -> its own name, for every node the trace created but the output.
    module_calls: (name, node of its output) of every module call, in call order.
    leaves: named_modules() name -> module, of every module traced whole (one node).
    shapes: node -> its value's shape [1, ...], or None where the value is not a tensor, from one
        eval-mode forward of a batch of one (filled by probe()).
    """
    model: nn.Module
    graph_module: fx.GraphModule
    op_names: dict[fx.Node, str]
    module_calls: list[tuple[str, fx.Node]]
    leaves: dict[str, nn.Module]
    shapes: dict[fx.Node, Optional[torch.Size]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.graph_module.graph.nodes)

    def names(self) -> dict[str, fx.Node]:
        """Every name a user may give -> its node: module calls, ops, and fx's own node names
        ("layer1_0_relu_1", "add_3"). Inputs and parameters are no values to cut at."""
        names = {node.name: node for node in self.nodes
                 if node.op not in ("placeholder", "get_attr", "output")}
        names.update((name, node) for node, name in self.op_names.items()
                     if node.op not in ("placeholder", "get_attr"))
        names.update(self.module_calls)
        return names

    def display_name(self, node: fx.Node) -> str:
        """The shortest module name of `node`'s value ("layer4" rather than "layer4.1"), else its
        op's name."""
        modules = [name for name, n in self.module_calls if n is node]
        if modules:
            return min(modules, key=lambda m: (m.count("."), len(m)))
        return self.op_names.get(node, node.name)


class _NamingTracer(fx.Tracer):
    """fx.Tracer that names every node by the module it was traced in and records module calls."""

    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types
        self.module_path = ""  # named_modules() name of the module whose forward() is being traced
        self.op_names: dict[fx.Node, str] = {}
        self.module_calls: list[tuple[str, fx.Node]] = []
        self.leaves: dict[str, nn.Module] = {}
        self.failed_in: Optional[tuple[str, nn.Module]] = None
        self._counts: dict[str, int] = {}

    def _unique(self, base: str) -> str:
        count = self._counts.get(base, 0)
        self._counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (isinstance(m, self.leaf_types) or type(m).__name__ in TRAINING_DEPENDENT_LEAVES
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        outer, self.module_path = self.module_path, path
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module is the first to see it
                self.failed_in = (path, m)
            raise
        finally:
            self.module_path = outer
        if self.is_leaf_module(m, path):
            self.leaves[path] = m
            self.module_calls.append((self.op_names[out.node], out.node))
        elif isinstance(out, fx.Proxy):
            self.module_calls.append((self._unique(path), out.node))
        return out

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest)
        if kind in ("call_module", "get_attr"):
            base = target
        else:
            op = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            base = f"{self.module_path}.{op}" if self.module_path else op
        self.op_names[proxy.node] = self._unique(base)
        return proxy


def _source_line(error: BaseException) -> str:
    """' at file:line (code)' of the innermost frame outside torch.fx and this file."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(_SKIP_FRAMES)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {os.path.basename(f.filename)}:{f.lineno} ({(f.line or '').strip()})"


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """model.eval() for the block, then every module's own mode back."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def trace(model: nn.Module, leaf_modules: Iterable[type] = ()) -> TracedModel:
    """The eval-mode fx graph of `model`, with the names of its values; the model's modes are kept.

    Traced in eval mode because that is the graph an exit runs at inference: Python branches on
    self.training (GoogLeNet's auxiliary heads, functional dropout) take their eval side. Leaf
    modules (torch.nn's, TRAINING_DEPENDENT_LEAVES, `leaf_modules`) still follow .train()/.eval().
    A module whose forward() fx cannot trace (data-dependent control flow) can be kept whole by
    naming its class in `leaf_modules`.

    Raises ValueError naming the module and source line fx could not trace, with fx's message.
    """
    tracer = _NamingTracer(tuple(leaf_modules))
    try:
        with _eval_mode(model):
            graph = tracer.trace(model)
    except Exception as e:
        inside = ""
        if tracer.failed_in is not None:
            path, m = tracer.failed_in
            inside = f" in {path or 'its own forward()'} ({type(m).__name__})"
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__}{inside}{_source_line(e)}: "
            f"{type(e).__name__}: {e}. Pass leaf_modules=[the class of the module that does this] "
            f"to keep it whole (no exit can then go inside it)") from e
    graph_module = fx.GraphModule(model, graph, class_name=type(model).__name__)
    return TracedModel(model, graph_module, tracer.op_names, tracer.module_calls, tracer.leaves)


class _ShapeRecorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, shapes: dict):
        super().__init__(module)
        self.shapes = shapes

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.shapes[n] = out.shape if isinstance(out, torch.Tensor) else None
        return out


@torch.no_grad()
def probe(traced: TracedModel, input_shape: tuple[int, ...]) -> None:
    """Fills traced.shapes from one eval-mode forward of zeros [1, *input_shape].

    Eval mode, because a batch of one fails in train-mode BatchNorm and would update its running
    statistics. The model's modes are restored. Raises ValueError naming the input shape and the
    node where the forward failed.
    """
    model = traced.model
    traced.shapes.clear()
    param = next(model.parameters(), torch.empty(0))
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    try:
        with _eval_mode(model):
            _ShapeRecorder(traced.graph_module, traced.shapes).run(x)
    except Exception as e:
        failed = next(n for n in traced.nodes if n not in traced.shapes)
        message = str(e).splitlines()[0] if str(e) else ""  # fx appends the graph's code
        raise ValueError(
            f"{type(model).__name__} fails on an input of shape {[1, *input_shape]} at "
            f"{traced.op_names.get(failed, failed.name)}: {type(e).__name__}: {message}. Pass "
            f"the input_shape (C, H, W) it takes") from e
