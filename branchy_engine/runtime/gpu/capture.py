"""CUDA graph capture for the GPU engine: the capture context, conditional IF nodes, fp32 math.

Conditional IF nodes come from one of two makers:
  extension  branchy_engine._C.if_node_begin/end (csrc/ops/cuda/graph_if_node.cu), the CUDA runtime
             API: works on any PyTorch built with CUDA >= 12.4, and captures each IF body on a
             stream kept for its nesting depth, so the engine warms the body's work up on that very
             stream before capture (no library workspace is first allocated inside a body);
  torch      torch.cuda.CUDAGraph.begin_capture_to_if_node (recent PyTorch): a new stream per
             body, so the body's first cuBLAS call allocates its workspace inside the capture.
"auto" takes the extension where it was built with CUDA, else torch's where it exists.
"""
import contextlib
from typing import Tuple

import torch

from branchy_engine.runtime.ops import _C

IF_NODE_MAKERS = ("auto", "extension", "torch")

# The capture mode of PyTorch's CUDA-graph trees (inductor): a CUDA call that is unsafe during
# capture fails only when this thread makes it, not when another thread of the process does.
CAPTURE_MODE = "thread_local"


def if_node_support(maker: str = "auto") -> Tuple[str, str]:
    """(the maker to use, "") where IF nodes can be built with `maker`, else ("", why not)."""
    if maker not in IF_NODE_MAKERS:
        raise ValueError(f"if_nodes must be one of {IF_NODE_MAKERS}, got {maker!r}")
    version = tuple(int(v) for v in (torch.version.cuda or "0.0").split(".")[:2])
    if version < (12, 4):
        return "", f"CUDA {torch.version.cuda} has no conditional IF nodes (12.4 or newer)"
    has_extension = bool(_C.with_cuda) and hasattr(_C, "if_node_begin")
    has_torch = hasattr(torch.cuda.CUDAGraph, "begin_capture_to_if_node")
    if maker in ("auto", "extension") and has_extension:
        return "extension", ""
    if maker in ("auto", "torch") and has_torch:
        return "torch", ""
    if maker == "extension":
        return "", "branchy_engine._C was built without CUDA: no IF nodes of its own"
    if maker == "torch":
        return "", f"PyTorch {torch.__version__} has no CUDAGraph.begin_capture_to_if_node"
    return "", (f"neither branchy_engine._C (built without CUDA) nor PyTorch {torch.__version__} "
                f"(no CUDAGraph.begin_capture_to_if_node) can build IF nodes")


def body_stream(maker: str, device: torch.device, depth: int):
    """The stream that will capture IF bodies at nesting `depth` (0: directly in the graph), where
    it is known before capture (maker "extension"); None for torch's maker."""
    if maker != "extension":
        return None
    return torch.cuda.ExternalStream(_C.if_body_stream(device.index, depth), device=device)


@contextlib.contextmanager
def if_node(maker: str, graph: torch.cuda.CUDAGraph, pred: torch.Tensor, pool):
    """Work inside the block is captured into an IF node's body: at replay it runs only where the
    one-element bool CUDA tensor `pred` is true. Used inside graph_capture on the current stream.
    Nothing inside may wait on the host: an invalidated body capture has been reported to crash
    the driver when the enclosing capture ends (NVIDIA/cuda-python#2918)."""
    if maker == "extension":
        _C.if_node_begin(pred.reshape(()), int(pool[0]), int(pool[1]))
        try:
            yield
        finally:
            _C.if_node_end()
    else:
        graph.begin_capture_to_if_node(pred.reshape(()))
        try:
            yield
        finally:
            graph.end_capture_to_conditional_node()


# Graphs whose capture failed: PyTorch's allocators may still hold filters that point at them.
_failed_graphs = []


@contextlib.contextmanager
def graph_capture(graph: torch.cuda.CUDAGraph, pool, stream: torch.cuda.Stream):
    """torch.cuda.graph(graph, pool, stream) in CAPTURE_MODE that leaves the process usable when
    the capture fails. When capture_end itself raises, torch.cuda.graph (2.11 and 2.14) skips
    restoring the current stream, leaves the caching allocator routing to `pool` (so every later
    capture into it fails) and leaves the default CUDA generator in capture mode (so eager random
    ops fail). Here the stream is restored, the routing ended, and one throwaway capture in a
    private pool clears the generator. The caller must not capture into `pool` again (PyTorch's
    pinned-memory allocator keeps its own routing): take a new graph_pool_handle(). The capture's
    own error is raised."""
    device = stream.device
    before = torch.cuda.current_stream(device)
    try:
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode=CAPTURE_MODE):
            yield
    except BaseException:
        if torch.cuda.is_current_stream_capturing():  # still on the capture stream, capturing
            with contextlib.suppress(RuntimeError):
                graph.capture_end()
        torch.cuda.set_stream(before)
        with contextlib.suppress(RuntimeError):  # "not recording": capture_end had ended it
            torch._C._cuda_endAllocateToPool(device.index, pool)
        _failed_graphs.append(graph)
        with contextlib.suppress(RuntimeError):
            graph.reset()
        throwaway = torch.cuda.CUDAGraph()
        with contextlib.suppress(RuntimeError):
            with torch.cuda.graph(throwaway, stream=stream, capture_error_mode=CAPTURE_MODE):
                torch.zeros(1, device=device)
        torch.cuda.set_stream(before)
        raise


@contextlib.contextmanager
def fp32_math():
    """cuDNN convolutions and cuBLAS matrix products in full fp32 (no TF32) inside the block, as
    the CPU engine computes; the process's settings are restored after. Captured graphs keep the
    math chosen at capture."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul
