"""attach_exits on the traced graph: torchvision's classification families and hand-written modules.

Random weights, eval mode where outputs are compared, batch 2 at 64x64, so that every model runs
here in a few seconds. Each model is built once (a module-scoped fixture).
"""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from branchy_engine.data import Dataset, Split
from branchy_engine.models import BranchyNet, attach_exits, exit_points
from branchy_engine.models.attach import ExitOnCut
from training.config import TrainConfig
from training.distributed import Context
from training.loop import PhaseState, run_phase

# Every model below takes it: the smallest inputs they take are 8x8, but googlenet 15, squeezenet1_1
# 17, densenet121 29 and convnext_tiny 32.
SIZE = 64
BATCH = 2


class HandWritten(nn.Module):
    """Functional calls, a concatenation, a parameter read in forward(), a skip connection that
    crosses the first cut, and a channel shuffle by reshapes whose sizes cross the second."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.gain = nn.Parameter(torch.ones(1, 16, 1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        y = torch.cat([F.relu(self.a(x)), x], dim=1)
        z = F.relu(self.b(y) * self.gain + y)
        n, c, h, w = z.shape
        z = F.relu(self.c(z))  # [n, 2c, h / 2, w / 2], shuffled below in 4 groups
        h, w = h // 2, w // 2
        z = z.reshape(n, 4, c // 2, h, w).transpose(1, 2).reshape(n, 2 * c, h, w)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1))


# name: (exits, a third and two thirds into the trunk)
MODELS = {
    "resnet18": ["layer2", "layer3"],
    "resnet50": ["layer2", "layer3"],
    "resnext50_32x4d": ["layer2", "layer3"],
    "wide_resnet50_2": ["layer2", "layer3"],
    "mobilenet_v2": ["features.6", "features.12"],
    "mobilenet_v3_small": ["features.4", "features.8"],
    "mobilenet_v3_large": ["features.6", "features.11"],
    "efficientnet_b0": ["features.3", "features.5"],
    "efficientnet_v2_s": ["features.3", "features.5"],
    "regnet_x_400mf": ["trunk_output.block2", "trunk_output.block3"],
    "regnet_y_400mf": ["trunk_output.block2", "trunk_output.block3"],
    "mnasnet0_5": ["layers.9", "layers.11"],
    "shufflenet_v2_x0_5": ["stage2", "stage3"],
    "squeezenet1_1": ["features.5", "features.9"],
    "densenet121": ["features.denseblock2", "features.denseblock3"],
    "googlenet": ["inception3b", "inception4d"],
    "convnext_tiny": ["features.3", "features.5"],
    "hand_written": ["a", "c"],
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "hand_written":
        return HandWritten(num_classes=10)
    extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, num_classes=10, **extra)


@pytest.fixture(scope="module", params=list(MODELS))
def built(request):
    model = build(request.param)
    net = attach_exits(model, MODELS[request.param], input_shape=(3, SIZE, SIZE))
    torch.manual_seed(1)
    return request.param, model, net, torch.randn(BATCH, 3, SIZE, SIZE)


def test_last_exit_is_the_model_and_every_exit_gives_logits(built):
    _, model, net, x = built
    model.eval(), net.eval()
    with torch.no_grad():
        logits = net(x)
        expected = model(x)
        assert [tuple(z.shape) for z in logits] == [(BATCH, 10)] * 3
        assert torch.equal(logits[-1], expected)
        for n, z in enumerate(logits):
            assert torch.equal(net.forward_to(x, n), z)


def test_every_exit_trains_the_models_own_weights(built):
    name, model, net, x = built
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in net.stages.parameters()} <= own
    assert {id(p) for p in net.exits[str(net.exit_stages[-1])].parameters()} <= own
    stem = next(net.stages[0].parameters())
    model_state = model.state_dict()
    for key in net.stages.state_dict():  # "0.layer1.0.conv1.weight": stage, then the model's key
        assert key.split(".", 1)[1] in model_state, key

    net.eval()
    for n in range(net.num_exits):
        grad, = torch.autograd.grad(net.forward_to(x, n).square().sum(), stem)
        assert grad.abs().sum() > 0, f"exit {n} does not reach {name}'s first parameter"

    before = [p.detach().clone() for p in (stem, *net.exits.parameters())]
    data = Dataset("random", "", True, 10, [str(c) for c in range(10)], (3, SIZE, SIZE),
                   Split(torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8),
                         torch.arange(BATCH)),
                   *[Split(torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8),
                           torch.zeros(0, dtype=torch.long))] * 2, (0.5,) * 3, (0.25,) * 3)
    state = run_phase(Context(), net, data, TrainConfig(batch_size=BATCH), epochs=1,
                      weights=[1.0] * net.num_exits, state=PhaseState(), save=lambda s: None,
                      label=name)
    assert state.done and all(torch.isfinite(torch.tensor(state.history[0]["train_loss"])))
    after = [stem, *net.exits.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


def test_cuts_inside_blocks_carry_every_live_value(built):
    """Op-level cuts a third and two thirds through the graph: skips and shapes cross them."""
    model = built[1].eval()
    points = exit_points(model, (3, SIZE, SIZE), ops=True)
    at = [points[len(points) // 3], points[2 * len(points) // 3]]
    head = lambda channels, classes: nn.Sequential(nn.Flatten(), nn.LazyLinear(classes))
    net = attach_exits(model, at, head=head, input_shape=(3, SIZE, SIZE)).eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = net(x)
        assert torch.equal(logits[-1], model(x))
        assert all(torch.equal(net.forward_to(x, n), z) for n, z in enumerate(logits))


def test_a_skip_across_a_cut_travels_with_the_stage_output():
    model = build("hand_written").eval()
    net = attach_exits(model, MODELS["hand_written"], input_shape=(3, SIZE, SIZE))
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        a, pooled = net.stages[0](x)  # a's output, and the pooled input the cat reads later
        c, *sizes = net.stages[1]((a, pooled))  # c's output, and the sizes the shuffle reads
    assert a.shape == pooled.shape == (BATCH, 8, SIZE // 2, SIZE // 2)
    assert c.shape == (BATCH, 32, SIZE // 4, SIZE // 4)
    assert sizes == [BATCH, 16, SIZE // 2, SIZE // 2]
    assert isinstance(net.exits["0"], ExitOnCut) and net.exits["0"].head[2].in_features == 8
    assert list(net.state_dict()).count("stages.1.gain") == 1
    assert list(net.baseline()(x)[0].shape) == [BATCH, 10]


def test_stochastic_depth_stays_random_in_training():
    model = build("efficientnet_b0")
    net = attach_exits(model, MODELS["efficientnet_b0"])
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(net(x)[-1], net(x)[-1])  # drawn anew in each training forward
        net.eval()
        assert torch.equal(net(x)[-1], net(x)[-1])


def test_an_exit_before_an_inplace_op_gets_its_own_copy():
    model = build("resnet18")

    def conv_head(channels, classes):  # Conv2d saves its input for backward
        return nn.Sequential(nn.Conv2d(channels, 4, 1), nn.Flatten(), nn.LazyLinear(classes))
    net = attach_exits(model, ["layer1.0.bn1"], head=conv_head)  # the next op: ReLU(inplace)
    assert isinstance(net.exits["0"], ExitOnCut) and net.exits["0"].clone
    sum(z.sum() for z in net(torch.randn(BATCH, 3, 32, 32))).backward()
    assert model.conv1.weight.grad is not None


def test_exit_points_lists_the_trunk_in_order():
    model = build("resnet18")
    modules = exit_points(model)
    assert modules[:5] == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1"]
    assert modules.index("layer1.1") < modules.index("layer1") < modules.index("layer2.0.conv1")
    assert "layer4" not in modules and "avgpool" not in modules and "fc" not in modules
    ops = exit_points(model, ops=True)
    assert set(modules) < set(ops) and "layer1.0.add" in ops and "layer4.0.add" in ops
    assert ops.index("layer1.1.relu_1") + 2 == ops.index("layer1")  # then layer1.1, then layer1
    net = attach_exits(model, ["layer1.0.add", "layer3.0.downsample.1"])
    assert net.num_exits == 3


def test_a_leaf_module_is_one_value():
    model = build("resnet18").eval()
    net = attach_exits(model, ["layer2.0", "layer3"], leaf_modules=[BasicBlock])
    assert "layer2.0" in exit_points(model, leaf_modules=[BasicBlock])
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], model(x))
    with pytest.raises(ValueError, match=r"'layer2.0.conv1': it is inside layer2.0 \(BasicBlock\)"
                                         r".*cut at 'layer2.0'"):
        attach_exits(model, ["layer2.0.conv1"], leaf_modules=[BasicBlock])


@pytest.mark.parametrize("at,message", [
    (["layer5"], r"'layer5': ResNet has no module or graph node of that name; nearest valid "
                 r"names: layer\d"),
    (["layer4"], r"'layer4': nothing of the trunk would remain after it; the trunk of ResNet ends "
                 r"at layer4, where the classifier \(avgpool\) starts"),
    (["fc"], "nothing of the trunk would remain"),
    (["layer1", "layer1.1.relu_1"], r"'layer1' and 'layer1.1.relu_1' cut the trunk at the same "
                                    r"place \(both name the value of layer1\)"),
    (["layer2.1.bn2", "layer2.1.bn2"], "same place"),
])
def test_a_bad_cut_is_refused_with_its_reason(at, message):
    with pytest.raises(ValueError, match=message):
        attach_exits(build("resnet18"), at)


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x
        return -x


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = Gate()
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.unused = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv2(self.gate(self.conv(x)))
        return self.fc(x.mean((-2, -1)))


def test_a_model_fx_cannot_trace_names_the_module_and_line():
    with pytest.raises(ValueError, match=r"torch.fx cannot trace Gated in gate \(Gate\) at "
                                         r"test_attach.py:\d+ \(if x.sum\(\) > 0:.*\): TraceError: "
                                         r"symbolically traced variables cannot be used as inputs "
                                         r"to control flow.*leaf_modules="):
        attach_exits(Gated(), ["conv"])
    net = attach_exits(Gated(), ["gate"], leaf_modules=[Gate])
    assert net.num_exits == 2
    classifier = [n.target for n in net.exits["1"].graph.nodes if n.op != "placeholder"]
    assert classifier == ["mean", "fc", "output"]
    with pytest.raises(ValueError, match=r"'unused': Gated.forward\(\) never calls it \(Conv2d\)"):
        attach_exits(Gated(), ["unused"], leaf_modules=[Gate])


class Tokens(nn.Module):
    """A patch embedding and a per-token MLP: values of shape [B, tokens, dim] in the trunk."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.mlp = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(F.gelu(self.mlp(tokens)).mean(1))


