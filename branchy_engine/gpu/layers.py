"""A .branchy model as torch modules (for the GPU engine): the ops the C++ reader checked, with
their weights, run by PyTorch's kernels (cuDNN on a GPU). Same semantics as the CPU runtime
(docs/model-format.md), so on the CPU it must agree with the network the file came from."""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def _relu(x, on):
    return F.relu(x) if on else x


class Op(nn.Module):
    """One op of the model file (a dict from _C.load_model_ops)."""

    def __init__(self, op: dict):
        super().__init__()
        self.kind = op["kind"]
        self.relu = op["relu"]
        self.stride, self.padding, self.kernel = op["stride"], op["padding"], op["kernel"]
        self.ceil_mode = op["ceil_mode"]
        self.size, self.alpha, self.beta, self.k = op["size"], op["alpha"], op["beta"], op["k"]
        cin, cout = op["in_channels"], op["out_channels"]
        t = op["tensors"]
        if self.kind == "conv2d":
            self.weight = nn.Parameter(t[0].view(cout, cin, *self.kernel), requires_grad=False)
            self.bias = nn.Parameter(t[1], requires_grad=False)
        elif self.kind == "linear":
            self.weight = nn.Parameter(t[0].view(cout, cin), requires_grad=False)
            self.bias = nn.Parameter(t[1], requires_grad=False)
        elif self.kind == "res_block":
            self.w1 = nn.Parameter(t[0].view(cout, cin, 3, 3), requires_grad=False)
            self.b1 = nn.Parameter(t[1], requires_grad=False)
            self.w2 = nn.Parameter(t[2].view(cout, cout, 3, 3), requires_grad=False)
            self.b2 = nn.Parameter(t[3], requires_grad=False)
            self.extra = cout - cin
        elif self.kind not in ("max_pool2d", "avg_pool2d", "lrn", "relu", "flatten"):
            raise ValueError(f"op kind {self.kind!r} is not known to the GPU engine")

    def forward(self, x):
        kind = self.kind
        if kind == "conv2d":
            return _relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding), self.relu)
        if kind == "max_pool2d":
            return _relu(F.max_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode), self.relu)
        if kind == "avg_pool2d":
            return _relu(F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode,
                                      count_include_pad=True), self.relu)
        if kind == "lrn":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        if kind == "relu":
            return F.relu(x)
        if kind == "flatten":
            return x.flatten(1)
        if kind == "linear":
            return _relu(F.linear(x.flatten(1), self.weight, self.bias), self.relu)
        # res_block: relu(conv2(relu(conv1(x))) + shortcut(x)), BatchNorm folded into the convs.
        h = F.relu(F.conv2d(x, self.w1, self.b1, self.stride, 1))
        h = F.conv2d(h, self.w2, self.b2, 1, 1)
        shortcut = x[:, :, :: self.stride[0], :: self.stride[1]]
        if self.extra:
            shortcut = torch.cat([shortcut.new_zeros(shortcut.shape[0], self.extra, *shortcut.shape[2:]),
                                  shortcut], 1)
        return F.relu(h + shortcut)


def sequence(ops: List[dict]) -> nn.Sequential:
    return nn.Sequential(*[Op(op) for op in ops])


class LoadedNet(nn.Module):
    """The model file's network: segments (the stages between consecutive exits) and heads.

    Segment e holds the stages after exit e-1's stage up to exit e's stage, so running segments
    0..e then head e is the path of a sample that leaves at exit e.
    """

    def __init__(self, spec: dict):
        super().__init__()
        stages = spec["stages"]
        bounds = [-1] + [e["stage"] for e in spec["exits"]]
        self.segments = nn.ModuleList(
            sequence([op for s in range(bounds[e] + 1, bounds[e + 1] + 1) for op in stages[s]])
            for e in range(len(spec["exits"])))
        self.heads = nn.ModuleList(sequence(e["head"]) for e in spec["exits"])
        self.input_shape = tuple(spec["input_shape"])
        self.num_classes = spec["num_classes"]

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x) -> List[torch.Tensor]:
        """Every exit's logits [B, classes] (no early exit)."""
        logits = []
        for segment, head in zip(self.segments, self.heads):
            x = segment(x)
            logits.append(head(x))
        return logits
