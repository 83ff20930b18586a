"""Fixtures shared by tests/ and bench/: the devices to run on."""
import os

import pytest
import torch

REQUIRE_CUDA = os.environ.get("BRANCHY_REQUIRE_CUDA") == "1"


@pytest.fixture
def cuda():
    """Skips a CUDA test where no GPU exists; with BRANCHY_REQUIRE_CUDA=1 a missing GPU fails it."""
    if not torch.cuda.is_available():
        if REQUIRE_CUDA:
            pytest.fail("BRANCHY_REQUIRE_CUDA=1 but torch.cuda.is_available() is False")
        pytest.skip("no CUDA GPU")
    from branchy_engine import _C
    if not _C.with_cuda:
        pytest.fail("a GPU is present but branchy_engine._C was built without CUDA")
    return "cuda"


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    return request.getfixturevalue("cuda") if request.param == "cuda" else "cpu"


def uses_cuda(item) -> bool:
    """Whether a test runs on a GPU: it asks for the cuda fixture, or a parameter of it is "cuda"
    (the device and backend fixtures)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "cuda" in item.fixturenames or "cuda" in params.values()


def pytest_collection_modifyitems(config, items):
    """BRANCHY_CUDA_ONLY=1 keeps only the tests that run on a GPU (bench/gpu_check.sh: the GPU
    machine's minutes are for what only it can prove; CI runs the rest)."""
    if os.environ.get("BRANCHY_CUDA_ONLY") != "1":
        return
    kept = [item for item in items if uses_cuda(item)]
    config.hook.pytest_deselected(items=[item for item in items if not uses_cuda(item)])
    items[:] = kept
