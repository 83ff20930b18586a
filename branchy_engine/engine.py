"""branchy_engine.Engine: the compiled CPU runtime, from Python.

    engine = Engine("model.branchy", threads=1)
    out = engine(x)            # x: float32 [C, H, W] (one sample) or [B, C, H, W]
    out.prediction, out.exit, out.score
    engine.stats()             # samples that left at each exit so far
"""
import json
import threading
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from branchy_engine.ops import _C

KERNELS = ("measure", "own", "dnnl")


class EngineOutput(NamedTuple):
    prediction: Tensor   # int64 [B] (or a 0-d tensor for one sample)
    exit: Tensor         # int64, 0-based exit each sample left at
    score: Tensor        # float32: entropy in nats (or max probability) at that exit


class Engine:
    """Runs an exported model (`branchy export`) with early exits, on the CPU, without PyTorch.

    Args:
        model: path of a .branchy file.
        threads: threads one call may use (oneDNN layers); 1 for latency-bound calls.
        thresholds: replace the file's thresholds, one per early exit. float("inf") makes every
            sample leave at that exit (entropy criterion), 0.0 none.
        kernels: "measure" (per layer, whichever of the own kernels and oneDNN is faster here),
            "own" or "dnnl" (oneDNN wherever it has the op).
        max_batch: samples in flight per batched call (larger batches run in chunks).
    """

    def __init__(self, model: str, threads: int = 1, thresholds: Optional[Sequence[float]] = None,
                 kernels: str = "measure", max_batch: int = 64):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.path = str(model)
        # The runtime checks the thresholds (count, NaN, sign) and the file.
        self.plan = _C._Plan(self.path, threads, [float(t) for t in thresholds or []], kernels)
        self.max_batch = max_batch
        self.input_shape = tuple(self.plan.input_shape)
        self._local = threading.local()
        self._counts = torch.zeros(self.plan.num_exits, dtype=torch.int64)  # the runtime adds to it

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
    def metadata(self) -> dict:
        return json.loads(self.plan.metadata_json or "{}")

    def describe(self) -> str:
        """The plan: every layer with the implementation and layout chosen for it."""
        return self.plan.describe()

    def _context(self):
        # A Context per thread: the plan is shared read-only, the scratch is not.
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = self.plan.make_context(self.max_batch)
        return context

    def _checked(self, x) -> Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor or numpy array, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise TypeError(f"input must be float32, got {x.dtype}")
        if x.device.type != "cpu":
            raise ValueError(f"input must be on the CPU for this engine, got {x.device}")
        if tuple(x.shape[-3:]) != self.input_shape or x.dim() not in (3, 4):
            raise ValueError(f"input must be [C, H, W] = {list(self.input_shape)} or "
                             f"[B, C, H, W], got {list(x.shape)}")
        return x.contiguous()

    def __call__(self, x) -> EngineOutput:
        x = self._checked(x)
        single = x.dim() == 3
        batch = 1 if single else x.shape[0]
        prediction = torch.empty(batch, dtype=torch.int64)
        exit = torch.empty(batch, dtype=torch.int64)
        score = torch.empty(batch, dtype=torch.float32)
        if batch:
            bad = self.plan.run(self._context(), x.data_ptr(), batch, prediction.data_ptr(),
                                exit.data_ptr(), score.data_ptr(), self._counts.data_ptr())
            if bad >= 0:
                raise ValueError(f"input sample {bad} contains NaN")
        if single:
            return EngineOutput(prediction[0], exit[0], score[0])
        return EngineOutput(prediction, exit, score)

    def all_exit_logits(self, x) -> List[Tensor]:
        """Every exit's logits [num_classes] for one sample [C, H, W], no early exit."""
        x = self._checked(x)
        if x.dim() != 3:
            raise ValueError(f"all_exit_logits takes one sample [C, H, W], got {list(x.shape)}")
        return [torch.tensor(z) for z in self.plan.all_exit_logits(self._context(), x.data_ptr())]

    def stats(self) -> dict:
        """Samples that left at each exit since creation (or reset_stats), and their share."""
        counts = self._counts.tolist()
        total = sum(counts)
        return {"samples": total, "per_exit": counts,
                "percent": [100.0 * c / total if total else 0.0 for c in counts]}

    def reset_stats(self):
        self._counts.zero_()
