"""The GPU engine's capture helpers (gpu/capture.py), on the CPU with stand-ins for the CUDA calls;
tests/test_gpu_claims.py proves the same on a GPU."""
import contextlib

import pytest
import torch

from branchy_engine.runtime.gpu import capture


class FakeCuda:
    """The CUDA calls graph_capture makes, with a current stream and a capture state to look at.
    capture_end fails like a capture that a host wait invalidated, leaving the stream current as
    torch.cuda.graph then does."""

    def __init__(self, monkeypatch, fail_in_capture_end: bool):
        self.current, self.capturing, self.reset_calls = "default", False, 0
        self.routing_ended, self.captures = [], []
        fake = self

        class Graph:
            def capture_end(self):
                fake.capturing = False

            def reset(self):
                fake.reset_calls += 1

        @contextlib.contextmanager
        def graph(g, pool=None, stream=None, capture_error_mode="global"):
            assert capture_error_mode == capture.CAPTURE_MODE
            fake.captures.append(pool)
            before, fake.current, fake.capturing = fake.current, stream.name, True
            yield
            if fail_in_capture_end:  # torch's __exit__: capture_end raises, the stream stays
                fake.capturing = False
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            fake.capturing, fake.current = False, before

        self.graph = Graph()
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool",
                            lambda device, pool: fake.routing_ended.append((device, pool)))
        monkeypatch.setattr(torch, "zeros", lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: fake.current)
        monkeypatch.setattr(torch.cuda, "set_stream", lambda s: setattr(fake, "current", s))
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: fake.capturing)


class Stream:
    name, device = "capture", torch.device("cuda", 0)


def test_a_capture_that_fails_in_capture_end_restores_the_current_stream(monkeypatch):
    fake = FakeCuda(monkeypatch, fail_in_capture_end=True)
    with pytest.raises(RuntimeError, match="during capture"):
        with capture.graph_capture(fake.graph, (0, 1), Stream()):
            assert fake.current == "capture"
    assert fake.current == "default" and not fake.capturing and fake.reset_calls == 1
    # The pool's routing ended, and a throwaway capture in a private pool (the generator's reset).
    assert fake.routing_ended == [(0, (0, 1))] and fake.captures == [(0, 1), None]


def test_an_error_inside_the_capture_restores_the_stream_and_drops_the_graph(monkeypatch):
    fake = FakeCuda(monkeypatch, fail_in_capture_end=False)
    with pytest.raises(ValueError, match="inside"):
        with capture.graph_capture(fake.graph, (0, 1), Stream()):
            raise ValueError("inside")
    assert fake.current == "default" and fake.reset_calls == 1 and fake.captures == [(0, 1), None]


def test_a_capture_that_succeeds_keeps_its_graph(monkeypatch):
    fake = FakeCuda(monkeypatch, fail_in_capture_end=False)
    with capture.graph_capture(fake.graph, (0, 1), Stream()):
        pass
    assert fake.current == "default" and fake.reset_calls == 0 and fake.captures == [(0, 1)]


@pytest.mark.parametrize("cudnn", [True, False])
@pytest.mark.parametrize("matmul", [True, False])
def test_fp32_math_turns_tf32_off_and_restores_the_settings(cudnn, matmul):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
        with pytest.raises(KeyError):
            with capture.fp32_math():
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
                raise KeyError("an error inside keeps the restore")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (cudnn, matmul)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_if_node_makers_are_probed_and_named(monkeypatch):
    with pytest.raises(ValueError, match="if_nodes must be one of"):
        capture.if_node_support("cuda-python")
    monkeypatch.setattr(torch.version, "cuda", "12.2")
    assert capture.if_node_support("auto") == ("", "CUDA 12.2 has no conditional IF nodes (12.4 or newer)")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(capture._C, "with_cuda", 1)
    monkeypatch.setattr(capture._C, "if_node_begin", lambda *a: None, raising=False)
    assert capture.if_node_support("auto") == ("extension", "")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", type("CUDAGraph", (), {}))  # an older PyTorch
    maker, why = capture.if_node_support("torch")
    assert maker == "" and "no CUDAGraph.begin_capture_to_if_node" in why
    monkeypatch.setattr(capture._C, "with_cuda", 0)
    maker, why = capture.if_node_support("auto")
    assert maker == "" and "built without CUDA" in why and "begin_capture_to_if_node" in why


def test_the_engine_refuses_an_unknown_if_node_maker(tmp_path):
    from branchy_engine.runtime.gpu import GpuEngine
    with pytest.raises(ValueError, match="if_nodes must be one of"):
        GpuEngine(str(tmp_path / "none.branchy"), device="cpu", mode="eager", if_nodes="fast")


def test_the_extension_if_node_calls_check_their_input():
    from branchy_engine import _C
    if not _C.with_cuda:
        pytest.skip("branchy_engine._C built without CUDA")
    with pytest.raises(RuntimeError, match="no IF node body is being captured"):
        _C.if_node_end()
    with pytest.raises(RuntimeError, match="pred must be a bool CUDA tensor of one element, got Float"):
        _C.if_node_begin(torch.zeros(1), 0, 1)
    assert _C.if_node_depth() == 0
