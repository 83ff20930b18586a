"""`branchy export`: a checkpoint to one .branchy model file that the C++ runtime runs without Python
(docs/model-format.md)."""
import datetime
import itertools
import json
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

import branchy_engine
from branchy_engine import checkpoint
from branchy_engine.argtypes import threshold_list
from branchy_engine.export import model_file
from branchy_engine.fileio import atomic_path
from branchy_engine.export import lower_aten, lowering
from branchy_engine.models import BranchyNet


def choose_thresholds(record: Optional[dict], num_exits: int, values: Optional[Sequence[float]] = None,
                      criterion: Optional[str] = None) -> Tuple[str, List[float], str]:
    """The exit rule to write: (criterion, one threshold per early exit, where they came from).

    Given `values` win (one number stands for a list of one); else the checkpoint's calibration
    `record` (criterion and values, written by `branchy calibrate`); a single-exit network needs
    none. Raises ValueError if a network with
    early exits has neither, for the patience criterion (the engine runs entropy and maxprob), and
    for a wrong count, NaN or a negative value.
    """
    if values is not None:
        criterion, values, source = criterion or "entropy", threshold_list(values), "command line"
    elif record is not None:
        if criterion is not None and criterion != record["criterion"]:
            raise ValueError(f"the checkpoint is calibrated for {record['criterion']!r}, not {criterion!r}; "
                             f"pass --thresholds for {criterion!r}")
        criterion, values, source = record["criterion"], list(record["values"]), "checkpoint calibration"
    elif num_exits == 1:
        criterion, values, source = criterion or "entropy", [], "none: a single exit"
    else:
        raise ValueError("not calibrated: run `branchy calibrate CKPT` or pass --thresholds")
    if criterion not in model_file.CRITERIA:
        raise ValueError(f"criterion {criterion!r} cannot be exported: the engine supports "
                         f"{' and '.join(model_file.CRITERIA)}")
    if len(values) != num_exits - 1:
        raise ValueError(f"a network with {num_exits} exits takes {num_exits - 1} thresholds "
                         f"(one per early exit), got {len(values)}: {values}")
    if any(math.isnan(v) or v < 0 for v in values):
        raise ValueError(f"thresholds must be >= 0 (or inf) and not NaN, got {values}")
    # As the engine compares them: float32; a value past float32's range is +inf.
    with np.errstate(over="ignore"):
        return criterion, [float(np.float32(v)) for v in values], source


