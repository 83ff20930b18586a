"""The project's own CUDA kernels on odd sizes and awkward inputs, for compute-sanitizer
(branchy_engine/profiling/sanitizer.py; tests/test_sanitizer.py runs this under each tool):

    compute-sanitizer --tool memcheck python tests/gpu/sanitize_kernels.py

- exit_decision and exit_decision_maxprob: batches B = 1, 3, 257, 1025 by classes C = 1, 10,
  1025, 4099 (both sides of the warp-per-row / block-per-row switch at 1024); float32 logits
  contiguous, rows strided and starting one element into their storage, and transposed (which the
  op copies); float16 and bfloat16 contiguous and strided; a row with one NaN and a row all NaN; the
  threshold a float and a device tensor in turn;
- compact_survivors: the same batches by F = 1, 3, 4, 1025 features, every row leaving,
  none, about half; the real-row count at B, B/2 and outside [0, B] (clamped on the device);
  activations starting one float into their storage (not 16-byte aligned);
- scatter_exits: the same batches, everyone or the decisions, rows outside the batch (skipped on
  the device).
Inputs are made on the CPU and copied over, and results are checked on the CPU, so the kernels
that run are the project's, plus PyTorch's copy of the transposed logits. Not a pytest module (no
test_ prefix): prints one line and exits 0; exits 3 printing CUDA_UNUSABLE where CUDA does not
work in this process; a failed check raises.
"""
import itertools
import math
import os
import sys
import warnings

import torch

# The repository root: the GPU check runs this file from a checkout built in place, not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from branchy_engine.runtime.compaction import compact_survivors, scatter_exits  # noqa: E402
from branchy_engine.runtime.ops import exit_decision, exit_decision_maxprob  # noqa: E402
from branchy_engine.profiling.sanitizer import CUDA_UNUSABLE  # noqa: E402
from branchy_engine.runtime.reference import compact_survivors_reference, scatter_exits_reference  # noqa: E402

BATCHES = (1, 3, 257, 1025)
CLASSES = (1, 10, 1025, 4099)
FEATURES = (1, 3, 4, 1025)
# Every layout in float32, the half types in the two layouts the kernel itself reads (a transposed
# input is copied by PyTorch first): about 500 kernel calls in all, so that each sanitizer tool
# ends within bench/gpu_check.sh's minute.
CASES = [(torch.float32, layout) for layout in ("contiguous", "strided", "transposed")] + [
    (dtype, layout) for dtype in (torch.float16, torch.bfloat16) for layout in ("contiguous", "strided")]
CUDA = torch.device("cuda")


