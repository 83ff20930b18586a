"""Fused exit decision vs the PyTorch composite a user would write (softmax, log, mul, sum, lt, argmax).

Run: make bench (or pytest bench/test_exit_decision_bench.py --benchmark-warmup=on). The timed
function synchronises the device, so GPU times are end to end.
"""
import pytest
import torch

import branchy_engine as be

THRESHOLD = 0.5


def composite(logits, threshold):
    p = torch.softmax(logits, -1)
    entropy = -(p * torch.log(p)).sum(-1)
    return entropy, entropy < threshold, logits.argmax(-1)


def fused(logits, threshold):
    return be.exit_decision(logits, threshold)


@pytest.mark.parametrize("impl", [fused, composite], ids=["fused", "composite"])
@pytest.mark.parametrize("classes", [10, 1000])
@pytest.mark.parametrize("batch", [1, 64, 4096])
def test_exit_decision(benchmark, device, batch, classes, impl):
    logits = torch.randn(batch, classes, device=device) * 3
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        out = impl(logits, THRESHOLD)
        sync()
        return out

    benchmark.group = f"exit_decision {device} B={batch} C={classes}"
    benchmark.extra_info.update(impl=impl.__name__, device=device, batch=batch, classes=classes,
                                threads=torch.get_num_threads(), cpu_isa=be.cpu_isa())
    entropy, leave, prediction = benchmark(run)
    assert prediction.shape == (batch,)
