"""The graph format (version 2) end to end: a hand-built graph with every op kind, skip connections
and a stage that passes on two values, written by the Python writer, read by the C++ reader, run by
the CPU engine in every kernel mode and instruction set and by the GPU engine's torch table, all
against the same network written directly in PyTorch. Also: the op registry is the one list of
kinds (docs and the torch table follow it), and the plan reports its memory."""
import math
import os
import re
import struct
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from branchy_engine import Engine
from branchy_engine.export import model_file
from branchy_engine._extension import load
from branchy_engine.profiling import cachesim
from branchy_engine.runtime.gpu.layers import TORCH_OPS, LoadedNet
from branchy_engine.export.model_file import Exit, Graph, Op, Stage, Value

from exported_models import bomb_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT = (4, 9, 9)
CLASSES = 5


def _conv_attrs(cin, cout, k, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1, act=0, lo=0.0, hi=0.0):
    top, left, bottom, right = pads
    return dict(in_channels=cin, out_channels=cout, kernel_h=k, kernel_w=k, stride_h=stride,
                stride_w=stride, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right,
                dilation_h=dilation, dilation_w=dilation, groups=groups, activation=act,
                activation_lo=lo, activation_hi=hi)


class Weights:
    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)

    def __call__(self, *shape, scale=0.3):
        return self.rng.standard_normal(shape) * scale


def every_op_graph(seed=0):
    """(Graph, reference) where reference(x [B, 4, 9, 9] float64) -> [logits exit 0, exit 1] is the
    same network in plain PyTorch."""
    w = Weights(seed)
    x = Value()
    P = {name: w(*shape) for name, shape in {
        "a_w": (8, 4, 3, 3), "a_b": (8,), "b_w": (8, 1, 3, 3), "b_b": (8,), "c_w": (8, 8, 1, 1),
        "c_b": (8,), "h0_w": (5, 6), "h0_b": (5,), "e_s": (8,), "e_t": (8,), "f_w": (8, 8, 3, 3),
        "f_b": (8,), "s1_w": (4, 8, 1, 1), "s1_b": (4,), "s2_w": (8, 4, 1, 1), "s2_b": (8,),
        "n_w": (8,), "n_b": (8,), "h1_w": (5, 24 * 16), "h1_b": (5,), "p_w": (8, 8, 1, 1),
        "p_b": (8,), "q_w": (8, 1, 3, 3), "q_b": (8,)}.items()}
    # Stage 0: conv + relu, a dilated depthwise conv + hardswish, a pointwise conv, a residual add.
    a = Op("conv2d", [x], _conv_attrs(4, 8, 3, pads=(1, 1, 1, 1), act=1), [P["a_w"], P["a_b"]])
    b = Op("conv2d", [a.output], _conv_attrs(8, 8, 3, pads=(2, 2, 2, 2), dilation=2, groups=8, act=3),
           [P["b_w"], P["b_b"]])
    c = Op("conv2d", [b.output], _conv_attrs(8, 8, 1), [P["c_w"], P["c_b"]])
    d = Op("add", [a.output, c.output], dict(activation=1))
    stage0 = Stage([a, b, c, d], [d.output, a.output])  # the skip `a` crosses the cut
    # Exit 0: global average, six of its channels, linear.
    m0 = Op("mean", [d.output])
    s0 = Op("channel_slice", [m0.output], dict(start=2, count=6))
    h0 = Op("linear", [s0.output], dict(in_features=6, out_features=5), [P["h0_w"], P["h0_b"]])
    # Stage 1: BN-like affine + silu, strided conv with asymmetric padding + ReLU6, squeeze-and-
    # excitation (a mul, then two convolutions that scale their input: a pointwise one with a
    # residual, a depthwise one), channel shuffle, layer norm, two GELUs, a max pool of the skip +
    # sigmoid, concat.
    e = Op("channel_affine", [d.output], dict(activation=5), [P["e_s"], P["e_t"]])
    f = Op("conv2d", [e.output], _conv_attrs(8, 8, 3, stride=2, pads=(0, 0, 1, 1), act=2, hi=6.0),
           [P["f_w"], P["f_b"]])
    sq = Op("mean", [f.output])
    s1 = Op("conv2d", [sq.output], _conv_attrs(8, 4, 1, act=1), [P["s1_w"], P["s1_b"]])
    s2 = Op("conv2d", [s1.output], _conv_attrs(4, 8, 1, act=4), [P["s2_w"], P["s2_b"]])
    se = Op("mul", [f.output, s2.output])
    pc = Op("conv2d", [f.output, s2.output, se.output], dict(_conv_attrs(8, 8, 1, act=5), input_scale=1),
            [P["p_w"], P["p_b"]])
    qc = Op("conv2d", [pc.output, s2.output], dict(_conv_attrs(8, 8, 3, pads=(1, 1, 1, 1), groups=8),
                                                   input_scale=1), [P["q_w"], P["q_b"]])
    g = Op("channel_shuffle", [qc.output], dict(groups=2))
    n = Op("layer_norm", [g.output], dict(eps=1e-5), [P["n_w"], P["n_b"]])
    i = Op("activation", [n.output], dict(activation=7))
    j = Op("activation", [n.output], dict(activation=8))
    k = Op("max_pool2d", [a.output], dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=0,
                                           pad_w=0, ceil_mode=0, activation=6))
    cat = Op("concat", [i.output, j.output, k.output])
    stage1 = Stage([e, f, sq, s1, s2, se, pc, qc, g, n, i, j, k, cat], [cat.output])
    fl = Op("flatten", [cat.output])
    h1 = Op("linear", [fl.output], dict(in_features=384, out_features=5), [P["h1_w"], P["h1_b"]])
    graph = Graph(INPUT, CLASSES, "entropy", [0.5], [], x, [stage0, stage1],
                  [Exit(0, d.output, [m0, s0, h0]), Exit(1, cat.output, [fl, h1])])

    def t(name):
        return torch.from_numpy(P[name])

    def reference(x):
        a = F.relu(F.conv2d(x, t("a_w"), t("a_b"), padding=1))
        b = F.hardswish(F.conv2d(a, t("b_w"), t("b_b"), padding=2, dilation=2, groups=8))
        d = F.relu(a + F.conv2d(b, t("c_w"), t("c_b")))
        exit0 = F.linear(d.mean((2, 3))[:, 2:8], t("h0_w"), t("h0_b"))
        e = F.silu(d * t("e_s").view(1, -1, 1, 1) + t("e_t").view(1, -1, 1, 1))
        f = torch.clamp(F.conv2d(F.pad(e, (0, 1, 0, 1)), t("f_w"), t("f_b"), stride=2), 0, 6)
        s = F.hardsigmoid(F.conv2d(F.relu(F.conv2d(f.mean((2, 3), keepdim=True), t("s1_w"), t("s1_b"))),
                                   t("s2_w"), t("s2_b")))
        p = F.silu(F.conv2d(f * s, t("p_w"), t("p_b")) + f * s)
        g = F.conv2d(p * s, t("q_w"), t("q_b"), padding=1, groups=8)
        g = g.view(g.shape[0], 2, 4, 4, 4).transpose(1, 2).reshape(g.shape[0], 8, 4, 4)
        n = F.layer_norm(g.permute(0, 2, 3, 1), (8,), t("n_w"), t("n_b"), 1e-5).permute(0, 3, 1, 2)
        k = torch.sigmoid(F.max_pool2d(a, 3, 2))
        cat = torch.cat([F.gelu(n), F.gelu(n, approximate="tanh"), k], 1)
        exit1 = F.linear(cat.flatten(1), t("h1_w"), t("h1_b"))
        return [exit0, exit1]

    return graph, reference


