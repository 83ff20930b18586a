"""The engine and the peers a user could pick instead, built in one process for one network.

A path is the work from the input to one exit's decision, as a sample that leaves there
experiences it: the trunk stages up to that exit, the heads and decisions of that exit and of every
earlier one (the sample was offered those exits and stayed), nothing after it. Peers:
  engine      the compiled runtime through branchy_engine.Engine (Python call, batch 1)
  engine_cpp  the same runtime timed in a C++ loop (what an embedding program pays)
  onnxruntime ONNX Runtime running that path as one graph (entropies of the path's exits, argmax)
  eager       the PyTorch early-exit loop: stages, heads, softmax/log/sum entropy, .item() check
Baselines (the network without branches) run the same way, ending in argmax.
"""
import io
import math
import os
from typing import Callable

import torch
from torch import nn

import branchy_engine as be
from branchy_engine.runtime.engine import thresholds_for_exit

from branchy_engine.export import write_model


class PathModule(nn.Module):
    """Path e of a BranchyNet as one graph: the entropy at every exit up to e, and exit e's argmax."""

    def __init__(self, net, e: int):
        super().__init__()
        self.net, self.e = net, e

    def forward(self, x):
        entropies, ran = [], 0
        for stage in self.net.exit_stages[: self.e + 1]:
            while ran <= stage:
                x = self.net.stages[ran](x)
                ran += 1
            z = self.net.exits[str(stage)](x)
            entropies.append(-(torch.softmax(z, 1) * torch.log_softmax(z, 1)).sum(1))
        return torch.stack(entropies, 1), z.argmax(1)


class Baseline(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[-1].argmax(1)


def onnx_runner(module: nn.Module, input_shape, threads: int) -> Callable:
    """An ONNX Runtime session of `module` at batch 1, as a no-argument callable."""
    import onnxruntime as ort
    buffer = io.BytesIO()
    x = torch.rand(1, *input_shape)
    torch.onnx.export(module.eval(), (x,), buffer, dynamo=False, input_names=["x"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def eager_runner(net, e: int, input_shape) -> Callable:
    """The PyTorch early-exit loop a user would write, for a sample that leaves at exit e."""
    thresholds = thresholds_for_exit(net.num_exits, e) + [math.inf]
    x = torch.rand(1, *input_shape)

    @torch.inference_mode()
    def run():
        h, ran = x, 0
        for n, stage in enumerate(net.exit_stages):
            while ran <= stage:
                h = net.stages[ran](h)
                ran += 1
            z = net.exits[str(stage)](h)
            p = torch.softmax(z, 1)
            entropy = -(p * torch.log(p)).sum(1)
            if entropy.item() < thresholds[n]:
                return int(z.argmax(1))
    return run


def eager_baseline(net, input_shape) -> Callable:
    baseline = net.baseline().eval()
    x = torch.rand(1, *input_shape)

    @torch.inference_mode()
    def run():
        return int(baseline(x)[-1].argmax(1))
    return run


class Network:
    """One network with its exported engine files, ready to time paths and baselines."""

    def __init__(self, net, input_shape, directory: str):
        self.net = net.eval()
        self.input_shape = tuple(input_shape)
        self.path = os.path.join(directory, f"{net.name}.branchy")
        self.baseline_path = os.path.join(directory, f"{net.name}-baseline.branchy")
        write_model(self.net, self.path, input_shape, "entropy", [0.0] * (net.num_exits - 1))
        write_model(self.net.baseline(), self.baseline_path, input_shape)
        self.x = torch.rand(*input_shape)

    def engine(self, e: int, threads: int, kernels: str = "measure") -> be.Engine:
        return be.Engine(self.path, threads=threads, kernels=kernels,
                         thresholds=thresholds_for_exit(self.net.num_exits, e))

    def runners(self, e: int, threads: int):
        """{peer: callable} for path e."""
        engine = self.engine(e, threads)
        x = self.x
        return {
            "engine": lambda: engine(x),
            "onnxruntime": onnx_runner(PathModule(self.net, e), self.input_shape, threads),
            "eager": eager_runner(self.net, e, self.input_shape),
        }, engine

    def baseline_runners(self, threads: int):
        engine = be.Engine(self.baseline_path, threads=threads)
        x = self.x
        return {
            "engine": lambda: engine(x),
            "onnxruntime": onnx_runner(Baseline(self.net), self.input_shape, threads),
            "eager": eager_baseline(self.net, self.input_shape),
        }, engine
