"""The GPU engine: its network loader and batching logic on the CPU; every mode on a GPU.

Without a GPU the CUDA tests skip (and fail with BRANCHY_REQUIRE_CUDA=1)."""
import math
import re

import pytest
import torch

import branchy_engine as be
from branchy_engine import _C
from branchy_engine.runtime.gpu import GpuEngine, conditional_support
from branchy_engine.export.model_file import Op
from branchy_engine.runtime.gpu.layers import LoadedNet
from branchy_engine.runtime.reference import exit_decision_reference

from exported_models import SHAPES, bomb_model, export_cache
from tiny_models import INPUT_SHAPE

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_cache(tmp_path_factory)


def reference(net, x, thresholds):
    """The paper's rule on the PyTorch network's logits: (exit, prediction, near-threshold mask)."""
    with torch.no_grad():
        logits = net(x)
    n = x.shape[0]
    exit = torch.full((n,), len(logits) - 1)
    decided = torch.zeros(n, dtype=torch.bool)
    near = torch.zeros(n, dtype=torch.bool)
    for e, t in enumerate(thresholds):
        h = exit_decision_reference(logits[e].cpu(), 0.0)[0]
        near |= ~decided & ((h - t).abs() <= 1e-4)
        leave = ~decided & (h < t)
        exit = torch.where(leave, e, exit)
        decided |= leave
    prediction = torch.stack([z.argmax(1).cpu() for z in logits], 1)[torch.arange(n), exit]
    return exit, prediction, near


def median_thresholds(net, x):
    with torch.no_grad():
        return [float(exit_decision_reference(z.cpu(), 0.0)[0].median()) for z in net(x)[:-1]]


