"""Runs tests/fuzz/run.sh (libFuzzer + sanitizers on the model file reader) when BRANCHY_FUZZ=1;
it takes minutes, so CI relies on the C++ mutation test instead."""
import os
import subprocess

import pytest


@pytest.mark.skipif(os.environ.get("BRANCHY_FUZZ") != "1",
                    reason="set BRANCHY_FUZZ=1 to fuzz the model reader")
def test_fuzz_model_file():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.sh")
    subprocess.run(["bash", script], check=True)
