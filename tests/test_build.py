"""The extension holds what the build promised."""
import os

import pytest
import torch

import branchy_engine  # noqa: F401  (loads _C)
from branchy_engine import _C

OPS = ["exit_decision", "exit_decision.tensor", "exit_decision_maxprob", "exit_decision_maxprob.tensor"]


def _has_kernel(op, key):
    name, _, overload = op.partition(".")
    return torch._C._dispatch_has_kernel_for_dispatch_key(
        f"branchy_engine::{name}" + (f".{overload}" if overload else ""), key)


def test_cuda_kernels_are_built_wherever_nvcc_is():
    nvcc = os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin", "nvcc")
    if os.environ.get("BRANCHY_NO_CUDA") == "1" or not os.path.isfile(nvcc):
        pytest.skip("CPU-only build requested or no nvcc on this machine")
    assert _C.with_cuda, "nvcc exists but the extension was built without the CUDA sources"
    for op in OPS:
        assert _has_kernel(op, "CUDA"), op


def test_every_op_has_cpu_meta_and_autograd_kernels():
    for op in OPS:
        for key in ("CPU", "Meta", "Autograd"):
            assert _has_kernel(op, key), (op, key)


def test_cpu_isa_can_be_chosen_and_restored():
    assert _C.best_cpu_isa in ("avx512", "avx2", "neon", "portable")
    assert branchy_engine.set_cpu_isa("portable") == "portable"
    assert branchy_engine.cpu_isa() == "portable"
    assert branchy_engine.set_cpu_isa("best") == _C.best_cpu_isa
    with pytest.raises(ValueError, match="unknown CPU instruction set 'sse9'"):
        branchy_engine.set_cpu_isa("sse9")