def cuda_unusable() -> str:
    """Why CUDA does not work in this process ("" if it does)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        return "torch sees no CUDA GPU" + "".join(f"; {w.message}" for w in said)
    try:
        torch.ones(1).to(CUDA).cpu()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return ""


def logits_on_device(b: int, c: int, dtype: torch.dtype, layout: str, g: torch.Generator) -> torch.Tensor:
    """[b, c] logits of `dtype` on the GPU in `layout`, rows from near-uniform to near-one-hot;
    with b >= 3, row 1 holds one NaN and row b-1 only NaN."""
    x = torch.randn(b, c, generator=g) * torch.logspace(-1, 1.5, b)[:, None]
    if b >= 3:
        x[1, c // 2] = math.nan
        x[b - 1] = math.nan
    x = x.to(dtype)
    if layout == "contiguous":
        return x.to(CUDA)
    if layout == "strided":  # row stride c + 3, first element one past the storage's start
        wide = torch.zeros(b, c + 3, dtype=dtype)
        wide[:, 1:c + 1] = x
        return wide.to(CUDA)[:, 1:c + 1]
    return x.t().contiguous().to(CUDA).t()  # column-major: the op copies it


def check_decisions(b: int, c: int) -> int:
    """Both criteria on every dtype and layout for [b, c] logits; returns the calls made."""
    g = torch.Generator().manual_seed(b * 7919 + c)
    calls = 0
    for k, (dtype, layout) in enumerate(CASES):
        logits = logits_on_device(b, c, dtype, layout, g)
        for j, (op, threshold) in enumerate(((exit_decision, 0.5 * math.log(c) + 0.1),
                                             (exit_decision_maxprob, 0.5))):
            if (k + j) % 2:
                threshold = torch.tensor([threshold], device=CUDA)
            score, leave, prediction = (t.cpu() for t in op(logits, threshold))
            calls += 1
            what = f"{op.__name__} B={b} C={c} {dtype} {layout}"
            assert score.shape == leave.shape == prediction.shape == (b,), what
            assert bool(((prediction >= 0) & (prediction < c)).all()), what
            if b >= 3:
                assert not leave[1] and not leave[b - 1], f"{what}: a NaN row left"
    return calls


def check_compaction(b: int, features: int, g: torch.Generator) -> int:
    """compact_survivors on a bucket of b rows; returns the calls made."""
    calls = 0
    alignments = (True, False) if features % 4 == 0 else (True,)  # float4 copies need both
    for mask, n, aligned in itertools.product(("all", "none", "half"), (b, b // 2, b + 7, -1), alignments):
        leave = {"all": torch.ones(b, dtype=torch.bool), "none": torch.zeros(b, dtype=torch.bool),
                 "half": torch.rand(b, generator=g) < 0.5}[mask]
        rows = torch.randperm(b, generator=g)
        flat = torch.randn(b * features + 1, generator=g)
        activations = (flat[:-1] if aligned else flat[1:]).view(b, features)
        args = [leave, torch.tensor([n], dtype=torch.int32), rows, activations,
                torch.full((b + 5, features), -7.5), torch.full((b + 5,), -3, dtype=torch.int64),
                torch.tensor([-1], dtype=torch.int32)]
        clamped = torch.tensor([min(max(n, 0), b)], dtype=torch.int32)
        want = compact_survivors_reference(args[0], clamped, *args[2:])
        on_device = [t.to(CUDA) for t in args]
        if not aligned:  # keep the one-float offset on the device too
            shifted = torch.empty(b * features + 1, device=CUDA)[1:].view(b, features)
            on_device[3] = shifted.copy_(on_device[3])
        compact_survivors(*on_device)
        calls += 1
        for got, expected in zip(on_device[4:], want):
            assert torch.equal(got.cpu(), expected), f"compact_survivors b={b} F={features} {mask} n={n}"
    return calls


def check_scatter(b: int, g: torch.Generator) -> int:
    """scatter_exits from a bucket of b rows into a batch of b + 3; returns the calls made."""
    batch, calls = b + 3, 0
    for mask, n, everyone, outside in itertools.product(("all", "half"), (b, b // 2, b + 7, -1),
                                                        (False, True), (False, True)):
        leave = torch.ones(b, dtype=torch.bool) if mask == "all" else torch.rand(b, generator=g) < 0.5
        rows = torch.randperm(batch, generator=g)[:b]
        if outside:  # rows the device must skip: past the batch's end, and negative
            rows[0] = batch
            rows[-1] = -1
        args = [leave, torch.tensor([n], dtype=torch.int32), rows, torch.randint(0, 10, (b,), generator=g),
                torch.rand(b, generator=g)]
        outs = [torch.full((batch,), -2, dtype=torch.int64), torch.full((batch,), -1, dtype=torch.int64),
                torch.full((batch,), -7.5)]
        real = min(max(n, 0), b)
        valid = (rows[:real] >= 0) & (rows[:real] < batch)
        kept = [t[:real][valid] for t in (args[0], args[2], args[3], args[4])]
        want = scatter_exits_reference(kept[0], torch.tensor([len(kept[1])], dtype=torch.int32), kept[1],
                                       kept[2], kept[3], 2, everyone, *outs)
        on_device = [t.to(CUDA) for t in outs]
        scatter_exits(*(t.to(CUDA) for t in args), 2, everyone, *on_device)
        calls += 1
        for got, expected in zip(on_device, want):
            assert torch.equal(got.cpu(), expected), f"scatter_exits b={b} {mask} n={n} everyone={everyone}"
    return calls


def main() -> int:
    why = cuda_unusable()
    if why:
        print(f"sanitize_kernels: {CUDA_UNUSABLE}: {why}")
        return 3
    g = torch.Generator().manual_seed(0)
    decisions = sum(check_decisions(b, c) for b, c in itertools.product(BATCHES, CLASSES))
    compactions = sum(check_compaction(b, f, g) for b, f in itertools.product(BATCHES, FEATURES))
    scatters = sum(check_scatter(b, g) for b in BATCHES)
    torch.cuda.synchronize()
    print(f"sanitize_kernels: {decisions} exit decisions, {compactions} compactions and {scatters} "
          f"scatters checked on {torch.cuda.get_device_name()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
