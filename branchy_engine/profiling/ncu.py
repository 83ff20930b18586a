"""Nsight Compute (ncu) over the GPU profiler's workload: per stage and exit, the kernels' L1 and
L2 hit rates, DRAM bytes and GPU time.

The workload (python -m branchy_engine.profiling.gpu) wraps each part in an NVTX push/pop range
named "stage{e}" or "exit{e}". With --nvtx, ncu records the push/pop stack of the thread at each
kernel launch, and its CSV output carries it per kernel in the column
"thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg", one quoted entry per
range on the stack, e.g.  4242  "<default domain>:stage1:none:none:none:none:none:none".
So one ncu run profiles every kernel, and the parser assigns each kernel to the innermost
stage/exit range on its stack; kernels in no such range (the model's upload, the engine's
buffers) are left out. This needs no --nvtx-include filter (which would need one statement per
part) and no run per part.

Options (NVIDIA Nsight Compute CLI manual, docs.nvidia.com/nsight-compute/NsightComputeCli):
  --nvtx                     record NVTX state for every profiled kernel
  --metrics a,b,...          collect only these metrics (a few replay passes per kernel)
  --csv --page raw           one CSV row per kernel, one column per metric, after a units row
  --print-units base         metric values in base units (byte, nsecond), not auto-scaled
  --cache-control all        flush the caches before each kernel replay - ncu's default, spelled
                             out: every kernel starts cold, so its hit rates and DRAM bytes do not
                             depend on which kernels ran before it (none: warm caches, as in the
                             real run, but then a kernel's replay passes see different caches)
  --clock-control base       lock the GPU's clocks to their base frequency while profiling - ncu's
                             default, spelled out. Where ncu may not lock them (a MIG slice, a
                             container or VM without the right) it fails or says so; run_ncu then
                             retries once with none (clocks left as the driver sets them), and
                             its result says which was used
  --target-processes all     also profile child processes
  --log-file FILE            ncu's own output (==PROF== lines and the CSV) apart from the
                             workload's stdout

ncu replays every kernel a few times, from cold caches: seconds per sample. So run_ncu profiles at
most NCU_MAX_SAMPLES samples, within a bounded time (NCU_TIMEOUT_S for all attempts together).

Run as a module, this file captures ncu's raw CSV on a model into a file, after checking that
parse_ncu_csv reads it (to replace tests/data/ncu_constructed.csv with a captured one):

    python -m branchy_engine.profiling.ncu MODEL --samples 2 --csv-out ncu_captured.csv
"""
import argparse
import csv
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from branchy_engine.profiling.tools import find_tool

TIME = "gpu__time_duration.sum"
L1_HIT, L1_SECTORS = "l1tex__t_sector_hit_rate.pct", "l1tex__t_sectors.sum"
L2_HIT, L2_SECTORS = "lts__t_sector_hit_rate.pct", "lts__t_sectors.sum"
DRAM_READ, DRAM_WRITE = "dram__bytes_read.sum", "dram__bytes_write.sum"
REQUIRED = (TIME, L1_HIT, L2_HIT, DRAM_READ, DRAM_WRITE)
METRICS = REQUIRED + (L1_SECTORS, L2_SECTORS)

# At most this many samples run under ncu: each takes seconds there (every kernel replayed from
# cold caches); issue 12 reports over 10 minutes for the 100 samples profiled before this cap.
NCU_MAX_SAMPLES = 8
# Seconds for a whole run_ncu, the retry included: a bound well inside a 10-minute job.
NCU_TIMEOUT_S = 300.0
# "auto": ncu's default (base), then none if ncu fails with it; "base" or "none": only that.
CLOCK_CONTROLS = ("auto", "base", "none")

