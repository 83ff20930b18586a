"""The compaction ops (compact_survivors, scatter_exits) against their plain-PyTorch references."""
import pytest
import torch

from branchy_engine.runtime.compaction import compact_survivors, scatter_exits
from branchy_engine.runtime.reference import compact_survivors_reference, scatter_exits_reference

SENTINEL = -7.5
MASKS = ["all", "none", "mixed"]


def make_leave(kind, b, g):
    if kind == "all":
        return torch.ones(b, dtype=torch.bool)
    if kind == "none":
        return torch.zeros(b, dtype=torch.bool)
    return torch.rand(b, generator=g) < 0.5


def bucket(b, features, capacity, n, mask, device, seed=0):
    """A stage's bucket: (leave, count, rows, activations) and next buffers full of sentinels."""
    g = torch.Generator().manual_seed(seed)
    args = (make_leave(mask, b, g), torch.tensor([n], dtype=torch.int32), torch.randperm(b, generator=g),
            torch.randn(b, features, generator=g), torch.full((capacity, features), SENTINEL),
            torch.full((capacity,), -3, dtype=torch.int64), torch.tensor([-1], dtype=torch.int32))
    return [t.to(device) for t in args]


def exits(b, batch, n, mask, device, seed=0):
    """(leave, count, rows, prediction, score) for a bucket of b rows out of a batch of `batch`, and
    sentinel-filled outputs (out_prediction, out_exit, out_score)."""
    g = torch.Generator().manual_seed(seed)
    args = (make_leave(mask, b, g), torch.tensor([n], dtype=torch.int32),
            torch.randperm(batch, generator=g)[:b], torch.randint(0, 10, (b,), generator=g),
            torch.rand(b, generator=g))
    outs = (torch.full((batch,), -2, dtype=torch.int64), torch.full((batch,), -1, dtype=torch.int64),
            torch.full((batch,), SENTINEL))
    return [t.to(device) for t in args], [t.to(device) for t in outs]


