"""Joint training, checkpoints, resume after a kill, and two-process DDP, on tiny data."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from branchy_engine import checkpoint
from branchy_engine.checkpoint import CheckpointError
from branchy_engine.commands.cli import main as branchy

from fake_data import write_fashion_mnist


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=600, n_test=200)


def train_args(data_dir, out, *extra):
    return ["train", "--dataset", "fashion-mnist", "--data-dir", data_dir, "--out", str(out),
            "--batch-size", "64", "--threads", "1", *extra]


def state_dicts_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_phases_write_checkpoints_and_summaries(data_dir, tmp_path, capsys):
    assert branchy(train_args(data_dir, tmp_path, "--model", "b_lenet", "--baseline-epochs", "3",
                              "--epochs", "2", "--exit-weights", "1,0.3")) == 0
    for name, exits, epochs in (("lenet", 1, 3), ("b_lenet", 2, 2)):
        ckpt = checkpoint.load(tmp_path / f"{name}.pt", model=name)
        assert ckpt["phase"] == ("baseline" if name == "lenet" else "joint")
        assert ckpt["train_state"]["done"] and ckpt["train_state"]["epoch"] == epochs
        assert ckpt["train_state"]["optimizer"] is None  # finished: weights only
        assert len(ckpt["metrics"]["history"]) == epochs
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["command"].startswith("branchy train --dataset fashion-mnist")
        assert summary["seed"] == 0 and summary["wall_time_s"] > 0
        assert len(summary["val_accuracy_per_exit"]) == len(summary["test_accuracy_per_exit"]) == exits
        assert summary["val_accuracy_per_exit"] == ckpt["metrics"]["val_accuracy"]
    # The bars in the synthetic images are easy: three epochs must beat chance (10%) by far.
    assert json.loads((tmp_path / "lenet.json").read_text())["test_accuracy_per_exit"][0] > 50
    assert json.loads((tmp_path / "b_lenet.json").read_text())["exit_weights"] == [1.0, 0.3]
    out = capsys.readouterr().out
    assert "baseline phase: lenet" in out and "joint phase: b_lenet" in out


def test_joint_phase_starts_from_the_baseline_weights(data_dir, tmp_path):
    assert branchy(train_args(data_dir, tmp_path / "a", "--model", "lenet", "--baseline-epochs", "1")) == 0
    assert branchy(train_args(data_dir, tmp_path / "b", "--model", "b_lenet", "--epochs", "0",
                              "--init-from", str(tmp_path / "a" / "lenet.pt"))) == 0
    base = checkpoint.load(tmp_path / "a" / "lenet.pt")["state_dict"]
    joint = checkpoint.load(tmp_path / "b" / "b_lenet.pt")["state_dict"]
    assert base.keys() < joint.keys()
    assert all(torch.equal(base[k], joint[k]) for k in base)
    assert not (tmp_path / "b" / "lenet.pt").exists()


def test_init_from_must_be_the_matching_baseline(data_dir, tmp_path, capsys):
    assert branchy(train_args(data_dir, tmp_path / "a", "--model", "lenet", "--baseline-epochs", "1")) == 0
    code = branchy(train_args(data_dir, tmp_path / "b", "--model", "b_alexnet", "--dataset",
                              "fashion-mnist-32x3", "--init-from", str(tmp_path / "a" / "lenet.pt")))
    assert code == 2
    assert "holds model 'lenet', expected 'alexnet'" in capsys.readouterr().err


def test_existing_run_is_not_overwritten_and_resume_needs_the_same_options(data_dir, tmp_path, capsys):
    args = train_args(data_dir, tmp_path, "--model", "lenet", "--baseline-epochs", "1")
    assert branchy(args) == 0
    before = (tmp_path / "lenet.pt").read_bytes()
    assert branchy(args) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert branchy(args + ["--resume", "--lr", "0.01"]) == 2
    assert "was trained with lr=0.001, this run has lr=0.01" in capsys.readouterr().err
    assert (tmp_path / "lenet.pt").read_bytes() == before
    assert branchy(args + ["--resume"]) == 0  # a finished phase is skipped


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet9000"], "resnet9000"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--model", "b_lenet", "--exit-weights", "1,2,3"], "--exit-weights has 3 values but b_lenet has 2 exits"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--betas", "0.9"], "--betas takes two numbers"),
])
def test_bad_options_name_the_problem(data_dir, tmp_path, capsys, argv, message):
    assert branchy(train_args(data_dir, tmp_path, *argv)) == 2
    assert message in capsys.readouterr().err


def test_missing_data_says_how_to_get_it(tmp_path, capsys):
    assert branchy(["train", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_checkpoint_errors(data_dir, tmp_path):
    assert branchy(train_args(data_dir, tmp_path, "--model", "lenet", "--baseline-epochs", "1")) == 0
    good = (tmp_path / "lenet.pt").read_bytes()
    cases = {
        "missing.pt": (None, "no such checkpoint file"),
        "random.pt": (os.urandom(4096), "not a readable checkpoint"),
        "truncated.pt": (good[: len(good) // 2], "not a readable checkpoint"),
        "foreign.pt": ("torch", "not a branchy-engine checkpoint"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content == "torch":
            torch.save({"weights": torch.zeros(3)}, path)
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            checkpoint.load(path)
    with pytest.raises(CheckpointError, match="holds model 'lenet', expected 'b_lenet'"):
        checkpoint.load(tmp_path / "lenet.pt", model="b_lenet")
    newer = checkpoint.load(tmp_path / "lenet.pt")
    torch.save(dict(newer, format_version=99), tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format 99 is newer"):
        checkpoint.load(tmp_path / "newer.pt")
    net = checkpoint.build_model(checkpoint.load(tmp_path / "lenet.pt"))
    assert not net.training and net.num_exits == 1


def _cli(*args):
    return [sys.executable, "-m", "branchy_engine.commands.cli", *args]


def test_resume_after_a_kill_mid_epoch_ends_in_the_same_weights(tmp_path):
    data = write_fashion_mnist(tmp_path / "data", n_train=4000, n_test=100)
    common = ["--model", "b_lenet", "--baseline-epochs", "1", "--epochs", "2", "--batch-size", "32",
              "--save-every", "5", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    subprocess.run(_cli("train", "--data-dir", data, "--out", str(tmp_path / "whole"), *common),
                   check=True, capture_output=True, env=env)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", "--data-dir", data, "--out", str(out), *common),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    joint = out / "b_lenet.pt"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if joint.exists():
            state = checkpoint.load(joint)["train_state"]
            if state["epoch"] == 0 and state["step"] >= 10:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = state
                break
        time.sleep(0.005)
    assert killed_at is not None, "the run finished before it could be killed mid-epoch"
    state = checkpoint.load(joint)["train_state"]
    assert not state["done"] and state["epoch"] == 0 and 0 < state["step"] < 113

    subprocess.run(_cli("train", "--data-dir", data, "--out", str(out), *common, "--resume"),
                   check=True, capture_output=True, env=env)
    for name in ("lenet", "b_lenet"):
        whole = checkpoint.load(tmp_path / "whole" / f"{name}.pt")
        resumed = checkpoint.load(out / f"{name}.pt")
        assert state_dicts_equal(whole["state_dict"], resumed["state_dict"]), name
        assert whole["metrics"]["test_accuracy"] == resumed["metrics"]["test_accuracy"]


def test_two_processes_with_ddp_match_one_process(data_dir, tmp_path):
    """torchrun, gloo, 2 CPU processes: the same global batches, so nearly the same weights."""
    common = ["--data-dir", data_dir, "--model", "lenet", "--baseline-epochs", "2",
              "--batch-size", "64", "--threads", "1"]
    subprocess.run(_cli("train", "--out", str(tmp_path / "one"), *common), check=True,
                   capture_output=True)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "branchy_engine.commands.cli",
                          "train", "--out", str(tmp_path / "two"), *common],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("lenet epoch 2/2") == 1  # rank 0 alone reports and saves
    one = checkpoint.load(tmp_path / "one" / "lenet.pt")["state_dict"]
    two = checkpoint.load(tmp_path / "two" / "lenet.pt")["state_dict"]
    # Gradients differ only in float summation order, which Adam's normalisation amplifies for
    # weights with tiny gradients; a wrong sharding (other batches) moves weights by ~1e-2.
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-3, rtol=1e-2)
    diff = torch.cat([(two[k] - one[k]).abs().flatten().float() for k in one])
    assert diff.mean() < 1e-5
