"""Per-segment costs of a BranchyNet at batch 1: measured on this machine, or counted FLOPs.

Segment e is what a sample pays to get from exit e-1 to exit e's decision: the stages after exit
e-1's stage up to exit e's stage, exit e's head, and the exit decision. The costs file records how
its figures were measured; `branchy calibrate` reads it (or measures afresh).
"""
import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Callable, List

import torch
from torch.utils.flop_counter import FlopCounterMode

from branchy_engine.fileio import write_text
from branchy_engine.timing import median_us
from branchy_engine.runtime.ops import exit_decision

FORMAT = "branchy-engine costs"


@dataclass
class Costs:
    model: str
    unit: str                   # "us" (measured) or "MFLOP" (counted)
    segments: List[float]       # one per exit, see the module docstring
    baseline: float             # the baseline network (trunk + final head + argmax), same unit
    method: str                 # how the figures were obtained
    machine: dict = field(default_factory=dict)
    date: str = ""

    def to_dict(self) -> dict:
        return dict(asdict(self), format=FORMAT)


def _segments(net) -> List[Callable]:
    """Per exit, a function from the previous exit's stage output to (this stage output, logits)."""
    bounds = [-1] + net.exit_stages
    out = []
    for e in range(net.num_exits):
        stages = net.stages[bounds[e] + 1: bounds[e + 1] + 1]
        head = net.exits[str(bounds[e + 1])]

        def run(x, stages=stages, head=head):
            for stage in stages:
                x = stage(x)
            return x, head(x)
        out.append(run)
    return out


def _inputs(net, input_shape) -> List[torch.Tensor]:
    """A batch-1 input for each segment: what the trunk hands it."""
    x = torch.rand(1, *input_shape)
    inputs = []
    for run in _segments(net):
        inputs.append(x)
        x, _ = run(x)
    return inputs


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the architecture where that is not readable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine() -> dict:
    return {"processor": cpu_model(), "cpus": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}", "torch": str(torch.__version__)}


@torch.inference_mode()
def measure_pytorch(net, input_shape, threads: int = 1, warmup: int = 50, rounds: int = 31,
                    calls: int = 20) -> Costs:
    """Times each segment (and the baseline) in PyTorch eager at batch 1, end to end."""
    net = net.eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        segments = []
        for run, x in zip(_segments(net), _inputs(net, input_shape)):
            segments.append(median_us(lambda: exit_decision(run(x)[1], 0.0), warmup, rounds, calls))
        baseline = net.baseline().eval()
        x = torch.rand(1, *input_shape)
        base = median_us(lambda: baseline(x)[-1].argmax(1), warmup, rounds, calls)
    finally:
        torch.set_num_threads(before)
    method = (f"PyTorch eager {torch.__version__}, batch 1, {threads} thread(s), inference_mode; "
              f"each figure the median of {rounds} rounds of {calls} calls after {warmup} warm-up "
              f"calls; segments include the exit head and the fused exit decision")
    return Costs(net.name, "us", segments, base, method, machine(), today())


def count_flops(net, input_shape) -> Costs:
    """Counted FLOPs (2 per multiply-add of convolutions and matmuls) at batch 1, in MFLOP."""
    def flops(fn):
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e6

    net = net.eval()
    with torch.inference_mode():
        segments = [flops(lambda: run(x)) for run, x in zip(_segments(net), _inputs(net, input_shape))]
        base = flops(lambda: net.baseline().eval()(torch.rand(1, *input_shape)))
    method = ("torch.utils.flop_counter at batch 1: 2 FLOPs per multiply-add of convolutions and "
              "linear layers; pooling, activations, normalisation and the exit decision not counted")
    return Costs(net.name, "MFLOP", segments, base, method, machine(), today())


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save(path, costs: Costs):
    write_text(path, json.dumps(costs.to_dict(), indent=2) + "\n")


def load(path, model: str, num_exits: int) -> Costs:
    """Reads a costs file and checks it belongs to `model` with `num_exits` segments."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable costs file: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a branchy-engine costs file")
    raw.pop("format")
    try:
        costs = Costs(**raw)
    except TypeError as e:
        raise ValueError(f"{path}: malformed costs file: {e}") from e
    if costs.model != model:
        raise ValueError(f"{path}: costs of {costs.model!r}, not of {model!r}")
    if len(costs.segments) != num_exits:
        raise ValueError(f"{path}: {len(costs.segments)} segment costs, the network has {num_exits} exits")
    return costs
