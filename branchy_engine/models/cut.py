"""Cutting an fx graph into consecutive pieces, each a GraphModule over the model's own modules."""
import operator

import torch.fx as fx
from torch import nn


def boundary(nodes: list[fx.Node], position: int, cut: fx.Node) -> list[fx.Node]:
    """The values that cross a cut after nodes[position]: `cut` first, then, in graph order, every
    value computed up to there that a later node reads. Parameters (get_attr) never cross: each
    piece reads its own."""
    order = {n: i for i, n in enumerate(nodes)}
    live = [n for n in nodes[: position + 1]
            if n is not cut and n.op != "get_attr" and any(order[u] > position for u in n.users)]
    return [cut, *live]


def split(root: nn.Module, graph: fx.Graph, cuts: list[fx.Node], class_names: list[str]
          ) -> tuple[list[fx.GraphModule], list[list[fx.Node]]]:
    """`graph` cut after each node of `cuts` into len(cuts) + 1 pieces, run one after the other.

    Piece i takes what piece i-1 returns and returns boundary i: one value alone, several as a
    tuple (a skip connection across the cut), the cut's value always first. Piece 0 takes the
    graph's inputs; the last returns the graph's output. Every piece is a GraphModule over
    `root`'s own submodules and parameters (shared, not copied), under their named_modules() names.

    Args:
        root: the module `graph` was traced from.
        graph: its graph; it is read, not changed.
        cuts: nodes of `graph` in graph order, none of them the output.
        class_names: one per piece, for the generated code.

    Returns:
        (pieces, boundaries): boundaries[i] lists the nodes whose values piece i returns.
    """
    nodes = list(graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    positions = [order[c] for c in cuts]
    if positions != sorted(set(positions)):
        raise ValueError("cuts must be distinct nodes in graph order")
    boundaries = [boundary(nodes, p, c) for p, c in zip(positions, cuts)]
    starts = [0, *(p + 1 for p in positions)]
    ends = [*positions, len(nodes) - 1]
    pieces = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if i > 0:
            carried = boundaries[i - 1]
            if len(carried) == 1:
                env[carried[0]] = g.placeholder(carried[0].name)
            else:
                whole = g.placeholder("boundary")
                for k, value in enumerate(carried):
                    env[value] = g.call_function(operator.getitem, (whole, k))

        def lookup(value: fx.Node) -> fx.Node:
            if value not in env:  # only parameters are read in a piece that did not compute them
                assert value.op == "get_attr", value
                env[value] = g.get_attr(value.target)
            return env[value]

        for node in nodes[start:end + 1]:
            if node.op == "get_attr":
                continue  # created where first read, so that pieces that do not read it skip it
            if node.op == "output":
                g.output(fx.map_arg(node.args[0], lookup))
            else:
                env[node] = g.node_copy(node, lookup)
        if i < len(cuts):
            out = [lookup(v) for v in boundaries[i]]
            g.output(out[0] if len(out) == 1 else tuple(out))
        g.lint()
        pieces.append(fx.GraphModule(root, g, class_name=class_names[i]))
    return pieces, boundaries
