"""`branchy demo` on a slice of the test set: every output file, and figures that agree."""
import json
import os

import pytest

from branchy_engine.commands.cli import main as branchy

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "branchy_engine", "checkpoints")


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt"))
                    or not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the shipped checkpoints and the Debian Fashion-MNIST")
def test_demo_on_a_slice(tmp_path, capsys):
    assert branchy(["demo", "--limit", "300", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("table1.json", "table1.md", "fig3_frontier.png", "fig4_first_threshold.png",
                 "entropy_histograms.png", "b_lenet.branchy", "lenet.branchy", "costs.json",
                 "b_lenet-calibrated.pt", "profile-b_lenet-fig6.png", "profile-b_lenet-sweep.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    result = json.loads((tmp_path / "table1.json").read_text())
    table = result["networks"][0]
    engine_lenet, ort, eager, branchy_row = table["rows"][:4]  # a GPU row follows where there is one
    assert "300 test samples" in table["dataset"]
    assert sum(branchy_row["exit_percent"]) == pytest.approx(100.0)
    # Gains are the ratios of the times printed beside them.
    assert branchy_row["gain_vs_own_baseline"] == pytest.approx(engine_lenet["time_us"] / branchy_row["time_us"])
    assert branchy_row["gain_vs_onnxruntime"] == pytest.approx(ort["time_us"] / branchy_row["time_us"])
    assert branchy_row["gain_vs_eager"] == pytest.approx(eager["time_us"] / branchy_row["time_us"])
    # Overall accuracy is the exit-weighted accuracy of the samples leaving at each exit. (It need
    # not lie between the exits' own accuracies: combining exits can beat both.)
    weighted = sum(p / 100 * (a or 0.0) for p, a in zip(branchy_row["exit_percent"],
                                                         branchy_row["accuracy_of_samples_leaving_at_each_exit"]))
    assert branchy_row["accuracy"] == pytest.approx(weighted)
    # The three baselines are the same network: the same predictions, so the same accuracy.
    assert engine_lenet["accuracy"] == ort["accuracy"] == eager["accuracy"]
    assert "B-LeNet (engine)" in printed and (tmp_path / "table1.md").read_text() in printed
    # Figure 6: from no early exit to all at the first, the runtime and the misses fall.
    f6 = table["figure6"]
    assert f6["first_exit_percent"][0] == 0.0 and f6["first_exit_percent"][-1] == 100.0
    assert f6["runtime_us"][-1] < f6["runtime_us"][0]
    if f6["misses"]:
        assert f6["misses"][-1] < f6["misses"][0]
    assert "Figure 6" in (tmp_path / "table1.md").read_text()
    # The shipped B-MobileNetV3-small (a torchvision network with exits), where shipped: its rows
    # after B-LeNet's, on the same slice, from its own calibration and export.
    if os.path.exists(os.path.join(SHIPPED, "b_mobilenet_v3_small.pt")):
        mobilenet = result["networks"][1]
        assert mobilenet["family"] == "mobilenet_v3_small" and "300 test samples" in mobilenet["dataset"]
        base, ort, eager, branchy_row = mobilenet["rows"][:4]
        assert branchy_row["network"] == "B-MobileNetV3-small (engine)"
        assert base["accuracy"] == ort["accuracy"] == eager["accuracy"]
        assert sum(branchy_row["exit_percent"]) == pytest.approx(100.0)
        assert branchy_row["gain_vs_onnxruntime"] == pytest.approx(ort["time_us"] / branchy_row["time_us"])
        assert (tmp_path / "mobilenet_v3_small" / "b_mobilenet_v3_small.branchy").stat().st_size > 0
        assert "B-MobileNetV3-small (engine)" in printed
