"""From per-sample measurements (profile_cpu, profile_gpu) to the figures the profiler reports:
latency percentiles overall, per stage and per exit, throughput, exits, accuracy, counters."""
from typing import List, Optional

import torch

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def stats(values: torch.Tensor) -> Optional[dict]:
    """mean, p50, p90, p99, max of a 1-D tensor, NaN (not measured) left out; None when nothing
    is left."""
    v = values.to(torch.float64).flatten()
    v = v[~v.isnan()]
    if v.numel() == 0:
        return None
    q = v.quantile(torch.tensor([p for _, p in QUANTILES], dtype=torch.float64)).tolist()
    return {"mean": float(v.mean()), **{name: x for (name, _), x in zip(QUANTILES, q)}, "max": float(v.max())}


def ran_masks(exit: torch.Tensor, stage_of_exit: List[int], stages: int):
    """Which samples ran each stage [N, S] and each exit head [N, E]: a sample leaving at exit e
    ran every stage up to exit e's and every head up to e."""
    exit = exit.to(torch.int64)
    last_stage = torch.tensor(stage_of_exit, dtype=torch.int64)[exit]
    stage_ran = torch.arange(stages)[None, :] <= last_stage[:, None]
    head_ran = torch.arange(len(stage_of_exit))[None, :] <= exit[:, None]
    return stage_ran, head_ran


def summarize(raw: dict, stage_of_exit: List[int], labels: Optional[torch.Tensor] = None) -> dict:
    """The report of one profiling run; `stage_of_exit[e]` is the stage exit e follows."""
    exit = raw["exit"].to(torch.int64)
    n, exits, stages = int(exit.numel()), len(stage_of_exit), int(raw["stage_us"].shape[1])
    stage_ran, head_ran = ran_masks(exit, stage_of_exit, stages)
    total = raw["total_us"].to(torch.float64)
    right = (raw["prediction"] == labels) if labels is not None else None
    latency = stats(total)
    out = {
        "samples": n,
        "latency_us": latency,
        "throughput_per_s": 1e6 / latency["mean"] if latency["mean"] > 0 else None,
        "accuracy": 100.0 * float(right.double().mean()) if right is not None else None,
        "stages": [{"stage": s, "ran": int(stage_ran[:, s].sum()),
                    "us": stats(raw["stage_us"][:, s][stage_ran[:, s]])} for s in range(stages)],
        "exit_heads": [{"exit": e, "ran": int(head_ran[:, e].sum()),
                        "us": stats(raw["exit_us"][:, e][head_ran[:, e]])} for e in range(exits)],
        "exits": [],
    }
    for e in range(exits):
        here = exit == e
        out["exits"].append({
            "exit": e, "samples": int(here.sum()), "percent": 100.0 * float(here.double().mean()),
            "latency_us": stats(total[here]),
            "accuracy": 100.0 * float(right[here].double().mean()) if right is not None and here.any() else None})
    if "counters" in raw:
        out["counters"] = {}
        for event, c in raw["counters"].items():
            out["counters"][event] = {
                "per_inference": float(c["total"].double().mean()),
                "per_stage": [float(c["stage"][:, s][stage_ran[:, s]].double().mean())
                              if stage_ran[:, s].any() else None for s in range(stages)],
                "per_exit_head": [float(c["exit"][:, e][head_ran[:, e]].double().mean())
                                  if head_ran[:, e].any() else None for e in range(exits)],
                "per_inference_by_exit": [float(c["total"][exit == e].double().mean())
                                          if (exit == e).any() else None for e in range(exits)]}
    return out