@pytest.mark.parametrize("name", list(SHAPES))
def test_loaded_network_equals_the_original(exported, name):
    net, path = exported(name)
    loaded = LoadedNet(_C.load_model_ops(path)).eval()
    x = torch.randn(3, *SHAPES[name])
    with torch.no_grad():
        for got, want in zip(loaded(x), net(x)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
@pytest.mark.parametrize("name", ["tiny", "b_alexnet"])
def test_batching_logic_on_the_cpu(exported, name, policy):
    net, path = exported(name)
    x = torch.randn(23, *SHAPES[name], generator=torch.Generator().manual_seed(5))
    thresholds = median_thresholds(net, x)
    engine = GpuEngine(path, device="cpu", mode="eager", thresholds=thresholds, max_batch=32, policy=policy)
    out = engine(x)
    exit, prediction, near = reference(net, x, thresholds)
    assert len(set(exit.tolist())) > 1, "the test needs mixed exits"
    assert torch.equal(out.exit[~near], exit[~near])
    assert torch.equal(out.prediction[~near], prediction[~near])
    singles = [engine(s) for s in x]
    assert out.exit.tolist() == [s.exit for s in singles]
    assert engine.stats()["samples"] == 2 * 23


def test_engine_device_switch_and_errors(exported):
    _, path = exported("tiny")
    assert isinstance(be.Engine(path), be.Engine)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GpuEngine(path, device="cpu", mode="graphs")
    with pytest.raises(ValueError, match="mode must be one of"):
        GpuEngine(path, device="cpu", mode="fast")
    with pytest.raises(ValueError, match="policy must be one of"):
        GpuEngine(path, device="cpu", mode="eager", policy="some")
    engine = GpuEngine(path, device="cpu", mode="eager", max_batch=4)
    with pytest.raises(ValueError, match="batch 5 is larger than max_batch 4"):
        engine(torch.randn(5, *INPUT_SHAPE))
    with pytest.raises(ValueError, match="got \\[2, 5, 6\\]"):
        engine(torch.randn(2, 5, 6))
    with pytest.raises(TypeError, match="float32"):
        engine(torch.randn(*INPUT_SHAPE).double())
    with pytest.raises(ValueError, match=r"^input must be on cpu \(the engine's device\), got meta$"):
        engine(torch.empty(4, *INPUT_SHAPE, device="meta"))
    with pytest.raises(ValueError, match="thresholds: expected 1"):
        engine.set_thresholds([0.1, 0.2])
    with pytest.raises(ValueError, match="not NaN"):
        engine.set_thresholds([math.nan])
    assert engine(torch.randn(4, *INPUT_SHAPE)).exit.shape == (4,)  # still usable


def test_resource_bombs_are_refused_before_anything_reaches_the_device(tmp_path, device):
    # As the CPU engine's limits (test_graph_ops.py): a few hundred bytes declaring an 8 GiB
    # input value would ask for 2 TiB at the default max_batch of 256; a max pool over
    # 1500 x 1500 windows of 3000 x 3000 would hold the device for minutes.
    huge, _ = bomb_model(tmp_path, "huge", (1, 46340, 46340), lambda x: [])
    with pytest.raises(ValueError, match=r"^the model needs about 2\.05e\+03 GiB on the device \(weights 0 GiB, "
                                         r"activations 2\.05e\+03 GiB at max_batch 256\), over the limit of "
                                         r"[\d.e+]+ GiB \(max_memory\)$"):
        GpuEngine(huge, device=device, mode="eager")
    pool = lambda x: [Op("max_pool2d", [x], dict(kernel_h=1500, kernel_w=1500, stride_h=1, stride_w=1,
                                                  pad_h=0, pad_w=0, ceil_mode=0))]
    slow, _ = bomb_model(tmp_path, "slow", (2, 3000, 3000), pool)
    with pytest.raises(ValueError, match=r"^a sample costs about 2\.03e\+04 GFLOP, over the limit of 1e\+03 "
                                         r"GFLOP \(max_flops\)$"):
        GpuEngine(slow, device=device, mode="eager", max_memory=math.inf)
    # The limits are the caller's: a small model passes the defaults and fails tighter ones.
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    engine = GpuEngine(small, device=device, mode="eager", max_batch=4)
    assert engine(torch.randn(4, 2, 8, 8, device=device)).exit.shape == (4,)
    with pytest.raises(ValueError, match=r"small.branchy is \d+ bytes, over the limit of 100 bytes \(max_memory\)"):
        GpuEngine(small, device=device, mode="eager", max_memory=100)
    with pytest.raises(ValueError, match=r"activations 1\.94e-06 GiB at max_batch 4\), over the limit"):
        GpuEngine(small, device=device, mode="eager", max_batch=4, max_memory=1000)
    with pytest.raises(ValueError, match=r"^max_memory and max_flops must be > 0, got 4294967296 and nan$"):
        GpuEngine(small, device=device, mode="eager", max_memory=4 << 30, max_flops=math.nan)
    GpuEngine(small, device=device, mode="eager", max_memory=math.inf, max_flops=math.inf)


def test_thresholds_change_without_rebuilding(exported):
    _, path = exported("b_lenet")
    engine = GpuEngine(path, device="cpu", mode="eager")
    x = torch.randn(8, 1, 28, 28)
    engine.set_thresholds([math.inf])
    assert engine(x).exit.tolist() == [0] * 8
    engine.set_thresholds([0.0])
    assert engine(x).exit.tolist() == [1] * 8
    assert engine.thresholds == [0.0]


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
def test_an_empty_batch_gives_empty_outputs(exported, policy):
    _, path = exported("tiny")
    engine = GpuEngine(path, device="cpu", mode="eager", max_batch=4, policy=policy)
    empty = engine(torch.randn(0, *INPUT_SHAPE))
    assert engine._graphs == {} and engine._buffers is None  # nothing built for no rows
    full = engine(torch.randn(3, *INPUT_SHAPE))
    for got, want in zip(empty, full):
        assert got.shape == (0,) and got.dtype == want.dtype and got.device == want.device
    assert engine.stats()["samples"] == 3


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
def test_prepare_in_eager_mode_only_allocates(exported, policy):
    net, path = exported("tiny")
    x = torch.randn(6, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    thresholds = median_thresholds(net, x)
    lazy = GpuEngine(path, device="cpu", mode="eager", thresholds=thresholds, max_batch=8, policy=policy)
    ready = GpuEngine(path, device="cpu", mode="eager", thresholds=thresholds, max_batch=8, policy=policy)
    ready.prepare([])  # single samples only: nothing to build in mode eager
    assert ready._buffers is None and ready._graphs == {}
    ready.prepare([6])
    if policy == "per-sample":
        assert ready._buffers is not None and ready._graphs == {}
    else:
        assert list(ready._graphs) == [("whole", 6)] and ready._graphs[("whole", 6)]["graphs"] == {}
    got, want = ready(x), lazy(x)
    assert torch.equal(got.exit, want.exit) and torch.equal(got.prediction, want.prediction)
    ready.prepare()  # default: max_batch
    assert policy == "per-sample" or ("whole", 8) in ready._graphs
    for bad in ([9], [0, 2]):
        with pytest.raises(ValueError, match=re.escape(f"batch_sizes must be in [1, max_batch=8], got {bad}")):
            ready.prepare(bad)


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
def test_eager_calls_pass_thresholds_as_python_floats(exported, policy):
    # A tensor threshold would make exit_decision read it back (a synchronisation per exit on a GPU).
    _, path = exported("b_lenet")
    engine = GpuEngine(path, device="cpu", mode="eager", thresholds=[0.25], policy=policy)
    seen = []
    decide = engine._decide

    def spy(logits, threshold):
        seen.append(threshold)
        return decide(logits, threshold)
    engine._decide = spy
    x = torch.randn(4, 1, 28, 28)
    engine(x[0])
    engine(x)
    engine.set_thresholds([math.inf])
    engine(x[0])
    assert seen and all(type(t) is float for t in seen), seen
    assert 0.25 in seen and math.inf in seen
    assert engine._threshold_value(0) == math.inf and engine._threshold_value(1) == 0.0


NON_FINITE = [(math.nan, "NaN"), (math.inf, r"\+inf"), (-math.inf, "-inf")]


def refuses_non_finite_inputs_as_the_cpu_engine(engine, path, device):
    """engine (b_lenet) refuses NaN and +-inf inputs, one sample and batches, with the CPU engine's
    message; nothing counts in its stats, and it still runs finite inputs afterwards."""
    cpu = be.Engine(path, kernels="own")
    x = torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(1))
    for value, name in NON_FINITE:
        one = x.clone()
        one[0, 27, 3] = value  # element 27 * 28 + 3 = 759
        batch = torch.stack([x, x, one])
        for bad, says in ((one, f"input contains {name} at element 759"),
                          (one[None], f"input contains {name} at element 759"),  # a batch of one
                          (batch, f"input sample 2 contains {name} at element 759")):
            with pytest.raises(ValueError, match=f"^{says} \\(inputs must be finite; ") as got:
                engine(bad.to(device))
            with pytest.raises(ValueError) as want:
                cpu(bad)
            assert str(got.value).split(" (")[0] == str(want.value).split(" (")[0]
    assert engine.stats()["samples"] == 0 and engine.last_buckets == []
    assert engine(x.to(device)).exit in (0, 1)
    assert engine(torch.stack([x, x]).to(device)).exit.shape == (2,)


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
def test_non_finite_inputs_are_refused_as_the_cpu_engine_does(exported, policy):
    _, path = exported("b_lenet")
    engine = GpuEngine(path, device="cpu", mode="eager", thresholds=[0.3], max_batch=4, policy=policy)
    refuses_non_finite_inputs_as_the_cpu_engine(engine, path, "cpu")
    # The documented opt-out: no check, whatever the network makes of it (a NaN row never leaves
    # early).
    unchecked = GpuEngine(path, device="cpu", mode="eager", max_batch=4, policy=policy, check_inputs=False)
    assert not unchecked.check_inputs and engine.check_inputs
    bad = torch.randn(3, 1, 28, 28)
    bad[2, 0, 5, 5] = math.nan
    assert unchecked(bad).exit.tolist()[2] == 1
    assert unchecked.stats()["samples"] == 3


# ---- on a GPU ----

@pytest.mark.parametrize("mode", ["eager", "graphs", "conditional"])
@pytest.mark.parametrize("name", ["tiny", "b_lenet", "b_alexnet", "b_resnet110"])
def test_every_mode_matches_the_model_on_a_gpu(exported, cuda, name, mode):
    net, path = exported(name)
    x = torch.randn(16, *SHAPES[name], generator=torch.Generator().manual_seed(7))
    thresholds = median_thresholds(net, x)
    engine = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=16)
    if mode == "conditional":
        assert engine.mode == "conditional", engine.fallback_reason
    exit, prediction, near = reference(net, x, thresholds)
    singles = [engine(s.cuda()) for s in x]
    got_exit = torch.tensor([s.exit for s in singles])
    got_pred = torch.tensor([s.prediction for s in singles])
    assert torch.equal(got_exit[~near], exit[~near]) and torch.equal(got_pred[~near], prediction[~near])
    batched = engine(x.cuda())  # per-sample exits with compaction, bucketed graphs
    assert torch.equal(batched.exit.cpu()[~near], exit[~near])
    assert torch.equal(batched.prediction.cpu()[~near], prediction[~near])
    whole = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=16, policy="whole-batch")(x.cuda())
    # Whole-batch runs a later exit at another batch size (bucket) than per-sample: other kernels.
    assert torch.equal(whole.exit.cpu()[~near], batched.exit.cpu()[~near])
    # Thresholds changed between replays, and many replays.
    engine.set_thresholds([math.inf] * (net.num_exits - 1))
    for _ in range(50):
        assert engine(x[0].cuda()).exit == 0
    assert engine(x.cuda()).exit.tolist() == [0] * 16
    engine.set_thresholds(thresholds)
    assert [engine(s.cuda()).exit for s in x] == got_exit.tolist()


