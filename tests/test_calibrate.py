"""Threshold calibration: the table-based outcome against a brute-force early-exit re-run, the
frontier and knee, targets, costs, the command and its errors."""
import dataclasses
import json
import math
import os

import pytest
import torch

from branchy_engine import calibrate, checkpoint
from branchy_engine.calibrate import costs as costs_mod
from branchy_engine.calibrate.outcome import Outcome
from branchy_engine.calibrate.run import Options, load_data
from branchy_engine.calibrate.run import calibrate as run_calibrate
from branchy_engine.commands.cli import main as branchy
from branchy_engine.runtime.ops import exit_decision, exit_decision_maxprob

from fake_data import write_fashion_mnist

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "branchy_engine", "checkpoints")


def train(tmp, model, dataset, *extra):
    data = write_fashion_mnist(tmp / "data", n_train=700, n_test=300, seed=1)
    assert branchy(["train", "--model", model, "--dataset", dataset, "--data-dir", data,
                    "--out", str(tmp), "--baseline-epochs", "1", "--epochs", "1",
                    "--batch-size", "64", "--threads", "1", *extra]) == 0
    return str(tmp / f"{model}.pt")


@pytest.fixture(scope="module")
def lenet_ckpt(tmp_path_factory):
    return train(tmp_path_factory.mktemp("lenet"), "b_lenet", "fashion-mnist")


@pytest.fixture(scope="module")
def alexnet_ckpt(tmp_path_factory):
    return train(tmp_path_factory.mktemp("alexnet"), "b_alexnet", "fashion-mnist-32x3")


def loaded(path):
    ckpt = checkpoint.load(path)
    net = checkpoint.build_model(ckpt)
    return ckpt, net, load_data(ckpt, None)


def brute_force(net, data, split, criterion, params):
    """Per sample at batch 1: run stage by stage, decide at each exit, stop at the first exit."""
    taken = []
    with torch.inference_mode():
        for i in range(len(split)):
            images, _ = split.batch(torch.tensor([i]))
            x = data.prepare(images)
            ran, predictions = 0, []
            for e, stage in enumerate(net.exit_stages):
                while ran <= stage:
                    x = net.stages[ran](x)
                    ran += 1
                z = net.exits[str(stage)](x)
                predictions.append(int(z.argmax()))
                if e == net.num_exits - 1:
                    break
                if criterion == "entropy":
                    leave = exit_decision(z, params[e])[1].item()
                elif criterion == "maxprob":
                    leave = exit_decision_maxprob(z, params[e])[1].item()
                else:
                    k = int(params[0])
                    leave = len(predictions) >= k and len(set(predictions[-k:])) == 1
                if leave:
                    break
            taken.append(e)
    return torch.tensor(taken)


def random_params(criterion, table, gen):
    if criterion == "patience":
        return [float(torch.randint(1, table.num_exits + 1, (1,), generator=gen))]
    scores = table.entropy if criterion == "entropy" else table.max_prob
    # Around the observed scores, so that samples really split between exits.
    return [float(scores[torch.randint(0, table.num_samples, (1,), generator=gen), e]) * 1.0001 + 1e-7
            for e in range(table.num_exits - 1)]


@pytest.mark.parametrize("criterion", calibrate.CRITERIA)
@pytest.mark.parametrize("which", ["lenet", "alexnet"])
def test_table_outcome_equals_a_brute_force_rerun(request, which, criterion):
    _, net, data = loaded(request.getfixturevalue(f"{which}_ckpt"))
    split = data.val
    table = calibrate.collect(net, data, split)
    gen = torch.Generator().manual_seed(0)
    extremes = [] if criterion == "patience" else [[math.inf] * (net.num_exits - 1), [0.0] * (net.num_exits - 1)]
    for params in [random_params(criterion, table, gen) for _ in range(4)] + extremes:
        want = brute_force(net, data, split, criterion, params)
        got = calibrate.exit_taken(table, criterion, torch.tensor([params], dtype=torch.float64))[0]
        assert torch.equal(got, want), (criterion, params)
        outcome = calibrate.evaluate(table, criterion, torch.tensor([params]), [1.0] * net.num_exits)
        correct = table.correct[torch.arange(len(want)), want]
        assert float(outcome.accuracy[0]) == pytest.approx(100.0 * float(correct.double().mean()), abs=1e-12)
        assert outcome.fractions[0].tolist() == pytest.approx(
            (100.0 * torch.bincount(want, minlength=net.num_exits).double() / len(want)).tolist(), abs=1e-12)
    if criterion == "entropy":
        everyone_first = calibrate.exit_taken(table, criterion, torch.tensor([[math.inf] * (net.num_exits - 1)]))
        nobody_early = calibrate.exit_taken(table, criterion, torch.tensor([[0.0] * (net.num_exits - 1)]))
        assert (everyone_first == 0).all() and (nobody_early == net.num_exits - 1).all()