@pytest.fixture(scope="module")
def every_op(tmp_path_factory):
    graph, reference = every_op_graph()
    path = tmp_path_factory.mktemp("graph") / "every-op.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    return str(path), reference


def _inputs(n, seed=1):
    return torch.from_numpy(np.random.RandomState(seed).standard_normal((n, *INPUT)))


def test_the_graph_uses_every_op_kind(every_op):
    summary = model_file.summary(every_op[0])
    kinds = {op["kind"] for stage in summary["stages"] for op in stage["ops"]}
    kinds |= {op["kind"] for e in summary["exits"] for op in e["head"]}
    assert kinds | {"lrn", "res_block", "avg_pool2d"} == set(model_file.registry())
    assert summary["stages"][0]["outputs"] == [4, 1]  # d, then the skip a
    assert summary["exits"][0]["input"] == 4 and summary["exits"][1]["logits"] == 23
    assert summary["stages"][1]["ops"][-1]["out"] == [24, 4, 4]


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure"])
def test_engine_matches_pytorch_at_every_exit(every_op, kernels, isa):
    path, reference = every_op
    previous = load().cpu_isa()
    try:
        if load().set_cpu_isa(isa) != isa:
            pytest.skip(f"this CPU has no {isa}")
        engine = Engine(path, kernels=kernels)
    finally:
        load().set_cpu_isa(previous)
    x = _inputs(4)
    with torch.no_grad():
        want = reference(x)
    for n in range(x.shape[0]):
        got = engine.all_exit_logits(x[n].float())
        for e, (g, r) in enumerate(zip(got, want)):
            scale = r[n].abs().max().item()
            torch.testing.assert_close(g.double(), r[n], rtol=0, atol=1e-4 * scale + 1e-6,
                                       msg=lambda m: f"exit {e}, sample {n}, {kernels}/{isa}: {m}\n"
                                                     f"{engine.describe()}")


def test_pinned_choices_rebuild_the_same_plan(every_op):
    # Several own kernels run a convolution (NCHW direct, NHWC GEMM, depthwise): "pin:" names the
    # very kernel, so the rebuilt plan has the same layers and layout changes, unmeasured.
    measured = Engine(every_op[0])
    pinned = Engine(every_op[0], kernels="pin:" + measured.choices)
    def layers(engine):
        return [re.sub(r"\s+[\d.]+ us$", "", line) for line in engine.describe().splitlines()[:-1]]
    assert pinned.choices == measured.choices and layers(pinned) == layers(measured)
    assert any(c in measured.choices for c in "123456789d")  # not only first-listed kernels


