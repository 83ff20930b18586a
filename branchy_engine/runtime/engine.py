"""branchy_engine.Engine: the compiled CPU runtime, from Python.

    engine = Engine("model.branchy", threads=1)
    out = engine(x)            # x: float32 [C, H, W] (one sample) or [B, C, H, W], prepared
                               # (normalised) as in training
    Engine("model.branchy", input="uint8")(pixels)   # raw 8-bit images, [H, W, C] or [C, H, W]
    out.prediction, out.exit, out.score
    engine.stats()             # samples that left at each exit so far
"""
import json
import os
import threading
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from branchy_engine.argtypes import threshold_list
from branchy_engine.runtime.ops import _C

KERNELS = ("measure", "own", "dnnl")
INPUTS = ("float", "uint8", "uint8_chw", "uint8_hwc")  # or "pin:" + Engine.choices (a digit or d per op)


def _looks_like_checkpoint(path: str) -> bool:
    """A regular file starting as a zip does (torch.save's format). Only its first bytes are read:
    zipfile.is_zipfile reads a whole /dev/zero."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def thresholds_for_exit(num_exits: int, e: int) -> List[float]:
    """Entropy thresholds that make every sample leave at exit e (0-based): none earlier (0.0),
    all there (+inf)."""
    return [0.0] * e + [float("inf")] * (num_exits - 1 - e)


def exit_stats(counts: Tensor) -> dict:
    """An engine's stats(): samples per exit, their total and their share in %."""
    per_exit = counts.tolist()
    total = sum(per_exit)
    return {"samples": total, "per_exit": per_exit,
            "percent": [100.0 * c / total if total else 0.0 for c in per_exit]}


_output = tuple.__new__  # EngineOutput from the runtime's (prediction, exit, score), unchecked


class EngineOutput(NamedTuple):
    """For one sample: Python numbers; for a batch: tensors [B]."""
    prediction: Union[int, Tensor]   # class index
    exit: Union[int, Tensor]         # 0-based exit the sample left at
    score: Union[float, Tensor]      # entropy in nats (or max probability) at that exit


