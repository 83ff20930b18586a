"""compute-sanitizer over the project's kernels (tests/gpu/sanitize_kernels.py): telling the
tool's refusals from its findings on outputs in its format, judging runs of a stand-in tool, and
on a GPU the four tools over the workload (skipped, with the tool's words, where it refuses)."""
import stat
import sys
from pathlib import Path

import pytest

from branchy_engine.profiling import sanitizer
from branchy_engine.profiling.sanitizer import run_sanitizer, sanitizer_findings, sanitizer_refusal

WORKLOAD = Path(__file__).parent / "gpu" / "sanitize_kernels.py"
BANNER = "========= COMPUTE-SANITIZER\n"
CLEAN = BANNER + ("sanitize_kernels: 360 exit decisions, 336 compactions and 128 scatters checked on "
                  "NVIDIA H100 80GB HBM3\n========= ERROR SUMMARY: 0 errors\n")
INVALID_READ = BANNER + """\
========= Invalid __global__ read of size 4 bytes
=========     at void warp_per_row_kernel<float, (Criterion)0>(Params<float>)+0x1a0
=========     by thread (3,0,0) in block (0,0,0)
=========     Address 0x7f1c2e000400 is out of bounds
=========     and is 1 bytes after the nearest allocation at 0x7f1c2e000000 of size 1024 bytes
=========     Saved host backtrace up to driver entry point at kernel launch time
=========
========= Error: process didn't terminate successfully
========= Target application returned an error
========= ERROR SUMMARY: 1 error
"""
RACE = BANNER + """\
========= Error: Race reported between Write access at survivor_scan_kernel(ScanParams)+0x2f0
=========     and Read access at survivor_scan_kernel(ScanParams)+0x3a0 [128 hazards]
=========
========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)
"""
WORKLOAD_FAILED = BANNER + """\
Traceback (most recent call last):
  File "tests/gpu/sanitize_kernels.py", line 160, in <module>
AssertionError: compact_survivors b=3 F=4 half n=1 (it failed to attach the rows)
========= Error: process didn't terminate successfully
========= Target application returned an error
========= ERROR SUMMARY: 0 errors
"""
REFUSED = {
    "injection library": (BANNER + "========= Unable to find injection library libsanitizer-collection.so\n",
                          "injection library (libsanitizer-collection.so) is missing"),
    "no attachable process": (BANNER + "========= Error: No attachable process found. compute-sanitizer "
                                       "timed-out.\n========= ERROR SUMMARY: 0 errors\n",
                              "could not attach to the workload: ========= Error: No attachable process"),
    "could not attach": (BANNER + "========= Error: Could not attach to process 4242 (Operation not permitted)\n",
                         "could not attach to the workload"),
    "no instrumented call": (BANNER + "========= Error: Target application terminated before first "
                                      "instrumented API call\n========= ERROR SUMMARY: 0 errors\n",
                             "saw no CUDA call of the workload"),
    "device": (BANNER + "========= Error: Device not supported\n", "does not support this device"),
    "driver": (BANNER + "========= Error: The CUDA driver version is not supported by this version of "
                        "compute-sanitizer\n", "does not support this CUDA driver"),
    "internal": (BANNER + "========= Internal Sanitizer Error: The Sanitizer encountered an error while "
                          "launching gather_kernel and didn't track the launch. Errors might go undetected. "
                          "(Unable to allocate enough memory to perform the requested operation)\n"
                          "========= ERROR SUMMARY: 0 errors\n", "failed internally"),
    "initialisation": ("==ERROR== Failed to initialize the tool: CUDA_ERROR_NOT_SUPPORTED\n",
                       "could not start: ==ERROR== Failed to initialize"),
    "workload without CUDA": (BANNER + f"sanitize_kernels: {sanitizer.CUDA_UNUSABLE}: CUDA error: "
                                       f"operation not supported\n========= Target application returned an "
                                       f"error\n========= ERROR SUMMARY: 0 errors\n",
                              "the workload could not use CUDA under compute-sanitizer"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refusals_are_recognised_and_quoted(case):
    output, meaning = REFUSED[case]
    why = sanitizer_refusal(output)
    assert why is not None and meaning in why
    assert why.split(": ", 1)[1] in output  # the tool's own line, quoted
    assert sanitizer_findings(output) is None


@pytest.mark.parametrize("output", [CLEAN, INVALID_READ, RACE, WORKLOAD_FAILED, ""])
def test_findings_clean_runs_and_workload_failures_are_no_refusal(output):
    assert sanitizer_refusal(output) is None


def test_findings_are_counted_and_the_first_is_named():
    assert sanitizer_findings(INVALID_READ) == "1 errors; first: Invalid __global__ read of size 4 bytes"
    assert sanitizer_findings(RACE) == ("1 race errors and 0 race warnings; first: Error: Race reported "
                                        "between Write access at survivor_scan_kernel(ScanParams)+0x2f0")
    barrier = BANNER + "========= Barrier error detected. Divergent thread(s) in warp\n"
    assert sanitizer_findings(barrier).startswith("reports without a summary; first: Barrier error detected")
    for output in (CLEAN, WORKLOAD_FAILED, RACE.replace("1 hazard displayed (1 error", "0 hazards displayed (0 errors")
                   .replace("========= Error: Race reported between Write access at survivor_scan_kernel"
                            "(ScanParams)+0x2f0\n", "")):
        assert sanitizer_findings(output) is None, output


def stand_in(tmp_path: Path, output: str, status: int = 0, sleep: float = 0) -> str:
    """A compute-sanitizer that writes its arguments and PYTORCH_NO_CUDA_MEMORY_CACHING to
    tmp_path/args.txt, prints `output` and exits with `status`."""
    path = tmp_path / "compute-sanitizer"
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                    f"open({str(tmp_path / 'args.txt')!r}, 'w').write('\\n'.join(sys.argv[1:] + "
                    f"[os.environ.get('PYTORCH_NO_CUDA_MEMORY_CACHING', '')]))\n"
                    f"time.sleep({sleep})\nsys.stdout.write({output!r})\nsys.exit({status})\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("output, status, verdict, says", [
    (CLEAN, 0, "pass", "memcheck: no finding"),
    (INVALID_READ, 1, "fail", "memcheck found: 1 errors; first: Invalid __global__ read"),
    (INVALID_READ.replace(BANNER, REFUSED["internal"][0]), 1, "fail", "found: 1 errors"),  # findings win
    (REFUSED["no attachable process"][0], 1, "skip", "memcheck: compute-sanitizer could not attach"),
    (REFUSED["workload without CUDA"][0], 3, "skip", "could not use CUDA"),
    (WORKLOAD_FAILED, 1, "fail", "exited with status 1 and no finding: ========= Error: process didn't"),
    ("sanitize_kernels: done\n", 0, "fail", "no ERROR SUMMARY in the output"),
], ids=["clean", "finding", "finding-and-refusal", "refusal", "no-cuda", "workload-failed", "no-summary"])
def test_runs_are_judged(tmp_path, output, status, verdict, says):
    result = run_sanitizer("memcheck", ["python", "w.py"], sanitizer=stand_in(tmp_path, output, status))
    assert (result.status, result.log) == (verdict, output)
    assert says in result.reason
    assert (tmp_path / "args.txt").read_text().split("\n") == [
        "--tool", "memcheck", "--report-api-errors", "no", "python", "w.py", "1"]


