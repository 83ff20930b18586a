"""The README runs as written (issue 15): every fenced block, in order, in a fresh directory.

The directory stands for the clone's root after `make test`: it holds links to the clone's `.venv`
(the virtual environment running this test) and `build/` ($BUILD, default the clone's), and
everything the blocks write lands in it. Nothing else is prepared, except the two inputs the
README names but cannot ship, made small here: `photos/` (20 generated images in two class
folders, torchvision's ImageFolder layout) and `resnet18.pt` (an untrained torchvision resnet18's
state_dict for those 2 classes). The README's own environment is not assumed: `.venv/bin` is
taken off PATH, so `branchy` is found only as the README says (`. .venv/bin/activate`).

How each block runs, by its language (a block without one fails the test):
- `sh`: line by line in bash (a trailing backslash joins lines), each line in the environment and
  directory the line before left, as in one terminal, so an `export` or the activation carries on
  to later blocks. Comment lines right under a command are notes on it:
    `#   ... quick: OPTIONS (about N s)`: the test runs the command with OPTIONS appended (a later
      option overrides an earlier one), the quick run the README offers beside the long one;
    `#   ... not run by the README test: REASON`: skipped; SKIPPED below lists every such command.
- `python`: a fresh interpreter (`python FILE`, after the activation) runs the block, unless its
  first line names a file (`# app/test_b_lenet_bench.py: ...`).
- `cpp`, `c`, `cmake`, and `python` blocks whose first line is a comment naming a file
  (`// app/main.cpp`, `/* app/main.c: ... */`, `# app/CMakeLists.txt`): written to that file,
  which a later `sh` block builds or runs (checked).
- `text`: output shown; not run.

The README states the convention once, in Usage. Fashion-MNIST (Debian's dataset-fashion-mnist)
absent: skipped. It takes 2.5-3.5 minutes on the 2-core build machine; a line gets LINE_TIMEOUT_S.
"""
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from branchy_engine import data

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = ("sh", "shell", "bash")
WRITTEN = ("cpp", "c", "cmake", "python")
SHOWN = ("text",)
# Every command the README marks "not run by the README test" (its note says why): make demo works
# in the clone itself (its Makefile, results/) and CI runs make test instead; make test runs this.
SKIPPED = ("make demo", "make test")
LINE_TIMEOUT_S = 600  # the slowest quick line takes about 30 s
QUICK = re.compile(r"\bquick:\s*(.*?)\s*(?:\(|$)")
NOT_RUN = re.compile(r"\bnot run by the README test:\s*(.*)$")
FILE_COMMENT = re.compile(r"^(?://|#|/\*)\s*([\w./-]+\.(?:cpp|c|py|txt))(?=[\s:]|\*/|$)")


@dataclass
class Block:
    language: str
    text: str
    line: int  # where its fence opens in README.md, from 1


@dataclass
class Command:
    text: str               # as the README writes it (continuations joined)
    line: int
    notes: list = field(default_factory=list)

    def quick(self) -> str | None:
        found = [m.group(1) for note in self.notes if (m := QUICK.search(note))]
        return found[0] if found else None

    def not_run(self) -> str | None:
        found = [m.group(1) for note in self.notes if (m := NOT_RUN.search(note))]
        return found[0] if found else None

    def to_run(self) -> str:
        """The command, with the quick options appended where a note gives them."""
        quick = self.quick()
        if quick is None:
            return self.text
        return re.sub(r"\s+#.*$", "", self.text) + " " + quick


def blocks(markdown: str) -> list[Block]:
    found, language, body, start = [], None, [], 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if language is None:
            if line.startswith("```"):
                language, body, start = line[3:].strip(), [], number
        elif line.startswith("```"):
            found.append(Block(language, "\n".join(body) + "\n", start))
            language = None
        else:
            body.append(line)
    assert language is None, f"README.md: the block opened on line {start} is never closed"
    return found


def commands(block: Block) -> list[Command]:
    """The block's commands: continuations joined, comment lines under a command as its notes."""
    found, pending = [], None
    for offset, line in enumerate(block.text.splitlines(), 1):
        if pending is not None:
            pending.text += "\n" + line
        elif line.lstrip().startswith("#"):
            if found:
                found[-1].notes.append(line.strip())
            continue
        elif not line.strip():
            continue
        else:
            pending = Command(line, block.line + offset)
        if pending.text.endswith("\\"):
            continue
        found.append(pending)
        pending = None
    assert pending is None, f"README.md line {block.line}: the block ends inside a continued line"
    return found


def named_file(block: Block) -> str | None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    match = FILE_COMMENT.match(first)
    return match.group(1) if match else None


