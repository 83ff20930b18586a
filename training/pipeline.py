"""`branchy train`: phase 1 trains the baseline, phase 2 the BranchyNet jointly from phase 1's weights.

The network is a zoo network (cfg.model), a torchvision classifier ("torchvision:NAME") or any
nn.Module given to train(); the latter two get exits attached on their traced graph (cfg.exits).
Phase 1 is skipped where the baseline is given: --init-from, or --freeze-backbone, which trains
the early-exit heads alone on a fixed trunk and final classifier.

Files in cfg.out, per phase: NAME.pt (the checkpoint, rewritten at every save) and, once the phase
is done, NAME.json (command, seed, wall time, validation and test accuracy per exit).
"""
import json
import os
import platform
import random
from dataclasses import replace
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from branchy_engine import data as datasets
from branchy_engine import checkpoint, models
from branchy_engine.models import classifier
from branchy_engine.fileio import write_text
from training import distributed
from training.config import TrainConfig
from training.loop import PhaseState, run_phase


def seed_everything(seed: int, device: str):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device == "cuda":
        # cuBLAS needs this to be deterministic; it must be set before the first cuBLAS call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def exit_weights(cfg: TrainConfig, num_exits: int) -> List[float]:
    if cfg.exit_weights is None:
        return [1.0] * num_exits
    if len(cfg.exit_weights) != num_exits:
        raise ValueError(f"--exit-weights has {len(cfg.exit_weights)} values but {cfg.model} has "
                         f"{num_exits} exits")
    return list(cfg.exit_weights)


def dataset_record(data, input_size=None) -> dict:
    """What the checkpoint (and the model file's metadata) records of the data: enough to prepare
    a split exactly as training did (resize, channels, normalisation; data.model_samples)."""
    return {"name": data.name, "description": data.description, "stand_in": data.stand_in,
            "num_classes": data.num_classes, "class_names": list(data.class_names),
            "input_shape": list(data.input_shape), "input_size": input_size,
            "channels": data.input_shape[0], "mean": list(data.mean), "std": list(data.std),
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}


def check_resumable(path, saved: dict, cfg: TrainConfig):
    """A phase's checkpoint may be continued only by the run that started it."""
    if not cfg.resume:
        raise checkpoint.CheckpointError(
            f"{path} exists: pass --resume to continue that run, or choose another --out")
    now = cfg.to_dict()
    for key, value in saved.items():
        if key not in TrainConfig.RESUMABLE_CHANGES and now.get(key) != value:
            raise checkpoint.CheckpointError(
                f"{path} was trained with {key}={value!r}, this run has {key}={now.get(key)!r}; "
                f"resume with the same options")


class Phase:
    """One network to train and the file it lives in; model_args rebuild it (checkpoint.py)."""

    def __init__(self, name, net, kind, epochs, weights, out, model_args):
        self.name, self.net, self.kind, self.epochs, self.weights = name, net, kind, epochs, weights
        self.model_args = model_args
        self.path = os.path.join(out, f"{name}.pt")
        self.summary_path = os.path.join(out, f"{name}.json")


def train(cfg: TrainConfig, model: Optional[nn.Module] = None) -> Dict[str, str]:
    """Runs the training the config describes. Returns {network name: checkpoint path}.

    model: any classifier, input [B, C, H, W] -> logits [B, classes], trained instead of
        cfg.model (which is then recorded as "module:CLASS"): exits are attached on its traced
        graph at cfg.exits (default: models.default_exits), the data get as many channels as its
        first convolution takes, cfg.init_from (a plain state_dict) is loaded into it first, and
        phase 2 trains its own modules, which therefore end with the trained weights.
        checkpoint.build_model(ckpt, module=CLASS(...)) rebuilds the network from a checkpoint.
    """
    if model is not None:
        cfg = replace(cfg, model=classifier.MODULE + type(model).__name__)
    cfg.check()
    ctx = distributed.setup(cfg.device)
    try:
        return _train(ctx, cfg, model)
    finally:
        distributed.teardown(ctx)


