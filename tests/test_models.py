"""The model zoo against shared/design/architectures.md, BranchyNet's contract, and attach_exits."""
import math

import pytest
import torch
import torchvision
from torch import nn

from branchy_engine.models import BranchyNet, ResBlock, attach_exits, create, names

FAMILIES = ["lenet", "alexnet", "resnet110"]
INPUT = {"lenet": (1, 28, 28), "alexnet": (3, 32, 32), "resnet110": (3, 32, 32)}

# architectures.md: baseline parameters, then each branch's, in exit order.
PARAMETERS = {
    "lenet": (67_824, [6_870]),
    "alexnet": (544_074, [32_842, 28_970]),
    "resnet110": (1_737_130, [341_386, 148_714]),
}

# Output shape (per sample) after every child of each stage and exit head, from architectures.md.
SHAPES = {
    "b_lenet": {
        "stages": [
            [(5, 30, 30)],
            [(5, 15, 15), (5, 15, 15), (10, 17, 17), (10, 9, 9), (10, 9, 9), (20, 11, 11),
             (20, 6, 6), (20, 6, 6)],
        ],
        "exits": [
            [(5, 15, 15), (5, 15, 15), (10, 15, 15), (10, 8, 8), (10, 8, 8), (640,), (10,)],
            [(720,), (84,), (10,)],
        ],
    },
    "b_alexnet": {
        "stages": [
            [(32, 32, 32), (32, 32, 32), (32, 16, 16), (32, 16, 16), (64, 16, 16)],
            [(64, 16, 16), (64, 8, 8), (64, 8, 8), (96, 8, 8)],
            [(96, 8, 8), (96, 8, 8), (96, 8, 8), (64, 8, 8), (64, 8, 8), (64, 4, 4)],
        ],
        "exits": [
            [(64, 16, 16), (64, 8, 8), (64, 8, 8), (32, 8, 8), (32, 8, 8), (32, 8, 8), (32, 8, 8),
             (32, 4, 4), (512,), (10,)],
            [(96, 8, 8), (96, 4, 4), (96, 4, 4), (32, 4, 4), (32, 4, 4), (32, 2, 2), (128,), (10,)],
            [(1024,), (256,), (256,), (256,), (128,), (128,), (128,), (10,)],
        ],
    },
    "b_resnet110": {
        "stages": [
            [(16, 30, 30)] * 3,
            [(16, 30, 30)] * 18,
            [(32, 15, 15)] * 18 + [(64, 8, 8)] * 18,
        ],
        "exits": [
            [(64, 30, 30), (64, 30, 30), (64, 30, 30), (32, 30, 30), (32, 30, 30), (32, 30, 30),
             (32, 30, 30), (28800,), (10,)],
            [(16, 30, 30), (14400,), (10,)],
            [(64, 3, 3), (576,), (10,)],
        ],
    },
}

STANDARD_MODULES = (
    BranchyNet, nn.ModuleList, nn.ModuleDict, nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
    nn.ReLU, nn.LocalResponseNorm, nn.BatchNorm2d, nn.Linear, nn.Flatten, nn.Dropout, ResBlock)


def family(name):
    return name.removeprefix("b_")


def sample(name, batch=2):
    torch.manual_seed(0)
    return torch.randn(batch, *INPUT[family(name)])


def count(module):
    return sum(p.numel() for p in module.parameters())


