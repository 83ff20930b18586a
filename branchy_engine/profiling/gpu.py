"""The GPU profiler: each sample alone at batch 1 through the GPU engine, in one of its modes, with
CUDA events (and an NVTX range) around every part that can be timed:

    eager        each stage (segment e) and each exit (head e, the fused decision and the host's
                 read of it), as GpuEngine's eager path runs them;
    graphs       each segment's CUDA graph replay (segment e, head e and the fused decision, as
                 GpuEngine captures them) and each host read of the decision;
    conditional  the whole inference only: it is one CUDA graph, and events cannot be recorded
                 inside its conditional bodies.

The NVTX ranges are named "stage{e}" and "exit{e}" (e 0-based), so Nsight Compute can group the
kernels by part (branchy_engine/profiling/ncu.py), which profiles the eager path. Run as a module,
this file is the workload that ncu profiles:

    python -m branchy_engine.profiling.gpu MODEL --raw samples.f32 --samples 100
"""
import argparse
import math
import os
import sys
from contextlib import contextmanager
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from branchy_engine.runtime.gpu import GpuEngine
from branchy_engine.runtime.gpu.engine import MODES

BACKEND = "cuda events"
# What stage_us and exit_us hold in each mode (the mode the engine ran, after any fallback).
PART_TIMING = {
    "eager": "stage e: segment e, eager; exit e: head e, the fused decision and the host's read "
             "of it (.item())",
    "graphs": "stage e: the replay of segment e's CUDA graph, which holds segment e, head e and "
              "the fused decision; exit e: the host's read of the decision (a copy to pinned "
              "memory and a synchronisation)",
    "conditional": "not measured: in mode conditional the whole inference is one CUDA graph, and "
                   "CUDA events cannot be recorded inside its conditional bodies; only the whole "
                   "sample is timed (stage_us and exit_us are NaN)",
}


class _Events:
    """Timing events, created once: the whole sample, and a (start, end) pair per stage and exit."""

    def __init__(self, num_exits: int):
        def event():
            return torch.cuda.Event(enable_timing=True)
        self.start, self.end = event(), event()
        self.stage = [(event(), event()) for _ in range(num_exits)]
        self.exit = [(event(), event()) for _ in range(num_exits)]


@contextmanager
def _part(name: str, events):
    # The range opens before the start event and closes after the end event: NVTX's own host
    # time stays out of the part's time.
    torch.cuda.nvtx.range_push(name)
    events[0].record()
    try:
        yield
    finally:
        events[1].record()
        torch.cuda.nvtx.range_pop()


def _eager_sample(engine: GpuEngine, x1: torch.Tensor, events: _Events) -> Tuple[int, int, float]:
    """GpuEngine's eager path for one sample [1, C, H, W], each part timed: (prediction, exit, score)."""
    last = engine.num_exits - 1
    events.start.record()
    h = x1
    for e in range(engine.num_exits):
        with _part(f"stage{e}", events.stage[e]):
            h = engine.net.segments[e](h)
        with _part(f"exit{e}", events.exit[e]):
            score, leave, prediction = engine._decide(engine.net.heads[e](h), engine._threshold_value(e))
            left = e == last or bool(leave.item())
            if left:
                result = int(prediction.item()), e, float(score.item())
        if left:
            events.end.record()
            return result


def _graphs_sample(engine: GpuEngine, x1: torch.Tensor, events: _Events) -> Tuple[int, int, float]:
    """GpuEngine's graphs path for one sample [1, C, H, W] (its _graphs_one), each segment graph's
    replay and each host read timed: (prediction, exit, score). The copy of x1 into the graphs'
    static input counts in the whole sample's time only."""
    static_in, graphs, _ = engine._graphs["segments"]
    last = engine.num_exits - 1
    events.start.record()
    static_in.copy_(x1)
    for e, (graph, packed) in enumerate(graphs):
        with _part(f"stage{e}", events.stage[e]):
            graph.replay()
        with _part(f"exit{e}", events.exit[e]):
            leave, prediction, score = engine._read_result(packed)
        if e == last or leave:
            events.end.record()
            return int(prediction), e, score


