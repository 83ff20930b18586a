"""Training networks users bring: torchvision:NAME through `branchy train`, any nn.Module through
training.train, --init-from a plain state_dict, --freeze-backbone, checkpoints rebuilt.

Tiny everything: 18 PNGs of 20x20 read at 32x32, one epoch, mobilenet_v3_small or resnet18, so
that each run takes about a second on two cores.
"""
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from branchy_engine import checkpoint
from branchy_engine import data as datasets
from branchy_engine.checkpoint import CheckpointError
from branchy_engine.commands.cli import main as branchy
from branchy_engine.models import attach_exits, default_exits
from training import TrainConfig, train
from training.loop import evaluate

from fake_data import write_fashion_mnist, write_image_folder
from tiny_models import randomize_batch_norm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


def train_args(folder, out, *extra):
    return ["train", "--dataset", "imagefolder", "--data-dir", folder, "--input-size", "32",
            "--out", str(out), "--batch-size", "8", "--threads", "1", *extra]


def resnet18_state_dict(path, num_classes=3):
    """A plain state_dict file of a resnet18 whose BatchNorm statistics are not the identity."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=num_classes)
    randomize_batch_norm(model)
    torch.save(model.state_dict(), path)
    return path


def test_torchvision_model_on_an_image_folder(folder, tmp_path, capsys):
    args = train_args(folder, tmp_path, "--model", "torchvision:mobilenet_v3_small", "--limit", "12",
                      "--baseline-epochs", "1", "--epochs", "1")
    assert branchy(args) == 0
    out = capsys.readouterr().out
    assert "baseline phase: mobilenet_v3_small" in out and "joint phase: b_mobilenet_v3_small" in out
    ckpt = checkpoint.load(tmp_path / "b_mobilenet_v3_small.pt", model="b_mobilenet_v3_small")
    assert ckpt["model_args"] == {"source": "torchvision:mobilenet_v3_small", "num_classes": 3,
                                  "input_shape": [3, 32, 32], "exits": ["features.4", "features.8"]}
    assert ckpt["dataset"]["class_names"] == ["cat", "dog", "eel"]
    assert ckpt["dataset"]["name"] == "imagefolder" and ckpt["exit_weights"] == [1.0] * 3
    assert len(ckpt["metrics"]["test_accuracy"]) == 3
    summary = json.loads((tmp_path / "b_mobilenet_v3_small.json").read_text())
    assert summary["model_args"]["exits"] == ["features.4", "features.8"]
    baseline = checkpoint.load(tmp_path / "mobilenet_v3_small.pt")
    assert baseline["phase"] == "baseline" and checkpoint.build_model(baseline).num_exits == 1

    # The checkpoint rebuilds the network: the same logits as one built by hand from its record,
    # and the accuracy per exit that training measured.
    net = checkpoint.build_model(ckpt)
    torch.manual_seed(0)
    by_hand = attach_exits(torchvision.models.mobilenet_v3_small(num_classes=3),
                           ["features.4", "features.8"], input_shape=(3, 32, 32))
    by_hand.load_state_dict(ckpt["state_dict"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(net(x), by_hand.eval()(x)):
            assert torch.equal(a, b)
    d = datasets.load("imagefolder", data_dir=folder, input_size=32, channels=3, limit=12)
    assert evaluate(net, d, d.test, "cpu") == ckpt["metrics"]["test_accuracy"]

    # A finished run is kept; --resume skips its finished phases.
    assert branchy(args) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert branchy(args + ["--resume"]) == 0
    capsys.readouterr()

    # Calibrated, exported and served like the paper's networks: `branchy run` prepares the
    # folder's images as training did (resized to 32x32), the engine agrees with PyTorch.
    path = str(tmp_path / "b_mobilenet_v3_small.pt")
    model = str(tmp_path / "m.branchy")
    assert branchy(["calibrate", path, "--data-dir", folder]) == 0
    assert branchy(["export", path, "-o", model]) == 0
    assert "exit 3 after stage 3" in capsys.readouterr().out
    assert branchy(["run", model, "--data-dir", folder]) == 0
    out = capsys.readouterr().out
    assert "test samples of imagefolder" in out and "accuracy:" in out
    # Profiled per stage and exit, and swept for Figure 6, like the paper's networks.
    profiled = tmp_path / "profile"
    assert branchy(["profile", model, "--data-dir", folder, "--counters", "off", "--out", str(profiled)]) == 0
    record = json.loads((profiled / "profile-b_mobilenet_v3_small.json").read_text())
    assert len(record["stages"]) == 3 and len(record["exits"]) == 3
    assert sum(e["samples"] for e in record["exits"]) == record["samples"] > 0
    assert branchy(["profile", model, "--data-dir", folder, "--counters", "off", "--sweep",
                    "--out", str(profiled)]) == 0
    assert (profiled / "profile-b_mobilenet_v3_small-fig6.png").stat().st_size > 0
    capsys.readouterr()
    from branchy_engine import Engine
    engine = Engine(model)
    with torch.no_grad():
        want = net(x)
    for n in range(x.shape[0]):
        for got, ref in zip(engine.all_exit_logits(x[n]), want):
            torch.testing.assert_close(got, ref[n], rtol=1e-4, atol=1e-4 * ref[n].abs().max().item())


def backbone(state: dict) -> dict:
    """The trunk's and the final exit's entries of a 3-exit network's state_dict."""
    return {k: v for k, v in state.items() if not k.startswith(("exits.0.", "exits.1."))}


