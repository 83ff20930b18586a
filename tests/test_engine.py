"""The CPU engine against PyTorch: logits at every exit, exit decisions, batches, threads, errors."""
import math
import os
import subprocess
import sys
import threading

import pytest
import torch

import branchy_engine as be
from branchy_engine import _C, models
from branchy_engine.export import write_model
from branchy_engine.profiling import cachesim
from branchy_engine.runtime.reference import exit_decision_maxprob_reference, exit_decision_reference

from tiny_models import INPUT_SHAPE, randomize_batch_norm, tiny_net

SHAPES = {"lenet": (1, 28, 28), "alexnet": (3, 32, 32), "resnet110": (3, 32, 32)}
ZOO = ["lenet", "b_lenet", "alexnet", "b_alexnet", "resnet110", "b_resnet110"]
KERNELS = ["own", "dnnl", "measure"]
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "branchy_engine", "checkpoints")


def input_shape(name):
    return INPUT_SHAPE if name == "tiny" else SHAPES[name.removeprefix("b_")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (network in eval mode, .branchy path), exported once per module."""
    cache = {}

    def get(name, criterion="entropy", thresholds=None):
        key = (name, criterion, tuple(thresholds or ()))
        if key not in cache:
            torch.manual_seed(0)
            net = tiny_net() if name == "tiny" else models.create(name).eval()
            randomize_batch_norm(net)  # so the folded BatchNorm is not the identity
            if thresholds is None:
                thresholds = [0.5] * (net.num_exits - 1)
            path = tmp_path_factory.mktemp("models") / f"{name}-{criterion}.branchy"
            write_model(net, path, input_shape(name), criterion, thresholds)
            cache[key] = (net, str(path))
        return cache[key]
    return get


def dnnl_or_skip(kernels):
    if kernels == "dnnl" and not _C.dnnl_version():
        pytest.skip("built without oneDNN")


def torch_logits(net, x):
    with torch.no_grad():
        return [z for z in net(x)]


def assert_logits_close(got, want):
    """Within 1e-4 relative to the exit's largest logit (the spec's tolerance)."""
    scale = float(want.abs().max()) + 1e-12
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture
def isa(request):
    """Makes request.param the CPU instruction set the engine's own layers are built for."""
    if be.set_cpu_isa(request.param) != request.param and request.param != "best":
        be.set_cpu_isa("best")
        pytest.skip(f"this CPU lacks {request.param}")
    yield request.param
    be.set_cpu_isa("best")


# Every kernel choice on the best instruction set, and the own kernels' lower tiers too.
KERNELS_ISAS = [(k, "best") for k in KERNELS] + [("own", "avx2"), ("own", "portable")]


@pytest.mark.parametrize("kernels,isa", KERNELS_ISAS, indirect=["isa"])
@pytest.mark.parametrize("name", ["tiny"] + ZOO)
def test_logits_match_pytorch_at_every_exit(exported, name, kernels, isa):
    dnnl_or_skip(kernels)
    net, path = exported(name)
    engine = be.Engine(path, kernels=kernels)
    assert engine.num_exits == net.num_exits
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(*input_shape(name), generator=gen)
        got = engine.all_exit_logits(x)
        want = torch_logits(net, x[None])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_logits_close(g, w[0])


def reference_exits(logits, thresholds, criterion):
    """Per sample: the exit the paper's rule picks from PyTorch's logits, its prediction and score,
    and whether any score it met sat within 1e-6 of a threshold (then either exit is right)."""
    ref = exit_decision_reference if criterion == "entropy" else exit_decision_maxprob_reference
    n = logits[0].shape[0]
    exit = torch.full((n,), len(logits) - 1)
    near = torch.zeros(n, dtype=torch.bool)
    decided = torch.zeros(n, dtype=torch.bool)
    scores = [ref(z, 0.0)[0] for z in logits]
    for e, t in enumerate(thresholds):
        leave = (scores[e] < t) if criterion == "entropy" else (scores[e] >= t)
        near |= ~decided & ((scores[e] - t).abs() <= 1e-6)
        exit = torch.where(~decided & leave, e, exit)
        decided |= leave
    rows = torch.arange(n)
    prediction = torch.stack([z.argmax(1) for z in logits], 1)[rows, exit]
    score = torch.stack(scores, 1)[rows, exit]
    return exit, prediction, score, near


