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
