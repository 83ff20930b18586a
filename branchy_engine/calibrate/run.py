"""`branchy calibrate`: choose exit thresholds on the validation split, report them on test, and
write them into the checkpoint."""
import datetime
import json
import os
from dataclasses import dataclass
from typing import List, Optional

import torch

from branchy_engine import checkpoint
from branchy_engine import data as datasets
from branchy_engine.calibrate import costs as costs_mod
from branchy_engine.calibrate import plots
from branchy_engine.calibrate.choose import Target, choose, frontier
from branchy_engine.calibrate.criteria import check_criterion, check_parameters, default_grid
from branchy_engine.calibrate.outcome import evaluate
from branchy_engine.calibrate.table import collect
from branchy_engine.fileio import write_text


@dataclass
class Options:
    checkpoint: str
    criterion: str = "entropy"
    target: Target = None
    thresholds: Optional[List[float]] = None   # evaluate these instead of searching
    cost: str = "measure"                      # "measure" (PyTorch, batch 1) or "flops"
    costs_file: Optional[str] = None           # use this costs file instead
    threads: int = 1                           # for measured costs
    data_dir: Optional[str] = None
    out_dir: Optional[str] = None              # plots and JSON; default next to the checkpoint
    output: Optional[str] = None               # write the calibrated checkpoint here, not in place
    dry_run: bool = False                      # choose and report, write no checkpoint
    batch_size: int = 1000
    device: str = "cpu"


def load_data(ckpt: dict, data_dir: Optional[str]):
    """The dataset a checkpoint was trained on, with the same validation split, size and channels."""
    cfg = ckpt.get("config", {})
    return datasets.load(ckpt["dataset"]["name"], data_dir=data_dir or cfg.get("data_dir"),
                         val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("seed", 0),
                         limit=cfg.get("limit"), input_size=cfg.get("input_size"),
                         channels=ckpt["dataset"]["input_shape"][0])


def get_costs(opts: Options, net, input_shape):
    if opts.costs_file:
        return costs_mod.load(opts.costs_file, net.name, net.num_exits)
    if opts.cost == "flops":
        return costs_mod.count_flops(net, input_shape)
    if opts.cost == "measure":
        return costs_mod.measure_pytorch(net, input_shape, threads=opts.threads)
    raise ValueError(f"--cost must be 'measure' or 'flops', got {opts.cost!r}")


def calibrate(opts: Options) -> dict:
    """Runs the calibration; returns the record written into the checkpoint's "thresholds"."""
    check_criterion(opts.criterion)
    ckpt = checkpoint.load(opts.checkpoint)
    net = checkpoint.build_model(ckpt)
    if net.num_exits < 2:
        raise ValueError(f"{opts.checkpoint}: {net.name} has a single exit; nothing to calibrate")
    if opts.thresholds is not None:
        check_parameters(opts.criterion, opts.thresholds, net.num_exits)
    target = opts.target or Target()
    data = load_data(ckpt, opts.data_dir)
    val = collect(net, data, data.val, opts.batch_size, opts.device)
    test = collect(net, data, data.test, opts.batch_size, opts.device)
    costs = get_costs(opts, net, data.input_shape)

    if opts.thresholds is None:
        grid = default_grid(val, opts.criterion, family=net.name.removeprefix("b_"))
    else:
        grid = torch.tensor([opts.thresholds], dtype=torch.float64)
    on_val = evaluate(val, opts.criterion, grid, costs.segments)
    final_val = float(val.exit_accuracy()[-1])
    chosen = choose(on_val, target, final_val, costs.unit) if opts.thresholds is None else 0
    params = on_val.grid[chosen].tolist()
    on_test = evaluate(test, opts.criterion, torch.tensor([params], dtype=torch.float64), costs.segments)

    record = {
        "criterion": opts.criterion, "values": params,
        "target": target.describe() if opts.thresholds is None else "given on the command line",
        "unit": costs.unit, "baseline_cost": costs.baseline,
        "val": dict(on_val.row(chosen), final_exit_accuracy=final_val,
                    exit_accuracy=val.exit_accuracy().tolist()),
        "test": dict(on_test.row(0), final_exit_accuracy=float(test.exit_accuracy()[-1]),
                     exit_accuracy=test.exit_accuracy().tolist()),
        "grid_points": len(grid), "costs": costs.to_dict(), "dataset": data.description,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record["warnings"] = cost_warnings(record)
    out_dir = opts.out_dir or os.path.join(os.path.dirname(os.path.abspath(opts.checkpoint)),
                                           f"calibration-{net.name}")
    os.makedirs(out_dir, exist_ok=True)
    title = f"{net.name} on {data.name}{' (stand-in)' if data.stand_in else ''}"
    record["files"] = {
        "frontier": plots.frontier_plot(os.path.join(out_dir, "fig3_frontier.png"), on_val,
                                        frontier(on_val), chosen, costs.baseline, costs.unit, title),
        "entropy_histograms": plots.entropy_histograms(
            os.path.join(out_dir, "entropy_histograms.png"), val, params, opts.criterion, title),
    }
    if opts.criterion != "patience":
        record["files"]["first_threshold"] = plots.threshold_plot(
            os.path.join(out_dir, "fig4_first_threshold.png"), val, opts.criterion, params,
            costs.segments, title)
    costs_mod.save(os.path.join(out_dir, "costs.json"), costs)
    write_text(os.path.join(out_dir, "calibration.json"), json.dumps(record, indent=2) + "\n")
    if not opts.dry_run:
        checkpoint.save(opts.output or opts.checkpoint, dict(ckpt, thresholds=record))
    return record


def cost_warnings(record: dict) -> List[str]:
    """What a user should not miss about the choice: thresholds that cost more per sample than the
    baseline network alone, on validation (where they were chosen)."""
    base, val, test, unit = record["baseline_cost"], record["val"]["cost"], record["test"]["cost"], record["unit"]
    if val <= base:
        return []
    return [f"the chosen thresholds cost {val:.4g} {unit} per sample on validation ({test:.4g} on "
            f"test), more than the baseline network's {base:.4g} {unit} (gain {base / val:.2f}x): "
            f"too few samples leave early to pay for the exit heads, as in a network trained too "
            f"little. As it stands the baseline network alone is faster."]


def table_row(record: dict, name: str) -> str:
    """The Table I row (validation where chosen, test where reported) as aligned text."""
    unit, base = record["unit"], record["baseline_cost"]
    lines = [f"{name}: {record['criterion']} thresholds {', '.join(f'{v:.4g}' for v in record['values'])}"
             f"  ({record['target']})",
             f"{'split':<11}{'accuracy %':>11}{'final exit %':>14}{f'cost/sample ({unit})':>22}"
             f"{'gain vs baseline':>18}  exit % per exit"]
    for split in ("val", "test"):
        r = record[split]
        lines.append(f"{'validation' if split == 'val' else 'test':<11}{r['accuracy']:>11.2f}"
                     f"{r['final_exit_accuracy']:>14.2f}{r['cost']:>22.2f}{base / r['cost']:>17.2f}x"
                     f"  {' / '.join(f'{p:.1f}' for p in r['exit_percent'])}")
    lines.append(f"baseline network: {base:.2f} {unit} per sample; costs: {record['costs']['method']}")
    return "\n".join(lines)
