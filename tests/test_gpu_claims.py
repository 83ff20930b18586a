"""What the GPU engine claims, proven on a GPU (issue 12, section 3): the conditional graph skips
the later segments on the device, per-sample batches run smaller bucket graphs as samples leave,
and the GPU's answers equal the CPU engine's. They skip without a GPU and fail under
BRANCHY_REQUIRE_CUDA=1.

Tolerances, stated once: the GPU computes in fp32 with TF32 off (gpu/capture.py), the CPU engine in
fp32 with its own kernels; the two sum in different orders. Exit scores (entropy, nats) agree
within SCORE_TOL; exits and predictions are equal except for samples whose score at an exit they
reached lies within BAND of that exit's threshold (a rounding difference may decide either way).
"""
import contextlib
import math

import pytest
import torch

import branchy_engine as be
from branchy_engine.runtime.gpu import GpuEngine, conditional_support
from branchy_engine.runtime.gpu.engine import bucket
from branchy_engine.runtime.reference import exit_decision_reference

from exported_models import SHAPES, export_cache

SCORE_TOL = 1e-3
BAND = 1e-3
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_cache(tmp_path_factory)


def scores_per_exit(net, x) -> torch.Tensor:
    """[N, E]: the entropy of each exit's softmax for each sample, from the PyTorch network."""
    with torch.no_grad():
        return torch.stack([exit_decision_reference(z, 0.0)[0] for z in net(x)], 1)


def quantile_thresholds(net, x, q=0.5):
    """Thresholds under which about a fraction q of the samples still there leaves at each exit."""
    h = scores_per_exit(net, x)
    alive = torch.ones(x.shape[0], dtype=torch.bool)
    out = []
    for e in range(h.shape[1] - 1):
        t = float(torch.quantile(h[alive, e], q)) if alive.any() else 0.0
        out.append(t)
        alive &= ~(h[:, e] < t)
    return out


def near_a_threshold(net, x, thresholds) -> torch.Tensor:
    """[N] bool: samples whose score at an exit they reach lies within BAND of its threshold."""
    h = scores_per_exit(net, x)
    near = torch.zeros(x.shape[0], dtype=torch.bool)
    alive = torch.ones(x.shape[0], dtype=torch.bool)
    for e, t in enumerate(thresholds):
        near |= alive & ((h[:, e] - t).abs() <= BAND)
        alive &= ~(h[:, e] < t)
    return near


_tracing = {"on": False, "stream": 0, "event": 0, "device": 0}


@contextlib.contextmanager
def host_waits():
    """Counts every host wait on the GPU inside the block (stream, event and device
    synchronisations, the implicit ones of .item() and blocking copies included), through
    PyTorch's GPU trace hooks: yields a dict filled in when the block ends."""
    if not hasattr(torch._C, "_activate_gpu_trace"):
        pytest.skip("this PyTorch has no GPU trace hooks")
    from torch.cuda import _gpu_trace
    if "registered" not in _tracing:  # hooks stay for the process: register them once
        for kind, register in (("stream", _gpu_trace.register_callback_for_stream_synchronization),
                               ("event", _gpu_trace.register_callback_for_event_synchronization)):
            register(lambda *_, kind=kind: _tracing.__setitem__(kind, _tracing[kind] + _tracing["on"]))
        _gpu_trace.register_callback_for_device_synchronization(
            lambda: _tracing.__setitem__("device", _tracing["device"] + _tracing["on"]))
        torch._C._activate_gpu_trace()
        _tracing["registered"] = True
    counts = {}
    _tracing.update(on=True, stream=0, event=0, device=0)
    try:
        yield counts
    finally:
        _tracing["on"] = False
        counts.update(stream=_tracing["stream"], event=_tracing["event"], device=_tracing["device"])


def if_node_makers():
    return [pytest.param(m, id=f"if_nodes={m}") for m in ("extension", "torch")]


def conditional_engine(path, if_nodes, **kwargs):
    ok, why = conditional_support(if_nodes)
    if not ok:
        pytest.skip(why)
    engine = GpuEngine(path, device="cuda", mode="conditional", if_nodes=if_nodes, **kwargs)
    assert engine.mode == "conditional", engine.fallback_reason
    assert engine.if_nodes == if_nodes
    return engine


