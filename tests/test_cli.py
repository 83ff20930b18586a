"""The command lines, `branchy` and `branchy-run`: help for every command and option, the
mix-ups of an exported model and a checkpoint, and outputs that stay out of git."""
import os
import subprocess

from branchy_engine.commands.cli import parser
from branchy_engine.profiling import cachesim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
