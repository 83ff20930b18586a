"""The ATen lowering reads torch.export's own graph (the training IR: batch_norm, chunk, flatten,
dropout, in-place activations) without run_decompositions where that is safe: the lowered graph is
the one the decomposed graph gives, op for op and bit for bit. In-place ops on views, on a stage's
input or on a tensor something else reads make it decompose first; those on views and on read
tensors still lower right."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from branchy_engine import Engine
from branchy_engine.export import lower_aten, model_file, write_model
from branchy_engine.models import BranchyNet, attach_exits, default_exits

from tiny_models import randomize_batch_norm

torchvision = pytest.importorskip("torchvision")

INPUT = (3, 32, 32)


@pytest.fixture
def decompositions(monkeypatch):
    """The number of run_decompositions calls so far, as a list of one entry per call."""
    calls = []
    original = torch.export.ExportedProgram.run_decompositions

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", counted)
    return calls


def described(stages, exits, x) -> list:
    """The lowered graph as data: each op's kind, attributes, inputs (by value number) and float64
    tensors (dtype, shape, bytes), each stage's outputs, each exit's stage and input."""
    ids, out = {id(x): 0}, []

    def ops(part):
        for op in part:
            out.append((op.kind, sorted(op.attrs.items()), [ids[id(v)] for v in op.inputs],
                        [(t.dtype.str, t.shape, t.tobytes()) for t in op.tensors]))
            ids[id(op.output)] = len(ids)
    for stage in stages:
        ops(stage.ops)
        out.append(("outputs", [ids[id(v)] for v in stage.outputs]))
    for e in exits:
        ops(e.ops)
        out.append(("exit", e.stage, ids[id(e.input)]))
    return out


def lowered(net, shape, monkeypatch, decompositions, decompose: bool):
    """(the lowered graph as data, its model file's bytes, how many parts were decomposed), with
    every part decomposed first where `decompose`."""
    del decompositions[:]
    with monkeypatch.context() as m:
        if decompose:
            m.setattr(lower_aten, "_lowers_undecomposed", lambda graph: False)
        x = model_file.Value()
        stages, exits = lower_aten.lower_network(net, shape, x)
    with torch.no_grad():
        classes = net(torch.zeros(1, *shape))[0].shape[1]
    graph = model_file.Graph(tuple(shape), classes, "entropy", [0.5] * (net.num_exits - 1), [], x,
                             stages, exits)
    return described(stages, exits, x), model_file.serialize(graph, "{}"), len(decompositions)


def _net(*modules, features):
    return BranchyNet([nn.Sequential(*modules)], {0: nn.Sequential(nn.Flatten(), nn.Linear(features, 3))})


class _Handmade(nn.Module):
    """Functional calls: BatchNorm, ReLU6, a depthwise conv, a residual, squeeze-excitation, a
    clamp, a concat with a pooled copy, GELU, global pooling by mean."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.pw = nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 8, 1)
        self.squeeze, self.excite = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        x = x + self.pw(F.hardswish(self.dw(x)))
        x = x * torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = torch.clamp(x, min=0.25)
        return F.gelu(torch.cat([x, F.max_pool2d(x, 3, 1, 1)], 1))


def torchvision_net(name):
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    return attach_exits(model, default_exits(model, INPUT), input_shape=INPUT)


def _in_place_chain():
    """In-place activations one after another, dropout in place on a flatten (a view)."""
    stage = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Dropout(inplace=True), nn.Hardtanh(0.5, 2.0, inplace=True),
                          nn.Conv2d(4, 4, 1), nn.SiLU(inplace=True), nn.Hardswish(inplace=True))
    head = nn.Sequential(nn.Flatten(), nn.Dropout(inplace=True), nn.Linear(4 * 30 * 30, 3))
    return BranchyNet([stage], {0: head})


NETS = {
    # batch_norm, hardswish_ (also after a linear), dropout_, squeeze-excitation, flatten
    "mobilenet_v3_small": lambda: torchvision_net("mobilenet_v3_small"),
    "shufflenet_v2_x0_5": lambda: torchvision_net("shufflenet_v2_x0_5"),  # chunk, contiguous, relu_
    "squeezenet1_1": lambda: torchvision_net("squeezenet1_1"),          # relu_, cat, dropout
    "handmade": lambda: _net(_Handmade(), features=16 * 16 * 16),
    "lone-batchnorm": lambda: _net(nn.MaxPool2d(2), nn.BatchNorm2d(3), nn.Sigmoid(), features=3 * 16 * 16),
    "in-place-chain": _in_place_chain,
}


@pytest.mark.parametrize("name", list(NETS))
def test_the_training_ir_lowers_as_its_decomposition(name, monkeypatch, decompositions):
    torch.manual_seed(0)
    net = NETS[name]()
    randomize_batch_norm(net)
    net.eval()
    fast, fast_file, fast_calls = lowered(net, INPUT, monkeypatch, decompositions, decompose=False)
    slow, slow_file, slow_calls = lowered(net, INPUT, monkeypatch, decompositions, decompose=True)
    assert fast_calls == 0, "a part was decomposed first: the fast path was not taken"
    assert slow_calls == len(net.stages) + len(net.exit_stages)
    assert len(fast) == len(slow)
    for n, (a, b) in enumerate(zip(fast, slow)):
        assert a == b, f"{name}: entry {n}: {a[:3]} != {b[:3]}"
    assert fast_file == slow_file


class _ReluOnView(nn.Module):
    """relu_ on a view: the pooled tensor under it changes too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(self.conv(x), 1)
        v = y.flatten(1).relu_()
        return torch.cat([y, v.view(y.shape)], 1)


class _ReluOnInput(nn.Module):
    """relu_ on the stage's input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        x.relu_()
        return self.conv(x)


class _ReadBeforeRelu(nn.Module):
    """A reader of the tensor before relu_ changes it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        s = torch.sigmoid(y)
        y.relu_()
        return y * s


class _ReluInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        y.relu_()
        return y


@pytest.mark.parametrize("block, safe", [(_ReluOnView, False), (_ReluOnInput, False),
                                         (_ReadBeforeRelu, False), (_ReluInPlace, True)])
def test_in_place_ops_are_read_undecomposed_only_where_safe(block, safe):
    with torch.no_grad():
        program = torch.export.export(block().eval(), (torch.randn(1, *INPUT),))
    assert lower_aten._lowers_undecomposed(program.graph) == safe


@pytest.mark.parametrize("block, features", [(_ReluOnView, 16), (_ReadBeforeRelu, 8 * 30 * 30)])
def test_in_place_ops_on_views_and_read_tensors_decompose_and_lower_right(tmp_path, block, features,
                                                                          decompositions):
    torch.manual_seed(0)
    net = _net(block(), features=features).eval()
    write_model(net, tmp_path / "m.branchy", INPUT)
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        want = net(x)[0]
    engine = Engine(str(tmp_path / "m.branchy"), kernels="own")
    for n in range(2):
        torch.testing.assert_close(engine.all_exit_logits(x[n])[0], want[n], rtol=1e-4, atol=1e-5)
    assert decompositions, "the stage was not decomposed first"