def test_every_own_kernel_of_every_op_matches_pytorch(every_op):
    # One digit for every op pins each op's n-th own kernel where it has one (the first otherwise):
    # digits 0 to 3 run every own convolution kernel, the Winograd 3x3 among them, on this graph.
    path, reference = every_op
    x = _inputs(2)
    with torch.no_grad():
        want = reference(x)
    ops = len(Engine(path, kernels="own").choices)
    described = ""
    for digit in "0123":
        engine = Engine(path, kernels="pin:" + digit * ops)
        described += engine.describe()
        for n in range(x.shape[0]):
            for e, (g, r) in enumerate(zip(engine.all_exit_logits(x[n].float()), want)):
                scale = r[n].abs().max().item()
                torch.testing.assert_close(g.double(), r[n], rtol=0, atol=1e-4 * scale + 1e-6,
                                           msg=lambda m: f"pin {digit}, exit {e}, sample {n}: {m}\n"
                                                         f"{engine.describe()}")
    for kernel in ("implicit GEMM", "direct, NCHW", "depthwise, NHWC", "winograd", "pointwise",
                   "planar GEMM"):
        assert kernel in described, kernel


def test_a_batch_leaves_per_sample_as_one_by_one(every_op):
    path, reference = every_op
    x = _inputs(16, seed=2).float()
    with torch.no_grad():
        logits0 = reference(x.double())[0]
    entropy = -(logits0.softmax(1) * logits0.log_softmax(1)).sum(1)
    threshold = float(entropy.median())  # about half leave at exit 0
    engine = Engine(path, thresholds=[threshold], max_batch=5)  # chunks of 5: 5, 5, 5, 1
    batch = engine(x)
    for n in range(x.shape[0]):
        one = engine(x[n])
        assert (one.prediction, one.exit) == (int(batch.prediction[n]), int(batch.exit[n]))
        assert one.score == pytest.approx(float(batch.score[n]), rel=1e-6)
        if abs(entropy[n].item() - threshold) > 1e-4:
            assert one.exit == int(entropy[n].item() >= threshold)
    assert 0 < int(batch.exit.sum()) < x.shape[0]


def test_the_gpu_engines_torch_table_runs_the_graph(every_op):
    path, reference = every_op
    net = LoadedNet(load().load_model_ops(path)).double().eval()
    x = _inputs(3)
    with torch.no_grad():
        for got, want in zip(net(x), reference(x)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_registry_is_the_one_list_of_kinds():
    kinds = model_file.registry()
    assert set(TORCH_OPS) == set(kinds)
    assert sorted(d["code"] for d in kinds.values()) == list(range(1, len(kinds) + 1))
    doc = open(os.path.join(ROOT, "docs", "model-format.md")).read()
    table = re.search(r"<!-- op table begin -->\n(.*)\n<!-- op table end -->", doc, re.S).group(1)
    assert table == model_file.op_table(), \
        "docs/model-format.md's op table is stale: python -m branchy_engine.export.model_file --op-table"


def test_writer_refuses_unknown_kinds_and_attributes():
    x = Value()
    for op, message in [(Op("softmax", [x]), "op kind 'softmax' is not in the runtime's registry"),
                        (Op("mean", [x], dict(axis=1)), "mean has no attributes ['axis']"),
                        (Op("channel_shuffle", [x]), "channel_shuffle needs attributes ['groups']"),
                        (Op("linear", [x], dict(in_features=1, out_features=1)), "linear takes 2 tensors")]:
        graph = Graph((1, 1, 1), 1, "entropy", [], [], x, [Stage([op], [op.output])],
                      [Exit(0, op.output, [])])
        with pytest.raises(ValueError, match=re.escape(message)):
            model_file.serialize(graph, "{}")


@pytest.mark.parametrize("inputs, input_scale, message", [
    ("xs", 1, r"op 1 \(conv2d\): the input scale \(input 1\) is \[2, 3, 3\], expected \[2, 1, 1\]"),
    ("x", 1, r"op 1 \(conv2d\): input_scale is 1 but there is no input 1 \(the scale\)"),
    ("xxx", 0, r"op 1 \(conv2d\): 3 inputs without input_scale"),
    ("x", 2, r"op 1 \(conv2d\): input_scale is 2, expected 0 or 1"),
])
def test_the_reader_checks_a_convolutions_input_scale(tmp_path, inputs, input_scale, message):
    x = Value()
    s = Op("conv2d", [x], _conv_attrs(2, 2, 1), [np.ones((2, 2, 1, 1)), np.zeros(2)])  # [2, 3, 3]
    ins = {"x": x, "s": s.output}
    c = Op("conv2d", [ins[k] for k in inputs], dict(_conv_attrs(2, 2, 1), input_scale=input_scale),
           [np.ones((2, 2, 1, 1)), np.zeros(2)])
    m = Op("mean", [c.output])
    graph = Graph((2, 3, 3), 2, "entropy", [], [], x, [Stage([s, c], [c.output])], [Exit(0, c.output, [m])])
    path = tmp_path / "scaled.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    with pytest.raises(load().ModelError, match=message):
        Engine(str(path))


def test_equal_tensors_are_stored_once(tmp_path):
    x = Value()
    w, b = np.ones((2, 2, 1, 1)), np.zeros(2)
    a = Op("conv2d", [x], _conv_attrs(2, 2, 1), [w, b])
    c = Op("conv2d", [a.output], _conv_attrs(2, 2, 1), [w.copy(), b])
    graph = Graph((2, 1, 1), 2, "entropy", [], [], x, [Stage([a, c], [c.output])], [Exit(0, c.output, [])])
    path = tmp_path / "shared.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    s = model_file.summary(path)
    assert s["tensors"] == [4, 2] and s["weights"] == 6
    assert [op["tensor_ids"] for op in s["stages"][0]["ops"]] == [[0, 1], [0, 1]]


def test_the_plan_reports_its_memory(every_op):
    engine = Engine(every_op[0], kernels="own")
    f = engine.footprint()
    assert f["weight_bytes"] == model_file.summary(every_op[0])["weights"] * 4
    # Values are placed 64-byte aligned: [8, 9, 9] takes 656 floats. The own kernels are NHWC
    # (stage 1's max pool of the skip a too), so stage 0's first conv reads the NCHW input with
    # the planar kernel (no reorder) and a is NHWC; the arena's widest moment is the pointwise
    # conv, reading b and writing c (a and d are in the out slot); stage 1 peaks no higher, its
    # values reusing the space as they die.
    first = engine.describe().splitlines()[0]
    assert first.startswith("stage 1: conv2d 4->8") and "planar GEMM, NCHW->NHWC" in first, first
    assert f["arena_bytes"] == 2 * 656 * 4
    # A slot holds what stage 0 passes on: d and a.
    assert f["slot_bytes"] == 2 * 656 * 4
    assert engine.describe().rstrip().splitlines()[-1].startswith("memory: weights")


def test_a_graph_with_many_live_values_plans_and_matches(tmp_path):
    # 40 branches alive at once until a concat reads them all: past the layout programme's
    # state limit, the plan places layouts greedily; the answer is the same.
    w = Weights(3)
    x = Value()
    branches = [Op("conv2d", [x], _conv_attrs(2, 2, 3, pads=(1, 1, 1, 1), act=1), [w(2, 2, 3, 3), w(2)])
                for _ in range(40)]
    cat = Op("concat", [b.output for b in branches])
    mean = Op("mean", [cat.output])
    graph = Graph((2, 5, 5), 80, "entropy", [], [], x, [Stage(branches + [cat, mean], [mean.output])],
                  [Exit(0, mean.output, [])])
    path = tmp_path / "wide.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    sample = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    want = torch.cat([F.relu(F.conv2d(sample, torch.from_numpy(b.tensors[0]), torch.from_numpy(b.tensors[1]),
                                      padding=1)) for b in branches], 1).mean((2, 3))[0]
    for kernels in ("own", "dnnl", "measure"):
        got = Engine(str(path), kernels=kernels).all_exit_logits(sample[0].float())[0]
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_a_file_with_too_many_ops_is_refused(tmp_path):
    x = Value()
    ops, v = [], x
    for _ in range(16385):
        ops.append(Op("activation", [v], dict(activation=1)))
        v = ops[-1].output
    graph = Graph((1, 1, 1), 1, "entropy", [], [], x, [Stage(ops, [v])], [Exit(0, v, [])])
    path = tmp_path / "long.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    with pytest.raises(ValueError, match="num_ops is 16385; this reader takes at most 16384 ops"):
        model_file.summary(path)