# Where ncu is looked for after PATH: the CUDA toolkit's copy, then standalone installs.
LOCATIONS = ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/*/ncu")

# A part's range name, delimited by the start or end of the cell, spaces, quotes or colons.
PART = re.compile(r"(?<![^\s\":])(stage|exit)(\d+)(?![^\s\":])")
NVTX_COLUMN = "Push/Pop_Range"

# A value in a unit -> the same value in the base unit (nanoseconds, bytes, percent, sectors).
UNITS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6,
         "second": 1e9, "s": 1e9, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9,
         "Tbyte": 1e12, "%": 1.0, "sector": 1.0, "Ksector": 1e3, "Msector": 1e6, "Gsector": 1e9}
# The unit of a metric when the CSV has no units row.
BASE_UNIT = {TIME: "nsecond", L1_HIT: "%", L2_HIT: "%", L1_SECTORS: "sector", L2_SECTORS: "sector",
             DRAM_READ: "byte", DRAM_WRITE: "byte"}

# An ncu error or warning line saying it could not lock or control the clocks (e.g. "==ERROR==
# Failed to lock clocks", "==WARNING== Clock control is not supported on this device").
CLOCK_REFUSED = re.compile(r"^==(?:ERROR|WARNING)==(?=.*\bclocks?\b)(?=.*\b(?:fail|could not|"
                           r"couldn't|cannot|can't|unable|not supported|not permitted|not allowed|"
                           r"denied|insufficient))[^\n]*", re.IGNORECASE | re.MULTILINE)

PERMISSION_HELP = (
    "ncu may not read this GPU's performance counters (ERR_NVGPUCTRPERM). Run it as root, or "
    "allow every user: put 'options nvidia NVreg_RestrictProfilingToAdminUsers=0' in a file in "
    "/etc/modprobe.d/ and reload the nvidia kernel module (or reboot); in a container, also give "
    "it the SYS_ADMIN capability. See https://developer.nvidia.com/ERR_NVGPUCTRPERM")


class NcuMissing(RuntimeError):
    """NVIDIA Nsight Compute's command line (ncu) is not installed where we look."""


class NcuFailed(RuntimeError):
    """ncu ran but gave no usable profile. logs: what ncu wrote in each attempt, as
    [(clock control, its log)], to keep for diagnosis."""

    def __init__(self, message: str, logs: Sequence[Tuple[str, str]] = ()):
        super().__init__(message)
        self.logs = list(logs)


@dataclass
class NcuRun:
    """What run_ncu measured and how.

    parts: parse_ncu_csv's result, per stage and exit;
    csv: ncu's log as it wrote it (the raw page as CSV, with its ==PROF== lines);
    clock_control: "base" (clocks locked to their base frequency, ncu's default) or "none";
    clock_retry: why base was given up for none ("" if it was not);
    samples: samples profiled, of `asked` (at most NCU_MAX_SAMPLES).
    """
    parts: Dict[str, dict]
    csv: str
    clock_control: str
    clock_retry: str
    samples: int
    asked: int

    def note(self) -> str:
        """One line for reports: how many samples ran under ncu, at which clocks."""
        text = f"profiled {self.samples} of {self.asked} samples under ncu, clock control {self.clock_control}"
        if self.clock_retry:
            why = " ".join(self.clock_retry.split())
            text += f" (base failed: {why if len(why) <= 160 else why[:157] + '...'})"
        return text

    def record(self) -> dict:
        """The run's facts for a JSON report (all but the parts and the CSV)."""
        return {"samples": self.samples, "asked": self.asked, "clock_control": self.clock_control,
                "clock_retry": self.clock_retry, "note": self.note()}


def find_ncu() -> str:
    """The path of ncu: on PATH, else the first of LOCATIONS that exists (the newest version of a
    glob). Raises NcuMissing if there is none."""
    found = find_tool("ncu", LOCATIONS)
    if found:
        return found
    raise NcuMissing("--ncu needs NVIDIA Nsight Compute (ncu), which was not found on PATH or in "
                     f"{', '.join(LOCATIONS)}: install Nsight Compute (it comes with the CUDA "
                     "toolkit) or put its directory on PATH")


def ncu_command(ncu: str, workload_argv: Sequence[str], report_csv: bool = True,
                log_file: Optional[str] = None, cache_control: str = "all",
                clock_control: str = "base") -> List[str]:
    """The command line that runs workload_argv under ncu, collecting METRICS with the NVTX stack
    of every kernel. report_csv: print the raw page as CSV in base units (what parse_ncu_csv
    reads); else ncu's default human-readable details page. log_file: where ncu writes its output
    (default: stdout, mixed with the workload's). cache_control: "all" or "none"; clock_control:
    "base" or "none" (module docstring)."""
    if cache_control not in ("all", "none"):
        raise ValueError(f"cache_control must be 'all' or 'none', got {cache_control!r}")
    if clock_control not in ("base", "none"):
        raise ValueError(f"clock_control must be 'base' or 'none', got {clock_control!r}")
    command = [ncu, "--target-processes", "all", "--nvtx", "--cache-control", cache_control,
               "--clock-control", clock_control, "--metrics", ",".join(METRICS)]
    if report_csv:
        command += ["--csv", "--page", "raw", "--print-units", "base"]
    if log_file is not None:
        command += ["--log-file", log_file]
    return command + list(workload_argv)


def _values(kernels: List[List[str]], column: Dict[str, int], units: List[str], metric: str):
    """A metric's values over some kernel rows in its base unit (None where ncu has none: n/a,
    empty); None if the metric was not collected."""
    if metric not in column:
        return None
    i = column[metric]
    unit = units[i] or BASE_UNIT[metric]
    if unit not in UNITS:
        raise ValueError(f"metric {metric}: unit {unit!r} is not one of {sorted(UNITS)}")
    out = []
    for row in kernels:
        text = row[i].strip().replace(",", "")  # thousands separators
        out.append(None if text in ("", "n/a") else float(text) * UNITS[unit])
    return out


def _rate(rates: List[Optional[float]], sectors: Optional[List[Optional[float]]]):
    """(hit rate %, its weights): weighted by the sectors each kernel requested where they were
    collected (so the rate over all the part's sectors), else the mean over kernels."""
    if sectors is not None:
        pairs = [(r, w) for r, w in zip(rates, sectors) if r is not None and w]
        total = sum(w for _, w in pairs)
        return (sum(r * w for r, w in pairs) / total if total else None), "sectors"
    known = [r for r in rates if r is not None]
    return (sum(known) / len(known) if known else None), "kernels"


def _sum(values: List[Optional[float]]) -> float:
    return sum(v for v in values if v is not None)


def parse_ncu_csv(text: str) -> Dict[str, dict]:
    """ncu's raw page as CSV (ncu_command's options), per stage and exit.

    Lines that ncu writes around the table (==PROF==, ==WARNING==, ...) are skipped. Returns
    {"stage0": {...}, "exit0": {...}, "stage1": ...} in the order the parts run, for the parts
    that launched kernels, each with:
        kernels: how many kernels ran in the part (over all samples);
        time_us: their GPU time, summed;
        l1_hit_pct, l2_hit_pct: L1 and L2 sector hit rates in %: weighted by the sectors each
            kernel requested where l1tex__t_sectors.sum / lts__t_sectors.sum were collected, else
            the mean over kernels (l1_hit_weights, l2_hit_weights: "sectors" or "kernels");
            None where no kernel had a value;
        l1_sectors, l2_sectors: the sectors requested, summed (None if not collected), to weigh
            the parts' rates against each other;
        dram_read_bytes, dram_write_bytes, dram_bytes (their sum): summed over the kernels.
    Raises ValueError naming what is missing.
    """
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("==")]
    rows = list(csv.reader(lines))
    start = next((i for i, row in enumerate(rows) if row[:2] == ["ID", "Process ID"]), None)
    if start is None:
        notes = [line for line in text.splitlines() if line.startswith("==")][-5:]
        raise ValueError("no Nsight Compute CSV table (a header row starting \"ID\",\"Process ID\") "
                         "in the output" + (": " + " | ".join(notes) if notes else ""))
    header, body = rows[start], rows[start + 1:]
    column = {name: i for i, name in enumerate(header)}
    missing = [m for m in REQUIRED if m not in column]
    if missing:
        raise ValueError(f"the ncu CSV lacks metric {', '.join(missing)}: collect it with --metrics "
                         f"(ncu_command does) on a GPU that has it")
    nvtx = next((i for i, name in enumerate(header) if NVTX_COLUMN in name), None)
    if nvtx is None:
        raise ValueError(f"the ncu CSV has no NVTX {NVTX_COLUMN} column: run ncu with --nvtx")
    units = [""] * len(header)
    if body and body[0][0] == "":  # the raw page's units row (kernel rows have an ID)
        units, body = body[0], body[1:]
    for n, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"ncu CSV kernel row {n + 1} has {len(row)} fields, the header {len(header)}")
    if not body:
        raise ValueError("the ncu CSV lists no kernel: ncu profiled none")

    parts: Dict[tuple, List[List[str]]] = {}
    for row in body:
        names = PART.findall(row[nvtx])
        if names:  # the innermost stage/exit range on the kernel's stack
            kind, index = names[-1]
            parts.setdefault((int(index), kind == "exit"), []).append(row)
    if not parts:
        raise ValueError("no profiled kernel ran inside a stage or exit NVTX range (stage0, exit0, "
                         "...): profile the workload python -m branchy_engine.profiling.gpu")
    result = {}
    for (index, is_exit), kernels in sorted(parts.items()):
        values = functools.partial(_values, kernels, column, units)
        l1_sectors, l2_sectors = values(L1_SECTORS), values(L2_SECTORS)
        l1, l1_weights = _rate(values(L1_HIT), l1_sectors)
        l2, l2_weights = _rate(values(L2_HIT), l2_sectors)
        read, write = _sum(values(DRAM_READ)), _sum(values(DRAM_WRITE))
        result[f"{'exit' if is_exit else 'stage'}{index}"] = {
            "kernels": len(kernels), "time_us": 1e-3 * _sum(values(TIME)),
            "l1_hit_pct": l1, "l1_hit_weights": l1_weights,
            "l1_sectors": None if l1_sectors is None else _sum(l1_sectors),
            "l2_hit_pct": l2, "l2_hit_weights": l2_weights,
            "l2_sectors": None if l2_sectors is None else _sum(l2_sectors),
            "dram_read_bytes": read, "dram_write_bytes": write, "dram_bytes": read + write}
    return result


def _attempt(command: List[str], log: str, timeout: float, env: dict) -> Tuple[str, Optional[dict], str]:
    """Runs ncu once: (its log, the parsed parts, "") or (its log, None, why it failed). Raises
    NcuFailed on a permission error and subprocess.TimeoutExpired, which a retry with other clocks
    cannot mend."""
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    text = ""
    if os.path.exists(log):
        with open(log) as f:
            text = f.read()
        os.remove(log)  # a retry writes its own
    said = "\n".join([text, run.stdout, run.stderr])
    if "ERR_NVGPUCTRPERM" in said:
        raise NcuFailed(PERMISSION_HELP, [(command[command.index("--clock-control") + 1], text)])
    refused = CLOCK_REFUSED.search(said)
    if refused:
        status = f" (exit status {run.returncode})" if run.returncode else ""
        return text, None, f"ncu could not control the clocks{status}: {refused.group(0).strip()}"
    if run.returncode != 0:
        messages = run.stderr.splitlines() + [line for line in text.splitlines() if line.startswith("==")]
        return text, None, f"ncu exited with status {run.returncode}:\n" + "\n".join(messages[-15:])
    try:
        return text, parse_ncu_csv(text), ""
    except ValueError as e:
        return text, None, f"ncu's output is not a usable profile: {e}"


def run_ncu(model: str, raw_file: str, samples: int, thresholds: Optional[Sequence[float]] = None,
            timeout: float = NCU_TIMEOUT_S, ncu: Optional[str] = None, cache_control: str = "all",
            clock_control: str = "auto") -> NcuRun:
    """Profiles the first min(samples, NCU_MAX_SAMPLES) samples of raw_file (float32
    [N, C, H, W]) on the GPU under ncu, each at batch 1 through the GPU engine's eager path
    without warm-up (ncu replays every kernel; a warm-up would only add kernels to the parts).

    clock_control: "auto" runs ncu with its default clock control (base) and, if that fails (a
    non-zero exit, a message that it could not lock or control the clocks, or no usable kernel
    table), once more with none; "base" or "none": only that. timeout: seconds for the whole
    run, a retry included. ncu: its path (default find_ncu()).

    Returns an NcuRun. Raises NcuMissing, ValueError for a bad argument, or NcuFailed (a
    RuntimeError) with ncu's last messages from every attempt.
    """
    if clock_control not in CLOCK_CONTROLS:
        raise ValueError(f"clock_control must be one of {', '.join(CLOCK_CONTROLS)}, got {clock_control!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    ncu = ncu or find_ncu()
    profiled = min(samples, NCU_MAX_SAMPLES)
    workload = [sys.executable, "-m", "branchy_engine.profiling.gpu", os.fspath(model),
                "--raw", os.fspath(raw_file), "--samples", str(profiled), "--warmup", "0"]
    if thresholds is not None:
        workload += ["--thresholds", ",".join(repr(float(t)) for t in thresholds)]
    # The workload imports this package from where this file is, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    deadline = time.monotonic() + timeout
    failures, logs = [], []
    with tempfile.TemporaryDirectory(prefix="branchy-ncu-") as tmp:
        log = os.path.join(tmp, "ncu.csv")
        for clocks in (["base", "none"] if clock_control == "auto" else [clock_control]):
            left = deadline - time.monotonic()
            if left <= 0:
                failures.append((clocks, f"not tried: the {timeout:g} s were spent"))
                break
            command = ncu_command(ncu, workload, log_file=log, cache_control=cache_control,
                                  clock_control=clocks)
            try:
                text, parts, why = _attempt(command, log, left, env)
            except subprocess.TimeoutExpired:
                raise NcuFailed(f"ncu did not finish within {timeout:g} s; profile fewer samples "
                                f"or give a longer timeout", logs) from None
            logs.append((clocks, text))
            if parts is not None:
                return NcuRun(parts, text, clocks, failures[0][1] if failures else "", profiled, samples)
            failures.append((clocks, why))
    raise NcuFailed("ncu gave no usable profile:\n" + "\n".join(
        f"with --clock-control {clocks}: {why}" for clocks, why in failures), logs)


# ---- capturing a CSV: python -m branchy_engine.profiling.ncu ----

def _noise(path: str, samples: int, shape: Sequence[int]):
    """Writes `samples` seeded standard-normal samples of `shape` as raw little-endian float32."""
    import numpy as np
    np.random.default_rng(0).standard_normal((samples, *shape)).astype("<f4").tofile(path)


def main(argv=None) -> int:
    from branchy_engine.argtypes import floats
    from branchy_engine.export.model_file import summary

    parser = argparse.ArgumentParser(
        prog="python -m branchy_engine.profiling.ncu",
        description=f"Runs a model's GPU workload (python -m branchy_engine.profiling.gpu) under "
                    f"Nsight Compute as `branchy profile --ncu` does, checks that parse_ncu_csv "
                    f"reads ncu's raw CSV, and writes that CSV, as ncu wrote it, to --csv-out (to "
                    f"replace tests/data/ncu_constructed.csv with a captured file). At most "
                    f"{NCU_MAX_SAMPLES} samples are profiled. Exit status 0: written; 1: ncu "
                    f"failed or its CSV is not readable (the reason on stderr; ncu's log, if any, "
                    f"in CSV_OUT.rejected); 2: bad arguments.")
    parser.add_argument("model", help="the .branchy model file")
    parser.add_argument("--raw", metavar="FILE",
                        help="samples as raw little-endian float32 [N, C, H, W] (default: seeded "
                             "standard-normal noise of the model's input shape)")
    parser.add_argument("--samples", type=int, required=True, metavar="N",
                        help=f"profile the first N samples (at most {NCU_MAX_SAMPLES})")
    parser.add_argument("--csv-out", required=True, metavar="PATH", help="where to write ncu's raw CSV")
    parser.add_argument("--thresholds", type=floats, help="override the file's thresholds, comma-separated")
    parser.add_argument("--clock-control", default="auto", choices=CLOCK_CONTROLS,
                        help="auto: ncu's default (base: clocks locked to their base frequency), "
                             "then none if that fails; base or none: only that (default auto)")
    parser.add_argument("--cache-control", default="all", choices=("all", "none"),
                        help="all: every kernel from cold caches; none: caches as left (default all)")
    parser.add_argument("--timeout", type=float, default=NCU_TIMEOUT_S, metavar="S",
                        help=f"seconds for the whole run, a retry included (default {NCU_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    try:
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        with tempfile.TemporaryDirectory(prefix="branchy-ncu-") as tmp:
            raw = args.raw
            if raw is None:
                raw = os.path.join(tmp, "noise.f32")
                _noise(raw, min(args.samples, NCU_MAX_SAMPLES), summary(args.model)["input"])
            run = run_ncu(args.model, raw, args.samples, thresholds=args.thresholds,
                          timeout=args.timeout, cache_control=args.cache_control,
                          clock_control=args.clock_control)
    except NcuFailed as e:
        message = str(e)
        last = next((text for _, text in reversed(e.logs) if text), "")
        if last:
            with open(args.csv_out + ".rejected", "w") as f:
                f.write(last)
            message += f"\nncu's log of the last attempt: {args.csv_out}.rejected"
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    except NcuMissing as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    with open(args.csv_out, "w") as f:
        f.write(run.csv)
    kernels = sum(p["kernels"] for p in run.parts.values())
    print(f"wrote {args.csv_out}: ncu's raw CSV, {kernels} kernels in {', '.join(run.parts)}; {run.note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