def test_freeze_backbone_trains_the_heads_alone(folder, tmp_path, capsys):
    weights = resnet18_state_dict(tmp_path / "resnet18.pt")
    common = ["--model", "torchvision:resnet18", "--exits", "layer1,layer2", "--init-from",
              str(weights), "--freeze-backbone"]
    assert branchy(train_args(folder, tmp_path / "zero", *common, "--epochs", "0")) == 0
    assert branchy(train_args(folder, tmp_path / "one", *common, "--epochs", "1")) == 0
    assert "joint phase (backbone frozen: exit heads only): b_resnet18" in capsys.readouterr().out
    assert not (tmp_path / "one" / "resnet18.pt").exists()  # no phase 1
    before = checkpoint.load(tmp_path / "zero" / "b_resnet18.pt")["state_dict"]
    after = checkpoint.load(tmp_path / "one" / "b_resnet18.pt")["state_dict"]

    # Zero epochs hold the file's weights, BatchNorm statistics included, under the exits.
    model = torchvision.models.resnet18(num_classes=3)
    model.load_state_dict(torch.load(weights))
    expected = attach_exits(model, ["layer1", "layer2"], input_shape=(3, 32, 32)).state_dict()
    assert backbone(before).keys() == backbone(expected).keys()
    assert any(k.endswith("running_mean") for k in backbone(before))
    for k, v in backbone(before).items():
        assert torch.equal(v, expected[k]), k
    # One epoch changes every head and not one bit of the backbone.
    for k, v in backbone(after).items():
        assert torch.equal(v, before[k]), k
    heads = [k for k in after if k not in backbone(after)]
    assert heads and all(not torch.equal(after[k], before[k]) for k in heads)


def test_a_frozen_backbone_stays_in_eval_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net = attach_exits(model, ["2"], input_shape=(3, 8, 8)).freeze_backbone()
    net.train()
    assert all(not m.training for part in net.backbone() for m in part.modules())
    assert all(m.training for m in net.exits["0"].modules())
    assert [n for n, p in net.named_parameters() if p.requires_grad] == \
        ["exits.0.2.weight", "exits.0.2.bias"]


def test_init_from_loads_a_state_dict_before_the_exits(folder, tmp_path):
    weights = resnet18_state_dict(tmp_path / "resnet18.pt")
    assert branchy(train_args(folder, tmp_path / "run", "--model", "torchvision:resnet18",
                              "--init-from", str(weights), "--epochs", "0")) == 0
    assert not (tmp_path / "run" / "resnet18.pt").exists()  # the file is the baseline
    state = checkpoint.load(tmp_path / "run" / "b_resnet18.pt")["state_dict"]
    plain = torch.load(weights)
    assert torch.equal(state["stages.0.conv1.weight"], plain["conv1.weight"])
    assert torch.equal(state["exits.2.fc.weight"], plain["fc.weight"])