def test_run_errors_timeouts_and_a_missing_tool(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="tool must be one of memcheck, racecheck, synccheck, initcheck, "
                                         "got 'leakcheck'"):
        run_sanitizer("leakcheck", ["w"])
    slow = stand_in(tmp_path, CLEAN, sleep=30)
    status, reason, _ = run_sanitizer("racecheck", ["w"], timeout=1, sanitizer=slow)
    assert (status, reason) == ("fail", "racecheck: did not finish within 1 s")
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sanitizer, "LOCATIONS", (str(tmp_path / "none" / "compute-sanitizer"),))
    status, reason, log = run_sanitizer("synccheck", ["w"])
    assert (status, log) == ("skip", "") and "compute-sanitizer was not found on PATH" in reason


def test_find_sanitizer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sanitizer, "LOCATIONS", (str(tmp_path / "cuda-*" / "compute-sanitizer"),))
    with pytest.raises(sanitizer.SanitizerMissing, match="comes with the CUDA toolkit"):
        sanitizer.find_sanitizer()
    for version in ("12.4", "13.0", "12.10"):
        (tmp_path / f"cuda-{version}").mkdir()
        stand_in(tmp_path / f"cuda-{version}", CLEAN)
    assert sanitizer.find_sanitizer() == str(tmp_path / "cuda-13.0" / "compute-sanitizer")
    monkeypatch.setenv("PATH", str(tmp_path / "cuda-12.4"))
    assert sanitizer.find_sanitizer() == str(tmp_path / "cuda-12.4" / "compute-sanitizer")


def test_the_workload_is_a_script_not_a_test_module():
    assert not WORKLOAD.name.startswith("test_") and WORKLOAD.is_file()
    assert '__name__ == "__main__"' in WORKLOAD.read_text()


# ---- on a GPU ----

@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_project_kernels_under_compute_sanitizer(cuda, tool):
    status, reason, log = run_sanitizer(tool, [sys.executable, str(WORKLOAD)])
    if status == "skip":
        pytest.skip(reason)
    assert status == "pass", reason + "\n" + log[-4000:]
    assert "sanitize_kernels: " in log and " checked on " in log


@pytest.mark.parametrize("status, code", [("pass", 0), ("fail", 1), ("skip", 77)])
def test_the_command_line_prints_the_verdict_last_and_exits_with_its_code(monkeypatch, capsys, status, code):
    seen = {}

    def fake(tool, argv, timeout):
        seen.update(tool=tool, argv=argv, timeout=timeout)
        return sanitizer.SanitizerResult(status, f"{tool}: because", "========= ERROR SUMMARY: 0 errors")
    monkeypatch.setattr(sanitizer, "run_sanitizer", fake)
    assert sanitizer.main(["--tool", "racecheck", "--timeout", "50", "--", "python3", "w.py"]) == code
    assert seen == {"tool": "racecheck", "argv": ["python3", "w.py"], "timeout": 50.0}
    assert capsys.readouterr().out.splitlines()[-1] == f"{status.upper()}: racecheck: because"


def test_the_command_line_refuses_an_unknown_tool(capsys):
    with pytest.raises(SystemExit) as e:
        sanitizer.main(["--tool", "leakcheck", "--", "true"])
    assert e.value.code == 2 and "invalid choice: 'leakcheck'" in capsys.readouterr().err
