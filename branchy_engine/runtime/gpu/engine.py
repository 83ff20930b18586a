"""The GPU engine: per-stage CUDA graphs, exits decided on the device, per-sample exits in a batch.

    engine = branchy_engine.Engine("model.branchy", device="cuda", mode="conditional")
    prediction, exit, score = engine(x)          # x: [C, H, W] or [B, C, H, W] on the GPU

Modes for one sample (batch 1):
  eager        the PyTorch early-exit loop: each exit's decision read on the host (.item())
  graphs       each segment (stages up to an exit, that exit's head, the fused decision) is one
               captured CUDA graph; the host reads one decision per exit from pinned memory
  conditional  one graph for the whole network: each later segment sits in a conditional IF node
               that the previous exit's decision sets on the device; one launch and one
               synchronisation per inference. IF nodes come from the extension or from PyTorch
               (gpu/capture.py, argument if_nodes). Probed when built; falls back to graphs with
               the reason logged (engine.fallback_reason).
Batches (B > 1), policy "per-sample": each segment runs on the survivors only: the exit kernel's
decisions scatter the leavers' results to their rows, compaction moves the survivors to the front
of fixed buffers, and the next segment runs on a graph captured for the smallest power-of-two
bucket that holds them (one host read of the survivor count per exit). Policy "whole-batch": the
batch goes through every segment until its last sample has left (for comparison).
Thresholds live in device memory: set_thresholds() changes them without recapturing.
Convolutions and matrix products run in full fp32 (TF32 off while capturing and in eager calls,
the process's settings restored after), as the CPU engine computes.
Graphs are captured when a call first needs them; benchmarks call prepare() before timing, so
that no capture lands inside a timed call.

On a CPU device the same orchestration runs without graphs (mode "eager" only): that is how the
batching logic is tested where no GPU exists.
"""
import contextlib
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from branchy_engine.argtypes import threshold_list
from branchy_engine.runtime.compaction import compact_survivors, scatter_exits
from branchy_engine.runtime.engine import EngineOutput, exit_stats
from branchy_engine.runtime.gpu import capture
from branchy_engine.runtime.gpu.layers import LoadedNet
from branchy_engine.runtime.ops import _C, exit_decision, exit_decision_maxprob

log = logging.getLogger(__name__)

MODES = ("eager", "graphs", "conditional")
POLICIES = ("per-sample", "whole-batch")


def conditional_support(if_nodes: str = "auto") -> Tuple[bool, str]:
    """Whether conditional IF nodes can be built (with the maker `if_nodes`, gpu/capture.py), and
    if not, why."""
    maker, why = capture.if_node_support(if_nodes)
    return bool(maker), why


def check_demand(demand: dict, max_batch: int, max_memory: float, max_flops: float):
    """Raises ValueError if a model's demand (load_model_ops' estimate per sample) at batches up
    to max_batch is over max_memory bytes or max_flops FLOPs per sample."""
    weights = demand["weight_bytes"]
    activations = demand["activation_bytes"] * max_batch
    if weights + activations > max_memory:
        raise ValueError(f"the model needs about {gib(weights + activations)} on the device (weights "
                         f"{gib(weights)}, activations {gib(activations)} at max_batch {max_batch}), "
                         f"over the limit of {gib(max_memory)} (max_memory)")
    if not demand["flops"] <= max_flops:
        raise ValueError(f"a sample costs about {demand['flops'] / 1e9:.3g} GFLOP, over the limit of "
                         f"{max_flops / 1e9:.3g} GFLOP (max_flops)")


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def bucket(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, (n - 1).bit_length())