def outcome_of(points, disagreement=None, samples=1000):
    acc, cost = zip(*points)
    return Outcome(grid=torch.arange(len(points), dtype=torch.float64)[:, None],
                   accuracy=torch.tensor(acc, dtype=torch.float64),
                   fractions=torch.zeros(len(points), 2, dtype=torch.float64),
                   cost=torch.tensor(cost, dtype=torch.float64),
                   disagreement=torch.tensor(disagreement or [0.0] * len(points), dtype=torch.float64),
                   samples=samples)


def test_frontier_and_knee():
    # (accuracy %, cost): 0, 1, 3, 5 are on the frontier; 2 and 4 are beaten; 6 ties 5 but costs more.
    points = [(80, 1), (90, 2), (85, 3), (95, 4), (94, 5), (96, 9), (96, 10)]
    out = outcome_of(points)
    assert calibrate.frontier(out).tolist() == [0, 1, 3, 5]
    # Scaled: x = (0, .125, .375, 1), y = (0, .625, .9375, 1): y - x is largest at point 3.
    assert calibrate.knee(out) == 3
    assert calibrate.knee(outcome_of([(80, 1), (90, 2)])) == 1


def test_targets_pick_the_cheapest_or_most_accurate():
    out = outcome_of([(80, 1), (90, 2), (85, 3), (95, 4), (96, 9)])
    choose = calibrate.choose
    plain = dict(confidence=0.5)  # no margin for sampling error
    assert choose(out, calibrate.Target(min_accuracy=90, **plain), 96, "us") == 1
    assert choose(out, calibrate.Target(max_drop=1.0, **plain), 96, "us") == 3
    assert choose(out, calibrate.Target(max_drop=0.0, **plain), 96, "us") == 4
    assert choose(out, calibrate.Target(latency_budget=3.5), 96, "us") == 1
    with pytest.raises(ValueError, match="no exit thresholds reach 99.000% .* the best is 96.000%"):
        choose(out, calibrate.Target(min_accuracy=99), 96, "us")
    with pytest.raises(ValueError, match="--confidence must be in"):
        choose(out, calibrate.Target(min_accuracy=90, confidence=1.0), 96, "us")


def test_targets_hold_with_the_stated_confidence():
    # Point 0 is cheap and, on this sample, as accurate as the final exit (point 1), but it
    # disagrees with it on 8% of 1000 samples: its drop has a standard error of 0.89 points.
    out = outcome_of([(90.0, 1), (90.0, 9)], disagreement=[8.0, 0.0], samples=1000)
    choose = calibrate.choose
    assert choose(out, calibrate.Target(max_drop=1.0, confidence=0.5), 90.0, "us") == 0
    assert choose(out, calibrate.Target(max_drop=1.0, confidence=0.84), 90.0, "us") == 0   # 0.89 <= 1
    assert choose(out, calibrate.Target(max_drop=1.0, confidence=0.95), 90.0, "us") == 1   # 1.47 > 1
    # Accuracy: 90% of 1000 has se 0.95 points; 89% is met at 84% confidence but not at 95%.
    assert choose(out, calibrate.Target(min_accuracy=89.0, confidence=0.84), 90.0, "us") == 0
    with pytest.raises(ValueError, match="lower bound 88.4"):
        choose(out, calibrate.Target(min_accuracy=89.0, confidence=0.95), 90.0, "us")
    with pytest.raises(ValueError, match="latency budget of 0.5 us: the cheapest costs 1 us"):
        choose(out, calibrate.Target(latency_budget=0.5), 96, "us")
    with pytest.raises(ValueError, match="--max-drop must be >= 0"):
        choose(out, calibrate.Target(max_drop=-1), 96, "us")