def test_bad_input_on_a_gpu_leaves_the_engine_usable(exported, cuda):
    _, path = exported("b_lenet")
    engine = be.Engine(path, device="cuda", mode="graphs", max_batch=8)
    assert engine.device == torch.device("cuda", torch.cuda.current_device())
    with pytest.raises(ValueError, match=f"input must be on {engine.device} \\(the engine's device\\), got cpu"):
        engine(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="batch 9 is larger than max_batch 8"):
        engine(torch.randn(9, 1, 28, 28, device="cuda"))
    with pytest.raises(TypeError, match="float32"):
        engine(torch.randn(1, 28, 28, device="cuda").half())
    assert engine(torch.randn(1, 28, 28, device="cuda")).exit in (0, 1)


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
@pytest.mark.parametrize("mode", ["eager", "graphs", "conditional"])
def test_non_finite_inputs_are_refused_on_a_gpu(exported, cuda, mode, policy):
    # test_gpu_claims counts the host waits of a checked call in mode conditional: still one.
    _, path = exported("b_lenet")
    engine = be.Engine(path, device="cuda", mode=mode, thresholds=[0.3], max_batch=4, policy=policy)
    refuses_non_finite_inputs_as_the_cpu_engine(engine, path, engine.device)
    unchecked = be.Engine(path, device="cuda", mode=mode, max_batch=4, policy=policy, check_inputs=False)
    assert unchecked(torch.full((1, 28, 28), math.nan, device="cuda")).exit == 1