def _zoo(cfg: TrainConfig, module: Optional[nn.Module]) -> bool:
    """Whether the network is one of the zoo's (models.create), not a classifier given exits."""
    return module is None and not cfg.model.startswith(classifier.TORCHVISION)


def _data_channels(cfg: TrainConfig, module: Optional[nn.Module]) -> Optional[int]:
    """The channels the network takes, where the data must be made to fit it; None: the zoo's
    networks take the data's own."""
    if module is not None:
        return classifier.input_channels(module)
    return None if _zoo(cfg, module) else 3


def _build_network(cfg: TrainConfig, data, module: Optional[nn.Module] = None):
    """The BranchyNet to train and its checkpoint's model_args (checkpoint.build_model).

    A zoo network is created for the data's classes and channels. Otherwise the classifier
    (`module`, or torchvision's cfg.model built for the data's classes) gets cfg.init_from's
    state_dict, then exits at cfg.exits or models.default_exits.
    """
    if _zoo(cfg, module):
        if cfg.exits is not None:
            raise ValueError(f"--exits places the exits of torchvision:NAME and of your own modules; "
                             f"the zoo's {cfg.model} has its own")
        args = {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}
        return models.create(cfg.model, **args), args
    model = module if module is not None else classifier.torchvision_classifier(
        cfg.model.removeprefix(classifier.TORCHVISION), data.num_classes)
    if cfg.init_from is not None:
        checkpoint.load_state_dict(model, cfg.init_from, what=cfg.model)
    exits = cfg.exits or models.default_exits(model, data.input_shape)
    net = classifier.attach(model, cfg.model, exits, data.input_shape)
    if module is not None:
        width = _final_width(net, data.input_shape)
        if width != data.num_classes:
            raise ValueError(f"{type(module).__name__} gives {width} logits, {data.name} has "
                             f"{data.num_classes} classes")
    return net, {"source": cfg.model, "num_classes": data.num_classes,
                 "input_shape": list(data.input_shape), "exits": list(exits)}


@torch.no_grad()
def _final_width(net, input_shape) -> int:
    """The final exit's number of logits, from one eval-mode forward of zeros; modes kept."""
    was_training = net.training
    net.eval()
    try:
        param = next(net.parameters())
        x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
        return net.forward_to(x, net.num_exits - 1).shape[-1]
    finally:
        net.train(was_training)


def _train(ctx, cfg: TrainConfig, module: Optional[nn.Module]) -> Dict[str, str]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.device)
    zoo = _zoo(cfg, module)
    if cfg.freeze_backbone and cfg.init_from is None and module is None:
        raise ValueError(f"--freeze-backbone trains the exit heads of a trained network: pass "
                         f"--init-from (for {cfg.model}: "
                         f"{'its baseline checkpoint' if zoo else 'a state_dict file'})")
    data = datasets.load(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                         seed=cfg.seed, download=cfg.download, limit=cfg.limit,
                         input_size=cfg.input_size, channels=_data_channels(cfg, module))
    net, model_args = _build_network(cfg, data, module)
    if cfg.freeze_backbone:
        if net.num_exits < 2:
            raise ValueError(f"--freeze-backbone: {net.name} has no early exits to train")
        net.freeze_backbone()
    phases = []
    if net.num_exits > 1:
        baseline = net.baseline()
        if cfg.init_from is None and not cfg.freeze_backbone:
            phases.append(Phase(baseline.name, baseline, "baseline", cfg.baseline_epochs, [1.0],
                                cfg.out, model_args))
        phases.append(Phase(net.name, net, "joint", cfg.epochs, exit_weights(cfg, net.num_exits),
                            cfg.out, model_args))
    else:
        phases.append(Phase(net.name, net, "baseline", cfg.baseline_epochs, [1.0], cfg.out,
                            model_args))
    if cfg.init_from is not None and zoo:
        _load_trunk(net, checkpoint.build_model(checkpoint.load(cfg.init_from, model=net.baseline().name)))

    done = {}
    for i, phase in enumerate(phases):
        if i > 0:
            _load_trunk(phase.net, phases[i - 1].net)
        phase.net.to(ctx.device)
        state = _starting_state(phase, cfg)
        if not state.done:  # a finished phase (on --resume) is left as it is
            if ctx.is_main:
                frozen = " (backbone frozen: exit heads only)" if phase.net.backbone_frozen else ""
                print(f"{phase.kind} phase{frozen}: {phase.name} on {data.description}, "
                      f"{phase.epochs} epochs, exit weights {phase.weights}", flush=True)
            state = run_phase(ctx, phase.net, data, cfg, phase.epochs, phase.weights, state,
                              lambda s, p=phase: _save(p, s, cfg, data), phase.name)
            if ctx.is_main:
                _save(phase, state, cfg, data)
                _write_summary(phase, state, cfg, data)
        distributed.barrier(ctx)
        done[phase.name] = phase.path
    return done


