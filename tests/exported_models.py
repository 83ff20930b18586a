"""The networks the GPU tests export: the tiny net and the paper's three, random weights and
BatchNorm statistics, thresholds 0.5 in the file (tests set their own)."""
import torch

from branchy_engine import models
from branchy_engine.export import write_model

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