def test_values_that_are_not_images_need_a_head_of_the_users():
    with pytest.raises(ValueError, match=r"the exit at 'mlp' would see a value of shape \[B, 16, "
                                         r"16\]; the default head .* needs \[B, C, H, W\]"):
        attach_exits(Tokens(), ["mlp"])
    calls = []

    def token_head(dim, classes):  # [B, tokens, dim] -> mean over the tokens -> [B, classes]
        calls.append((dim, classes))
        return nn.Sequential(Transpose(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                             nn.Linear(dim, classes))

    net = attach_exits(Tokens(), ["mlp"], head=token_head)
    assert calls == [(16, 10)]
    assert [tuple(z.shape) for z in net(torch.randn(BATCH, 3, 32, 32))] == [(BATCH, 10)] * 2
    with pytest.raises(ValueError, match="cannot attach an exit at 'getattr': its value is not a "
                                         "tensor"):
        attach_exits(HandWritten(), ["getattr"])


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def test_an_input_too_small_is_named():
    with pytest.raises(ValueError, match=r"SqueezeNet fails on an input of shape \[1, 3, 8, 8\] "
                                         r"at features.\d+.*input_shape"):
        attach_exits(build("squeezenet1_1"), ["features.3"], input_shape=(3, 8, 8))


def test_the_final_exit_is_the_models_classifier():
    model = build("resnet18").eval()
    net = attach_exits(model, ["layer2"])
    assert isinstance(net, BranchyNet) and net.name == "b_resnet"
    assert [k for k in net.state_dict() if k.startswith("exits.1.")] == ["exits.1.fc.weight",
                                                                         "exits.1.fc.bias"]
    assert "stages.1.layer4.1.bn2.running_var" in net.state_dict()
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.baseline()(x)[0], model(x))
