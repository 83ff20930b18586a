"""bench/any_network.py stays runnable: its quick mode (mobilenet_v3_small at 64x64 against ONNX
Runtime, OpenVINO and eager, three rounds) runs end to end. It times nothing that is checked: the
figures and bars come from the full run (python bench/any_network.py)."""
import pytest

import any_network


def test_the_quick_mode_runs(capsys):
    pytest.importorskip("openvino")
    assert any_network.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| mobilenet_v3_small |" in out and "Python call over the C++ loop" in out