@pytest.mark.parametrize("if_nodes", if_node_makers())
def test_conditional_mode_runs_no_later_segment_for_a_sample_that_left(exported, cuda, if_nodes, monkeypatch):
    net, path = exported("b_alexnet")
    runs = torch.zeros(net.num_exits, dtype=torch.int64, device="cuda")
    segment = GpuEngine._segment

    def counted(self, e, h):  # a device-side count per segment, captured into the graph
        runs[e].add_(1)
        return segment(self, e, h)
    monkeypatch.setattr(GpuEngine, "_segment", counted)
    engine = conditional_engine(path, if_nodes, thresholds=[math.inf] * (net.num_exits - 1))
    x = torch.randn(*SHAPES["b_alexnet"], device="cuda")

    n = 20
    before = runs.clone()
    torch.cuda.synchronize()
    with host_waits() as waits:
        for _ in range(n):
            assert engine(x).exit == 0
    assert waits == {"stream": n, "event": 0, "device": 0}  # the host waits once per sample
    assert (runs - before).tolist() == [n] + [0] * (net.num_exits - 1)

    engine.set_thresholds([0.0] * (net.num_exits - 1))  # nobody leaves early: every segment runs
    before = runs.clone()
    for _ in range(n):
        assert engine(x).exit == net.num_exits - 1
    assert (runs - before).tolist() == [n] * net.num_exits


@pytest.mark.parametrize("if_nodes", if_node_makers())
def test_conditional_mode_matches_the_cpu_engine(exported, cuda, if_nodes):
    net, path = exported("b_resnet110")
    x = torch.randn(24, *SHAPES["b_resnet110"], generator=torch.Generator().manual_seed(2))
    thresholds = quantile_thresholds(net, x)
    engine = conditional_engine(path, if_nodes, thresholds=thresholds, max_batch=24)
    cpu = be.Engine(path, thresholds=thresholds, kernels="own")  # measuring kernel choices costs seconds
    near = near_a_threshold(net, x, thresholds)
    got = [engine(s.cuda()) for s in x]
    want = [cpu(s) for s in x]
    assert len({w.exit for w in want}) > 1, "the test needs mixed exits"
    for g, w, n in zip(got, want, near.tolist()):
        if not n:
            assert (g.exit, g.prediction) == (w.exit, w.prediction)
            assert abs(g.score - w.score) <= SCORE_TOL


def test_per_sample_batches_run_smaller_buckets_as_samples_leave(exported, cuda):
    net, path = exported("b_alexnet")
    n = 32
    x = torch.randn(n, *SHAPES["b_alexnet"], generator=torch.Generator().manual_seed(4))
    thresholds = quantile_thresholds(net, x)  # about half of those left leave at each exit
    engine = GpuEngine(path, device="cuda", mode="graphs", thresholds=thresholds, max_batch=n)
    out = engine(x.cuda())
    exits = out.exit.cpu()
    alive = [int((exits >= e).sum()) for e in range(net.num_exits)]
    assert engine.last_buckets == [(e, bucket(a)) for e, a in enumerate(alive) if a > 0]
    assert engine.last_buckets[0] == (0, n) and engine.last_buckets[-1][1] < n // 2, engine.last_buckets

    whole = GpuEngine(path, device="cuda", mode="graphs", thresholds=thresholds, max_batch=n,
                      policy="whole-batch")(x.cuda())
    near = near_a_threshold(net, x, thresholds)
    far = ~near.cuda()  # the two policies run other batch sizes, so cuDNN may sum in other orders
    assert torch.equal(whole.exit[far], out.exit[far]) and torch.equal(whole.prediction[far], out.prediction[far])
    assert float((whole.score - out.score)[far].abs().max()) <= SCORE_TOL
    cpu = be.Engine(path, thresholds=thresholds, kernels="own")  # measuring kernel choices costs seconds
    want = [cpu(s) for s in x]  # in input order
    for i, w in enumerate(want):
        if not near[i]:
            assert (int(out.exit[i]), int(out.prediction[i])) == (w.exit, w.prediction), i
            assert abs(float(out.score[i]) - w.score) <= SCORE_TOL


