"""bench/python_threads.py stays runnable: its quick mode (two rounds of 40 calls) runs end to end.
It times nothing that is checked: the figures and the bar come from the full run."""
import python_threads


def test_the_quick_mode_runs(capsys):
    assert python_threads.main(["--quick"]) == 0
    assert "| b_alexnet" in capsys.readouterr().out