def test_default_grid_covers_the_extremes_and_stays_bounded(alexnet_ckpt):
    _, net, data = loaded(alexnet_ckpt)
    table = calibrate.collect(net, data, data.val)
    grid = calibrate.default_grid(table, "entropy", family="alexnet", max_points=5000)
    assert grid.shape[1] == 2 and len(grid) <= 5000
    for e in range(2):
        assert grid[:, e].min() == 0 and math.isinf(grid[:, e].max())
        assert {1e-4, 0.05, 10.0} <= set(grid[:, e].tolist())  # the authors' grid survives thinning
    assert calibrate.default_grid(table, "patience").tolist() == [[1.0], [2.0], [3.0]]


def test_costs_flops_and_file_round_trip(lenet_ckpt, tmp_path):
    _, net, data = loaded(lenet_ckpt)
    flops = costs_mod.count_flops(net, data.input_shape)
    # architectures.md: LeNet's exit-1 path about 0.44 MFLOP, the whole LeNet about 2.3 MFLOP.
    assert flops.segments[0] == pytest.approx(0.44, abs=0.01)
    assert flops.baseline == pytest.approx(2.28, abs=0.02)
    measured = costs_mod.measure_pytorch(net, data.input_shape, warmup=2, rounds=3, calls=2)
    assert measured.unit == "us" and all(c > 0 for c in measured.segments) and measured.baseline > 0
    assert "batch 1, 1 thread(s)" in measured.method
    path = tmp_path / "costs.json"
    costs_mod.save(path, measured)
    assert costs_mod.load(path, "b_lenet", 2) == measured
    with pytest.raises(ValueError, match="costs of 'b_lenet', not of 'b_alexnet'"):
        costs_mod.load(path, "b_alexnet", 3)
    with pytest.raises(ValueError, match="2 segment costs, the network has 3 exits"):
        costs_mod.load(path, "b_lenet", 3)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a branchy-engine costs file"):
        costs_mod.load(tmp_path / "other.json", "b_lenet", 2)


def test_calibrate_command_writes_thresholds_and_pictures(lenet_ckpt, tmp_path, capsys):
    path = tmp_path / "b_lenet.pt"
    path.write_bytes(open(lenet_ckpt, "rb").read())
    before = checkpoint.load(path)
    assert before["thresholds"] is None
    assert branchy(["calibrate", str(path), "--cost", "flops", "--out", str(tmp_path / "cal")]) == 0
    out = capsys.readouterr().out
    assert "knee of the accuracy-cost frontier" in out and "validation" in out and "test" in out
    after = checkpoint.load(path)
    t = after["thresholds"]
    assert t["criterion"] == "entropy" and len(t["values"]) == 1 and t["unit"] == "MFLOP"
    assert sum(t["val"]["exit_percent"]) == pytest.approx(100) and sum(t["test"]["exit_percent"]) == pytest.approx(100)
    assert t["val"]["cost"] == pytest.approx(sum(p / 100 * c for p, c in zip(
        t["val"]["exit_percent"], torch.cumsum(torch.tensor(t["costs"]["segments"]), 0).tolist())))
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["metrics"] == before["metrics"] and after["config"] == before["config"]
    for name in ("fig3_frontier.png", "fig4_first_threshold.png", "entropy_histograms.png",
                 "calibration.json", "costs.json"):
        assert (tmp_path / "cal" / name).stat().st_size > 1000 or name.endswith(".json")
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["values"] == t["values"]