@pytest.mark.parametrize("mode", ["eager", "graphs", "conditional"])
@pytest.mark.parametrize("name", ["b_lenet", "b_alexnet", "b_resnet110"])
def test_gpu_answers_equal_the_cpu_engine(exported, cuda, name, mode):
    net, path = exported(name)
    x = torch.randn(32, *SHAPES[name], generator=torch.Generator().manual_seed(9))
    thresholds = quantile_thresholds(net, x)
    engine = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=32)
    cpu = be.Engine(path, thresholds=thresholds, kernels="own")  # measuring kernel choices costs seconds
    near = near_a_threshold(net, x, thresholds)
    want = [cpu(s) for s in x]
    batched = engine(x.cuda())
    for i, s in enumerate(x):
        if near[i]:
            continue
        single = engine(s.cuda())
        assert (single.exit, single.prediction) == (want[i].exit, want[i].prediction), (i, mode)
        assert abs(single.score - want[i].score) <= SCORE_TOL
        assert (int(batched.exit[i]), int(batched.prediction[i])) == (want[i].exit, want[i].prediction)
        assert abs(float(batched.score[i]) - want[i].score) <= SCORE_TOL


def test_tf32_is_off_inside_the_engine_and_restored_after(exported, cuda, monkeypatch):
    net, path = exported("b_lenet")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    try:
        seen = []
        segment = GpuEngine._segment

        def spy(self, e, h):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return segment(self, e, h)
        monkeypatch.setattr(GpuEngine, "_segment", spy)
        for mode in ("eager", "graphs", "conditional"):
            engine = GpuEngine(path, device="cuda", mode=mode, thresholds=[0.3], max_batch=8)
            engine(torch.randn(1, 28, 28, device="cuda"))
            engine(torch.randn(8, 1, 28, 28, device="cuda"))
        assert seen and set(seen) == {(False, False)}
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False


@pytest.mark.parametrize("n", [1, 2, 300])
def test_batches_of_one_and_of_several_blocks(exported, cuda, n):
    net, path = exported("b_lenet")
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
    thresholds = quantile_thresholds(net, x) if n > 1 else [0.5]
    engine = be.Engine(path, device="cuda", mode="graphs", thresholds=thresholds, max_batch=512)
    out = engine(x.cuda())
    singles = [engine(s.cuda()) for s in x]
    assert out.exit.tolist() == [s.exit for s in singles]
    assert out.prediction.tolist() == [s.prediction for s in singles]
    torch.testing.assert_close(out.score.cpu(), torch.tensor([s.score for s in singles]), rtol=0, atol=SCORE_TOL)


def test_a_capture_that_fails_in_capture_end_restores_the_stream(exported, cuda, monkeypatch):
    net, path = exported("b_lenet")
    segment, failed = GpuEngine._segment, []

    def invalidating(self, e, h):
        # A host wait inside the capture invalidates it: torch.cuda.graph's capture_end then
        # raises too, the case where torch itself leaves the capture stream current, the pool
        # routed and the generator in capture mode. Segment 0, in the graph itself: an
        # invalidated IF body may crash the driver (NVIDIA/cuda-python#2918).
        if e == 0 and not failed and torch.cuda.is_current_stream_capturing():
            failed.append(e)
            try:
                torch.cuda.current_stream().synchronize()
            except RuntimeError:
                pass
        return segment(self, e, h)
    monkeypatch.setattr(GpuEngine, "_segment", invalidating)
    default = torch.cuda.current_stream()
    engine = GpuEngine(path, device="cuda", mode="conditional", thresholds=[0.3], max_batch=4)
    assert failed and engine.mode == "graphs" and engine.fallback_reason
    assert torch.cuda.current_stream() == default and not torch.cuda.is_current_stream_capturing()
    x = torch.randn(4, 1, 28, 28, device="cuda")  # eager random ops work: the generator left capture
    assert engine(x).exit.shape == (4,) and engine(x[0]).exit in (0, 1)  # captures into a new pool