class Engine:
    """Runs an exported model (`branchy export`) with early exits, on the CPU, without PyTorch.

    Engine(model, device="cuda", mode=..., ...) gives the GPU engine instead
    (branchy_engine.runtime.gpu.GpuEngine: modes eager, graphs, conditional; per-sample batches).

    Args:
        model: path of a .branchy file.
        threads: threads one call may use (oneDNN layers); 1 for latency-bound calls.
        thresholds: replace the file's thresholds, one per early exit (a single number where
            there is one early exit); None keeps the file's. float("inf") makes every sample
            leave at that exit (entropy criterion), 0.0 none.
        kernels: "measure" (per layer, whichever of the own kernels and oneDNN is faster here),
            "own", "dnnl" (oneDNN wherever it has the op), or "pin:" + another engine's
            `choices` (the same kernels, unmeasured: how the cache simulator and the exit paths
            of a cost measurement rebuild a plan).
        max_batch: samples in flight per batched call (larger batches run in chunks).
        check_inputs: refuse inputs holding NaN or +-inf (ValueError naming the sample and
            element), as every entry point of the runtime does by default; False skips that scan
            of each input (tens of nanoseconds for a 28x28 image) for callers that guarantee
            finite inputs. A non-finite input then gives whatever the kernels make of it.
        verify: run each chosen kernel once against its op's reference (plain loops) while the
            plan is built, and refuse the model (RuntimeError naming the layer) if one differs by
            more than 1e-4 of the output's magnitude: a check of the libraries on this machine.
            Costs the reference's time (seconds for a ResNet-50).
        input: what calls pass. "float" (default): float32 [C, H, W] or [B, C, H, W], already
            prepared as in training (scaled and normalised: what the network saw, e.g.
            (pixels / 255 - mean) / std). "uint8": raw 8-bit images as cameras and image files
            give them, one [H, W, C] or [C, H, W] ([H, W] for one channel) or a batch of them;
            the runtime scales and normalises them itself, as the model file records (branchy
            export records the training normalisation). "uint8_chw" / "uint8_hwc" fix the order
            for an image whose shape reads both ways.
        max_memory, max_flops: limits on what a model may ask, checked from its shapes before
            anything is allocated or timed (ValueError naming the figure): bytes of weights (as
            loaded and as packed) and activations, default 4 GiB; FLOPs per sample, default 1e12.
            A file from elsewhere cannot then take the machine down. float("inf") lifts a limit.
    """

    def __new__(cls, model: str, *args, device: str = "cpu", **kwargs):
        if str(device).startswith("cuda"):
            from branchy_engine.runtime.gpu import GpuEngine
            return GpuEngine(model, *args, device=device, **kwargs)
        return super().__new__(cls)

    def __init__(self, model: str, threads: int = 1, thresholds: Optional[Sequence[float]] = None,
                 kernels: str = "measure", max_batch: int = 64, device: str = "cpu",
                 check_inputs: bool = True, verify: bool = False, max_memory: int = 4 << 30,
                 max_flops: float = 1e12, input: str = "float"):
        if device != "cpu":
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if kernels not in KERNELS and not str(kernels).startswith("pin:"):
            raise ValueError(f"kernels must be one of {KERNELS} or 'pin:' + another plan's "
                             f"Engine.choices, got {kernels!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        if not (max_memory > 0 and max_flops > 0):
            raise ValueError(f"max_memory and max_flops must be > 0, got {max_memory} and {max_flops}")
        self.path = str(model)
        max_memory = min(max_memory, (1 << 63) - 1)  # the runtime counts bytes in int64
        thresholds = threshold_list(thresholds)
        if thresholds == []:  # the runtime reads an empty list as "the file's"
            early = len(json.loads(_C.model_summary(self.path))["exits"]) - 1
            if early:
                raise ValueError(f"thresholds: expected {early} (one per early exit), got none; "
                                 f"None keeps the file's")
        # The runtime checks the thresholds (count, NaN, sign) and the file.
        try:
            self.plan = _C._Plan(self.path, threads, thresholds or [], kernels, bool(check_inputs),
                                 bool(verify), int(max_memory), float(max_flops))
        except ValueError as e:
            if _looks_like_checkpoint(self.path):
                raise ValueError(f"{self.path} is a PyTorch checkpoint, not an exported model: "
                                 f"run `branchy export {self.path} -o MODEL.branchy` and pass "
                                 f"MODEL.branchy") from e
            raise
        self.max_batch = max_batch
        self.input_shape = tuple(self.plan.input_shape)
        self._local = threading.local()
        self._counts = torch.zeros(self.plan.num_exits, dtype=torch.int64)  # the runtime adds to it
        self._counts_address = self._counts.data_ptr()
        self.input = input
        if input == "float":
            self._run = self.plan.run_tensor  # bound once: __call__ is the batch-1 hot path
        else:
            if self.input_prep is None:
                raise ValueError(f"{self.path} records no input preparation, so the engine cannot take "
                                 "raw pixels: re-export it (branchy export records the training "
                                 "normalisation; write_model takes input_prep=), or use input='float'")
            order = {"uint8": "auto", "uint8_chw": "chw", "uint8_hwc": "hwc"}[input]
            run_pixels = self.plan.run_pixels
            self._run = lambda context, x, counts: run_pixels(context, x, counts, order)

    @property
    def num_exits(self) -> int:
        return self.plan.num_exits

    @property
    def thresholds(self) -> List[float]:
        return list(self.plan.thresholds)

    @property
    def criterion(self) -> str:
        return self.plan.criterion

    @property
    def class_names(self) -> List[str]:
        return list(self.plan.class_names)

    @property
    def input_prep(self) -> Optional[dict]:
        """How raw pixels become the network's input, as the file records it: pixel_max, mean,
        std (x / pixel_max, then (x - mean) / std per channel); None if it records none."""
        return self.plan.input_prep

    def prepare(self, pixels) -> Tensor:
        """Raw 8-bit pixels (uint8 [H, W, C] or [C, H, W], or a batch) -> the float32 [C, H, W]
        ([B, C, H, W]) this engine takes with input="float": scaled and normalised as in
        training, by the runtime's own code (the floats the uint8 input path runs on)."""
        if type(pixels) is not torch.Tensor and isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        order = {"uint8_chw": "chw", "uint8_hwc": "hwc"}.get(self.input, "auto")
        return self.plan.prepare_pixels(pixels, order)

    @property
    def metadata(self) -> dict:
        return json.loads(self.plan.metadata_json or "{}")

    @property
    def choices(self) -> str:
        """Per op (trunk, then exit heads): the own kernel's index in its kind's list (a digit) or
        'd' oneDNN, as the plan chose; in a "pin:" string 'o' also stands for any own kernel."""
        return self.plan.choices

    def footprint(self) -> dict:
        """Memory the plan needs, in bytes: weight_bytes (as in the file), packed_bytes (weights
        packed for the kernels), arena_bytes (values inside a stage or head, placed by liveness),
        slot_bytes (one stage boundary), batch_bytes (a context's max_batch slots, twice),
        scratch_bytes (the layers' scratch per context)."""
        return dict(self.plan.footprint(self.max_batch))

    def describe(self) -> str:
        """The plan: every layer with the implementation and layout chosen for it."""
        return self.plan.describe()

    def _context(self):
        # A Context per thread: the plan is shared read-only, the scratch is not.
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = self.plan.make_context(self.max_batch)
        return context

    def __call__(self, x) -> EngineOutput:
        """One sample [C, H, W] (float32, CPU) -> (prediction, exit, score) as Python numbers;
        a batch [B, C, H, W] -> three tensors [B]: int64, int64, float32. A numpy array works too.
        Errors name the problem (type, dtype, device, shape, NaN or infinity)."""
        if type(x) is not torch.Tensor and isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        try:
            context = self._local.context
        except AttributeError:
            context = self._context()
        return _output(EngineOutput, self._run(context, x, self._counts_address))

    def all_exit_logits(self, x) -> List[Tensor]:
        """Every exit's logits [num_classes] for one sample [C, H, W], no early exit."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return [torch.tensor(z) for z in self.plan.all_exit_logits(self._context(), x)]

    def run_timed(self, x) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each sample of a batch [B, C, H, W] run alone (batch 1), as an embedded caller would,
        each call timed in C++: (prediction, exit, score, microseconds per sample), tensors [B]."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return self.plan.run_timed(self._context(), x, self._counts_address)

    def time_run(self, x, warmup: int = 50, rounds: int = 31, calls: int = 20) -> List[float]:
        """Microseconds per call of the runtime on one sample [C, H, W], timed in C++ with no
        Python in the loop: one figure per round of `calls` calls, after `warmup` calls."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return self.plan.time_run(self._context(), x, warmup, rounds, calls)

    def stats(self) -> dict:
        """Samples that left at each exit since creation (or reset_stats), and their share."""
        return exit_stats(self._counts)

    def reset_stats(self):
        self._counts.zero_()
