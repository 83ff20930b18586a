"""Loads the compiled extension, with errors that say how to fix a missing or stale build."""
import torch

REBUILD = "build it with `make test`, or `pip install --no-build-isolation -e .` in the repository"


def load():
    """Imports branchy_engine._C (which registers torch.ops.branchy_engine) and returns it."""
    try:
        from branchy_engine import _C
    except ImportError as e:
        hint = ""
        if "undefined symbol" in str(e):
            hint = (f" An undefined symbol usually means it was built against another torch than "
                    f"the installed {torch.__version__}.")
        raise ImportError(f"branchy_engine._C, the compiled part of branchy_engine, could not be "
                          f"loaded: {e}.{hint} To fix: {REBUILD}.") from e
    installed = torch.__version__.split("+")[0]
    if _C.torch_version != installed:
        raise ImportError(f"branchy_engine._C was built against torch {_C.torch_version} but torch "
                          f"{installed} is installed; rebuild: {REBUILD}.")
    return _C