def assert_compacts_as_reference(args):
    want = compact_survivors_reference(*args)
    compact_survivors(*args)
    for got, expected in zip(args[4:], want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    return want


@pytest.mark.parametrize("b", [0, 1, 2, 7, 64, 1000, 4096])
@pytest.mark.parametrize("features", [1, 3, 4, 784, 1000])
def test_compact_survivors_matches_reference(device, b, features):
    for mask in MASKS:
        for n in sorted({b, b // 2, max(b - 1, 0), 0}):
            args = bucket(b, features, b + 5, n, mask, device, seed=b * 31 + features + n)
            _, _, k = assert_compacts_as_reference(args)
            survivors = int((~args[0][:n]).sum())
            assert int(k) == survivors == int(args[6])
            assert (args[4][survivors:] == SENTINEL).all() and (args[5][survivors:] == -3).all()


def test_padding_rows_never_survive(device):
    leave, count, rows, activations, next_activations, next_rows, next_count = bucket(
        10, 4, 12, 6, "none", device)
    compact_survivors(leave, count, rows, activations, next_activations, next_rows, next_count)
    assert int(next_count) == 6
    assert torch.equal(next_rows[:6], rows[:6]) and (next_rows[6:] == -3).all()
    assert torch.equal(next_activations[:6], activations[:6])


def test_compact_survivors_at_capacity_equal_to_bucket(device):
    assert_compacts_as_reference(bucket(33, 5, 33, 33, "mixed", device))


def test_compact_survivors_keeps_order(device):
    leave = torch.tensor([True, False, False, True, False, True], device=device)
    activations = torch.arange(12.0, device=device).view(6, 2)
    next_activations = torch.zeros(8, 2, device=device)
    next_rows = torch.zeros(8, dtype=torch.int64, device=device)
    next_count = torch.zeros(1, dtype=torch.int32, device=device)
    rows = torch.tensor([50, 40, 30, 20, 10, 0], device=device)
    compact_survivors(leave, torch.tensor([6], dtype=torch.int32, device=device), rows, activations,
                      next_activations, next_rows, next_count)
    assert next_count.tolist() == [3]
    assert next_rows[:3].tolist() == [40, 30, 10]
    assert next_activations[:3].tolist() == [[2, 3], [4, 5], [8, 9]]


@pytest.mark.parametrize("features", [4, 8, 784])
def test_compact_survivors_rows_off_16_byte_alignment(device, features):
    """Views starting one float into their storage: the CUDA kernel copies by float, not float4."""
    args = bucket(50, features, 60, 45, "mixed", device, seed=features)
    for i in (3, 4):
        shifted = torch.empty(args[i].numel() + 1, device=device)[1:].view(args[i].shape)
        args[i] = shifted.copy_(args[i])
    assert_compacts_as_reference(args)


def test_cuda_clamps_count_and_skips_rows_outside_the_batch(cuda):
    """On the device nothing can be reported without a synchronisation (the CPU raises instead)."""
    args = bucket(40, 6, 40, 40, "mixed", cuda)
    for n, like in ((45, 40), (-2, 0)):
        args[1].fill_(n)
        want = compact_survivors_reference(*args[:1], torch.tensor([like], dtype=torch.int32), *args[2:])
        compact_survivors(*args)
        for got, expected in zip(args[4:], want):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    (leave, count, rows, prediction, score), outs = exits(6, 6, 6, "all", cuda)
    rows.copy_(torch.tensor([0, 7, 2, -1, 4, 6]))
    scatter_exits(leave, count, rows, prediction, score, 3, False, *outs)
    assert outs[1].tolist() == [3, -1, 3, -1, 3, -1]


@pytest.mark.parametrize("b", [0, 1, 7, 64, 1000, 4096])
@pytest.mark.parametrize("everyone", [False, True])
def test_scatter_exits_matches_reference(device, b, everyone):
    for mask in MASKS:
        for n in sorted({b, b // 2, 0}):
            args, outs = exits(b, b + 9, n, mask, device, seed=b + n)
            want = scatter_exits_reference(*args, 2, everyone, *outs)
            scatter_exits(*args, 2, everyone, *outs)
            for got, expected in zip(outs, want):
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
            written = int(n) if everyone else int(args[0][:n].sum())
            assert int((outs[1] == 2).sum()) == written


def test_scatter_exits_padding_rows_are_never_written(device):
    args, outs = exits(8, 8, 5, "all", device)
    scatter_exits(*args, 1, True, *outs)
    padding = args[2][5:]
    assert (outs[1][padding] == -1).all() and (outs[2][padding] == SENTINEL).all()
    assert (outs[1][args[2][:5]] == 1).all()


def run_pipeline(x, decide, stages, heads, device):
    """The batch through the stages with the ops, on buckets of the batch's size: the decision of
    row r at exit e is decide[e, r]. Returns (prediction, exit, score, writes per batch row)."""
    batch = x.shape[0]
    out = [torch.full((batch,), -1, dtype=dt, device=device)
           for dt in (torch.int64, torch.int64, torch.float32)]
    writes = torch.zeros(batch, dtype=torch.int64, device=device)
    count = torch.tensor([batch], dtype=torch.int32, device=device)
    rows = torch.arange(batch, device=device)
    activations = x
    for e, (stage, head) in enumerate(zip(stages, heads)):
        activations = torch.tanh(activations @ stage)  # padding rows too: shapes stay fixed
        logits = activations @ head
        score, prediction = logits.max(1)
        leave = decide[e][rows.clamp(0, batch - 1)]
        last = e == len(stages) - 1
        hit = [torch.full((batch,), -1, dtype=torch.int64, device=device),
               torch.full((batch,), -1, dtype=torch.int64, device=device),
               torch.zeros(batch, device=device)]
        scatter_exits(leave, count, rows, prediction, score, e, last, *hit)
        writes += hit[1] == e
        scatter_exits(leave, count, rows, prediction, score, e, last, *out)
        if not last:
            next_activations = torch.full((batch, activations.shape[1]), SENTINEL, device=device)
            next_rows = torch.full((batch,), -3, dtype=torch.int64, device=device)
            next_count = torch.zeros(1, dtype=torch.int32, device=device)
            compact_survivors(leave, count, rows, activations, next_activations, next_rows, next_count)
            activations, rows, count = next_activations, next_rows, next_count
    return (*out, writes)


def test_three_exit_pipeline_equals_per_sample_loop(device):
    g = torch.Generator().manual_seed(5)
    batch, widths = 37, [12, 9, 6, 5]
    x = torch.randn(batch, widths[0], generator=g).to(device)
    stages = [torch.randn(widths[i], widths[i + 1], generator=g).to(device) for i in range(3)]
    heads = [torch.randn(widths[i + 1], 10, generator=g).to(device) for i in range(3)]
    decide = (torch.rand(3, batch, generator=g) < 0.4).to(device)
    prediction, exit, score, writes = run_pipeline(x, decide, stages, heads, device)
    assert writes.tolist() == [1] * batch
    for r in range(batch):
        h = x[r:r + 1]
        for e in range(3):
            h = torch.tanh(h @ stages[e])
            if decide[e, r] or e == 2:
                s, p = (h @ heads[e]).max(1)
                break
        assert int(exit[r]) == e and int(prediction[r]) == int(p)
        torch.testing.assert_close(score[r], s[0])
    assert 0 < int((exit == 0).sum()) < batch and int((exit == 2).sum()) > 0


def test_opcheck(device):
    args = bucket(9, 5, 11, 7, "mixed", device)
    torch.library.opcheck(torch.ops.branchy_engine.compact_survivors.default, args)
    args[3].requires_grad_()
    torch.library.opcheck(torch.ops.branchy_engine.compact_survivors.default, args)
    args, outs = exits(9, 12, 7, "mixed", device)
    for everyone in (False, True):
        torch.library.opcheck(torch.ops.branchy_engine.scatter_exits.default,
                              (*args, 1, everyone, *outs))
    args[4].requires_grad_()
    torch.library.opcheck(torch.ops.branchy_engine.scatter_exits.default, (*args, 1, False, *outs))


def test_torch_compile_fullgraph():
    def stage(leave, count, rows, activations, next_activations, next_rows, next_count,
              prediction, score, out_prediction, out_exit, out_score):
        scatter_exits(leave, count, rows, prediction, score, 0, False, out_prediction, out_exit,
                      out_score)
        compact_survivors(leave, count, rows, activations * 2.0, next_activations, next_rows,
                          next_count)
        return next_activations.sum(1)

    def inputs():
        args = bucket(20, 6, 24, 17, "mixed", "cpu", seed=3)
        (*_, prediction, score), outs = exits(20, 20, 17, "mixed", "cpu", seed=3)
        return args + [prediction, score] + outs

    eager, compiled = inputs(), inputs()
    want = stage(*eager)
    got = torch.compile(stage, fullgraph=True)(*compiled)
    torch.testing.assert_close(got, want)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


def test_outputs_never_require_grad_and_written_grad_tensors_are_refused(device):
    args = bucket(6, 3, 6, 6, "mixed", device)
    args[3].requires_grad_()
    before = args[4]._version
    compact_survivors(*args)
    assert not args[4].requires_grad and args[4]._version > before
    args[4].requires_grad_()
    with pytest.raises(RuntimeError,
                       match="compact_survivors has no gradient, but next_activations requires grad"):
        compact_survivors(*args)
    with torch.no_grad():
        compact_survivors(*args)
    e_args, outs = exits(6, 6, 6, "mixed", device)
    outs[2].requires_grad_()
    with pytest.raises(RuntimeError, match="scatter_exits has no gradient, but out_score requires grad"):
        scatter_exits(*e_args, 0, False, *outs)


def test_compact_survivors_bad_input_names_the_argument(device):
    def call(**change):
        names = ["leave", "count", "rows", "activations", "next_activations", "next_rows", "next_count"]
        args = dict(zip(names, bucket(64, 784, 64, 64, "mixed", device)))
        args.update({k: v(args) if callable(v) else v for k, v in change.items()})
        compact_survivors(**args)

    i32 = dict(dtype=torch.int32, device=device)
    cases = [
        (dict(leave=lambda a: a["leave"].int()), r"leave must be bool \[b\], got int32 \[64\]"),
        (dict(leave=lambda a: a["leave"].view(8, 8)), r"leave must be bool \[b\], got \[8, 8\]"),
        (dict(count=torch.tensor([3], device=device)), r"count must be int32 \[1\], got int64 \[1\]"),
        (dict(count=torch.tensor(3, **i32)), r"count must be int32 \[1\], got \[\]"),
        (dict(rows=lambda a: a["rows"][:10]), r"rows must be int64 \[64\], got \[10\]"),
        (dict(rows=lambda a: a["rows"].float()), r"rows must be int64 \[64\], got float32 \[64\]"),
        (dict(activations=lambda a: a["activations"].double()),
         r"activations must be float32 \[64, F\], got float64 \[64, 784\]"),
        (dict(activations=lambda a: a["activations"].view(64, 28, 28)),
         r"activations must be float32 \[64, F\], got \[64, 28, 28\]"),
        (dict(next_activations=lambda a: a["next_activations"][:32]),
         r"next_activations must be float32 \[c >= 64, 784\], got \[32, 784\]"),
        (dict(next_activations=lambda a: a["next_activations"][:, :780]),
         r"next_activations must be float32 \[c >= 64, 784\], got \[64, 780\]"),
        (dict(next_rows=lambda a: a["next_rows"][:63]),
         r"next_rows must be int64 \[64\] \(c, the rows of next_activations\), got \[63\]"),
        (dict(next_count=torch.zeros(2, **i32)), r"next_count must be int32 \[1\], got \[2\]"),
        (dict(activations=lambda a: a["next_activations"]),
         "next_activations and activations share memory"),
        (dict(next_activations=lambda a: a["activations"]),
         "next_activations and activations share memory"),
        (dict(next_rows=lambda a: a["rows"]), "next_rows and rows share memory"),
        (dict(next_count=lambda a: a["count"]), "next_count and count share memory"),
        (dict(activations=lambda a: torch.randn(784, 64, device=device).t()),
         r"activations must be contiguous \(call .contiguous\(\) on it\), got strides \[1, 64\]"),
        (dict(rows=lambda a: torch.arange(128, device=device)[::2]), "rows must be contiguous"),
    ]
    if device == "cpu":
        cases += [(dict(count=torch.tensor([65], **i32)), r"count\[0\] must be in \[0, 64\].*got 65"),
                  (dict(count=torch.tensor([-1], **i32)), r"count\[0\] must be in \[0, 64\].*got -1")]
    else:
        cases.append((dict(rows=lambda a: a["rows"].cpu()), "rows is on cpu but leave is on cuda:0"))
    for change, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call(**change)


def test_scatter_exits_bad_input_names_the_argument(device):
    def call(everyone=False, **change):
        names = ["leave", "count", "rows", "prediction", "score"]
        args, outs = exits(16, 20, 16, "mixed", device)
        named = dict(zip(names, args), **dict(zip(["out_prediction", "out_exit", "out_score"], outs)))
        named.update({k: v(named) if callable(v) else v for k, v in change.items()})
        scatter_exits(named["leave"], named["count"], named["rows"], named["prediction"], named["score"],
                      1, everyone, named["out_prediction"], named["out_exit"], named["out_score"])

    cases = [
        (dict(prediction=lambda a: a["prediction"].int()),
         r"prediction must be int64 \[16\], got int32 \[16\]"),
        (dict(score=lambda a: a["score"][:4]), r"score must be float32 \[16\], got \[4\]"),
        (dict(rows=lambda a: a["rows"].view(4, 4)), r"rows must be int64 \[16\], got \[4, 4\]"),
        (dict(out_prediction=lambda a: a["out_prediction"].view(4, 5)),
         r"out_prediction must be int64 \[B\], got \[4, 5\]"),
        (dict(out_exit=lambda a: a["out_exit"][:19]),
         r"out_exit must be int64 \[20\] \(B, the rows of out_prediction\), got \[19\]"),
        (dict(out_score=lambda a: a["out_score"].double()),
         r"out_score must be float32 \[20\].*got float64 \[20\]"),
        (dict(out_exit=lambda a: a["out_prediction"]), "out_prediction and out_exit share memory"),
        (dict(score=lambda a: torch.rand(32, device=device)[::2]), "score must be contiguous"),
    ]
    if device == "cpu":
        cases.append((dict(rows=lambda a: torch.arange(16, device=device) + 10),
                      r"rows\[10\] = 20 is outside the batch of out_prediction, \[0, 20\)"))
    else:
        cases.append((dict(score=lambda a: a["score"].cpu()), "score is on cpu but leave is on cuda:0"))
    for change, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call(**change)


def test_cpu_kernel_refuses_tensors_on_another_device():
    """A mix of devices reaches a backend kernel, which names the tensor that is elsewhere (here
    the CPU kernel is called directly: this machine may have no second device)."""
    leave, count, rows, activations, next_activations, next_rows, next_count = bucket(
        4, 2, 4, 4, "mixed", "cpu")
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    with pytest.raises(RuntimeError,
                       match="compact_survivors: next_rows is on meta but leave is on cpu"):
        torch.ops.branchy_engine.compact_survivors.default.redispatch(
            cpu, leave, count, rows, activations, next_activations, next_rows.to("meta"), next_count)
    args, outs = exits(4, 4, 4, "mixed", "cpu")
    with pytest.raises(RuntimeError, match="scatter_exits: count is on meta but leave is on cpu"):
        torch.ops.branchy_engine.scatter_exits.default.redispatch(
            cpu, args[0], args[1].to("meta"), *args[2:], 0, False, *outs)


def test_scatter_exits_bad_row_writes_nothing():
    args, outs = exits(5, 5, 5, "all", "cpu")
    args[2] = torch.tensor([0, 1, 2, 3, 9])
    before = [t.clone() for t in outs]
    with pytest.raises(RuntimeError, match=r"rows\[4\] = 9"):
        scatter_exits(*args, 0, False, *outs)
    assert all(torch.equal(a, b) for a, b in zip(outs, before))


def test_cuda_graph_replays_follow_the_leave_mask_and_count(cuda):
    b, batch, features = 300, 300, 36
    g = torch.Generator().manual_seed(9)
    leave = torch.zeros(b, dtype=torch.bool, device=cuda)
    count = torch.tensor([b], dtype=torch.int32, device=cuda)
    rows = torch.randperm(b, generator=g).to(cuda)
    activations = torch.randn(b, features, generator=g).to(cuda)
    prediction = torch.randint(0, 10, (b,), generator=g).to(cuda)
    score = torch.rand(b, generator=g).to(cuda)
    next_activations = torch.full((b, features), SENTINEL, device=cuda)
    next_rows = torch.full((b,), -3, dtype=torch.int64, device=cuda)
    next_count = torch.zeros(1, dtype=torch.int32, device=cuda)
    outs = [torch.full((batch,), -1, dtype=torch.int64, device=cuda),
            torch.full((batch,), -1, dtype=torch.int64, device=cuda),
            torch.full((batch,), SENTINEL, device=cuda)]

    def step():
        scatter_exits(leave, count, rows, prediction, score, 1, False, *outs)
        compact_survivors(leave, count, rows, activations, next_activations, next_rows, next_count)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for replay, n in enumerate([b, 250, 17, 0, b]):
        for t in [next_activations, outs[2]]:
            t.fill_(SENTINEL)
        next_rows.fill_(-3)
        outs[0].fill_(-1)
        outs[1].fill_(-1)
        leave.copy_(torch.rand(b, generator=g) < 0.3 * replay)
        count.fill_(n)
        want_scatter = scatter_exits_reference(leave, count, rows, prediction, score, 1, False, *outs)
        want_compact = compact_survivors_reference(leave, count, rows, activations, next_activations,
                                                   next_rows, next_count)
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip([*outs, next_activations, next_rows, next_count],
                             [*want_scatter, *want_compact]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