def test_init_from_names_what_does_not_fit(folder, tmp_path, capsys):
    model = torchvision.models.resnet18(num_classes=3)
    wide = resnet18_state_dict(tmp_path / "wide.pt", num_classes=1000)
    with pytest.raises(CheckpointError, match=r"2 shapes differ: fc.weight is \[1000, 512\] in the "
                                              r"file, \[3, 512\] in the model"):
        checkpoint.load_state_dict(model, wide)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    del state["layer4.1.bn2.running_var"]
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match="1 keys missing from the file: layer4.1.bn2.running_var"
                                              "; 1 unexpected keys in the file: head.weight"):
        checkpoint.load_state_dict(model, tmp_path / "keys.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    with pytest.raises(CheckpointError, match="122 keys missing.*and 116 more.*start with 'module.'"):
        checkpoint.load_state_dict(model, tmp_path / "ddp.pt")
    torch.save({"epoch": 3, "model": model.state_dict()}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointError, match="not a state_dict.*entry 'model' may be one"):
        checkpoint.load_state_dict(model, tmp_path / "nested.pt")

    assert branchy(train_args(folder, tmp_path / "run", "--model", "torchvision:resnet18",
                              "--init-from", str(wide))) == 2
    err = capsys.readouterr().err
    assert "wide.pt does not fit torchvision:resnet18: 2 shapes differ: fc.weight" in err


class Small(nn.Module):
    """A hand-written grey-image classifier with functional calls."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = F.relu(self.b(x)) + F.max_pool2d(x, 2).repeat(1, 2, 1, 1)
        return self.fc(x.mean((2, 3)))


def test_python_api_trains_any_module_in_place(tmp_path):
    data_dir = write_fashion_mnist(tmp_path / "data", n_train=120, n_test=20)
    torch.manual_seed(0)
    model = Small()
    cfg = TrainConfig(dataset="fashion-mnist", data_dir=data_dir, exits=["a"], limit=48,
                      baseline_epochs=1, epochs=1, batch_size=16, out=str(tmp_path / "run"),
                      threads=1)
    paths = train(cfg, model=model)
    assert list(paths) == ["small", "b_small"]
    ckpt = checkpoint.load(paths["b_small"])
    assert ckpt["config"]["model"] == "module:Small"
    assert ckpt["model_args"]["input_shape"] == [1, 28, 28]  # the first conv takes one channel
    with pytest.raises(CheckpointError, match=r"pass an instance to rebuild it: .*module=Small\(...\)"):
        checkpoint.build_model(ckpt)
    net = checkpoint.build_model(ckpt, module=Small())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], model.eval()(x))  # the module holds the trained weights
    with pytest.raises(ValueError, match="gives 10 logits, imagefolder has 3 classes"):
        train(TrainConfig(dataset="imagefolder", data_dir=write_image_folder(tmp_path / "images"),
                          exits=["a"], out=str(tmp_path / "other")), model=Small())


def test_default_exits_a_third_and_two_thirds_into_the_trunk():
    resnet = torchvision.models.resnet18(num_classes=3)
    assert default_exits(resnet, (3, 32, 32)) == ["layer1", "layer3"]
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=3)
    assert default_exits(mobilenet, (3, 32, 32)) == ["features.4", "features.8"]
    assert default_exits(mobilenet, (3, 32, 32), count=1) == ["features.6"]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="Sequential has 0 values .* name the exits"):
        default_exits(mlp, (3, 2, 2))


@pytest.mark.parametrize("argv, message", [
    (["--model", "torchvision:resnet9000"], "unknown torchvision classification model 'resnet9000'"),
    (["--model", "torchvision:resnet18", "--exits", "layer9"], "cannot attach an exit at 'layer9'"),
    (["--model", "torchvision:resnet18", "--freeze-backbone"],
     "--freeze-backbone trains the exit heads of a trained network: pass --init-from"),
    (["--model", "b_lenet", "--exits", "a"], "the zoo's b_lenet has its own"),
    (["--model", "torchvision:resnet18", "--exits", "layer1,,layer2"], "--exits needs one or more"),
])
def test_bad_options_name_the_problem(folder, tmp_path, capsys, argv, message):
    assert branchy(train_args(folder, tmp_path, *argv)) == 2
    assert message in capsys.readouterr().err


def test_a_bad_image_folder_stops_the_command_with_its_reason(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert branchy(train_args(str(tmp_path / "empty"), tmp_path / "run",
                              "--model", "torchvision:resnet18")) == 2
    assert "Couldn't find any class folder" in capsys.readouterr().err


def test_a_constructor_without_num_classes_gets_its_last_linear_replaced(monkeypatch):
    from branchy_engine.models import classifier

    def fixed_width(weights=None):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1000))

    monkeypatch.setattr(classifier, "torchvision_names", lambda: ["fixed"])
    monkeypatch.setattr(torchvision.models, "get_model_builder", lambda name: fixed_width)
    model = classifier.torchvision_classifier("fixed", 5)
    assert (model[3].out_features, model[5].in_features, model[5].out_features) == (8, 8, 5)
