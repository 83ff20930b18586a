"""The networks the GPU tests export: the tiny net and the paper's three, random weights and
BatchNorm statistics, thresholds 0.5 in the file (tests set their own); and resource bombs."""
import torch

from branchy_engine import models
from branchy_engine.export import model_file, write_model
from branchy_engine.export.model_file import Exit, Graph, Op, Stage, Value

from tiny_models import INPUT_SHAPE, randomize_batch_norm, tiny_net

SHAPES = {"tiny": INPUT_SHAPE, "b_lenet": (1, 28, 28), "b_alexnet": (3, 32, 32), "b_resnet110": (3, 32, 32)}


def export_cache(tmp_path_factory):
    """get(name) -> (the PyTorch network, the path of its .branchy file), each exported once."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            net = tiny_net() if name == "tiny" else models.create(name).eval()
            randomize_batch_norm(net)
            path = tmp_path_factory.mktemp("exported") / f"{name}.branchy"
            write_model(net, path, SHAPES[name], "entropy", [0.5] * (net.num_exits - 1))
            cache[name] = (net, str(path))
        return cache[name]
    return get


def bomb_model(tmp_path, name, shape, ops_of):
    """A one-stage, one-exit model file of input `shape` whose stage is ops_of(input value) and a
    mean (the exit's logits): a few hundred bytes that may declare huge values or work.
    Returns (path, size in bytes)."""
    x = Value()
    ops = ops_of(x)
    mean = Op("mean", [ops[-1].output if ops else x])
    graph = Graph(shape, shape[0], "entropy", [], [], x, [Stage(ops + [mean], [mean.output])],
                  [Exit(0, mean.output, [])])
    path = tmp_path / f"{name}.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    return str(path), path.stat().st_size