def _conditional_sample(engine: GpuEngine, x1: torch.Tensor, events: _Events) -> Tuple[int, int, float]:
    """GpuEngine's conditional path for one sample [1, C, H, W], timed as a whole: (prediction,
    exit, score)."""
    torch.cuda.nvtx.range_push("inference")
    events.start.record()
    out = engine._conditional_one(x1)
    events.end.record()
    torch.cuda.nvtx.range_pop()
    return out.prediction, out.exit, out.score


RUN_SAMPLE = {"eager": _eager_sample, "graphs": _graphs_sample, "conditional": _conditional_sample}


def profile_gpu(model: str, x: torch.Tensor, thresholds: Optional[Sequence[float]] = None,
                device: str = "cuda", warmup: int = 20,
                progress: Optional[Callable[[int], None]] = None, mode: str = "eager") -> dict:
    """Runs each sample of x alone (batch 1) through GpuEngine(model, mode=mode) and times it with
    CUDA events: the whole sample, and in modes eager and graphs each part (module docstring).
    The engine is prepared (its graphs captured) before the warm-up, so no capture is timed.

    Args:
        model: path of a .branchy file.
        x: float32 [N, C, H, W], N >= 1 (on the CPU; each sample is copied to the GPU before its
            timing starts).
        thresholds: one per early exit (default: the file's).
        device: "cuda" or "cuda:N".
        warmup: runs of the first sample before the measured ones.
        progress: called with the number of samples done after each sample.
        mode: "eager", "graphs" or "conditional". Where conditional nodes are unavailable the
            engine falls back to graphs, and so does the profile.

    Returns a dict, with the keys of the CPU profiler:
        prediction [N] int64, exit [N] int64 (0-based), score [N] float32,
        total_us [N] float64: the whole sample, from before its first kernel to after its last
            exit's read;
        stage_us [N, E] float64 and exit_us [N, E] float64 (E = number of exits): per part as
            part_timing says (eager: stage e = segment e, exit e = head e + decision + host read;
            graphs: stage e = segment e's graph replay, which includes head e and the decision,
            exit e = the host read), 0 where the part did not run; all NaN in mode conditional;
        backend "cuda events", device: the GPU's name,
        mode: the mode that ran; fallback_reason: why conditional fell back to graphs ("" if it
        did not); part_timing: what stage_us and exit_us hold (PART_TIMING[mode]).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if torch.device(device).type != "cuda":
        raise ValueError(f"profile_gpu times CUDA events and needs a CUDA device, got {device!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("profile --device cuda needs a CUDA GPU; torch sees none")
    engine = GpuEngine(model, device=device, mode=mode, thresholds=thresholds, max_batch=1)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be [N, C, H, W] = [N, {', '.join(map(str, engine.input_shape))}] "
                         f"with N >= 1, got {list(x.shape)}")
    engine._checked(x[:1].to(engine.device))  # the engine's own dtype and shape checks
    engine.prepare([])  # single samples: the graphs are captured now, not in a timed sample

    n, num_exits, ran = x.shape[0], engine.num_exits, engine.mode
    parts_timed = ran != "conditional"
    prediction = torch.zeros(n, dtype=torch.int64)
    exits = torch.zeros(n, dtype=torch.int64)
    score = torch.zeros(n, dtype=torch.float32)
    total_us = torch.zeros(n, dtype=torch.float64)
    stage_us = torch.full((n, num_exits), 0.0 if parts_timed else math.nan, dtype=torch.float64)
    exit_us = stage_us.clone()
    events = _Events(num_exits)
    run_sample = RUN_SAMPLE[ran]
    # As engine calls run: on its GPU, and in mode eager with its fp32 math (TF32 off).
    with torch.inference_mode(), engine._on_device(), engine._eager_math():
        first = x[:1].to(engine.device)
        for _ in range(warmup):
            run_sample(engine, first, events)
        for i in range(n):
            x1 = x[i:i + 1].to(engine.device)
            p, e, s = run_sample(engine, x1, events)
            prediction[i], exits[i], score[i] = p, e, s
            events.end.synchronize()
            total_us[i] = 1e3 * events.start.elapsed_time(events.end)  # elapsed_time: ms
            for j in range(e + 1 if parts_timed else 0):
                stage_us[i, j] = 1e3 * events.stage[j][0].elapsed_time(events.stage[j][1])
                exit_us[i, j] = 1e3 * events.exit[j][0].elapsed_time(events.exit[j][1])
            if progress is not None:
                progress(i + 1)
    return {"prediction": prediction, "exit": exits, "score": score, "total_us": total_us,
            "stage_us": stage_us, "exit_us": exit_us, "backend": BACKEND,
            "device": torch.cuda.get_device_name(engine.device), "mode": ran,
            "fallback_reason": engine.fallback_reason, "part_timing": PART_TIMING[ran]}


# ---- the workload that Nsight Compute runs ----

def read_raw(path: str, samples: int, shape: Sequence[int]) -> torch.Tensor:
    """The first `samples` samples of a raw file of little-endian float32 values, each of `shape`
    [C, H, W], as a float32 tensor [samples, C, H, W]."""
    per_sample = math.prod(shape)
    size = os.path.getsize(path)
    if size % (4 * per_sample):
        raise ValueError(f"{path}: {size} bytes is not a whole number of float32 samples of "
                         f"{list(shape)} ({4 * per_sample} bytes each)")
    if samples > size // (4 * per_sample):
        raise ValueError(f"{path} holds {size // (4 * per_sample)} samples of {list(shape)}, "
                         f"fewer than the {samples} asked for")
    data = np.fromfile(path, dtype="<f4", count=samples * per_sample).astype(np.float32, copy=False)
    return torch.from_numpy(data).view(samples, *shape)


def main(argv=None) -> int:
    from branchy_engine.argtypes import floats, positive
    from branchy_engine.export.model_file import summary

    parser = argparse.ArgumentParser(
        prog="python -m branchy_engine.profiling.gpu",
        description="Profiles a model on the GPU at batch 1 with CUDA events, each stage and exit "
                    "in an NVTX range (stage0, exit0, ...), and prints a one-line summary: the "
                    "workload that `branchy profile --ncu` runs under Nsight Compute (in mode "
                    "eager).")
    parser.add_argument("model", help="the .branchy model file")
    parser.add_argument("--raw", required=True, metavar="FILE",
                        help="samples as raw little-endian float32 [N, C, H, W] (C, H, W: the model's input)")
    parser.add_argument("--samples", type=positive, required=True, metavar="N",
                        help="profile the first N samples of --raw")
    parser.add_argument("--thresholds", type=floats, help="override the file's thresholds, comma-separated")
    parser.add_argument("--warmup", type=int, default=20,
                        help="runs of the first sample before the measured ones (default 20)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    parser.add_argument("--mode", default="eager", choices=MODES,
                        help="the GpuEngine mode to run (default eager: ncu groups its kernels by "
                             "the NVTX range they launch in)")
    args = parser.parse_args(argv)
    try:
        x = read_raw(args.raw, args.samples, summary(args.model)["input"])
        result = profile_gpu(args.model, x, args.thresholds, args.device, args.warmup, mode=args.mode)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    counts = torch.bincount(result["exit"], minlength=result["stage_us"].shape[1]).tolist()
    print(f"{args.samples} samples of {args.model} on {result['device']} ({BACKEND}, mode {result['mode']}): "
          f"median {result['total_us'].median().item():.1f} us per sample, samples per exit {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