@pytest.mark.parametrize("value, name", [(float("nan"), "NaN"), (float("inf"), r"\+inf"), (float("-inf"), "-inf")])
def test_a_file_with_a_non_finite_weight_is_refused(tmp_path, value, name):
    # Weights must be finite at load: the reader names the tensor and the element.
    x = Value()
    weight = np.ones((2, 3))
    weight[1, 2] = value
    op = Op("linear", [x], dict(in_features=3, out_features=2), [weight, np.zeros(2)])
    graph = Graph((3, 1, 1), 2, "entropy", [], [], x, [Stage([op], [op.output])], [Exit(0, op.output, [])])
    path = tmp_path / "bad.branchy"
    path.write_bytes(model_file.serialize(graph, "{}", check_finite=False))  # the writer refuses it
    with pytest.raises(ValueError, match=f"tensor 0: holds {name} at element 5 \\(weights must be finite\\)"):
        Engine(str(path))


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure", "pin:1", "pin:2", "pin:3"])
def test_nan_travels_as_in_pytorch_through_every_kernel(every_op, kernels, isa):
    # With the input check off, one NaN pixel: PyTorch carries NaN through every op (ReLU, max
    # pool, clamp, the means), so every exit's logits are NaN where PyTorch's are. A kernel that
    # drops NaN (max(NaN, 0) = 0 on SIMD) would give a finite, plausible answer instead, one that
    # depends on which kernel ran.
    path, reference = every_op
    previous = load().cpu_isa()
    try:
        if load().set_cpu_isa(isa) != isa:
            pytest.skip(f"this CPU has no {isa}")
        if kernels.startswith("pin:"):
            ops = len(Engine(path, kernels="own").choices)
            kernels = "pin:" + kernels[4:] * ops
        engine = Engine(path, kernels=kernels, check_inputs=False)
    finally:
        load().set_cpu_isa(previous)
    x = _inputs(1)
    x[0, 1, 4, 4] = float("nan")
    with torch.no_grad():
        want = reference(x)
    got = engine.all_exit_logits(x[0].float())
    for e, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(torch.isnan(g), torch.isnan(w[0])), (
            f"exit {e}, {kernels}/{isa}: NaN at {torch.isnan(g).tolist()}, PyTorch "
            f"{torch.isnan(w[0]).tolist()}\n{engine.describe()}")
    result = engine(x[0].float())
    assert math.isnan(result.score) and result.exit == 1  # NaN leaves at the last exit


@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure", "pin:00", "pin:10"])
def test_max_pools_keep_nan_in_every_kernel_mode(tmp_path, kernels):
    # oneDNN's max pooling dropped a NaN among numbers and gave -3.4e38 for a window of NaN only;
    # the plan could pick it in "dnnl" and "measure" modes. A max pool's every kernel (own NCHW,
    # own NHWC: pin digits 0 and 1, the mean's after) now gives PyTorch's answer, NaN where PyTorch has NaN.
    x = Value()
    pool = Op("max_pool2d", [x], dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=1, pad_w=1,
                                      ceil_mode=0, activation=0))
    mean = Op("mean", [pool.output])
    graph = Graph((20, 12, 12), 20, "entropy", [], [], x, [Stage([pool], [pool.output])],
                  [Exit(0, pool.output, [mean])])
    path = tmp_path / "pool.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    sample = torch.randn(20, 12, 12)
    sample[3, 5, 7] = float("nan")            # a NaN among numbers
    sample[17, 0:2, 0:2] = float("nan")       # window (0, 0) of channel 17: NaN only (padding aside)
    engine = Engine(str(path), kernels=kernels, check_inputs=False)
    assert "oneDNN" not in engine.describe()
    got = engine.all_exit_logits(sample)[0]
    want = F.max_pool2d(sample[None], 3, 2, 1).mean((2, 3))[0]
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(want).sum() == 2
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure"])
def test_lrn_matches_pytorch_for_odd_and_even_sizes(tmp_path, size, kernels):
    # oneDNN's window sits one channel off PyTorch's for even sizes (0.61628 vs 0.60264 at size
    # 4): the plan never gives it those, so every kernel mode answers as PyTorch does.
    x = Value()
    lrn = Op("lrn", [x], dict(size=size, alpha=0.5, beta=0.75, k=2.0))
    mean = Op("mean", [lrn.output])
    graph = Graph((6, 5, 5), 6, "entropy", [], [], x, [Stage([lrn], [lrn.output])], [Exit(0, lrn.output, [mean])])
    path = tmp_path / "lrn.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    sample = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(size)) * 3
    want = F.local_response_norm(sample.double(), size, alpha=0.5, beta=0.75, k=2.0).mean((2, 3))[0]
    engine = Engine(str(path), kernels=kernels)
    got = engine.all_exit_logits(sample[0])[0]
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6, msg=lambda m: f"{m}\n{engine.describe()}")
    if kernels == "dnnl" and size % 2 == 0:
        assert "oneDNN" not in engine.describe().splitlines()[0]


@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure"])
def test_verify_passes_every_chosen_kernel_of_every_op_kind(every_op, tmp_path, kernels):
    # verify=True runs each chosen kernel against its op's reference at build: the every-op graph,
    # then the kinds it lacks (LRN: B-AlexNet's sizes; res_block; avg pool) from the paper's nets.
    engine = Engine(every_op[0], kernels=kernels, verify=True)
    assert engine.describe()
    from branchy_engine import models
    from branchy_engine.export import write_model
    for name, shape in (("b_alexnet", (3, 32, 32)), ("b_resnet110", (3, 32, 32))):
        path = tmp_path / f"{name}.branchy"
        net = models.create(name).eval()
        write_model(net, path, shape, thresholds=[0.5] * (net.num_exits - 1))
        Engine(str(path), kernels=kernels, verify=True)
    avg = Value()
    pool = Op("avg_pool2d", [avg], dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=1, pad_w=1,
                                        ceil_mode=1))
    mean = Op("mean", [pool.output])
    graph = Graph((3, 9, 9), 3, "entropy", [], [], avg, [Stage([pool], [pool.output])], [Exit(0, pool.output, [mean])])
    (tmp_path / "avg.branchy").write_bytes(model_file.serialize(graph, "{}"))
    Engine(str(tmp_path / "avg.branchy"), kernels=kernels, verify=True)