def trace(seq, x):
    """Run a Sequential child by child; returns (per-sample shape after each child, output)."""
    shapes = []
    for child in seq:
        x = child(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes, x


@pytest.mark.parametrize("base", FAMILIES)
def test_parameter_counts_match_the_paper(base):
    baseline_params, branch_params = PARAMETERS[base]
    baseline, branchy = create(base), create(f"b_{base}")
    assert count(baseline) == baseline_params
    branches = [branchy.exits[str(s)] for s in branchy.exit_stages[:-1]]
    assert [count(b) for b in branches] == branch_params
    assert count(branchy) == baseline_params + sum(branch_params)


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_intermediate_shape_matches_the_paper(name):
    model = create(name).eval()
    expected = SHAPES[name]
    assert model.exit_stages == list(range(len(expected["stages"])))
    x = sample(name)
    with torch.no_grad():
        for i, stage in enumerate(model.stages):
            shapes, x = trace(stage, x)
            assert shapes == expected["stages"][i]
            assert trace(model.exits[str(i)], x)[0] == expected["exits"][i]


@pytest.mark.parametrize("name", names())
def test_forward_gives_logits_of_every_exit_and_forward_to_runs_only_the_stages_it_needs(name):
    model = create(name).eval()
    x = sample(name, batch=3)
    with torch.no_grad():
        logits = model(x)
        expected_exits = 1 if name in FAMILIES else len(SHAPES[name]["exits"])
        assert len(logits) == model.num_exits == expected_exits
        assert all(z.shape == (3, 10) for z in logits)

        ran = []
        for i, stage in enumerate(model.stages):
            stage.register_forward_hook(lambda *_, i=i: ran.append(i))
        for n, stage in enumerate(model.exit_stages):
            ran.clear()
            torch.testing.assert_close(model.forward_to(x, n), logits[n], rtol=0, atol=0)
            assert ran == list(range(stage + 1))
    for bad in (-1, model.num_exits):
        with pytest.raises(ValueError, match=rf"\[0, {model.num_exits - 1}\].*{bad}"):
            model.forward_to(x, bad)


def test_create_sets_classes_and_input_channels():
    model = create("b_lenet", num_classes=7, in_channels=3)
    assert model.stages[0][0].in_channels == 3
    assert all(z.shape == (2, 7) for z in model(torch.randn(2, 3, 28, 28)))
    assert create("alexnet").stages[0][0].in_channels == 3


def test_create_rejects_unknown_names_listing_the_choices():
    assert sorted(names()) == sorted(FAMILIES + [f"b_{base}" for base in FAMILIES])
    with pytest.raises(ValueError, match="nope") as err:
        create("nope")
    assert all(n in str(err.value) for n in names())
    with pytest.raises(ValueError):
        create("b_nope")


def test_resblock_shortcut_pads_zero_channels_in_front_and_subsamples():
    block = ResBlock(4, 6, stride=2)
    x = torch.randn(2, 4, 15, 15)
    s = block.shortcut(x)
    assert s.shape == (2, 6, 8, 8)
    assert (s[:, :2] == 0).all()
    torch.testing.assert_close(s[:, 2:], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert block(x).shape == (2, 6, 8, 8)
    assert ResBlock(4, 4).shortcut(x) is x


@pytest.mark.parametrize("cin,cout,stride", [(4, 4, 1), (4, 6, 2), (3, 8, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_resblock_with_zero_convs_returns_relu_of_the_shortcut(cin, cout, stride, training):
    block = ResBlock(cin, cout, stride).train(training)
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.randn(2, cin, 9, 9)
    shortcut = torch.cat([torch.zeros(2, cout - cin, 9, 9), x], 1)[:, :, ::stride, ::stride]
    expected = torch.relu(shortcut)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


def test_resblock_cannot_drop_channels():
    with pytest.raises(ValueError, match="in_channels 8"):
        ResBlock(8, 4)


@pytest.mark.parametrize("name,path,gain", [
    ("alexnet", ("exits", "2", "1"), 1.0),  # Linear 1024 -> 256
    ("alexnet", ("stages", "2", "1"), 1.0),  # conv 96 -> 96 k3
    ("b_lenet", ("stages", "1", "5"), 1.0),  # conv 10 -> 20 k5
    ("b_resnet110", ("stages", "2", "35", "conv2"), 2 ** 0.25),  # conv 64 -> 64 k3
    ("b_resnet110", ("exits", "0", "0"), 2 ** 0.25),  # branch conv 16 -> 64 k5
    ("b_resnet110", ("exits", "0", "8"), 1.0),  # Linear 28800 -> 10
])
def test_weights_are_normal_with_std_gain_over_sqrt_fan_in(name, path, gain):
    torch.manual_seed(0)
    module = create(name).get_submodule(".".join(path))
    w = module.weight.detach()
    expected = gain / math.sqrt(w[0].numel())
    assert abs(w.std().item() / expected - 1) < 0.03
    assert abs(w.mean().item()) < 0.03 * expected
    assert (module.bias == 0).all()


@pytest.mark.parametrize("name", names())
def test_layers_use_the_original_conventions(name):
    model = create(name)
    modules = list(model.modules())
    assert all(type(m) in STANDARD_MODULES for m in modules)
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.bias is not None and (m.bias == 0).all()
        if isinstance(m, nn.BatchNorm2d):
            assert (m.eps, m.momentum) == (2e-5, 0.1)
            assert (m.weight == 1).all() and (m.bias == 0).all()
        if isinstance(m, nn.MaxPool2d):
            assert m.ceil_mode
        if isinstance(m, nn.LocalResponseNorm):
            assert (m.size, m.alpha, m.beta, m.k) == (3, 1.5e-4, 0.75, 2.0)


def test_lrn_is_the_originals_formula():
    lrn = next(m for m in create("b_alexnet").modules() if isinstance(m, nn.LocalResponseNorm))
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64) * 30
    sq = nn.functional.pad(x * x, (0, 0, 0, 0, 1, 1))  # zero channel on either side
    window = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]
    torch.testing.assert_close(lrn(x), x / (2 + 5e-5 * window) ** 0.75)


@pytest.mark.parametrize("base", FAMILIES)
def test_baseline_weights_load_into_the_branchy_net_leaving_only_branches(base):
    branchy, baseline = create(f"b_{base}").eval(), create(base).eval()
    assert set(baseline.state_dict()) < set(branchy.state_dict())
    result = branchy.load_state_dict(baseline.state_dict(), strict=False)
    assert result.unexpected_keys == []
    branch_prefixes = tuple(f"exits.{s}." for s in branchy.exit_stages[:-1])
    # BatchNorm tolerates a missing num_batches_tracked (old checkpoints) and does not report it.
    assert sorted(result.missing_keys) == sorted(
        k for k in branchy.state_dict()
        if k.startswith(branch_prefixes) and not k.endswith("num_batches_tracked"))
    x = sample(base)
    with torch.no_grad():
        torch.testing.assert_close(branchy.forward_to(x, branchy.num_exits - 1), baseline(x)[0])


@pytest.mark.parametrize("base", FAMILIES)
def test_baseline_of_a_branchy_net_is_an_independent_copy_with_the_zoo_layout(base):
    branchy = create(f"b_{base}")
    baseline = branchy.baseline()
    assert baseline.name == base
    assert baseline.num_exits == 1 and baseline.exit_stages == [len(branchy.stages) - 1]
    assert list(baseline.state_dict()) == list(create(base).state_dict())
    branchy_state = branchy.state_dict()
    for key, value in baseline.state_dict().items():
        torch.testing.assert_close(value, branchy_state[key], rtol=0, atol=0)
    with torch.no_grad():
        baseline.stages[0][0].weight.add_(1)
    assert not torch.equal(baseline.stages[0][0].weight, branchy.stages[0][0].weight)


def test_branchy_net_checks_its_layout():
    with pytest.raises(ValueError, match="last stage"):
        BranchyNet([nn.Identity(), nn.Identity()], {0: nn.Identity()})
    with pytest.raises(ValueError, match="stage indices"):
        BranchyNet([nn.Identity()], {0: nn.Identity(), 3: nn.Identity()})


def _resnet18(num_classes=10):
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def _mobilenet():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)


@pytest.mark.parametrize("make,at,channels", [
    (_resnet18, ["layer1", "layer2"], [64, 128]),
    (_resnet18, ["layer3.0", "maxpool"], [64, 256]),
    (_mobilenet, ["features.3"], [24]),
    (_mobilenet, ["features.1", "features.8"], [16, 48]),
])
def test_attach_exits_keeps_the_models_output_as_its_final_exit(make, at, channels):
    model = make()
    net = attach_exits(model, at)
    assert model.training and net.num_exits == len(at) + 1
    heads = [net.exits[str(s)] for s in net.exit_stages[:-1]]
    assert [h[2].in_features for h in heads] == channels
    assert all(isinstance(h[0], nn.AdaptiveAvgPool2d) for h in heads)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        expected = model(x)
    assert all(z.shape == (2, 10) for z in logits)
    torch.testing.assert_close(logits[-1], expected, rtol=0, atol=0)
    torch.testing.assert_close(net.forward_to(x, len(at)), expected, rtol=0, atol=0)


def test_attach_exits_takes_a_head_factory_and_infers_the_classes():
    calls = []

    def head(channels, num_classes):
        calls.append((channels, num_classes))
        return nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    net = attach_exits(_resnet18(num_classes=7), ["layer1", "layer2"], head=head)
    assert calls == [(64, 7), (128, 7)]
    assert isinstance(net.exits["0"][0], nn.AdaptiveMaxPool2d)
    assert all(z.shape == (2, 7) for z in net(torch.randn(2, 3, 32, 32)))
    assert net.name == "b_resnet" and net.baseline().name == "resnet"


def test_attach_exits_rejects_unknown_and_empty_cuts():
    model = _resnet18()
    with pytest.raises(ValueError, match="nope.*valid names: conv1, .*layer1, .*layer3.1") as err:
        attach_exits(model, ["nope"])
    assert "fc" not in str(err.value) and "avgpool" not in str(err.value)
    with pytest.raises(ValueError, match="layer4"):  # nothing would be left for the final stage
        attach_exits(model, ["layer4"])
    with pytest.raises(ValueError, match="same place"):
        attach_exits(model, ["layer1", "layer1.1"])
