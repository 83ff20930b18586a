"""The command lines, `branchy` and `branchy-run`: help for every command and option, the
mix-ups of an exported model and a checkpoint, and outputs that stay out of git."""
import os
import subprocess

import pytest

from branchy_engine.commands.cli import main as branchy
from branchy_engine.commands.cli import parser
from branchy_engine.export import export
from branchy_engine.profiling import cachesim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "branchy_engine", "checkpoints")


def commands():
    """{name: its argparse parser} of every `branchy` subcommand."""
    sub = next(a for a in parser()._actions if a.dest == "command")
    return dict(sub.choices)


def test_every_command_and_option_explains_itself():
    # `branchy --help` lists each command with a line; `branchy COMMAND --help` describes it, and
    # every option and argument says what it does.
    top = parser()
    listed = {a.dest: a.help for a in next(a for a in top._actions if a.dest == "command")._choices_actions}
    for name, p in commands().items():
        assert listed.get(name), f"`branchy --help` has no line for {name}"
        assert p.description, f"`branchy {name} --help` has no description"
        silent = [a.option_strings[0] if a.option_strings else a.dest for a in p._actions
                  if not a.help and a.dest != "help"]
        assert not silent, f"branchy {name}: no help text for {silent}"


def test_default_outputs_stay_out_of_git(tmp_path):
    # Where the commands write when not told otherwise, relative to the checkout's root.
    defaults = {name: p.get_default("out") for name, p in commands().items() if p.get_default("out")}
    paths = [os.path.join(defaults["profile"], "profile-b_lenet.json"),
             os.path.join(defaults["reproduce"], "lenet", "b_lenet.pt"),
             os.path.join(defaults["demo"], "table1.json"),
             "b_lenet.branchy"]  # `branchy export CKPT -o b_lenet.branchy` in the root
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO,
                             capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(paths), ignored.stderr


def test_branchy_run_help_prints_the_usage_and_succeeds():
    runner = cachesim.find_runner()
    for flag in ("--help", "-h"):
        done = subprocess.run([runner, flag], capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == ""
        assert done.stdout.startswith("usage: branchy-run MODEL") and "--no-input-check" in done.stdout
    wrong = subprocess.run([runner, "--no-such-option"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --no-such-option" in wrong.stderr
    assert "usage: branchy-run MODEL" in wrong.stderr and wrong.stdout == ""


@pytest.fixture(scope="module")
def b_lenet_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "b_lenet.branchy"
    export(os.path.join(SHIPPED, "b_lenet.pt"), path, thresholds=[0.5])
    return str(path)


@pytest.mark.parametrize("command", [["export", "-o", "out.branchy"], ["costs"], ["calibrate"]])
def test_an_exported_model_where_a_checkpoint_belongs_says_so(b_lenet_model, tmp_path, capsys, command):
    name, *rest = command
    assert branchy([name, b_lenet_model, *rest]) == 2
    err = capsys.readouterr().err
    assert f"{b_lenet_model} is an exported model (.branchy)" in err
    assert "pass the .pt checkpoint it was exported from" in err and "weights_only" not in err


def test_a_checkpoint_where_a_model_belongs_suggests_export(capsys):
    checkpoint = os.path.join(SHIPPED, "b_lenet.pt")
    assert branchy(["run", checkpoint]) == 2
    assert (f"{checkpoint} is a PyTorch checkpoint, not an exported model: run `branchy export "
            f"{checkpoint} -o MODEL.branchy`") in capsys.readouterr().err
    done = subprocess.run([cachesim.find_runner(), checkpoint, "--raw", os.devnull],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert f"is a PyTorch checkpoint: export it first, `branchy export {checkpoint}" in done.stderr