class GpuEngine:
    """Runs an exported model on a GPU with early exits. Arguments as branchy_engine.Engine, plus:

    Args:
        device: "cuda", "cuda:N" (or "cpu" for mode "eager", to test the batching logic).
        mode: "eager", "graphs" or "conditional" (module docstring).
        policy: "per-sample" or "whole-batch", for batches.
        max_batch: the largest batch (buffers and the largest bucket are sized by it).
        if_nodes: who builds the conditional mode's IF nodes: "auto", "extension" or "torch"
            (gpu/capture.py).
        input: "float" only (raw uint8 pixels are the CPU engine's: its prepare() gives this
            engine's input).
        max_memory, max_flops: limits on what a model may ask, checked from its shapes before
            anything is put on the device (ValueError naming the figure), as the CPU engine's:
            bytes of weights and of every activation value at max_batch (the eager path and
            the captured graphs, which share one memory pool, hold at most that), default the
            device's memory (4 GiB on the CPU); FLOPs per sample, default 1e12. A file from
            elsewhere cannot then take the GPU for minutes or its memory. float("inf") lifts a
            limit.
        check_inputs: refuse inputs holding NaN or +-inf with the CPU engine's ValueError
            ("input sample 2 contains +inf at element 759 ..."). The check runs on the device
            before the network and is read back at the host wait the call makes anyway (no
            extra synchronisation), so a refused input has run through the network: its result
            is dropped and the stats do not count it. False skips the check's two kernels and
            copy, for callers that guarantee finite inputs.

    After a per-sample batch call, last_buckets lists the (exit, bucket) graphs it ran, in order
    (empty after any other call).
    """

    def __init__(self, model: str, device: str = "cuda", mode: str = "conditional",
                 thresholds: Optional[Sequence[float]] = None, max_batch: int = 256,
                 policy: str = "per-sample", if_nodes: str = "auto", check_inputs: bool = True,
                 input: str = "float", max_memory: Optional[float] = None, max_flops: float = 1e12):
        if input != "float":
            raise ValueError(f"input={input!r}: the GPU engine takes float32 input prepared as in training; "
                             "turn raw pixels into it with the CPU engine's prepare() "
                             "(Engine(model, input='uint8').prepare(pixels))")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if if_nodes not in capture.IF_NODE_MAKERS:
            raise ValueError(f"if_nodes must be one of {capture.IF_NODE_MAKERS}, got {if_nodes!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA GPU")
            if self.device.index is None:
                # Pinned to the GPU current now: "cuda" alone would mean whichever GPU is current
                # at each later call, capture or stream lookup.
                self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type != "cuda" and mode != "eager":
            raise ValueError(f"mode {mode!r} captures CUDA graphs and needs a CUDA device; on the "
                             f"CPU use mode='eager' (or the compiled CPU engine: device='cpu')")
        if max_memory is None:
            max_memory = (torch.cuda.get_device_properties(self.device).total_memory
                          if self.device.type == "cuda" else 4 << 30)
        if not (max_memory > 0 and max_flops > 0):
            raise ValueError(f"max_memory and max_flops must be > 0, got {max_memory} and {max_flops}")
        spec = _C.load_model_ops(str(model), int(min(max_memory, (1 << 63) - 1)))
        check_demand(spec["demand"], max_batch, max_memory, max_flops)
        self.net = LoadedNet(spec).to(self.device).eval()
        self.num_exits = self.net.num_exits
        self.input_shape = tuple(spec["input_shape"])
        self.criterion = spec["criterion"]
        self.class_names = list(spec["class_names"])
        self._decide = exit_decision if self.criterion == "entropy" else exit_decision_maxprob
        self._threshold = torch.zeros(max(1, self.num_exits - 1), dtype=torch.float32, device=self.device)
        self.set_thresholds(spec["thresholds"] if thresholds is None else thresholds)
        self.mode, self.policy, self.max_batch = mode, policy, max_batch
        self.check_inputs = bool(check_inputs)
        self.fallback_reason = ""
        self.if_nodes = ""  # the IF node maker in use (mode conditional)
        self.last_buckets: List[Tuple[int, int]] = []
        self._counts = torch.zeros(self.num_exits, dtype=torch.int64)
        self._graphs: Dict[tuple, tuple] = {}
        self._buffers = None
        self._finite = torch.ones((), dtype=torch.bool)  # the input check's flag (pinned on a GPU)
        if self.device.type == "cuda":
            self._pool = torch.cuda.graph_pool_handle()
            # Every capture goes to this stream of the engine's GPU: torch.cuda.graph's own default
            # stream is created once per process, on whichever GPU was current then.
            self._capture_stream = torch.cuda.Stream(self.device)
            with self._on_device():
                self._pinned = torch.zeros(3, dtype=torch.float64, pin_memory=True)
                self._finite = self._finite.pin_memory()
            self._exit_ids = torch.arange(self.num_exits, dtype=torch.float64, device=self.device)
            if mode == "conditional":
                self.if_nodes, why = capture.if_node_support(if_nodes)
                ok = bool(self.if_nodes)
                if ok:
                    try:
                        self._build_conditional()
                    except RuntimeError as e:  # a driver or runtime that refuses the capture
                        ok, why = False, f"capturing the conditional graph failed: {e}"
                        if e.__context__ is not None:  # capture_end's error hides the first
                            why += f" (after: {e.__context__})"
                        self._pool = torch.cuda.graph_pool_handle()  # graph_capture: never reuse
                if not ok:
                    self.if_nodes = ""
                    self.mode, self.fallback_reason = "graphs", why
                    log.warning("branchy_engine: conditional mode unavailable (%s); using graphs", why)

    # ---- thresholds, inputs, outputs ----

    @property
    def thresholds(self) -> List[float]:
        return list(self._threshold_host)

    def set_thresholds(self, values: Sequence[float]):
        """Replaces the thresholds in device memory (captured graphs read the new ones) and in the
        host copy that eager calls use: one per early exit (one number where there is one)."""
        values = threshold_list(values) or []
        if len(values) != self.num_exits - 1:
            raise ValueError(f"thresholds: expected {self.num_exits - 1} (one per early exit), got {len(values)}")
        if any(math.isnan(v) or v < 0 for v in values):
            raise ValueError(f"thresholds must be >= 0 and not NaN, got {values}")
        if values:
            self._threshold[: len(values)].copy_(torch.tensor(values))
        self._threshold_host = values

    def _checked(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise TypeError(f"input must be float32, got {x.dtype}")
        if x.device != self.device:
            # Rejected rather than moved: a copy from the host or another GPU would be a hidden
            # transfer in every call.
            raise ValueError(f"input must be on {self.device} (the engine's device), got {x.device}")
        if x.dim() not in (3, 4) or tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(f"input must be [C, H, W] = {list(self.input_shape)} or [B, C, H, W], "
                             f"got {list(x.shape)}")
        if x.dim() == 4 and x.shape[0] > self.max_batch:
            raise ValueError(f"batch {x.shape[0]} is larger than max_batch {self.max_batch}")
        return x.contiguous()

    def _start_input_check(self, x):
        """Queues the finiteness test of x and its copy to the host flag (pinned memory: no wait);
        _refuse_non_finite reads it after the call's own synchronisation."""
        if self.check_inputs:
            self._finite.copy_(torch.isfinite(x).all(), non_blocking=True)

    def _refuse_non_finite(self, x):
        """Raises the CPU engine's ValueError naming the first sample and element of x that is NaN
        or +-inf, if _start_input_check found one. Call after a host wait on the current stream."""
        if not self.check_inputs or bool(self._finite):
            return
        self.last_buckets = []
        rows = x.reshape(x.shape[0] if x.dim() == 4 else 1, -1)
        bad = ~torch.isfinite(rows)
        sample = int(bad.any(1).nonzero()[0])
        element = int(bad[sample].nonzero()[0])
        value = float(rows[sample, element])
        raise ValueError(f"{'input' if rows.shape[0] == 1 else f'input sample {sample}'} contains "
                         f"{'NaN' if math.isnan(value) else '+inf' if value > 0 else '-inf'} at element "
                         f"{element} (inputs must be finite; a caller that guarantees it can skip the scan: Engine(check_inputs=False))")

    @property
    def _graphed(self) -> bool:
        """Whether calls replay captured graphs (modes graphs and conditional on a GPU)."""
        return self.device.type == "cuda" and self.mode != "eager"

    def _threshold_value(self, e: int) -> float:
        """Exit e's threshold as a Python float, for eager calls. The last exit takes everyone:
        its decision is not consulted."""
        return self._threshold_host[e] if e < self.num_exits - 1 else 0.0

    def _threshold_for(self, e: int):
        """Exit e's threshold as _segment passes it. In graphed modes _segment runs only in
        captures (and their warm-ups): the device tensor, so that replays read what set_thresholds
        last wrote. In mode eager a float: exit_decision reads a CUDA tensor threshold back to
        check it for NaN, a synchronisation per exit (set_thresholds has already rejected NaN)."""
        if self._graphed and e < self.num_exits - 1:
            return self._threshold[e:e + 1]
        return self._threshold_value(e)

    def _on_device(self):
        """Makes the engine's GPU the current one (streams, captures and torch.cuda calls without a
        device argument use the current GPU); nothing on the CPU."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _eager_math(self):
        """fp32 math for calls that run PyTorch's kernels directly (mode eager on a GPU); graphed
        calls replay what was captured in fp32 (their lazy captures set it themselves)."""
        if self.device.type == "cuda" and not self._graphed:
            return capture.fp32_math()
        return contextlib.nullcontext()

    def stats(self) -> dict:
        return exit_stats(self._counts)

    def reset_stats(self):
        self._counts.zero_()

    @torch.inference_mode()
    def __call__(self, x) -> EngineOutput:
        """One sample [C, H, W] -> (prediction, exit, score) as Python numbers; a batch
        [B, C, H, W] -> three tensors [B] on the device (prediction and exit int64, score
        float32). Errors name the problem (type, dtype, device, shape, batch size, NaN or
        infinity)."""
        x = self._checked(x)
        self.last_buckets = []
        if x.dim() == 4 and x.shape[0] == 0:
            # Nothing to run (and bucket(0) == 2 would capture a graph for no rows).
            empty = torch.empty(0, dtype=torch.int64, device=self.device)
            return EngineOutput(empty, empty.clone(), torch.empty(0, dtype=torch.float32, device=self.device))
        with self._on_device(), self._eager_math():
            self._start_input_check(x)
            if x.dim() == 3:
                run = {"eager": self._eager_one, "graphs": self._graphs_one,
                       "conditional": self._conditional_one}[self.mode]
                out = run(x[None])  # its result read back: a host wait
                self._refuse_non_finite(x)
                self._counts[out.exit] += 1
                return out
            out = self._per_sample(x) if self.policy == "per-sample" else self._whole_batch(x)
            exits = out.exit.cpu()  # a host wait
        self._refuse_non_finite(x)
        self._counts += torch.bincount(exits, minlength=self.num_exits)
        return out

    @torch.inference_mode()
    def prepare(self, batch_sizes: Optional[Sequence[int]] = None):
        """Builds now what calls would otherwise build when they first need it, so that no graph
        capture (or buffer allocation) lands inside a timed call: benchmarks call it before
        timing. Calls still capture lazily whatever was not prepared.

        For the engine's mode and policy: the batch-1 graphs (mode graphs; conditional builds its
        graph in the constructor), and for batches of the given sizes the per-sample policy's
        graph for every exit and every bucket such a batch can reach, or the whole-batch policy's
        graphs for each size. In mode eager (and on the CPU) there is nothing to capture: it only
        allocates the batch buffers.

        Args:
            batch_sizes: the sizes B of the [B, C, H, W] calls to come, each in [1, max_batch];
                None: max_batch; empty: single samples [C, H, W] only.
        """
        sizes = sorted({int(n) for n in ([self.max_batch] if batch_sizes is None else batch_sizes)})
        if sizes and (sizes[0] < 1 or sizes[-1] > self.max_batch):
            raise ValueError(f"batch_sizes must be in [1, max_batch={self.max_batch}], "
                             f"got {list(batch_sizes)}")
        with self._on_device():
            if self.mode == "graphs" and "segments" not in self._graphs:
                self._build_segment_graphs()
            if self.policy == "per-sample" and sizes:
                self._batch_buffers()
                if self._graphed:
                    # Later exits see any number of survivors up to the batch size.
                    for b in sorted({self._bucket_for(alive) for alive in range(1, sizes[-1] + 1)}):
                        for e in range(self.num_exits):
                            self._bucket_graph(e, b)
            elif self.policy == "whole-batch":
                for n in sizes:
                    state = self._whole(n)
                    if self._graphed:
                        for e in range(self.num_exits):
                            self._whole_graph(state, e)

    # ---- graph capture ----

    def _capture(self, fn):
        """Warms fn up on the capture stream, then captures it into a graph there, in fp32 math;
        returns (graph, outputs)."""
        stream = self._capture_stream
        with torch.cuda.device(self.device), capture.fp32_math():
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            try:
                with capture.graph_capture(graph, self._pool, stream):
                    outputs = fn()
            except BaseException:
                self._pool = torch.cuda.graph_pool_handle()  # graph_capture: never reuse the pool
                raise
        return graph, outputs

    def _read_result(self, packed: torch.Tensor) -> Tuple[float, float, float]:
        """One copy of a [3] float64 device tensor to pinned memory, one synchronisation."""
        self._pinned.copy_(packed, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return tuple(self._pinned.tolist())

    # ---- batch 1 ----

    def _segment(self, e: int, h):
        """Segment e, head e and the fused decision on h: (segment output, score, leave, prediction)."""
        h = self.net.segments[e](h)
        score, leave, prediction = self._decide(self.net.heads[e](h), self._threshold_for(e))
        return h, score, leave, prediction

    def _eager_one(self, x1) -> EngineOutput:
        h = x1
        for e in range(self.num_exits):
            h, score, leave, prediction = self._segment(e, h)
            if e == self.num_exits - 1 or bool(leave.item()):
                return EngineOutput(int(prediction.item()), e, float(score.item()))

    def _graphs_one(self, x1) -> EngineOutput:
        if "segments" not in self._graphs:
            self._build_segment_graphs()
        static_in, graphs, _ = self._graphs["segments"]
        static_in.copy_(x1)
        for e, (graph, packed) in enumerate(graphs):
            graph.replay()
            leave, prediction, score = self._read_result(packed)
            if e == self.num_exits - 1 or leave:
                return EngineOutput(int(prediction), e, score)

    def _build_segment_graphs(self):
        static_in = torch.zeros(1, *self.input_shape, device=self.device)
        graphs, outputs, h = [], [], static_in
        for e in range(self.num_exits):
            def fn(src=h, e=e):
                out, score, leave, prediction = self._segment(e, src)
                return out, torch.cat([leave.double(), prediction.double(), score.double()])
            graph, (h, packed) = self._capture(fn)
            graphs.append((graph, packed))
            outputs.append(h)
        # Graph e+1 reads graph e's output h: kept referenced here, or its memory would go back
        # to the shared pool, where a later capture could take it and overwrite it.
        self._graphs["segments"] = (static_in, graphs, outputs)

    def _conditional_one(self, x1) -> EngineOutput:
        static_in, graph, result = self._graphs["conditional"]
        static_in.copy_(x1)
        graph.replay()
        e, prediction, score = self._read_result(result)
        return EngineOutput(int(prediction), int(e), score)

    def _build_conditional(self):
        """One graph: segment 0, then each later segment inside an IF node on 'not left yet'."""
        static_in = torch.zeros(1, *self.input_shape, device=self.device)
        result = torch.zeros(3, dtype=torch.float64, device=self.device)  # exit, prediction, score
        maker = self.if_nodes

        def body(graph, e, h):
            h, score, leave, prediction = self._segment(e, h)
            result.copy_(torch.cat([self._exit_ids[e:e + 1], prediction.double(), score.double()]))
            if e < self.num_exits - 1:
                with capture.if_node(maker, graph, torch.logical_not(leave[0]), self._pool):
                    body(graph, e + 1, h)

        with torch.cuda.device(self.device), capture.fp32_math():
            # Warm-up, each segment on the stream that will capture it (segment e > 0: the IF
            # body stream at depth e - 1, where the maker tells it): cuDNN picks its algorithms and
            # cuBLAS makes its per-stream workspace outside the capture.
            streams = [self._capture_stream] + [
                capture.body_stream(maker, self.device, depth) or self._capture_stream
                for depth in range(self.num_exits - 1)]
            h, previous = static_in, torch.cuda.current_stream()
            for e, stream in enumerate(streams):
                stream.wait_stream(previous)
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        out = self._segment(e, h)[0]
                h, previous = out, stream
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with capture.graph_capture(graph, self._pool, self._capture_stream):
                body(graph, 0, static_in)
        self._graphs["conditional"] = (static_in, graph, result)

    # ---- batches ----

    def _batch_buffers(self):
        """Fixed buffers for per-sample batches: each segment's input, rows and count, results."""
        if self._buffers is None:
            shapes = [self.input_shape]
            h = torch.zeros(1, *self.input_shape, device=self.device)
            for segment in self.net.segments[:-1]:
                h = segment(h)
                shapes.append(tuple(h.shape[1:]))
            n, dev = self.max_batch, self.device
            self._buffers = {
                "inputs": [torch.zeros(n, *s, device=dev) for s in shapes],
                "rows": [torch.zeros(n, dtype=torch.int64, device=dev) for _ in shapes],
                "counts": [torch.zeros(1, dtype=torch.int32, device=dev) for _ in shapes],
                "prediction": torch.zeros(n, dtype=torch.int64, device=dev),
                "exit": torch.zeros(n, dtype=torch.int64, device=dev),
                "score": torch.zeros(n, dtype=torch.float32, device=dev),
                "all_rows": torch.arange(n, dtype=torch.int64, device=dev),
            }
        return self._buffers

    def _bucket_step(self, e: int, b: int):
        """Segment e on the first b rows of its input buffer: decide, scatter the leavers'
        results to their rows, compact the survivors into segment e+1's buffer."""
        buf = self._buffers
        last = e == self.num_exits - 1
        h, score, leave, prediction = self._segment(e, buf["inputs"][e][:b])
        scatter_exits(leave, buf["counts"][e], buf["rows"][e][:b], prediction, score, e, last,
                      buf["prediction"], buf["exit"], buf["score"])
        if not last:
            compact_survivors(leave, buf["counts"][e], buf["rows"][e][:b], h.reshape(b, -1),
                              buf["inputs"][e + 1].view(self.max_batch, -1), buf["rows"][e + 1],
                              buf["counts"][e + 1])

    def _bucket_for(self, alive: int) -> int:
        """The bucket (rows a segment runs on) for `alive` rows."""
        return min(bucket(alive), self.max_batch)

    def _bucket_graph(self, e: int, b: int):
        """The graph of _bucket_step(e, b), captured the first time it is asked for."""
        key = ("bucket", e, b)
        if key not in self._graphs:
            self._graphs[key] = self._capture(lambda: self._bucket_step(e, b))[0]
        return self._graphs[key]

    def _per_sample(self, x) -> EngineOutput:
        buf = self._batch_buffers()
        n = x.shape[0]
        buf["inputs"][0][:n].copy_(x)
        buf["rows"][0].copy_(buf["all_rows"])
        buf["counts"][0].fill_(n)
        alive = n
        self.last_buckets = []
        for e in range(self.num_exits):
            b = self._bucket_for(alive)
            self.last_buckets.append((e, b))
            if self._graphed:
                self._bucket_graph(e, b).replay()
            else:
                self._bucket_step(e, b)
            if e < self.num_exits - 1:
                alive = int(buf["counts"][e + 1].item())  # one host read per exit: picks the bucket
                if alive == 0:
                    break
        return EngineOutput(buf["prediction"][:n].clone(), buf["exit"][:n].clone(), buf["score"][:n].clone())

    def _whole_batch(self, x) -> EngineOutput:
        """Every sample runs every segment until the last one has left; each keeps the result of
        the first exit that let it leave. Captured per segment for this batch size, like the
        per-sample policy, so the two compare fairly."""
        state = self._whole(x.shape[0])
        state["input"].copy_(x)
        state["done"].zero_()
        for e in range(self.num_exits):
            if self._graphed:
                self._whole_graph(state, e).replay()
            else:
                self._whole_step(state, e)
            if bool(state["done"].all()):  # one host read per exit
                break
        return EngineOutput(state["prediction"].clone(), state["exit"].clone(), state["score"].clone())

    def _whole(self, n: int) -> dict:
        """The whole-batch policy's buffers and graphs for batches of n, made the first time."""
        key = ("whole", n)
        if key not in self._graphs:
            self._graphs[key] = self._whole_state(n)
        return self._graphs[key]

    def _whole_graph(self, state: dict, e: int):
        """The graph of _whole_step(state, e), captured the first time it is asked for."""
        if e not in state["graphs"]:
            state["graphs"][e] = self._capture(lambda: self._whole_step(state, e))[0]
        return state["graphs"][e]

    def _whole_state(self, n: int) -> dict:
        dev = self.device
        shapes = [self.input_shape]
        h = torch.zeros(1, *self.input_shape, device=dev)
        for segment in self.net.segments:
            h = segment(h)
            shapes.append(tuple(h.shape[1:]))
        return {"input": torch.zeros(n, *self.input_shape, device=dev),
                "outputs": [torch.zeros(n, *s, device=dev) for s in shapes[1:]],
                "done": torch.zeros(n, dtype=torch.bool, device=dev),
                "prediction": torch.zeros(n, dtype=torch.int64, device=dev),
                "exit": torch.zeros(n, dtype=torch.int64, device=dev),
                "score": torch.zeros(n, dtype=torch.float32, device=dev), "graphs": {}}

    def _whole_step(self, state: dict, e: int):
        src = state["input"] if e == 0 else state["outputs"][e - 1]
        h, score, leave, prediction = self._segment(e, src)
        state["outputs"][e].copy_(h)
        if e == self.num_exits - 1:
            leave = torch.ones_like(leave)
        new = leave & ~state["done"]
        state["prediction"].copy_(torch.where(new, prediction, state["prediction"]))
        state["score"].copy_(torch.where(new, score, state["score"]))
        state["exit"].masked_fill_(new, e)
        state["done"].logical_or_(leave)
