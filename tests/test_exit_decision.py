"""The fused exit-decision ops against the float64 plain-PyTorch reference."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import branchy_engine as be
from branchy_engine.runtime.engine import EngineOutput
from branchy_engine.runtime.reference import exit_decision_maxprob_reference, exit_decision_reference

INF, NAN = float("inf"), float("nan")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
OPS = {
    "entropy": (be.exit_decision, exit_decision_reference),
    "maxprob": (be.exit_decision_maxprob, exit_decision_maxprob_reference),
}
# fp32 accumulation over up to 32000 classes, against a float64 reference.
ATOL = RTOL = 2e-5


@pytest.fixture(params=["cpu-avx2", "cpu-portable", "cuda"])
def backend(request):
    """A device, and on the CPU each instruction set the kernels have."""
    if request.param == "cuda":
        yield request.getfixturevalue("cuda")
        return
    isa = request.param.split("-")[1]
    if be.set_cpu_isa(isa) != isa:
        be.set_cpu_isa("best")
        pytest.skip(f"this CPU lacks {isa}")
    yield "cpu"
    be.set_cpu_isa("best")


def assert_matches_reference(logits, threshold, criterion):
    op, ref = OPS[criterion]
    score, leave, pred = op(logits, threshold)
    want_score, want_leave, want_pred = ref(logits, threshold)
    assert score.dtype == torch.float32 and leave.dtype == torch.bool and pred.dtype == torch.int64
    assert score.shape == leave.shape == pred.shape == (logits.shape[0],)
    assert score.device == logits.device
    torch.testing.assert_close(score, want_score, atol=ATOL, rtol=RTOL, equal_nan=True)
    torch.testing.assert_close(pred, want_pred)
    # Decisions agree except where the score sits within rounding of the threshold.
    t = float(threshold)
    near = (want_score.double() - t).abs() <= ATOL + RTOL * abs(t)
    assert torch.equal(leave[~near], want_leave[~near])
    return score, leave, pred


def spread_logits(rows, classes, dtype, device, seed=0):
    """Rows from near-uniform to near-one-hot, so entropies span the whole range."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1.5, rows)[:, None]
    z = torch.randn(rows, classes, generator=g) * scale
    return z.to(dtype).to(device)