def make_inputs(work: Path):
    """photos/ and resnet18.pt, which the README names as the user's own."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    rng = np.random.default_rng(15)
    for k, name in enumerate(["cats", "dogs"]):
        (work / "photos" / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            pixels[..., k] = 255
            Image.fromarray(pixels).save(work / "photos" / name / f"{i}.png")
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), work / "resnet18.pt")


def read_env(path: Path) -> dict:
    entries = path.read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


class Terminal:
    """One shell session, a line at a time: each line's environment and directory carry on."""

    def __init__(self, work: Path, env: dict):
        self.env, self.cwd = env, work
        self.state = work.parent / "terminal.env"
        self.times = []

    def run(self, command: str, where: str):
        script = f'{command}\n__status=$?\nenv -0 > "{self.state}"\nexit $__status\n'
        start = time.monotonic()
        try:
            done = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=self.cwd, env=self.env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=LINE_TIMEOUT_S)
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(f"{where}: still running after {LINE_TIMEOUT_S} s:\n{command}\n"
                        f"--- output (last 4000 characters) ---\n{str(timeout.output or '')[-4000:]}")
        seconds = time.monotonic() - start
        self.times.append((seconds, where, command))
        if done.returncode != 0:
            pytest.fail(f"{where}: exit {done.returncode} after {seconds:.0f} s from\n{command}\n"
                        f"--- output (last 4000 characters) ---\n{done.stdout[-4000:]}")
        self.env = read_env(self.state)
        self.cwd = Path(self.env.get("PWD", self.cwd))
        return done.stdout


def test_readme_blocks_follow_the_convention():
    """Every block has a language this test knows; every file a block writes is built or run by a
    later sh block; the commands not run are SKIPPED's. Runs where the data is absent too."""
    found = blocks(README.read_text())
    unknown = [(b.line, b.language) for b in found if b.language not in RUN + WRITTEN + SHOWN]
    assert not unknown, f"README.md: blocks (line, language) {unknown} need sh, python, cpp, c, cmake or text"
    later_shell = ""
    for block in reversed(found):
        name = named_file(block)
        if block.language in WRITTEN and (name or block.language != "python"):
            assert name, f"README.md line {block.line}: a {block.language} block names no file"
            built = f"-S {os.path.dirname(name)}" if name.endswith("CMakeLists.txt") else name
            assert built in later_shell, f"README.md line {block.line}: no later sh block builds or runs {name}"
        if block.language in RUN:
            later_shell = block.text + later_shell
    not_run = [c.text.split("#")[0].strip() for b in found if b.language in RUN for c in commands(b)
               if c.not_run()]
    assert sorted(not_run) == sorted(SKIPPED), f"the README marks {not_run} as not run; SKIPPED is {SKIPPED}"


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian package dataset-fashion-mnist not installed (make installs it)")
def test_readme_runs_as_written(tmp_path, capsys):
    build = Path(os.environ.get("BUILD", ROOT / "build")).resolve()
    venv = Path(sys.prefix)
    assert (venv / "bin" / "activate").exists(), f"run this test with the .venv's python, not {sys.executable}"
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(venv)
    (work / "build").symlink_to(build)
    make_inputs(work)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != (venv / "bin").resolve())
    terminal = Terminal(work, env)

    skipped, start = [], time.monotonic()
    for number, block in enumerate(blocks(README.read_text()), 1):
        if block.language in RUN:
            for command in commands(block):
                if command.not_run():
                    skipped.append(f"{command.text.split('#')[0].strip()}: {command.not_run()}")
                else:
                    terminal.run(command.to_run(), f"README.md line {command.line}")
        elif block.language in WRITTEN:
            name = named_file(block)
            path = work / name if name else tmp_path / f"readme-block-{number}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            if not name:
                terminal.run(f'python "{path}"', f"README.md line {block.line} (python block)")
    total = time.monotonic() - start
    # The C++ example's promise: without the model file it prints why and exits 1 (no abort).
    missing = subprocess.run([str(work / "app" / "main")], cwd=tmp_path, env=terminal.env,
                             capture_output=True, text=True)
    assert (missing.returncode, missing.stderr) == (
        1, "model file b_lenet.branchy: cannot open: No such file or directory\n"), missing

    with capsys.disabled():
        print(f"\nREADME.md ran in {total:.0f} s; the slowest lines:")
        for seconds, where, command in sorted(terminal.times, reverse=True)[:8]:
            print(f"  {seconds:6.1f} s  {where}: {command.splitlines()[0][:90]}")
        for line in skipped:
            print(f"  not run: {line}")
