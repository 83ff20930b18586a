"""NVIDIA Compute Sanitizer (compute-sanitizer) over a workload: pass, fail on a finding, or skip
where the tool cannot check this machine at all.

A sanitizer run has three outcomes that a test must tell apart:
  findings   the tool checked the kernels and reports errors: "Invalid __global__ read of size 4",
             "Race reported between ...", "Barrier error detected", "Uninitialized __global__
             memory read", counted in "ERROR SUMMARY: N errors" (racecheck: "RACECHECK SUMMARY:
             N hazards displayed (E errors, W warnings)");
  refusal    the tool could not check anything: its injection library is missing, it cannot
             attach to the process (sandboxed kernels such as gVisor, whose `uname -r` says
             4.4.0), the device or driver is not supported, it failed internally, or the workload
             found CUDA unusable under it. Its summary then says "0 errors", which is no pass;
  clean      the workload ran to its end and the summary counts nothing.
"Target application returned an error" alone is neither a finding nor a refusal: the tool prints
it for any non-zero exit of the workload, a failed assertion included; it fails the run unless a
refusal explains it.

The tool runs with --report-api-errors no: what is checked is the kernels. CUDA API calls that
return an error are not findings here: PyTorch makes some on purpose (probing, querying events),
and where CUDA cannot initialise under the tool the workload says so itself (CUDA_UNUSABLE), a
refusal; a kernel's own fault is reported as the access that caused it.

    status, reason, log = run_sanitizer("memcheck", [sys.executable, "tests/gpu/sanitize_kernels.py"])
"""
import os
import re
import subprocess
from typing import NamedTuple, Optional, Sequence

from branchy_engine.profiling.tools import find_tool

TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# Where compute-sanitizer is looked for after PATH: the CUDA toolkit's copy, then versioned ones.
LOCATIONS = ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda-*/bin/compute-sanitizer")
# Seconds for one tool's run: memcheck and racecheck slow kernels 10-100x and instrument every
# kernel the process loads.
SANITIZER_TIMEOUT_S = 300.0
# Every tensor its own cudaMalloc: PyTorch's caching allocator hands out pieces of larger blocks,
# inside which memcheck sees no overrun.
ENV = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}

# The line the workload prints when CUDA, which works outside the tool, fails under it.
CUDA_UNUSABLE = "CUDA is unusable in this process"

# Lines saying the tool could not check anything, with what each means. compute-sanitizer
# prefixes its own lines with "=========" (NVIDIA's tools also use "==ERROR==").
_TOOL = r"^=+[ \t]*"
REFUSALS = (
    (re.compile(_TOOL + r".*Unable to find injection library.*$", re.M),
     "compute-sanitizer's injection library (libsanitizer-collection.so) is missing"),
    (re.compile(_TOOL + r".*No attachable process.*$", re.M),
     "compute-sanitizer could not attach to the workload"),
    (re.compile(_TOOL + r".*\b(?:could not|couldn't|unable to|failed to|cannot) attach.*$", re.M | re.I),
     "compute-sanitizer could not attach to the workload"),
    (re.compile(_TOOL + r".*terminated before first instrumented API call.*$", re.M),
     "compute-sanitizer saw no CUDA call of the workload (it did not attach)"),
    (re.compile(_TOOL + r".*\b(?:device|GPU|platform|architecture)s? (?:is |are )?not supported.*$",
                re.M | re.I),
     "compute-sanitizer does not support this device"),
    (re.compile(_TOOL + r".*\bdriver\b.*\b(?:not supported|unsupported|insufficient|too old|"
                        r"incompatible|mismatch).*$", re.M | re.I),
     "compute-sanitizer does not support this CUDA driver"),
    (re.compile(_TOOL + r"Internal Sanitizer Error.*$", re.M),
     "compute-sanitizer failed internally, so its checks are incomplete"),
    (re.compile(r"^==ERROR==.*$", re.M),
     "compute-sanitizer could not start"),
    (re.compile(r"^.*" + re.escape(CUDA_UNUSABLE) + r".*$", re.M),
     "the workload could not use CUDA under compute-sanitizer"),
)
ERROR_SUMMARY = re.compile(r"^=+ ERROR SUMMARY: (\d+) errors?", re.M)
RACE_SUMMARY = re.compile(r"^=+ RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", re.M)
# The first line of each report of a finding (a report's later lines are indented).
FINDING = re.compile(r"^=+ (?:Invalid __\w+__ \w+|(?:Error|Warning): Race reported|Race reported|"
                     r"Barrier error|Uninitialized __\w+__ memory read|Malloc/Free error|"
                     r"Misaligned|Out-of-range).*$", re.M)


class SanitizerResult(NamedTuple):
    """status: "pass", "fail" or "skip"; reason: one line saying why; log: the tool's output and
    the workload's, interleaved as printed (empty when the tool did not run)."""
    status: str
    reason: str
    log: str


class SanitizerMissing(RuntimeError):
    """compute-sanitizer is not installed where we look."""