@pytest.mark.parametrize("rows", [0, 1, 2, 7, 64, 1000])
@pytest.mark.parametrize("classes", [1, 2, 10, 100, 1000, 1024, 1025, 32000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(backend, rows, classes, dtype):
    z = spread_logits(rows, classes, dtype, backend, seed=rows * 7 + classes)
    h = exit_decision_reference(z, 0.0)[0]
    # Thresholds at the median entropy and max probability, so about half the rows leave.
    h_t = float(h.median()) if rows else 1.0
    p_t = float(exit_decision_maxprob_reference(z, 0.0)[0].median()) if rows else 0.5
    _, leave, _ = assert_matches_reference(z, h_t, "entropy")
    assert_matches_reference(z, p_t, "maxprob")
    if rows >= 64 and classes > 1:
        assert 0 < int(leave.sum()) < rows


@pytest.mark.parametrize("criterion", list(OPS))
def test_non_contiguous_inputs(backend, criterion):
    base = spread_logits(60, 40, torch.float32, backend)
    views = {
        "transposed": base.t().contiguous().t(),
        "strided columns": base[:, ::3],
        "strided rows": base[::4],
        "broadcast row": base[:1].expand(5, 40),
        "column slice": base[:, 5:17],
    }
    for name, z in views.items():
        assert not z.is_contiguous() or name == "strided rows"
        want = OPS[criterion][0](z.contiguous(), 0.5)
        got = assert_matches_reference(z, 0.5, criterion)
        for a, b in zip(got, want):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("criterion", list(OPS))
def test_extreme_logits(backend, dtype, criterion):
    rows = [
        [1e4, -1e4, 0.0, 3.0],
        [-1e4, -9e3, -1e4, -1e4],
        [INF, 1.0, 2.0, 3.0],
        [1.0, INF, 2.0, INF],
        [-INF, -INF, -INF, -INF],
        [-INF, 2.0, -INF, 1.0],
        [1.0, NAN, 2.0, 3.0],
        [INF, NAN, -INF, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [5.0, 1.0, 5.0, -2.0],
    ]
    z = torch.tensor(rows).to(dtype).to(backend)
    score, leave, pred = assert_matches_reference(z, 0.7, criterion)
    assert pred.tolist()[:10] == [0, 1, 0, 1, 0, 1, 1, 1, 0, 0]
    assert math.isnan(score[6]) and math.isnan(score[7]) and not leave[6] and not leave[7]
    if criterion == "entropy":
        assert score[2] == 0 and leave[2]  # one +inf: certain
        assert score[3] == pytest.approx(math.log(2)) and leave[3]  # two +inf: uniform over them
        assert score[4] == pytest.approx(math.log(4)) and not leave[4]  # all -inf: uniform


@pytest.mark.parametrize("criterion", list(OPS))
def test_entropy_exactly_at_the_threshold(backend, criterion):
    op = OPS[criterion][0]
    z = spread_logits(50, 10, torch.float32, backend, seed=3)
    score = op(z, 0.0)[0].cpu()
    for i in range(50):
        at = float(score[i])
        above = float(np.nextafter(np.float32(at), np.float32(INF)))
        row = z[i:i + 1]
        if criterion == "entropy":  # strict: H < T
            assert not op(row, at)[1].item() and op(row, above)[1].item()
        else:  # inclusive: p >= T
            assert op(row, at)[1].item() and not op(row, above)[1].item()
    # Exactly representable entropies: one class (0), two equal +inf (float32 ln 2).
    one = torch.zeros(1, 1, device=backend)
    two_inf = torch.tensor([[INF, 0.0, INF]], device=backend)
    if criterion == "entropy":
        assert not be.exit_decision(one, 0.0)[1].item()
        assert be.exit_decision(one, 1e-45)[1].item()
        ln2 = float(np.float32(math.log(2)))
        assert not be.exit_decision(two_inf, ln2)[1].item()
        assert be.exit_decision(two_inf, float(np.nextafter(np.float32(ln2), np.float32(1))))[1].item()
    else:
        assert be.exit_decision_maxprob(one, 1.0)[1].item()
        assert be.exit_decision_maxprob(two_inf, 0.5)[1].item()
        assert not be.exit_decision_maxprob(two_inf, float(np.nextafter(np.float32(0.5), np.float32(1))))[1].item()


_special = st.sampled_from([INF, -INF, NAN, 0.0, -0.0, 1e4, -1e4, 3e38, -3e38])
_logit = st.one_of(st.floats(-1e4, 1e4, width=32), st.floats(-50, 50, width=32), _special)


@settings(max_examples=300, deadline=None)
@given(z=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                    elements=_logit),
       threshold=st.floats(0, 5), criterion=st.sampled_from(list(OPS)),
       isa=st.sampled_from(["portable", "best"]))
def test_property_matches_reference(z, threshold, criterion, isa):
    be.set_cpu_isa(isa)
    try:
        assert_matches_reference(torch.from_numpy(z), threshold, criterion)
    finally:
        be.set_cpu_isa("best")


@pytest.mark.parametrize("criterion", list(OPS))
def test_tensor_threshold_equals_float_threshold(backend, criterion):
    op = OPS[criterion][0]
    z = spread_logits(100, 10, torch.float32, backend)
    want = op(z, 0.4)
    for t in (torch.tensor(0.4), torch.tensor([0.4]), torch.tensor([[0.4]]), torch.tensor(0.4).double()):
        got = op(z, t.to(backend))
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_tensor_threshold_is_never_read_back_to_the_host(device):
    """torch.ops resolves a tensor threshold to the .tensor overload, not to float via .item()."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls.append(str(func))
            return func(*args, **(kwargs or {}))

    z = spread_logits(8, 10, torch.float32, device)
    t = torch.tensor([0.5], device=device)
    with Record() as record:
        torch.ops.branchy_engine.exit_decision(z, t)
        torch.ops.branchy_engine.exit_decision_maxprob(z, t)
        torch.ops.branchy_engine.exit_decision(z, 0.5)
    assert record.calls == ["branchy_engine.exit_decision.tensor",
                            "branchy_engine.exit_decision_maxprob.tensor",
                            "branchy_engine.exit_decision.default"]


def test_torch_function_modes_see_the_op():
    """The direct C entry steps aside for __torch_function__ (modes, subclasses) to torch.ops."""
    from torch.overrides import TorchFunctionMode

    class Record(TorchFunctionMode):
        seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    z = spread_logits(4, 10, torch.float32, "cpu")
    with Record() as record:
        be.exit_decision(z, 0.5)
        be.exit_decision_maxprob(z, torch.tensor(0.5))
    assert "branchy_engine.exit_decision.default" in record.seen
    assert "branchy_engine.exit_decision_maxprob.tensor" in record.seen


def test_threshold_of_another_type_is_a_type_error():
    z = spread_logits(4, 10, torch.float32, "cpu")
    with pytest.raises(TypeError, match="threshold must be a float or a one-element tensor, got str"):
        be.exit_decision(z, "0.5")
    with pytest.raises(TypeError, match="exit_decision_maxprob.*got NoneType"):
        be.exit_decision_maxprob(z, None)


def test_outputs_never_require_grad(device):
    z = spread_logits(4, 10, torch.float32, device).requires_grad_()
    for op in (be.exit_decision, be.exit_decision_maxprob):
        assert not any(t.requires_grad for t in op(z, 0.5))


def test_threads_give_the_same_answer():
    z = spread_logits(4096, 1000, torch.float32, "cpu")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = be.exit_decision(z, 3.0)
        torch.set_num_threads(2)
        two = be.exit_decision(z, 3.0)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overload", ["default", "tensor"])
@pytest.mark.parametrize("name", ["exit_decision", "exit_decision_maxprob"])
def test_opcheck(device, name, overload):
    op = getattr(getattr(torch.ops.branchy_engine, name), overload)
    for dtype in DTYPES:
        z = spread_logits(9, 13, dtype, device)
        t = 0.5 if overload == "default" else torch.tensor([0.5], device=device)
        torch.library.opcheck(op, (z, t))


def test_the_decision_is_named_leave_not_exit():
    # The bool mask says whether a row leaves here; `exit` is an engine's index of the exit a
    # sample left at (0-based). One name per concept.
    for name in ("exit_decision", "exit_decision_maxprob"):
        for overload in ("default", "tensor"):
            schema = getattr(getattr(torch.ops.branchy_engine, name), overload)._schema
            assert schema.returns[1].name == "leave", schema
    assert EngineOutput._fields == ("prediction", "exit", "score")


def test_torch_compile_fullgraph(device):
    def f(z, t):
        entropy, leave, pred = be.exit_decision(z * 2.0, 1.0)
        prob, leave_p, _ = be.exit_decision_maxprob(z, t)
        return entropy + 1.0, leave & leave_p, pred, prob

    z = spread_logits(33, 10, torch.float32, device)
    t = torch.tensor([0.3], device=device)
    compiled = torch.compile(f, fullgraph=True)
    for a, b in zip(compiled(z, t), f(z, t)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["exit_decision", "exit_decision_maxprob"])
def test_bad_input_names_the_problem(device, name):
    op = getattr(be, name)
    z = torch.randn(4, 10, device=device)
    cases = [
        (lambda: op(torch.randn(10, device=device), 0.5), "logits must be 2-D"),
        (lambda: op(torch.randn(2, 3, 4, device=device), 0.5), "logits must be 2-D"),
        (lambda: op(torch.randint(0, 9, (4, 10), device=device), 0.5), "float32, float16 or bfloat16"),
        (lambda: op(torch.randn(4, 0, device=device), 0.5), "at least one class"),
        (lambda: op(z, torch.tensor([0.5], device="meta")), "threshold is on meta"),
        (lambda: op(z, torch.tensor([0.5, 0.6], device=device)), "one element"),
        (lambda: op(z, torch.tensor([1], device=device)), "floating-point"),
        (lambda: op(z, NAN), "threshold is NaN"),
        (lambda: op(z, torch.tensor(NAN, device=device)), "threshold is NaN"),
    ]
    if device == "cuda":
        cases.append((lambda: op(z, torch.tensor([0.5])), "threshold is on cpu but logits are on cuda"))
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()


def test_threshold_tensor_changes_between_cuda_graph_replays(cuda):
    z = spread_logits(256, 10, torch.float32, "cuda")
    threshold = torch.tensor([0.0], device="cuda")
    be.exit_decision(z, threshold)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = be.exit_decision(z, threshold)
    for t in (0.5, 1.5, 2.0, INF, 0.0):
        threshold.fill_(t)
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(out, exit_decision_reference(z, t)):
            if a.dtype == torch.float32:
                torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
        assert torch.equal(out[1], be.exit_decision(z, t)[1])


def _import_error(code):
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    return run.stderr


def test_missing_extension_says_how_to_build_it():
    err = _import_error("import sys; sys.modules['branchy_engine._C'] = None; import branchy_engine")
    assert "branchy_engine._C, the compiled part of branchy_engine, could not be loaded" in err
    assert "make test" in err


def test_extension_built_against_another_torch_is_refused():
    err = _import_error("import torch; torch.__version__ = '9.9.9'; import branchy_engine")
    assert f"was built against torch {torch.__version__.split('+')[0]} but torch 9.9.9" in err