@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure", "pin:" + "0" * 6, "pin:" + "1" * 6])
def test_ops_alike_share_one_layer_and_give_pytorchs_answer(tmp_path, kernels):
    # One weight tensor used by four convolutions (two of them between others): ops alike share
    # their kernel, packed once, and each still reads and writes its own values.
    w = Weights(11)
    shared, other = [w(8, 8, 3, 3), w(8)], [w(8, 8, 3, 3), w(8)]
    x = Value()
    ops, v = [], x
    for weights in (shared, shared, other, shared, shared):
        ops.append(Op("conv2d", [v], _conv_attrs(8, 8, 3, pads=(1, 1, 1, 1), act=1), weights))
        v = ops[-1].output
    mean = Op("mean", [v])
    graph = Graph((8, 6, 6), 8, "entropy", [], [], x, [Stage(ops + [mean], [mean.output])],
                  [Exit(0, mean.output, [])])
    path = tmp_path / "alike.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    engine = Engine(str(path), kernels=kernels)
    sample = torch.randn(8, 6, 6, dtype=torch.float64)
    want = sample[None]
    for weights in (shared, shared, other, shared, shared):
        want = F.relu(F.conv2d(want, torch.from_numpy(weights[0]), torch.from_numpy(weights[1]), padding=1))
    got = engine.all_exit_logits(sample.float())[0]
    torch.testing.assert_close(got.double(), want.mean((2, 3))[0], rtol=1e-5, atol=1e-5)
    # Two layers' packings (shared and other), not five: as much as a model of one of each
    # pinned to the same kernels.
    c = engine.choices
    assert c[0] == c[1] == c[3] == c[4]
    pair = [Op("conv2d", [x], _conv_attrs(8, 8, 3, pads=(1, 1, 1, 1), act=1), shared)]
    pair.append(Op("conv2d", [pair[0].output], _conv_attrs(8, 8, 3, pads=(1, 1, 1, 1), act=1), other))
    pair.append(Op("mean", [pair[1].output]))
    graph = Graph((8, 6, 6), 8, "entropy", [], [], x, [Stage(pair, [pair[2].output])],
                  [Exit(0, pair[2].output, [])])
    (tmp_path / "pair.branchy").write_bytes(model_file.serialize(graph, "{}"))
    two = Engine(str(tmp_path / "pair.branchy"), kernels="pin:" + c[0] + c[2] + c[5])
    assert engine.footprint()["packed_bytes"] == two.footprint()["packed_bytes"]
    assert engine.footprint()["scratch_bytes"] == two.footprint()["scratch_bytes"]


def test_resource_bombs_are_refused_before_anything_is_allocated_or_timed(tmp_path):
    import time
    # A few hundred bytes declaring a 1 x 46340 x 46340 input: 8 GiB a value (the review's file
    # asked for about 1 TiB through the contexts and was OOM-killed).
    huge, size = bomb_model(tmp_path, "huge", (1, 46340, 46340), lambda x: [])
    assert size < 1000
    def refused(path, match, **limits):  # within a second: before any allocation or timing
        start = time.perf_counter()
        with pytest.raises(ValueError, match=match):
            Engine(path, **limits)
        assert time.perf_counter() - start < 1.0

    refused(huge, r"the model needs about 8 GiB \(activations 8 GiB, weights 0 GiB as loaded and 0 GiB as "
                  r"packed\), over the limit of 4 GiB \(max_memory\)")
    # A weightless max pool over 1500 x 1500 windows of a 3000 x 3000 input: its timing at plan
    # time took hours.
    pool = lambda x: [Op("max_pool2d", [x], dict(kernel_h=1500, kernel_w=1500, stride_h=1, stride_w=1,
                                                  pad_h=0, pad_w=0, ceil_mode=0))]
    slow, size = bomb_model(tmp_path, "slow", (2, 3000, 3000), pool)
    assert size < 1000
    refused(slow, r"a sample costs about 2.03e\+04 GFLOP, over the limit of 1e\+03 GFLOP \(max_flops\)")
    # 3,000 convolutions sharing one 0.6 MB weight tensor: each op packed its own copy (1.65 GiB
    # from a 0.6 MB file) and kept its own scratch. Ops alike now share one layer: one packing,
    # one state per context; the plan is made at once, in every kernel mode.
    w = Weights(5)
    shared = [w(128, 128, 3, 3), w(128)]
    def convs(x):
        ops, v = [], x
        for _ in range(3000):
            ops.append(Op("conv2d", [v], _conv_attrs(128, 128, 3, pads=(1, 1, 1, 1)), shared))
            v = ops[-1].output
        return ops
    chain, size = bomb_model(tmp_path, "shared", (128, 4, 4), convs)
    assert size < 2_000_000
    for kernels in ("own", "dnnl", "measure"):
        start = time.perf_counter()
        f = Engine(chain, kernels=kernels, max_memory=64 << 20).footprint()
        assert time.perf_counter() - start < 2.0
        assert f["packed_bytes"] <= 4 * f["weight_bytes"] and f["scratch_bytes"] < f["weight_bytes"], f

    # The limits are the caller's: a small model passes the defaults and fails tighter ones.
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    Engine(small)
    with pytest.raises(ValueError, match=r"small.branchy is \d+ bytes, over the limit of 100 bytes \(max_memory\)"):
        Engine(small, max_memory=100)
    with pytest.raises(ValueError, match=r"the model needs about .* GiB .*, over the limit of .* GiB \(max_memory\)"):
        Engine(small, max_memory=300)  # the file (200 bytes) fits, what the plan needs (520) does not
    # What the plan holds and a context needs (two slots of the input: 1 KiB), checked once the
    # plan is made, before any context: over a limit the estimate (520 bytes) passed.
    with pytest.raises(ValueError, match=r"the plan needs about [\d.e-]+ GiB \(weights, packed weights, and a "
                                         r"context's activations and scratch\), over the limit of [\d.e-]+ GiB"):
        Engine(small, max_memory=600)
    # Files refused before they are read: not a regular file (reading /dev/zero ran out of
    # memory), and a (sparse) 5 GiB file over the default limit.
    refused("/dev/zero", "model file /dev/zero: not a regular file")
    refused(str(tmp_path), f"model file {re.escape(str(tmp_path))}: not a regular file")
    sparse = tmp_path / "sparse.branchy"
    with open(sparse, "wb") as f:
        f.truncate(5 << 30)
    refused(str(sparse), r"sparse.branchy is 5368709120 bytes, over the limit of 4294967296 bytes \(max_memory\)")
    with pytest.raises(ValueError, match=r"a sample costs about 2.56e-07 GFLOP, over the limit of 1e-08 GFLOP "
                                         r"\(max_flops\)"):
        Engine(small, max_flops=10)


