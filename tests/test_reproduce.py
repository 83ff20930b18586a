"""`branchy reproduce` on tiny data: every step runs once, and a re-run skips the finished ones."""
import json
import os

import pytest

from branchy_engine.commands.cli import main as branchy

from fake_data import write_fashion_mnist


def test_reproduce_runs_and_resumes(tmp_path, capsys):
    data = write_fashion_mnist(tmp_path / "data", n_train=600, n_test=100)
    args = ["reproduce", "--networks", "lenet", "--dataset", "fashion-mnist", "--data-dir", data,
            "--epochs", "1", "--limit", "40", "--out", str(tmp_path / "out")]
    assert branchy(args) == 0
    out = tmp_path / "out"
    produced = ["lenet/checkpoints/lenet.pt", "lenet/checkpoints/b_lenet.pt", "lenet/costs.json",
                "lenet/b_lenet-calibrated.pt", "lenet/b_lenet.branchy", "lenet/lenet.branchy",
                "lenet/table.json", "lenet/fig3_frontier.png", "lenet/profile-b_lenet-fig6.png",
                "lenet/profile-b_lenet-sweep.json", "table1.json", "table1.md"]
    for name in produced:
        assert (out / name).exists(), name
    stamps = {name: os.stat(out / name).st_mtime_ns for name in produced[:-2]}
    first = json.loads((out / "table1.json").read_text())
    assert "B-LeNet (engine)" in capsys.readouterr().out

    assert branchy(args) == 0  # everything done: nothing is redone
    assert {name: os.stat(out / name).st_mtime_ns for name in produced[:-2]} == stamps
    assert json.loads((out / "table1.json").read_text())["networks"] == first["networks"]


def test_reproduce_refuses_unknown_networks(tmp_path, capsys):
    assert branchy(["reproduce", "--networks", "vgg", "--out", str(tmp_path)]) == 2
    assert "unknown network(s) ['vgg']" in capsys.readouterr().err


def test_reproduce_quick_options(tmp_path):
    """--train-limit trains on the first samples of each split; --sim-samples bounds Figure 6's
    simulated samples (where the simulator runs: it needs valgrind and build/branchy-run)."""
    data = write_fashion_mnist(tmp_path / "data", n_train=600, n_test=100)
    args = ["reproduce", "--networks", "lenet", "--dataset", "fashion-mnist", "--data-dir", data,
            "--epochs", "1", "--train-limit", "50", "--limit", "20", "--sim-samples", "2",
            "--out", str(tmp_path / "out")]
    assert branchy(args) == 0
    out = tmp_path / "out" / "lenet"
    record = json.loads((out / "checkpoints" / "b_lenet.json").read_text())
    assert "(50 train / 50 val / 50 test samples)" in record["dataset"]
    assert record["command"] == "branchy reproduce --networks lenet --epochs 1 --train-limit 50"
    for point in json.loads((out / "profile-b_lenet-sweep.json").read_text())["sweep"]:
        assert point.get("simulated", {"samples": 2})["samples"] == 2
