"""bench/capi.py stays runnable: its quick mode (3 rounds of about 1 ms) builds bench_capi, runs it
on both models and prints the table. It times nothing that is checked: the figures come from the
full run."""
import capi


def test_the_quick_mode_runs(capsys):
    assert capi.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| smallest graph" in out and "| B-LeNet (shipped checkpoint), exit-1 path | 1 |" in out
