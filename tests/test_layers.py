"""The package's layers, read from the source with ast: the model as data (models/), training
(training/), calibration (calibrate/), export (export/: lowering and the format), runtime
(runtime/: CPU engine, GPU engine, ops), profiling (profiling/) and commands (commands/: cli and the
jobs it runs). training/ depends on branchy_engine, never the reverse (the commands aside); nothing
below the commands imports them, and nothing at all imports the command line (cli.py)."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command layer (branchy_engine/commands/: cli, demo, reproduce and their shared pipeline): the
# only modules of branchy_engine that may import training/.
COMMANDS = {os.path.join("branchy_engine", "commands", name)
            for name in ("__init__.py", "cli.py", "demo.py", "reproduce.py", "pipeline.py")}
LAYERS = ("models", "calibrate", "export", "runtime", "profiling", "commands")


def modules(*folders):
    """(path relative to the repository, module name) of every .py file under `folders`."""
    for folder in folders:
        for root, dirs, files in os.walk(os.path.join(REPO, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.relpath(os.path.join(root, name), REPO)
                    module = path[:-len(".py")].replace(os.sep, ".")
                    yield path, module[:-len(".__init__")] if module.endswith(".__init__") else module


def imported(filename, module):
    """(line, absolute module name) of every import in the file of `module`, those inside functions
    included; `from a import b` counts as importing both a and a.b (b may be a module)."""
    with open(filename) as f:
        tree = ast.parse(f.read(), filename)
    package = module if filename.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def within(name, package):
    return name == package or name.startswith(package + ".")


def test_the_scan_sees_every_form_of_import(tmp_path):
    source = ("import training.config\n"
              "from branchy_engine import cli\n"
              "def f():\n"
              "    from ..cli import floats\n"
              "    from . import cli\n")
    path = tmp_path / "m.py"
    path.write_text(source)
    found = set(imported(str(path), "pkg.sub.m"))
    assert {(1, "training.config"), (2, "branchy_engine.cli"), (4, "pkg.cli"), (5, "pkg.sub.cli")} <= found
    assert within("training.config", "training") and not within("trainings", "training")


def test_the_command_layer_exists():
    missing = sorted(name for name in COMMANDS if not os.path.isfile(os.path.join(REPO, name)))
    assert not missing, f"{missing} are gone: update COMMANDS in this test"


def test_only_the_command_layer_imports_training():
    offenders = sorted({f"{path}:{line}"
                        for path, module in modules("branchy_engine") if path not in COMMANDS
                        for line, name in imported(os.path.join(REPO, path), module)
                        if within(name, "training")})
    assert not offenders, ("training/ depends on branchy_engine, never the reverse (checkpoints: "
                           "branchy_engine.checkpoint); these import training:\n" + "\n".join(offenders))


def test_the_package_shows_its_layers():
    here = {name for name in os.listdir(os.path.join(REPO, "branchy_engine"))
            if os.path.isfile(os.path.join(REPO, "branchy_engine", name, "__init__.py"))}
    assert set(LAYERS) <= here, f"missing layers: {sorted(set(LAYERS) - here)}"
    found = {os.path.relpath(p, "branchy_engine") for p, _ in modules("branchy_engine/commands")}
    assert {os.path.relpath(p, "branchy_engine") for p in COMMANDS} == found


def test_nothing_below_the_commands_imports_them():
    offenders = sorted({f"{path}:{line}"
                        for path, module in modules("branchy_engine", "training", "bench")
                        if path not in COMMANDS
                        for line, name in imported(os.path.join(REPO, path), module)
                        if within(name, "branchy_engine.commands")})
    assert not offenders, ("the commands are the top layer; these import them:\n" + "\n".join(offenders))


def test_nothing_imports_the_command_line():
    offenders = sorted({f"{path}:{line}"
                        for path, module in modules("branchy_engine", "training", "bench")
                        if module != "branchy_engine.commands.cli"
                        for line, name in imported(os.path.join(REPO, path), module)
                        if within(name, "branchy_engine.commands.cli")})
    assert not offenders, ("cli.py is the top of the stack; shared helpers live below it (argparse "
                           "types: branchy_engine.argtypes); these import it:\n" + "\n".join(offenders))