def _starting_state(phase: Phase, cfg: TrainConfig) -> PhaseState:
    if not os.path.exists(phase.path):
        return PhaseState()
    saved = checkpoint.load(phase.path, model=phase.name)
    check_resumable(phase.path, saved.get("config", {}), cfg)
    phase.net.load_state_dict(saved["state_dict"])
    ts = saved["train_state"]
    return PhaseState(epoch=ts["epoch"], step=ts["step"], done=ts["done"],
                      optimizer=ts.get("optimizer"), rng=ts.get("rng"),
                      history=saved["metrics"]["history"], wall_time_s=saved["wall_time_s"])


def _load_trunk(net, baseline):
    """Phase 2 starts from phase 1: every weight but the branch heads comes from the baseline."""
    result = net.load_state_dict(baseline.state_dict(), strict=False)
    branch_keys = [k for k in result.missing_keys
                   if not any(k.startswith(f"exits.{s}.") for s in net.exit_stages[:-1])]
    if result.unexpected_keys or branch_keys:
        raise checkpoint.CheckpointError(
            f"baseline weights do not fit {net.name}: unexpected {result.unexpected_keys}, "
            f"missing {branch_keys}")


def _final_metrics(state: PhaseState) -> dict:
    last = state.history[-1] if state.history else {}
    return {"history": state.history, "val_accuracy": last.get("val_accuracy", []),
            "test_accuracy": last.get("test_accuracy", []), "epochs": len(state.history)}


def _save(phase: Phase, state: PhaseState, cfg: TrainConfig, data):
    checkpoint.save(phase.path, {
        "model": phase.name,
        "model_args": phase.model_args,
        "state_dict": {k: v.detach().cpu() for k, v in phase.net.state_dict().items()},
        "phase": phase.kind,
        # A finished phase is never resumed: its checkpoint keeps the weights, not the optimizer.
        "train_state": {"epoch": state.epoch, "step": state.step, "done": state.done,
                        "optimizer": None if state.done else state.optimizer,
                        "rng": None if state.done else state.rng},
        "config": cfg.to_dict(),
        "dataset": dataset_record(data, cfg.input_size),
        "metrics": _final_metrics(state),
        "exit_weights": phase.weights,
        "thresholds": None,
        "versions": checkpoint.versions(),
        "command": cfg.command,
        "wall_time_s": round(state.wall_time_s, 2),
    })


def _write_summary(phase: Phase, state: PhaseState, cfg: TrainConfig, data):
    metrics = _final_metrics(state)
    summary = {
        "model": phase.name, "phase": phase.kind, "command": cfg.command, "seed": cfg.seed,
        "model_args": phase.model_args, "freeze_backbone": cfg.freeze_backbone,
        "dataset": data.description, "epochs": metrics["epochs"], "exit_weights": phase.weights,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2],
        "wall_time_s": round(state.wall_time_s, 2),
        "val_accuracy_per_exit": metrics["val_accuracy"],
        "test_accuracy_per_exit": metrics["test_accuracy"],
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "device": cfg.device},
        "versions": checkpoint.versions(),
    }
    write_text(phase.summary_path, json.dumps(summary, indent=2) + "\n")
