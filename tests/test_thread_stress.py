"""Four Python threads share one Engine (issue 14, section 6): each makes 500 calls of mixed kinds,
single samples, batches of 1 to 8 (the engine holds at most 5 samples in flight, so batches of 6
to 8 run in two chunks) and every exit's logits; every answer must equal, bit for bit, the same
call made serially before, and stats() must count every sample once. Calls release the GIL while
the runtime works (the network is over the 2 MFLOP from which single samples do too), so the
threads run in the runtime together. The C++ runtime itself runs 4 threads x 10,000 calls under
ThreadSanitizer in `make tsan` (tests/stress/)."""
import random
import struct
import threading

import pytest
import torch

import branchy_engine as be
from branchy_engine import _C
from branchy_engine.export import write_model

from tiny_models import STRESS_INPUT_SHAPE, stress_net

THREADS = 4
CALLS = 500       # per thread
MAX_BATCH = 5     # the engine's samples in flight: larger batches run in chunks
POOL = 64         # distinct samples the calls draw from


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


@pytest.fixture(scope="module")
def stress_model(tmp_path_factory):
    """(path, samples [POOL, C, H, W]): the stress network written with thresholds at the median
    entropy of each early exit over the samples, so that samples leave at every exit."""
    net = stress_net()
    pool = torch.randn(POOL, *STRESS_INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = net(pool)
    thresholds = [float(entropy(z).median()) for z in logits[:-1]]
    path = tmp_path_factory.mktemp("stress") / "stress.branchy"
    write_model(net, path, STRESS_INPUT_SHAPE, "entropy", thresholds)
    return str(path), pool


def call_plan(seed: int) -> list:
    """CALLS calls, each (kind, first sample, samples): kind "one" (a sample [C, H, W]), "batch"
    (1 to 8 samples [B, C, H, W]) or "logits" (Engine.all_exit_logits of one sample)."""
    rng = random.Random(seed)
    calls = []
    for _ in range(CALLS):
        kind = rng.choices(["one", "batch", "logits"], weights=[4, 8, 1])[0]
        n = rng.randint(1, 8) if kind == "batch" else 1
        calls.append((kind, rng.randrange(POOL - n + 1), n))
    return calls


def bits(score) -> list:
    """The float32 bit patterns of a score (a Python float or a tensor), for exact comparison."""
    if isinstance(score, torch.Tensor):
        return score.contiguous().view(torch.int32).tolist()
    return [struct.unpack("<i", struct.pack("<f", score))[0]]


def answer(engine: be.Engine, pool: torch.Tensor, call) -> tuple:
    """A call's answer as plain values that compare bit for bit."""
    kind, first, n = call
    if kind == "logits":
        return tuple(tuple(bits(z)) for z in engine.all_exit_logits(pool[first]))
    out = engine(pool[first] if kind == "one" else pool[first:first + n])
    as_list = (lambda v: v.tolist()) if kind == "batch" else (lambda v: [v])
    return as_list(out.prediction), as_list(out.exit), bits(out.score)


def samples_counted(calls) -> int:
    return sum(n for kind, _, n in calls if kind != "logits")


@pytest.mark.parametrize("kernels", ["own", "dnnl", "measure"])
def test_four_threads_on_one_engine_match_serial_calls(stress_model, kernels):
    if kernels == "dnnl" and not _C.dnnl_version():
        pytest.skip("built without oneDNN")
    path, pool = stress_model
    engine = be.Engine(path, threads=1, kernels=kernels, max_batch=MAX_BATCH)
    plans = [call_plan(seed) for seed in range(THREADS)]

    serial = [[answer(engine, pool, call) for call in calls] for calls in plans]
    exits = engine.stats()["per_exit"]
    assert all(count > 0 for count in exits), f"want samples at every exit, got {exits}"
    engine.reset_stats()

    got = [None] * THREADS
    omp_threads = [None] * THREADS  # each thread's OpenMP count before and after its calls
    start = threading.Barrier(THREADS)

    def work(t):
        before = torch.get_num_threads()
        start.wait()
        got[t] = [answer(engine, pool, call) for call in plans[t]]
        omp_threads[t] = (before, torch.get_num_threads())

    workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    for t in range(THREADS):
        assert got[t] is not None, f"thread {t} raised"
        for i, (want, have) in enumerate(zip(serial[t], got[t])):
            assert have == want, f"thread {t}, call {i} {plans[t][i]}: {have} != serial {want}"
        before, after = omp_threads[t]
        assert after == before, f"thread {t}: the engine left OpenMP's count at {after}, not {before}"
    stats = engine.stats()
    assert stats["samples"] == sum(samples_counted(calls) for calls in plans)
    assert stats["per_exit"] == exits