def test_output_elsewhere_and_dry_run_leave_the_checkpoint_alone(lenet_ckpt, tmp_path):
    original = open(lenet_ckpt, "rb").read()
    assert branchy(["calibrate", lenet_ckpt, "--cost", "flops", "--max-drop", "1", "--out",
                    str(tmp_path), "-o", str(tmp_path / "calibrated.pt")]) == 0
    assert checkpoint.load(tmp_path / "calibrated.pt")["thresholds"]["target"] == (
        "at most 1 points below the final exit (95% confidence on validation)")
    assert branchy(["calibrate", lenet_ckpt, "--cost", "flops", "--dry-run", "--out", str(tmp_path)]) == 0
    assert open(lenet_ckpt, "rb").read() == original


def test_given_thresholds_are_evaluated_not_searched(alexnet_ckpt, tmp_path):
    opts = Options(checkpoint=alexnet_ckpt, thresholds=[0.5, 1.0], cost="flops", out_dir=str(tmp_path),
                   dry_run=True)
    record = run_calibrate(opts)
    assert record["values"] == [0.5, 1.0] and record["grid_points"] == 1
    assert record["target"] == "given on the command line"


def test_thresholds_dearer_than_the_baseline_are_warned_of(lenet_ckpt, tmp_path, capsys):
    # Costs under which every early exit is a loss: any choice costs more than the baseline.
    net = checkpoint.build_model(checkpoint.load(lenet_ckpt))
    costs = costs_mod.Costs(model=net.name, unit="us", segments=[10.0, 10.0], baseline=5.0,
                            method="made up for the test")
    costs_mod.save(tmp_path / "costs.json", costs)
    assert branchy(["calibrate", lenet_ckpt, "--costs", str(tmp_path / "costs.json"), "--dry-run",
                    "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "branchy calibrate: warning: the chosen thresholds cost " in err
    assert "more than the baseline network's 5 us (gain 0." in err and "baseline network alone is faster" in err
    record = json.loads((tmp_path / "calibration.json").read_text())
    assert record["warnings"] and record["val"]["cost"] > record["baseline_cost"]
    # Where the early exit pays, nothing is said.
    costs_mod.save(tmp_path / "costs.json", dataclasses.replace(costs, segments=[1.0, 10.0]))
    assert branchy(["calibrate", lenet_ckpt, "--costs", str(tmp_path / "costs.json"), "--dry-run",
                    "--out", str(tmp_path), "--thresholds", "inf"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--thresholds", "0.1,0.2"], "entropy on a network with 2 exits takes 1 thresholds (exits - 1), got 2"),
    (["--thresholds", "nan"], "threshold is NaN"),
    (["--thresholds", "-0.5"], "thresholds must be >= 0"),
    (["--criterion", "patience", "--thresholds", "1.5"], "patience k must be a whole number"),
    (["--min-accuracy", "101"], "no exit thresholds reach 101.000% on the validation split at 95% confidence"),
    (["--max-drop", "1", "--confidence", "0.3"], "--confidence must be in [0.5, 1)"),
    (["--latency-budget", "0.001"], "no exit thresholds fit a latency budget of 0.001 MFLOP"),
])
def test_bad_requests_name_the_problem(lenet_ckpt, tmp_path, capsys, argv, message):
    assert branchy(["calibrate", lenet_ckpt, "--cost", "flops", "--dry-run", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_single_exit_network_or_a_foreign_file_is_refused(lenet_ckpt, tmp_path, capsys):
    baseline = os.path.join(os.path.dirname(lenet_ckpt), "lenet.pt")
    assert branchy(["calibrate", baseline, "--dry-run"]) == 2
    assert "lenet has a single exit; nothing to calibrate" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    assert branchy(["calibrate", str(tmp_path / "x.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt"))
                    or not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the shipped B-LeNet and the Debian Fashion-MNIST")
def test_shipped_b_lenet_max_drop_holds_on_test(tmp_path):
    record = run_calibrate(Options(checkpoint=os.path.join(SHIPPED, "b_lenet.pt"),
                                   target=calibrate.Target(max_drop=0.5), cost="flops",
                                   out_dir=str(tmp_path), dry_run=True))
    test = record["test"]
    assert test["accuracy"] >= test["final_exit_accuracy"] - 0.5
    assert test["exit_percent"][0] > 50  # most samples leave early
    assert record["baseline_cost"] / test["cost"] > 2
