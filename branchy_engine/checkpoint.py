"""Checkpoints: written atomically, loaded with weights_only=True, checked before use.

training/ writes them; calibration, export, profiling and the commands read them. The code lives
here, in the package, so that training/ depends on branchy_engine and never the reverse.

A checkpoint is a dict:
    format, format_version       identify the file as ours
    model, model_args            branchy_engine.models.create(model, **model_args) rebuilds the network
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


def load(path, model=None):
    """Reads a checkpoint with weights_only=True and checks it.

    Args:
        path: the file.
        model: if given, the zoo name the checkpoint must hold (e.g. "b_lenet").
    Raises:
        CheckpointError naming the problem (missing, corrupt, not ours, newer format, other model).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, truncated or not a "
                              f"torch file): {e}") from e
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file, but not a branchy-engine checkpoint")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {checkpoint['format_version']} is newer "
                              f"than this branchy-engine reads ({FORMAT_VERSION}); upgrade it")
    if model is not None and checkpoint.get("model") != model:
        raise CheckpointError(f"{path}: holds model {checkpoint.get('model')!r}, expected {model!r}")
    return checkpoint


def build_model(checkpoint):
    """The network of a loaded checkpoint, with its weights, in eval mode."""
    from branchy_engine import models
    net = models.create(checkpoint["model"], **checkpoint.get("model_args", {}))
    try:
        net.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit {checkpoint['model']}: {e}") from e
    return net.eval()
