"""bench/denormals.py stays runnable: its quick mode (three rounds) runs end to end. It times
nothing that is checked: the figures and the bar come from the full run (python bench/denormals.py)."""
import denormals


def test_the_quick_mode_runs(capsys):
    assert denormals.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| own |" in out and "| dnnl |" in out