def find_sanitizer() -> str:
    """The path of compute-sanitizer: on PATH, else the first of LOCATIONS that exists (the newest
    version of a glob). Raises SanitizerMissing if there is none."""
    found = find_tool("compute-sanitizer", LOCATIONS)
    if found:
        return found
    raise SanitizerMissing(f"compute-sanitizer was not found on PATH or in {', '.join(LOCATIONS)}: "
                           f"it comes with the CUDA toolkit")


def sanitizer_refusal(output: str) -> Optional[str]:
    """Why compute-sanitizer could not check the workload at all, from its output: "<what it
    means>: <the line that says so>"; None if nothing in the output says so (findings, a clean
    run and a workload's own failure all give None)."""
    for pattern, meaning in REFUSALS:
        found = pattern.search(output)
        if found:
            return f"{meaning}: {found.group(0).strip()}"
    return None


def sanitizer_findings(output: str) -> Optional[str]:
    """What the tool found, from its output: its summaries' counts (the largest, if it printed
    several) and the first report's line; None if it reports nothing."""
    counts = []
    errors = max((int(n) for n in ERROR_SUMMARY.findall(output)), default=0)
    if errors:
        counts.append(f"{errors} errors")
    races = [(int(e), int(w)) for n, e, w in RACE_SUMMARY.findall(output) if int(n)]
    if races:
        counts.append(f"{max(e for e, _ in races)} race errors and {max(w for _, w in races)} race warnings")
    first = FINDING.search(output)
    if not counts and not first:
        return None
    return "; ".join(counts or ["reports without a summary"]) + (f"; first: {first.group(0).strip('= ')}"
                                                                  if first else "")


def run_sanitizer(tool: str, argv: Sequence[str], timeout: float = SANITIZER_TIMEOUT_S,
                  sanitizer: Optional[str] = None) -> SanitizerResult:
    """Runs argv (a command line) under `compute-sanitizer --tool TOOL --report-api-errors no`,
    with PYTORCH_NO_CUDA_MEMORY_CACHING=1, and judges the run (module docstring):

        fail  the tool reports findings (whatever else it says), or the workload exited non-zero
              or the run printed no summary, with no refusal to explain it, or it ran past
              `timeout` seconds;
        skip  compute-sanitizer is not installed, or it refused (sanitizer_refusal);
        pass  exit status 0 and a summary that counts nothing.

    tool: one of TOOLS. sanitizer: the tool's path (default find_sanitizer()).
    """
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    try:
        sanitizer = sanitizer or find_sanitizer()
    except SanitizerMissing as e:
        return SanitizerResult("skip", str(e), "")
    command = [sanitizer, "--tool", tool, "--report-api-errors", "no", *argv]
    try:
        run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout, env={**os.environ, **ENV})
    except subprocess.TimeoutExpired as e:
        log = e.output if isinstance(e.output, str) else (e.output or b"").decode(errors="replace")
        return SanitizerResult("fail", f"{tool}: did not finish within {timeout:g} s", log)
    log = run.stdout
    found = sanitizer_findings(log)
    if found:
        return SanitizerResult("fail", f"{tool} found: {found}", log)
    refused = sanitizer_refusal(log)
    if refused:
        return SanitizerResult("skip", f"{tool}: {refused}", log)
    if run.returncode != 0:
        tail = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])
        return SanitizerResult("fail", f"{tool}: the workload exited with status {run.returncode} and "
                                       f"no finding: {tail}", log)
    if not (ERROR_SUMMARY.search(log) or RACE_SUMMARY.search(log)):
        return SanitizerResult("fail", f"{tool}: no ERROR SUMMARY in the output, so nothing says the "
                                       f"kernels were checked", log)
    return SanitizerResult("pass", f"{tool}: no finding", log)


EXIT_CODES = {"pass": 0, "fail": 1, "skip": 77}  # 77: "skipped", as automake and bench/gpu_check.sh read it


def main(argv=None) -> int:
    import argparse
    import sys
    parser = argparse.ArgumentParser(
        prog="python -m branchy_engine.profiling.sanitizer",
        description="Runs a command under NVIDIA compute-sanitizer (one tool, kernels checked, CUDA "
                    "API errors not reported, PyTorch's caching allocator off), prints the tool's "
                    "output and then one line: PASS, FAIL or SKIP with the reason. Exit status 0 "
                    "(pass), 1 (findings, or a failure no refusal explains) or 77 (the tool is "
                    "missing or could not check this machine, e.g. a gVisor kernel).",
        epilog="example: python -m branchy_engine.profiling.sanitizer --tool memcheck -- "
               "python3 tests/gpu/sanitize_kernels.py")
    parser.add_argument("--tool", required=True, choices=TOOLS)
    parser.add_argument("--timeout", type=float, default=SANITIZER_TIMEOUT_S,
                        help=f"seconds for the whole run (default {SANITIZER_TIMEOUT_S:g})")
    parser.add_argument("command", nargs="+", help="the workload's command line, after --")
    args = parser.parse_args(argv)
    result = run_sanitizer(args.tool, args.command, timeout=args.timeout)
    sys.stdout.write(result.log if result.log.endswith("\n") or not result.log else result.log + "\n")
    print(f"{result.status.upper()}: {result.reason}")
    return EXIT_CODES[result.status]


if __name__ == "__main__":
    raise SystemExit(main())