@pytest.mark.parametrize("limits", [dict(max_memory=0), dict(max_memory=-1), dict(max_memory=math.nan),
                                    dict(max_flops=0), dict(max_flops=-1e12), dict(max_flops=math.nan)])
def test_a_limit_that_is_not_positive_is_refused(tmp_path, limits):
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    with pytest.raises(ValueError, match=r"^max_memory and max_flops must be > 0, got "):
        Engine(small, **limits)


def test_an_infinite_or_huge_limit_lifts_it(tmp_path):
    # max_memory past int64 (the runtime's byte count) used to fail converting it.
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    Engine(small, max_memory=math.inf, max_flops=math.inf)
    Engine(small, max_memory=1 << 70)


def _run_cli(model, inputs, *options):
    """branchy-run MODEL --raw INPUTS OPTIONS: (exit status, stderr)."""
    run = subprocess.run([cachesim.find_runner(), str(model), "--raw", str(inputs), "--kernels", "own", *options],
                         capture_output=True, text=True, cwd=os.path.dirname(str(inputs)))  # any core file there
    return run.returncode, run.stderr


def _cli_refuses(model, inputs, message, *options):
    """branchy-run exits 1 with "branchy-run: " and the library's message (a regex), as the Python
    engine raises it."""
    code, err = _run_cli(model, inputs, *options)
    assert code == 1 and re.match(f"branchy-run: {message}", err), err


