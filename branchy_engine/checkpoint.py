"""Checkpoints: written atomically, loaded with weights_only=True, checked before use.

training/ writes them; calibration, export, profiling and the commands read them. The code lives
here, in the package, so that training/ depends on branchy_engine and never the reverse.

A checkpoint is a dict:
    format, format_version       identify the file as ours
    model, model_args            the network's name and what rebuilds it: a zoo network's
                                 models.create(model, **model_args); where model_args has a
                                 "source" (exits attached to a torchvision model or a module of
                                 the user's), models.classifier.create(model, **model_args)
    state_dict                   the weights
    phase                        "baseline" (phase 1) or "joint" (phase 2)
    train_state                  epoch, step (batches done in that epoch), done, optimizer, rng
                                 (what --resume needs; shipped checkpoints keep only `done`)
    config, dataset, metrics     the training configuration, the data it saw, per-epoch accuracy
    thresholds                   per-exit thresholds and criterion, once calibrated (else None)
    versions, command, wall_time_s
"""
import os
import platform
import zipfile
import pickle
from collections.abc import Mapping

import torch

from branchy_engine.fileio import atomic_path

FORMAT = "branchy-engine checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: missing, corrupt, foreign or of another model."""


def versions():
    import branchy_engine
    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    return {"torch": str(torch.__version__), "branchy_engine": branchy_engine.__version__,
            "python": platform.python_version()}


def save(path, checkpoint):
    """Writes `checkpoint` (a dict as described above) to `path` atomically."""
    checkpoint = dict(checkpoint, format=FORMAT, format_version=FORMAT_VERSION)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)



def _read(path: str, what: str):
    """torch.load(path) with weights_only=True on the CPU; CheckpointError naming the file when it
    is missing, an exported model, or not a readable torch file (corrupt, truncated, foreign)."""
    from branchy_engine.export.model_file import MAGIC  # not at the top: export imports this module
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such {what} file")
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            raise CheckpointError(f"{path} is an exported model (.branchy), which only the engine "
                                  f"reads: pass the .pt {what} it was exported from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # Random bytes can also fail inside the unpickler as IndexError or KeyError (seen in CI).
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError, IndexError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable {what} (corrupt, truncated or not a torch "
                              f"file): {e}") from e

def load(path, model=None):
    """Reads a checkpoint with weights_only=True and checks it.

    Args:
        path: the file.
        model: if given, the zoo name the checkpoint must hold (e.g. "b_lenet").
    Raises:
        CheckpointError naming the problem (missing, corrupt, not ours, newer format, other model).
    """
    path = os.fspath(path)
    checkpoint = _read(path, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file, but not a branchy-engine checkpoint")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {checkpoint['format_version']} is newer "
                              f"than this branchy-engine reads ({FORMAT_VERSION}); upgrade it")
    if model is not None and checkpoint.get("model") != model:
        raise CheckpointError(f"{path}: holds model {checkpoint.get('model')!r}, expected {model!r}")
    return checkpoint


def build_model(checkpoint, module=None):
    """The network of a loaded checkpoint, with its weights, in eval mode.

    module: for a network with exits on a module of the user's own (model_args' source
    "module:CLASS"), an instance of CLASS to rebuild it on; its weights are replaced.
    """
    from branchy_engine import models
    from branchy_engine.models import classifier
    args = checkpoint.get("model_args") or {}
    if "source" in args:
        try:
            net = classifier.create(checkpoint["model"], module=module, **args)
        except ValueError as e:
            raise CheckpointError(f"cannot rebuild {checkpoint['model']}: {e}") from e
    else:
        net = models.create(checkpoint["model"], **args)
    try:
        net.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit {checkpoint['model']}: {e}") from e
    return net.eval()


def _listed(keys, most=6) -> str:
    shown = ", ".join(keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def load_state_dict(model, path, what="the model"):
    """Loads a plain state_dict file (torch.save(model.state_dict(), path), as torchvision's and
    most training code's weights are) into `model`, strictly, with weights_only=True.

    Raises CheckpointError naming the file and, where it does not fit `what`, every problem at
    once: the keys the model has and the file lacks, the keys the file has and the model lacks,
    and the keys whose shapes differ with both shapes.
    """
    path = os.fspath(path)
    state = _read(path, "state_dict")
    if isinstance(state, Mapping) and state.get("format") == FORMAT:
        raise CheckpointError(f"{path} is a branchy-engine checkpoint; a plain state_dict is "
                              f"needed here (torch.save(model.state_dict(), FILE))")
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        nested = [k for k, v in state.items() if isinstance(v, Mapping)] \
            if isinstance(state, Mapping) else []
        hint = f"; its entry {nested[0]!r} may be one" if nested else ""
        raise CheckpointError(f"{path}: not a state_dict (a dict of parameter and buffer names "
                              f"to tensors), found {type(state).__name__}{hint}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing from the file: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys in the file: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_listed(shapes, 3)}")
    if problems:
        if unexpected and all(k.startswith("module.") for k in unexpected):
            problems.append("the file's keys start with 'module.' (saved from a DDP or "
                            "DataParallel wrapper): save wrapper.module.state_dict() instead")
        raise CheckpointError(f"{path} does not fit {what}: " + "; ".join(problems))
    model.load_state_dict(state)
