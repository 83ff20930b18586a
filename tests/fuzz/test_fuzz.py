"""Runs tests/fuzz/run.sh: the C++ mutation test and libFuzzer on the model file reader and the
plan builder, under ASan and UBSan, 50,000 inputs (about 3 minutes on 2 CPUs, most of it the
sanitized build). `make fuzz` runs 1,000,000. Needs clang++ (Debian: clang)."""
import os
import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("clang++") is None, reason="the fuzzer needs clang++ (apt-get install clang)")
def test_fuzz_model_file_and_plan_builder():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.sh")
    env = dict(os.environ, RUNS=os.environ.get("BRANCHY_FUZZ_RUNS", "50000"))
    subprocess.run(["bash", script], check=True, env=env)