@pytest.mark.parametrize("criterion", ["entropy", "maxprob"])
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name", ["tiny", "b_lenet", "b_alexnet", "b_resnet110"])
def test_exit_decisions_match_the_reference(exported, name, kernels, criterion):
    dnnl_or_skip(kernels)
    batch = 4 if name == "b_resnet110" and kernels == "own" else 24
    x = torch.randn(batch, *input_shape(name), generator=torch.Generator().manual_seed(2))
    net, _ = exported(name)
    logits = torch_logits(net, x)
    ref = exit_decision_reference if criterion == "entropy" else exit_decision_maxprob_reference
    # Thresholds at the median score of each early exit, so samples split between exits.
    thresholds = [float(ref(z, 0.0)[0].median()) for z in logits[:-1]]
    _, path = exported(name, criterion, thresholds)
    engine = be.Engine(path, kernels=kernels)
    out = engine(x)
    exit, prediction, score, near = reference_exits(logits, engine.thresholds, criterion)
    assert torch.equal(out.exit[~near], exit[~near])
    assert torch.equal(out.prediction[~near], prediction[~near])
    torch.testing.assert_close(out.score[~near], score[~near], rtol=1e-4, atol=1e-4)
    assert engine.stats()["samples"] == batch


def test_batches_equal_one_sample_at_a_time(exported):
    x = torch.randn(13, *input_shape("b_alexnet"), generator=torch.Generator().manual_seed(3))
    net, _ = exported("b_alexnet")
    # Thresholds between the samples' entropies, so that they leave at different exits.
    thresholds = [float(exit_decision_reference(z, 0.0)[0].quantile(q))
                  for z, q in zip(torch_logits(net, x)[:-1], (0.3, 0.6))]
    _, path = exported("b_alexnet", "entropy", thresholds)
    engine = be.Engine(path, kernels="dnnl" if _C.dnnl_version() else "own", max_batch=5)
    batched = engine(x)  # three chunks of at most 5
    singles = [engine(sample) for sample in x]
    assert len(set(batched.exit.tolist())) > 1, "the test needs mixed exits"
    assert batched.exit.tolist() == [s.exit for s in singles]
    assert batched.prediction.tolist() == [s.prediction for s in singles]
    assert batched.score.tolist() == [s.score for s in singles]  # float32 values, exactly


def test_threshold_overrides(exported):
    _, path = exported("b_resnet110")
    x = torch.randn(6, *input_shape("b_resnet110"))
    kernels = "dnnl" if _C.dnnl_version() else "own"
    everyone_first = be.Engine(path, thresholds=[math.inf, math.inf], kernels=kernels)
    assert everyone_first(x).exit.tolist() == [0] * 6
    assert everyone_first.thresholds == [math.inf, math.inf]
    nobody_early = be.Engine(path, thresholds=[0.0, 0.0], kernels=kernels)
    assert nobody_early(x).exit.tolist() == [2] * 6
    assert nobody_early.stats() == {"samples": 6, "per_exit": [0, 0, 6], "percent": [0.0, 0.0, 100.0]}
    nobody_early.reset_stats()
    assert nobody_early.stats()["samples"] == 0


def test_thresholds_take_one_number_and_refuse_an_empty_list(exported):
    from branchy_engine.export import choose_thresholds
    _, tiny = exported("tiny")  # one early exit: a number will do
    for one in (0.25, torch.tensor(0.25), [0.25]):
        assert be.Engine(tiny, thresholds=one, kernels="own").thresholds == [0.25]
    # An empty list was taken as "the file's" without a word; None says that.
    with pytest.raises(ValueError, match=r"thresholds: expected 1 \(one per early exit\), got none"):
        be.Engine(tiny, thresholds=[], kernels="own")
    with pytest.raises(TypeError, match="thresholds must be numbers, got the string '0.5'"):
        be.Engine(tiny, thresholds="0.5", kernels="own")
    _, b_resnet = exported("b_resnet110")  # two early exits: one number is too few
    with pytest.raises(ValueError, match=r"thresholds: expected 2 \(one per early exit\), got 1"):
        be.Engine(b_resnet, thresholds=0.5, kernels="own")
    _, lenet = exported("lenet")  # a single exit takes none
    assert be.Engine(lenet, thresholds=[], kernels="own").thresholds == []
    # The exporter takes them the same way.
    assert choose_thresholds(None, 2, 0.5) == ("entropy", [0.5], "command line")
    with pytest.raises(ValueError, match="takes 1 thresholds"):
        choose_thresholds(None, 2, [])