def test_an_engine_on_a_second_gpu_stays_there(exported, cuda):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    _, path = exported("b_lenet")
    x = torch.randn(4, 1, 28, 28)
    with torch.cuda.device(1):
        engine = be.Engine(path, device="cuda", mode="graphs", thresholds=[0.3], max_batch=4)
    assert engine.device == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="input must be on cuda:1 \\(the engine's device\\), got cuda:0"):
        engine(x.to("cuda:0"))
    with torch.cuda.device(0):  # captures and replays on the engine's GPU whatever is current
        engine.prepare()
        out = engine(x.to("cuda:1"))
        single = engine(x[0].to("cuda:1"))
    assert out.exit.device == engine.device and single.exit == int(out.exit[0])


def captured(engine) -> set:
    """The graphs an engine holds: its keys, and ("whole", n, e) for the whole-batch graphs."""
    keys = set(engine._graphs)
    for key, state in engine._graphs.items():
        if isinstance(key, tuple) and key[0] == "whole":
            keys |= {(*key, e) for e in state["graphs"]}
    return keys


@pytest.mark.parametrize("policy", ["per-sample", "whole-batch"])
@pytest.mark.parametrize("mode", ["graphs", "conditional"])
def test_prepare_captures_every_graph_calls_need_on_a_gpu(exported, cuda, mode, policy):
    net, path = exported("b_alexnet")
    x = torch.randn(16, *SHAPES["b_alexnet"], generator=torch.Generator().manual_seed(11))
    thresholds = median_thresholds(net, x)
    engine = be.Engine(path, device="cuda", mode=mode, thresholds=thresholds, max_batch=16, policy=policy)
    engine.prepare([16, 5])
    before = captured(engine)
    exits = range(net.num_exits)
    if policy == "per-sample":
        buckets = {("bucket", e, b) for e in exits for b in (1, 2, 4, 8, 16)}
        assert {k for k in before if k[0] == "bucket"} == buckets
    else:
        assert {("whole", n, e) for n in (16, 5) for e in exits} <= before
    assert ("segments" in before) == (engine.mode == "graphs")
    exit, prediction, near = reference(net, x, thresholds)
    xc = x.cuda()
    out = engine(xc)
    assert torch.equal(out.exit.cpu()[~near], exit[~near])
    assert torch.equal(out.prediction.cpu()[~near], prediction[~near])
    singles = torch.tensor([engine(s).exit for s in xc])
    assert torch.equal(singles[~near], exit[~near])
    for t in ([math.inf] * (net.num_exits - 1), [0.0] * (net.num_exits - 1), thresholds):
        engine.set_thresholds(t)
        engine(xc)
        engine(xc[:5])
    assert captured(engine) == before  # nothing captured inside a call


