"""The GPU profiler: each sample alone at batch 1 through the GPU engine's eager path, with a pair
of CUDA events and an NVTX range around every stage (segment e) and every exit (head e, the fused
decision and the host's read of it).

The NVTX ranges are named "stage{e}" and "exit{e}" (e 0-based), so Nsight Compute can group the
kernels by part (branchy_engine/profiling/ncu.py). Run as a module, this file is the workload that
ncu profiles:

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

from branchy_engine.gpu import GpuEngine

BACKEND = "cuda events"


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


def _run_sample(engine: GpuEngine, x1: torch.Tensor, events: _Events) -> Tuple[int, int, float]:
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


def profile_gpu(model: str, x: torch.Tensor, thresholds: Optional[Sequence[float]] = None,
                device: str = "cuda", warmup: int = 20,
                progress: Optional[Callable[[int], None]] = None) -> dict:
    """Runs each sample of x alone (batch 1) through GpuEngine(model, mode="eager") and times every
    stage and exit with CUDA events.

    Args:
        model: path of a .branchy file.
        x: float32 [N, C, H, W], N >= 1 (on the CPU; each sample is copied to the GPU before its
            timing starts).
        thresholds: one per early exit (default: the file's).
        device: "cuda" or "cuda:N".
        warmup: runs of the first sample before the measured ones.
        progress: called with the number of samples done after each sample.

    Returns a dict, with the keys of the CPU profiler:
        prediction [N] int64, exit [N] int64 (0-based), score [N] float32,
        total_us [N] float64: the whole sample, from before stage 0 to after its last exit;
        stage_us [N, E] float64: segment e (the stages after exit e-1 up to exit e);
        exit_us [N, E] float64: head e, the fused decision and the host's read of it;
        (E = number of exits; 0 where the part did not run), backend "cuda events",
        device: the GPU's name.
    """
    if torch.device(device).type != "cuda":
        raise ValueError(f"profile_gpu times CUDA events and needs a CUDA device, got {device!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("profile --device cuda needs a CUDA GPU; torch sees none")
    engine = GpuEngine(model, device=device, mode="eager", thresholds=thresholds, max_batch=1)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be [N, C, H, W] = [N, {', '.join(map(str, engine.input_shape))}] "
                         f"with N >= 1, got {list(x.shape)}")
    engine._checked(x[:1].to(engine.device))  # the engine's own dtype and shape checks

    n, num_exits = x.shape[0], engine.num_exits
    prediction = torch.zeros(n, dtype=torch.int64)
    exits = torch.zeros(n, dtype=torch.int64)
    score = torch.zeros(n, dtype=torch.float32)
    total_us = torch.zeros(n, dtype=torch.float64)
    stage_us = torch.zeros(n, num_exits, dtype=torch.float64)
    exit_us = torch.zeros(n, num_exits, dtype=torch.float64)
    events = _Events(num_exits)
    with torch.inference_mode(), torch.cuda.device(engine.device):
        first = x[:1].to(engine.device)
        for _ in range(warmup):
            _run_sample(engine, first, events)
        for i in range(n):
            x1 = x[i:i + 1].to(engine.device)
            p, e, s = _run_sample(engine, x1, events)
            prediction[i], exits[i], score[i] = p, e, s
            events.end.synchronize()
            total_us[i] = 1e3 * events.start.elapsed_time(events.end)  # elapsed_time: ms
            for j in range(e + 1):
                stage_us[i, j] = 1e3 * events.stage[j][0].elapsed_time(events.stage[j][1])
                exit_us[i, j] = 1e3 * events.exit[j][0].elapsed_time(events.exit[j][1])
            if progress is not None:
                progress(i + 1)
    return {"prediction": prediction, "exit": exits, "score": score, "total_us": total_us,
            "stage_us": stage_us, "exit_us": exit_us, "backend": BACKEND,
            "device": torch.cuda.get_device_name(engine.device)}


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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv=None) -> int:
    from branchy_engine.cli import floats
    from branchy_engine.model_file import summary

    parser = argparse.ArgumentParser(
        prog="python -m branchy_engine.profiling.gpu",
        description="Profiles a model on the GPU at batch 1 with CUDA events, each stage and exit "
                    "in an NVTX range (stage0, exit0, ...), and prints a one-line summary: the "
                    "workload that `branchy profile --ncu` runs under Nsight Compute.")
    parser.add_argument("model", help="the .branchy model file")
    parser.add_argument("--raw", required=True, metavar="FILE",
                        help="samples as raw little-endian float32 [N, C, H, W] (C, H, W: the model's input)")
    parser.add_argument("--samples", type=_positive, required=True, metavar="N",
                        help="profile the first N samples of --raw")
    parser.add_argument("--thresholds", type=floats, help="override the file's thresholds, comma-separated")
    parser.add_argument("--warmup", type=int, default=20,
                        help="runs of the first sample before the measured ones (default 20)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    args = parser.parse_args(argv)
    try:
        x = read_raw(args.raw, args.samples, summary(args.model)["input"])
        result = profile_gpu(args.model, x, args.thresholds, args.device, args.warmup)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    counts = torch.bincount(result["exit"], minlength=result["stage_us"].shape[1]).tolist()
    print(f"{args.samples} samples of {args.model} on {result['device']} ({BACKEND}): "
          f"median {result['total_us'].median().item():.1f} us per sample, samples per exit {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