def test_a_run_flushes_denormals_and_leaves_the_callers_setting(exported):
    # Each run sets flush-to-zero and denormals-are-zero on the calling thread and restores the
    # caller's: PyTorch's own setting (torch.set_flush_denormal) on this thread survives a call
    # either way, and denormal inputs compute what zeros compute.
    _, path = exported("b_alexnet")
    engine = be.Engine(path, kernels="dnnl" if _C.dnnl_version() else "own")
    zeros = torch.zeros(*input_shape("b_alexnet"))
    denormal = torch.full_like(zeros, 1e-40)
    tiny = torch.tensor([1e-39])
    try:
        for flush in (False, True):
            if not torch.set_flush_denormal(flush):
                pytest.skip("this CPU cannot flush denormals")
            for call in (lambda: engine(zeros), lambda: engine(zeros[None].expand(3, -1, -1, -1)),
                         lambda: engine.all_exit_logits(denormal)):
                call()
                assert bool((tiny * 1.0 == 0).item()) == flush, f"flush {flush} lost in a call"
        torch.set_flush_denormal(False)
        for a, b in zip(engine.all_exit_logits(zeros), engine.all_exit_logits(denormal)):
            assert torch.equal(a, b)
    finally:
        torch.set_flush_denormal(False)


def test_the_engine_leaves_the_callers_thread_count(exported):
    # oneDNN's thread count is OpenMP's, which PyTorch shares: building and running an engine with
    # threads=1 must not change torch.get_num_threads() for the calling thread.
    _, path = exported("b_alexnet")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        engine = be.Engine(path, threads=1, kernels="dnnl" if _C.dnnl_version() else "own")
        assert torch.get_num_threads() == 2
        engine(torch.randn(*input_shape("b_alexnet")))
        engine(torch.randn(3, *input_shape("b_alexnet")))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_four_threads_share_one_engine(exported):
    net, path = exported("b_lenet", "entropy", [0.4])
    engine = be.Engine(path, kernels="own")
    inputs = [torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    serial = [engine(x) for x in inputs]
    results = [None] * 4

    def work(i):
        for _ in range(5):
            results[i] = engine(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(serial, results):
        assert torch.equal(want.exit, got.exit) and torch.equal(want.score, got.score)
    assert engine.stats()["samples"] == 4 * 32 + 4 * 5 * 32


def test_bad_input_names_the_problem(exported, tmp_path):
    _, path = exported("b_lenet")
    engine = be.Engine(path)
    x = torch.randn(1, 28, 28)
    with pytest.raises(ValueError, match=r"input must be \[C, H, W\] = \[1, 28, 28\] or \[B, C, H, W\], got \[1, 27, 28\]"):
        engine(torch.randn(1, 27, 28))
    with pytest.raises(ValueError, match="got \\[28, 28\\]"):
        engine(torch.randn(28, 28))
    with pytest.raises(TypeError, match="input must be float32, got torch.float64"):
        engine(x.double())
    with pytest.raises(TypeError, match="torch.Tensor or numpy array, got list"):
        engine([1.0])
    bad = torch.randn(3, 1, 28, 28)
    bad[2, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="input sample 2 contains NaN at element 145"):
        engine(bad)
    assert engine.stats()["samples"] == 0  # nothing ran
    # Infinities too (inf - inf makes NaN inside), through every entry point; one sample's error
    # names the element, a batch's the sample.
    for value, name in ((float("inf"), r"\+inf"), (float("-inf"), "-inf"), (float("nan"), "NaN")):
        one = x.clone()
        one[0, 27, 3] = value
        for call in (engine, engine.all_exit_logits, lambda s: engine.time_run(s, 0, 1, 1)):
            with pytest.raises(ValueError, match=f"^input contains {name} at element 759 "):
                call(one)
        batch = torch.stack([x, x, one])
        for call in (engine, engine.run_timed):
            with pytest.raises(ValueError, match=f"^input sample 2 contains {name} at element 759"):
                call(batch)
    assert engine.stats()["samples"] == 0
    # The documented opt-out: no scan, the kernels' answer (here, for one NaN pixel, whatever it is).
    unchecked = be.Engine(path, kernels="own", check_inputs=False)
    assert unchecked(bad).exit.shape == (3,)
    assert engine(x.numpy()).exit in (0, 1)  # numpy works, and the engine still does
    one = engine(x)
    assert isinstance(one.prediction, int) and isinstance(one.exit, int) and isinstance(one.score, float)
    with pytest.raises(ValueError, match=r"thresholds: expected 1 \(one per early exit\), got 2"):
        be.Engine(path, thresholds=[0.1, 0.2])
    with pytest.raises(ValueError, match="thresholds must be >= 0 and not NaN"):
        be.Engine(path, thresholds=[float("nan")])
    with pytest.raises(ValueError, match="thresholds must be >= 0 and not NaN"):
        be.Engine(path, thresholds=[-1.0])
    with pytest.raises(ValueError, match="kernels must be one of"):
        be.Engine(path, kernels="fast")
    with pytest.raises(ValueError, match="one choice per op \\(a digit: that own kernel; 'o': any own "
                                         "kernel; 'd': oneDNN\\), got 'pin:ox'"):
        be.Engine(path, kernels="pin:ox")
    with pytest.raises(ValueError, match="'pin:' takes .* choices"):
        be.Engine(path, kernels="pin:o")
    chosen = be.Engine(path, kernels="own").choices
    assert set(chosen) <= set("0123456789") and be.Engine(path, kernels="pin:" + chosen).choices == chosen
    with pytest.raises(ValueError, match="threads must be >= 1"):
        be.Engine(path, threads=0)
    with pytest.raises(ValueError, match="cannot open|No such file|no such"):
        be.Engine(str(tmp_path / "missing.branchy"))
    (tmp_path / "junk.branchy").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="magic"):
        be.Engine(str(tmp_path / "junk.branchy"))


def test_a_context_of_another_engine_and_an_input_on_another_device_are_refused(exported):
    # Engine makes its own contexts; its plan's entry points take one from the caller, and a
    # context sized for another plan would overflow its buffers.
    _, path = exported("b_lenet")
    engine, other = be.Engine(path, kernels="own"), be.Engine(path, kernels="own")
    foreign = other.plan.make_context(4)
    x = torch.randn(1, 28, 28)
    for call in (lambda: engine.plan.all_exit_logits(foreign, x),
                 lambda: engine.plan.run_tensor(foreign, x, engine._counts_address),
                 lambda: engine.plan.run_tensor(foreign, torch.stack([x, x]), engine._counts_address)):
        with pytest.raises(ValueError, match=r"^this Context was made by another Plan; make one with this "
                                             r"plan's make_context\(\)$"):
            call()
    # A tensor off the CPU, without a GPU: the meta device.
    with pytest.raises(ValueError, match="^input must be on the CPU for this engine, got meta$"):
        engine(torch.empty(1, 28, 28, device="meta"))
    assert engine.stats()["samples"] == 0
    assert engine(x).exit in (0, 1)


def test_cuda_input_is_refused_by_the_cpu_engine(exported, cuda):
    _, path = exported("b_lenet")
    with pytest.raises(ValueError, match="must be on the CPU"):
        be.Engine(path)(torch.randn(1, 28, 28, device="cuda"))


def test_plan_describes_every_layer(exported):
    _, path = exported("b_lenet")
    text = be.Engine(path, kernels="own").describe()
    assert "stage 1: conv2d 1->5 k5x5 s1 p3 [own" in text
    assert "exit 2:  linear 84->10 [own" in text
    assert "oneDNN" not in text


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt"))
                    or not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the shipped B-LeNet and the Debian Fashion-MNIST")
def test_shipped_b_lenet_on_real_images(tmp_path):
    """Trained weights, real images: the engine's exits and predictions equal PyTorch's."""
    from branchy_engine import checkpoint
    from branchy_engine import data as datasets
    from branchy_engine.export import export
    ckpt = checkpoint.load(os.path.join(SHIPPED, "b_lenet.pt"))
    net = checkpoint.build_model(ckpt)
    export(os.path.join(SHIPPED, "b_lenet.pt"), tmp_path / "b_lenet.branchy", thresholds=[0.1])
    d = datasets.load("fashion-mnist", limit=500)
    images, _ = d.test.batch(torch.arange(500))
    x = d.prepare(images)
    logits = torch_logits(net, x)
    for kernels in ("own", "measure"):
        engine = be.Engine(str(tmp_path / "b_lenet.branchy"), kernels=kernels)
        out = engine(x)
        exit, prediction, _, near = reference_exits(logits, [0.1], "entropy")
        assert torch.equal(out.exit[~near], exit[~near])
        assert torch.equal(out.prediction[~near], prediction[~near])


def test_run_timed_and_time_run(exported):
    _, path = exported("b_lenet", "entropy", [0.4])
    engine = be.Engine(path, kernels="own")
    x = torch.randn(9, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    prediction, exit, score, micros = engine.run_timed(x)
    batched = engine(x)
    assert torch.equal(prediction, batched.prediction) and torch.equal(exit, batched.exit)
    assert micros.dtype == torch.float64 and micros.shape == (9,) and bool((micros > 0).all())
    rounds = engine.time_run(x[0], warmup=1, rounds=3, calls=2)
    assert len(rounds) == 3 and all(r > 0 for r in rounds)
    with pytest.raises(ValueError, match="run_timed takes a batch"):
        engine.run_timed(x[0])
    with pytest.raises(ValueError, match="time_run takes one sample"):
        engine.time_run(x)


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt")), reason="needs the shipped B-LeNet")
@pytest.mark.parametrize("method, unit", [("engine", "us"), ("flops", "MFLOP")])
def test_costs_command(tmp_path, capsys, method, unit):
    from branchy_engine.calibrate import costs as costs_mod
    from branchy_engine.commands.cli import main as branchy
    out = tmp_path / "costs.json"
    assert branchy(["costs", os.path.join(SHIPPED, "b_lenet.pt"), "--method", method, "-o", str(out)]) == 0
    costs = costs_mod.load(out, "b_lenet", 2)
    assert costs.unit == unit and all(c >= 0 for c in costs.segments) and costs.baseline > 0
    # The early exit is the cheap part: its segment costs less than the whole baseline.
    assert costs.segments[0] < costs.baseline
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt"))
                    or not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the shipped B-LeNet and the Debian Fashion-MNIST")
def test_branchy_run_command(tmp_path, capsys):
    from branchy_engine.commands.cli import main as branchy
    model = str(tmp_path / "b_lenet.branchy")
    assert branchy(["export", os.path.join(SHIPPED, "b_lenet.pt"), "-o", model, "--thresholds", "inf"]) == 0
    capsys.readouterr()
    assert branchy(["run", model, "--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "200 test samples of fashion-mnist" in out
    assert "exits: 1: 200 (100.0%)  2: 0 (0.0%)" in out  # thresholds inf: everyone leaves first
    assert "latency per sample (us, timed in C++): mean" in out
    assert branchy(["run", model, "--data", "fashion-mnist-32x3", "--limit", "5"]) == 2
    # The C++ runner refuses a sample with infinity by number (and skips the scan when told).
    raw = tmp_path / "x.f32"
    x = torch.randn(3, 1, 28, 28)
    x[1, 0, 0, 2] = float("-inf")
    x.numpy().tofile(raw)
    runner = [cachesim.find_runner(), model, "--raw", str(raw), "--kernels", "own"]
    refused = subprocess.run(runner, capture_output=True, text=True)
    assert refused.returncode == 1 and "input sample 1 contains -inf at element 2" in refused.stderr
    assert subprocess.run(runner + ["--no-input-check"], capture_output=True, text=True).returncode == 0
    assert "gives inputs [3, 32, 32], the model takes [1, 28, 28]" in capsys.readouterr().err


_OUT_OF_MEMORY = r'''
import resource, sys, torch
from branchy_engine import Engine
huge, big = sys.argv[1], sys.argv[2]

before = resource.getrlimit(resource.RLIMIT_AS)

def limit(headroom):  # the address space: what this process has mapped plus `headroom`
    vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, before[1]))

engine = Engine(big, max_batch=20000)
x = torch.randn(20000, 3, 64, 64)   # the batch slots would take 2 x 1 GiB
limit(512 << 20)
for make in (lambda: Engine(huge, max_memory=1 << 40), lambda: engine(x)):
    try:
        make()
        print("no error")
    except MemoryError as e:
        print("MemoryError:", e)
resource.setrlimit(resource.RLIMIT_AS, before)
print("after:", engine(x[:2]).exit.tolist(), engine.stats()["samples"])
'''


def test_running_out_of_memory_is_a_python_memory_error(tmp_path):
    # A std::bad_alloc (a plan allowed past max_memory by the caller, or a batch's buffers) is a
    # Python MemoryError that says what ran out, never an abort; the engine still works after.
    # In a child process whose address space is limited, so that nothing else feels it.
    from exported_models import bomb_model
    huge, _ = bomb_model(tmp_path, "huge", (1, 46340, 46340), lambda x: [])
    big, _ = bomb_model(tmp_path, "big", (3, 64, 64), lambda x: [])
    child = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY, huge, big], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    message = "MemoryError: the engine ran out of memory (std::bad_alloc): the model's weights or a context's buffers"
    assert lines[0].startswith(message) and lines[1].startswith(message), child.stdout
    assert lines[2] == "after: [0, 0] 2", child.stdout