def _num_classes(net: BranchyNet, input_shape: Sequence[int]) -> int:
    """Every exit's logits width, from one forward pass (which also proves the input shape fits)."""
    param = next(net.parameters(), torch.zeros(()))  # the input on the weights' device and dtype
    try:
        with torch.no_grad():
            logits = net(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    except RuntimeError as e:
        raise ValueError(f"input shape {list(input_shape)} does not fit {net.name}: {e}") from e
    widths = {tuple(z.shape) for z in logits}
    if len(widths) != 1 or len(next(iter(widths))) != 2:
        raise ValueError(f"{net.name}'s exits give logits of shapes {sorted(widths)}; "
                         f"expected one [1, classes]")
    return next(iter(widths))[1]


def _plain(value):
    """`value` as JSON-ready data: non-finite floats as strings (JSON has no inf), tensors as lists."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def check_finite_weights(net: torch.nn.Module):
    """Raises ValueError naming the first parameter or floating-point buffer (e.g. a BatchNorm's
    running_var) of `net` that holds NaN or +-inf, and the element: such a weight would reach the
    file (the C++ reader refuses it) or, folded, turn a whole layer into NaN."""
    for kind, tensors in (("parameter", net.named_parameters()), ("buffer", net.named_buffers())):
        for name, t in tensors:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                i, what = model_file.first_non_finite(t.detach().cpu().double().numpy())
                raise ValueError(f"{kind} {name} {list(t.shape)} holds {what} at element {i} "
                                 f"(weights must be finite)")


def lower(net: BranchyNet, input_shape: Sequence[int]):
    """(stages, exits, input Value) of `net` as the model file's graph.

    The paper's networks (chains of the modules lowering.SUPPORTED lists) lower module by module,
    which keeps their fused ops (res_block); any other network lowers from its ATen ops
    (lower_aten: torch.export of each stage and head). Raises ValueError naming the node (and the
    module it came from) that neither can lower.
    """
    x = model_file.Value()
    try:
        return (*lowering.lower_network(net, x), x)
    except ValueError:
        pass  # not a chain of the paper's modules
    x = model_file.Value()
    return (*lower_aten.lower_network(net, input_shape, x), x)


def write_model(net: BranchyNet, output, input_shape: Sequence[int], criterion: str = "entropy",
                thresholds: Sequence[float] = (), class_names: Sequence[str] = (),
                metadata: Optional[dict] = None, input_prep=None) -> dict:
    """Writes `net` (any BranchyNet whose ops the engine has, export.lower) to `output` atomically.

    Args:
        net: the network; it is put in eval mode.
        input_shape: one sample's [C, H, W].
        criterion, thresholds: the exit rule, checked as choose_thresholds does.
        class_names: empty or one per class.
        metadata: free-form JSON-able record for the file's metadata section.
        input_prep: how raw 8-bit pixels become the network's input, recorded so that the engine
            can take images as cameras and files give them (Engine(..., input="uint8")): a
            model_file.InputPrep or a dict with pixel_max (255), mean and std (one per channel,
            in units of pixel / pixel_max), e.g. ImageNet's mean (0.485, 0.456, 0.406) and std
            (0.229, 0.224, 0.225). None records nothing: the engine then takes prepared floats only.
    Returns:
        the file as the C++ reader summarizes it (model_file.summary) plus "path" and "bytes".
    Raises:
        ValueError for a module the engine cannot run, a parameter or buffer holding NaN or +-inf
        (check_finite_weights), or a file the C++ reader refuses; `output` then keeps its
        previous content.
    """
    net.eval()
    check_finite_weights(net)
    criterion, thresholds, _ = choose_thresholds(None, net.num_exits, list(thresholds), criterion)
    num_classes = _num_classes(net, input_shape)
    if class_names and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    stages, exits, x = lower(net, input_shape)
    if isinstance(input_prep, dict):
        input_prep = model_file.InputPrep(**input_prep)
    graph = model_file.Graph(tuple(input_shape), num_classes, criterion, list(thresholds),
                             list(class_names), x, stages, exits, input_prep)
    data = model_file.serialize(graph, json.dumps(_plain(metadata or {}), allow_nan=False))
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            summary = model_file.summary(tmp)
        except ValueError as e:
            raise ValueError(f"the exported file fails the runtime's checks (an exporter bug): {e}") from e
    return dict(summary, path=os.fspath(output), bytes=len(data))


def export(checkpoint_path, output, thresholds: Optional[Sequence[float]] = None,
           criterion: Optional[str] = None) -> dict:
    """Exports a checkpoint (from `branchy train`, thresholds from `branchy calibrate`).

    `thresholds` (one per early exit, or one number) and `criterion` override the checkpoint's
    calibration. Returns what write_model does.
    """
    ckpt = checkpoint.load(checkpoint_path)
    net = checkpoint.build_model(ckpt)
    criterion, values, source = choose_thresholds(ckpt.get("thresholds"), net.num_exits, thresholds,
                                                  criterion)
    dataset = ckpt.get("dataset") or {}
    if "input_shape" not in dataset:
        raise ValueError(f"{checkpoint_path}: no dataset record with the input shape")
    metrics = ckpt.get("metrics") or {}
    metadata = {
        "format": "branchy-engine model", "model": ckpt["model"], "model_args": ckpt.get("model_args"),
        "phase": ckpt.get("phase"), "source_checkpoint": os.path.abspath(checkpoint_path),
        "dataset": dataset,
        "split": {key: (ckpt.get("config") or {}).get(key) for key in ("val_fraction", "seed")},
        "metrics": {key: metrics.get(key) for key in ("val_accuracy", "test_accuracy")},
        "thresholds_from": source, "calibration": ckpt.get("thresholds"),
        "exporter": {"branchy_engine": branchy_engine.__version__, "torch": str(torch.__version__)},
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    prep = None
    if dataset.get("mean") is not None:  # the training run's normalisation of pixels / 255
        prep = model_file.InputPrep(255.0, list(dataset["mean"]), list(dataset["std"]))
    return write_model(net, output, dataset["input_shape"], criterion, values,
                       dataset.get("class_names") or [], metadata, prep)


def report(summary: dict) -> str:
    """A few lines on what write_model wrote: ops per stage, exits (numbered from 1, as every
    printed report numbers them), thresholds, size."""
    def kinds(ops):
        runs = [(kind, len(list(group))) for kind, group in itertools.groupby(op["kind"] for op in ops)]
        listed = ", ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in runs)
        return f"{len(ops)} op{'s' * (len(ops) != 1)}" + (f" ({listed})" if ops else "")
    lines = [f"wrote {summary['path']} ({summary['bytes']:,} bytes): input "
             f"{'x'.join(map(str, summary['input']))}, {summary['num_classes']} classes, "
             f"{summary['weights']:,} weights"]
    lines += [f"  stage {i + 1}: {kinds(stage['ops'])}" for i, stage in enumerate(summary["stages"])]
    lines += [f"  exit {n + 1} after stage {e['stage'] + 1}: {kinds(e['head'])}"
              for n, e in enumerate(summary["exits"])]
    thresholds = ", ".join(str(t) for t in summary["thresholds"]) or "none (a single exit)"
    lines.append(f"  exit rule: {summary['criterion']}, thresholds {thresholds}")
    return "\n".join(lines)