def test_a_failed_conditional_capture_falls_back_to_graphs_on_a_gpu(exported, cuda, monkeypatch):
    supported, why = conditional_support()
    if not supported:
        pytest.skip(why)
    net, path = exported("b_alexnet")
    last = net.num_exits - 1
    segment, failed = GpuEngine._segment, []

    def failing(self, e, h):  # fails once, in the innermost IF body
        if e == last and not failed and torch.cuda.is_current_stream_capturing():
            failed.append(e)
            raise RuntimeError("injected capture failure")
        return segment(self, e, h)
    monkeypatch.setattr(GpuEngine, "_segment", failing)
    x = torch.randn(16, *SHAPES["b_alexnet"], generator=torch.Generator().manual_seed(13))
    thresholds = median_thresholds(net, x)
    engine = GpuEngine(path, device="cuda", mode="conditional", thresholds=thresholds, max_batch=16)
    assert failed and engine.mode == "graphs" and "injected capture failure" in engine.fallback_reason
    assert "conditional" not in engine._graphs
    assert not torch.cuda.is_current_stream_capturing()
    exit, prediction, near = reference(net, x, thresholds)
    got = torch.tensor([engine(s.cuda()).exit for s in x])
    assert torch.equal(got[~near], exit[~near])
    assert torch.equal(engine(x.cuda()).exit.cpu()[~near], exit[~near])