@pytest.fixture
def small_cli(tmp_path):
    """(a model of input [2, 8, 8] and one exit, a raw file of 3 finite samples, the samples)."""
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    x = np.random.RandomState(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    assert _run_cli(small, tmp_path / "x.f32")[0] == 0
    return small, tmp_path / "x.f32", x


def test_branchy_run_limit_flags_name_the_figure(small_cli):
    small, raw, _ = small_cli
    _cli_refuses(small, raw, r"model file \S*small.branchy is 200 bytes, over the limit of 100 bytes \(max_memory\)",
                 "--max-memory", "100")
    _cli_refuses(small, raw, r"the model needs about [\d.e-]+ GiB \(activations [\d.e-]+ GiB, weights 0 GiB as "
                             r"loaded and 0 GiB as packed\), over the limit of [\d.e-]+ GiB \(max_memory\)",
                 "--max-memory", "300")
    _cli_refuses(small, raw, r"the plan needs about [\d.e-]+ GiB \(weights, packed weights, and a context's "
                             r"activations and scratch\), over the limit of [\d.e-]+ GiB \(max_memory\)",
                 "--max-memory", "600")
    _cli_refuses(small, raw, r"a sample costs about 2.56e-07 GFLOP, over the limit of 1e-08 GFLOP \(max_flops\)",
                 "--max-flops", "10")


@pytest.mark.parametrize("flag, value", [("--max-memory", "0"), ("--max-memory", "-5"), ("--max-flops", "nan"),
                                         ("--max-memory", ""), ("--max-flops", "x"), ("--limit", "abc"),
                                         ("--limit", "0"), ("--threads", "1.5"), ("--thresholds", ""),
                                         ("--mean", ""), ("--std", "0")])
def test_branchy_run_refuses_a_bad_value_by_name(small_cli, flag, value):
    # Each was taken silently (0, a negative number or nan meant the default; --limit abc meant 0;
    # --thresholds "" meant the file's) or aborted (an empty value escaped parse()).
    small, raw, _ = small_cli
    code, err = _run_cli(small, raw, flag, value)
    assert code == 2 and err.startswith(f"branchy-run: {flag}"), err


def test_branchy_run_takes_an_infinite_or_huge_limit_as_none(small_cli):
    small, raw, _ = small_cli
    for flag, value in (("--max-memory", "1e30"), ("--max-memory", "inf"), ("--max-flops", "inf")):
        assert _run_cli(small, raw, flag, value)[0] == 0, (flag, value)


def test_branchy_run_refuses_resource_bombs_and_files_that_are_not_models(tmp_path, small_cli):
    # As test_resource_bombs_are_refused_before_anything_is_allocated_or_timed, through the
    # runner, which builds the plan before it reads any input: a 46340 x 46340 input is refused
    # whatever the input file, and an input file is read up to the memory limit, not to its end.
    _, raw, _ = small_cli
    huge, _ = bomb_model(tmp_path, "huge", (1, 46340, 46340), lambda x: [])
    _cli_refuses(huge, raw, r"the model needs about 8 GiB \(activations 8 GiB, weights 0 GiB as loaded and 0 GiB "
                            r"as packed\), over the limit of 4 GiB \(max_memory\)")
    small, _ = bomb_model(tmp_path, "small", (2, 8, 8), lambda x: [])
    _cli_refuses(small, "/dev/zero", r"/dev/zero: holds more than 1048576 bytes, over the limit \(--max-memory\)",
                 "--max-memory", str(1 << 20))
    pool = lambda v: [Op("max_pool2d", [v], dict(kernel_h=1500, kernel_w=1500, stride_h=1, stride_w=1,
                                                  pad_h=0, pad_w=0, ceil_mode=0))]
    slow, _ = bomb_model(tmp_path, "slow", (2, 3000, 3000), pool)
    zeros = tmp_path / "zeros.f32"
    with open(zeros, "wb") as f:
        f.truncate(2 * 3000 * 3000 * 4)  # one sample of zeros, sparse
    _cli_refuses(slow, zeros, r"a sample costs about 2.03e\+04 GFLOP, over the limit of 1e\+03 GFLOP \(max_flops\)")
    w = Weights(5)
    shared = [w(128, 128, 3, 3), w(128)]

    def convs(v):
        ops = []
        for _ in range(3000):
            ops.append(Op("conv2d", [v], _conv_attrs(128, 128, 3, pads=(1, 1, 1, 1)), shared))
            v = ops[-1].output
        return ops
    chain, _ = bomb_model(tmp_path, "shared", (128, 4, 4), convs)
    np.zeros((1, 128, 4, 4), np.float32).tofile(tmp_path / "chain.f32")
    # Ops alike share one layer, packed once: no longer a bomb, it runs within 64 MiB.
    assert _run_cli(chain, tmp_path / "chain.f32", "--max-memory", str(64 << 20))[0] == 0
    sparse = tmp_path / "sparse.branchy"
    with open(sparse, "wb") as f:
        f.truncate(5 << 30)
    _cli_refuses(sparse, raw, r"model file \S*sparse.branchy is 5368709120 bytes, over the limit of 4294967296 "
                              r"bytes \(max_memory\)")
    _cli_refuses("/dev/zero", raw, "model file /dev/zero: not a regular file")
    _cli_refuses(tmp_path, raw, f"model file {re.escape(str(tmp_path))}: not a regular file")
    # A non-finite weight: a file the Python writer refuses to write.
    v = Value()
    weight = np.ones((2, 128))
    weight[1, 3] = math.inf
    flat = Op("flatten", [v])
    linear = Op("linear", [flat.output], dict(in_features=128, out_features=2), [weight, np.zeros(2)])
    graph = Graph((2, 8, 8), 2, "entropy", [], [], v, [Stage([flat, linear], [linear.output])],
                  [Exit(0, linear.output, [])])
    bad = tmp_path / "inf.branchy"
    bad.write_bytes(model_file.serialize(graph, "{}", check_finite=False))
    _cli_refuses(bad, raw, r"model file \S*inf.branchy: tensor 0: holds \+inf at element 131 "
                           r"\(weights must be finite\)")


@pytest.mark.parametrize("value, name", [(math.nan, "NaN"), (math.inf, r"\+inf"), (-math.inf, "-inf")])
def test_branchy_run_refuses_non_finite_inputs_by_sample_and_element(tmp_path, small_cli, value, name):
    # Every sample is scanned before the first runs, so the error names the sample.
    small, _, x = small_cli
    x[1, 0, 0, 2] = value
    x.tofile(tmp_path / "bad.f32")
    _cli_refuses(small, tmp_path / "bad.f32", f"input sample 1 contains {name} at element 2 ")
    x[1:2].tofile(tmp_path / "one.f32")
    _cli_refuses(small, tmp_path / "one.f32", f"input contains {name} at element 2 ")
    assert _run_cli(small, tmp_path / "bad.f32", "--no-input-check")[0] == 0


def test_branchy_run_refuses_wrong_thresholds_and_inputs_of_another_shape(tmp_path, small_cli):
    small, raw, _ = small_cli
    v = Value()
    first = Op("activation", [v], dict(activation=1))
    second = Op("activation", [first.output], dict(activation=1))
    heads = [Op("mean", [first.output]), Op("mean", [second.output])]
    two = tmp_path / "two.branchy"  # two exits
    two.write_bytes(model_file.serialize(Graph(
        (2, 8, 8), 2, "entropy", [0.5], [], v, [Stage([first], [first.output]), Stage([second], [second.output])],
        [Exit(0, first.output, [heads[0]]), Exit(1, second.output, [heads[1]])]), "{}"))
    assert _run_cli(two, raw, "--thresholds", "0.25")[0] == 0
    _cli_refuses(two, raw, r"thresholds: expected 1 \(one per early exit\), got 2", "--thresholds", "0.5,0.5")
    _cli_refuses(two, raw, r"thresholds must be >= 0 and not NaN", "--thresholds", "nan")
    _cli_refuses(small, raw, r"thresholds: expected 0 \(one per early exit\), got 1", "--thresholds", "0.5")
    (tmp_path / "short.f32").write_bytes(raw.read_bytes()[:-4])
    _cli_refuses(small, tmp_path / "short.f32",
                 r"\S*short.f32: 1532 bytes is not a whole number of float32 samples of 128")
    idx = tmp_path / "images.idx"
    idx.write_bytes(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(2 * 28 * 28))  # MNIST-like
    run = subprocess.run([cachesim.find_runner(), str(small), "--idx", str(idx)], capture_output=True, text=True)
    assert run.returncode == 1 and re.match(r"branchy-run: \S*images.idx: images are 28x28 grey, the model "
                                            r"takes \[2, 8, 8\]", run.stderr), run.stderr
