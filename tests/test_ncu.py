"""The Nsight Compute side of the GPU profiler: the CSV parser on a file in ncu's format
(tests/data/README.md), the command line, finding ncu, run_ncu against a stand-in ncu (its retry
without clock control, its cap on samples, its timeout) and the CSV capture entry point."""
import csv
import io
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from branchy_engine.export import write_model
from branchy_engine.profiling import ncu

from tiny_models import INPUT_SHAPE, tiny_net

DATA = Path(__file__).parent / "data" / "ncu_constructed.csv"
PROF = ("==PROF== Connected to process 51372 (/usr/bin/python3.11)\n"
        "==PROF== Profiling \"vectorized_elementwise_kernel\" - 0: 0%....50%....100% - 3 passes\n"
        "==PROF== Disconnected from process 51372\n")


def without_columns(text, names):
    """The CSV text with the named columns removed."""
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0]) if name not in names]
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return out.getvalue()


def test_kernels_grouped_by_stage_and_exit_with_sector_weighted_rates():
    parts = ncu.parse_ncu_csv(DATA.read_text())
    # In the order they run; the fill kernel launched outside every range is left out.
    assert list(parts) == ["stage0", "exit0", "stage1", "exit1"]
    assert [p["kernels"] for p in parts.values()] == [6, 4, 2, 2]
    stage0, exit0, stage1, exit1 = parts.values()
    assert stage0["time_us"] == pytest.approx(14.2)  # 3200+1600+2400+3000+1600+2400 ns
    assert stage0["dram_read_bytes"] == 4096 and stage0["dram_write_bytes"] == 1536
    assert stage0["dram_bytes"] == 5632
    # Sum of rate x sectors over the sectors: (75*400 + 50*100) * 2 / 1200.
    assert stage0["l1_hit_pct"] == pytest.approx(70000 / 1200)
    assert stage0["l2_hit_pct"] == pytest.approx(58000 / 700)
    assert stage0["l1_hit_weights"] == stage0["l2_hit_weights"] == "sectors"
    assert stage0["l1_sectors"] == 1200 and stage0["l2_sectors"] == 700
    # n/a rates with 0 sectors (the decision kernel's L1) carry no weight.
    assert exit0["l1_hit_pct"] == pytest.approx(25.0)
    assert exit0["l2_hit_pct"] == pytest.approx(9800 / 220)
    assert exit0["dram_bytes"] == 2 * 2048 + 2 * 64 and exit0["time_us"] == pytest.approx(11.6)
    assert stage1["l1_hit_pct"] == pytest.approx(60.0) and stage1["l2_hit_pct"] == pytest.approx(30.0)
    assert stage1["dram_bytes"] == 8192 + 1024
    assert exit1["l2_hit_pct"] == pytest.approx(3900 / 310) and exit1["time_us"] == pytest.approx(5.9)


def test_without_sector_counts_the_rates_are_means_over_kernels():
    text = without_columns(DATA.read_text(), {ncu.L1_SECTORS, ncu.L2_SECTORS})
    stage0 = ncu.parse_ncu_csv(text)["stage0"]
    assert stage0["l1_hit_pct"] == pytest.approx((75 + 0 + 50) * 2 / 6)
    assert stage0["l2_hit_pct"] == pytest.approx((50 + 100 + 80 + 100 + 100 + 80) / 6)
    assert stage0["l1_hit_weights"] == stage0["l2_hit_weights"] == "kernels"
    assert stage0["l1_sectors"] is None and stage0["l2_sectors"] is None
    assert ncu.parse_ncu_csv(text)["exit1"]["l1_hit_pct"] == pytest.approx(20.0)  # n/a left out


def test_prof_lines_and_trailing_tool_messages_are_skipped():
    text = DATA.read_text()
    noisy = PROF + text + "==WARNING== Found outstanding GPU clock reset, trying to revert...\n"
    assert ncu.parse_ncu_csv(noisy) == ncu.parse_ncu_csv(text)


def test_units_are_read_from_the_units_row():
    text = DATA.read_text().replace('"byte","byte","nsecond"', '"Kbyte","byte","usecond"', 1)
    stage0 = ncu.parse_ncu_csv(text)["stage0"]
    assert stage0["dram_read_bytes"] == 4096e3 and stage0["time_us"] == pytest.approx(14200)
    with pytest.raises(ValueError, match="unit 'furlong'"):
        ncu.parse_ncu_csv(DATA.read_text().replace('"nsecond"', '"furlong"', 1))


def test_innermost_part_range_of_a_nested_stack():
    line = '51372  ""<default domain>:stage1:none:none:none:none:none:none""'
    nested = ('51372  ""<default domain>:request:none:none:none:none:none:none""  '
              '""<default domain>:exit1:none:none:none:none:none:none""')
    parts = ncu.parse_ncu_csv(DATA.read_text().replace(line, nested))
    assert "stage1" not in parts and parts["exit1"]["kernels"] == 4


@pytest.mark.parametrize("metric", ncu.REQUIRED)
def test_missing_metric_is_named(metric):
    with pytest.raises(ValueError, match=f"lacks metric {metric}"):
        ncu.parse_ncu_csv(without_columns(DATA.read_text(), {metric}))


def test_unusable_output_errors():
    with pytest.raises(ValueError, match="no NVTX Push/Pop_Range column: run ncu with --nvtx"):
        ncu.parse_ncu_csv(without_columns(DATA.read_text(),
                                          {"thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:"
                                           "Color:Msg_Type:Msg"}))
    with pytest.raises(ValueError, match="No kernels were profiled"):
        ncu.parse_ncu_csv(PROF + "==WARNING== No kernels were profiled.\n")
    header_and_units = "".join(DATA.read_text().splitlines(keepends=True)[:2])
    with pytest.raises(ValueError, match="lists no kernel"):
        ncu.parse_ncu_csv(header_and_units)
    with pytest.raises(ValueError, match="no profiled kernel ran inside a stage or exit"):
        ncu.parse_ncu_csv(DATA.read_text().replace("stage", "step").replace("exit", "head"))
    truncated = DATA.read_text().rstrip("\n")
    with pytest.raises(ValueError, match="row 15 has 19 fields"):
        ncu.parse_ncu_csv(truncated[:truncated.rindex(",")])


def test_command_line():
    command = ncu.ncu_command("/x/ncu", ["python", "-m", "w", "m.branchy"], log_file="/t/log.csv")
    assert command[0] == "/x/ncu" and command[-4:] == ["python", "-m", "w", "m.branchy"]
    options = command[1:-4]
    for pair in (["--nvtx"], ["--target-processes", "all"], ["--cache-control", "all"],
                 ["--clock-control", "base"], ["--page", "raw"], ["--print-units", "base"], ["--csv"],
                 ["--log-file", "/t/log.csv"]):
        assert any(options[i:i + len(pair)] == pair for i in range(len(options))), pair
    assert options[options.index("--metrics") + 1].split(",") == list(ncu.METRICS)
    human = ncu.ncu_command("ncu", ["w"], report_csv=False, cache_control="none", clock_control="none")
    assert "--csv" not in human and "--page" not in human and "--log-file" not in human
    assert human[human.index("--cache-control") + 1] == "none"
    assert human[human.index("--clock-control") + 1] == "none"
    with pytest.raises(ValueError, match="cache_control must be 'all' or 'none', got 'some'"):
        ncu.ncu_command("ncu", ["w"], cache_control="some")
    with pytest.raises(ValueError, match="clock_control must be 'base' or 'none', got 'reset'"):
        ncu.ncu_command("ncu", ["w"], clock_control="reset")


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_ncu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    locations = (str(tmp_path / "cuda" / "ncu"), str(tmp_path / "nsight" / "*" / "ncu"))
    monkeypatch.setattr(ncu, "LOCATIONS", locations)
    with pytest.raises(ncu.NcuMissing, match="--ncu needs NVIDIA Nsight Compute \\(ncu\\).*not found on PATH"):
        ncu.find_ncu()
    assert isinstance(ncu.NcuMissing("x"), RuntimeError)
    for version in ("2023.3.1", "2024.10.0", "2024.9.2"):
        executable(tmp_path / "nsight" / version / "ncu", "#!/bin/sh\n")
    assert ncu.find_ncu() == str(tmp_path / "nsight" / "2024.10.0" / "ncu")  # the newest
    executable(tmp_path / "cuda" / "ncu", "#!/bin/sh\n")
    assert ncu.find_ncu() == str(tmp_path / "cuda" / "ncu")
    on_path = executable(tmp_path / "bin" / "ncu", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert ncu.find_ncu() == str(on_path)


def fake_ncu(tmp_path, body: str) -> str:
    """A stand-in ncu: a Python script that gets ncu's arguments (body sees `args`, `log`, `clocks`
    (its --clock-control) and `call` (1 on its first run, 2 on its second, ...)); each run appends
    its --clock-control value to tmp_path/calls.txt."""
    calls = tmp_path / "calls.txt"
    return str(executable(tmp_path / "ncu", f"""#!{sys.executable}
import sys
args = sys.argv[1:]
log = args[args.index('--log-file') + 1]
clocks = args[args.index('--clock-control') + 1]
with open({str(calls)!r}, 'a') as f:
    f.write(clocks + '\\n')
call = len(open({str(calls)!r}).read().split())
{body}"""))


def calls(fake: str):
    """The --clock-control of each run of a fake_ncu, in order."""
    path = Path(fake).parent / "calls.txt"
    return path.read_text().split() if path.exists() else []


CAPTURED = f"open(log, 'w').write({PROF + DATA.read_text()!r})\n"


def test_run_ncu_runs_the_workload_under_ncu_and_parses_its_log(tmp_path):
    record = tmp_path / "args.txt"
    body = f"open({str(record)!r}, 'w').write('\\n'.join(args))\n" + CAPTURED
    run = ncu.run_ncu("m.branchy", "x.f32", 7, thresholds=[0.25, float("inf")],
                      ncu=fake_ncu(tmp_path, body))
    assert run.parts == ncu.parse_ncu_csv(DATA.read_text())
    assert run.csv == PROF + DATA.read_text()  # as ncu wrote it
    assert (run.clock_control, run.clock_retry, run.samples, run.asked) == ("base", "", 7, 7)
    assert run.note() == "profiled 7 of 7 samples under ncu, clock control base"
    args = record.read_text().split("\n")
    workload = args[args.index(sys.executable):]
    assert workload == [sys.executable, "-m", "branchy_engine.profiling.gpu", "m.branchy", "--raw", "x.f32",
                        "--samples", "7", "--warmup", "0", "--thresholds", "0.25,inf"]
    assert args[:args.index(sys.executable)][:-2] == ncu.ncu_command("ncu", [])[1:]


def test_run_ncu_profiles_at_most_ncu_max_samples(tmp_path):
    record = tmp_path / "args.txt"
    body = f"open({str(record)!r}, 'w').write('\\n'.join(args))\n" + CAPTURED
    run = ncu.run_ncu("m.branchy", "x.f32", 100, ncu=fake_ncu(tmp_path, body))
    args = record.read_text().split("\n")
    assert args[args.index("--samples") + 1] == str(ncu.NCU_MAX_SAMPLES) == "8"
    assert (run.samples, run.asked) == (8, 100)
    assert run.note().startswith("profiled 8 of 100 samples under ncu")
    assert run.record()["note"] == run.note() and run.record()["asked"] == 100


@pytest.mark.parametrize("first, says", [
    ("open(log, 'w').write('==PROF== Connected to process 1\\n==ERROR== Failed to lock clocks for "
     "device 0: insufficient permissions\\n')\nsys.exit(1)\n", "could not control the clocks (exit status 1): ==ERROR== Failed to lock clocks for device 0"),
    (f"open(log, 'w').write('==WARNING== Clock control is not supported on this device\\n' + "
     f"{DATA.read_text()!r})\n", "could not control the clocks: ==WARNING== Clock control is not supported"),
    ("open(log, 'w').write('==PROF== Connected to process 1\\n==WARNING== No kernels were profiled.\\n')\n",
     "not a usable profile: no Nsight Compute CSV table"),
], ids=["exit-status", "clock-warning", "no-kernels"])
def test_run_ncu_retries_once_without_clock_control(tmp_path, first, says):
    fake = fake_ncu(tmp_path, f"if call == 1:\n    exec({first!r})\nelse:\n    exec({CAPTURED!r})\n")
    run = ncu.run_ncu("m.branchy", "x.f32", 3, ncu=fake)
    assert calls(fake) == ["base", "none"]
    assert run.clock_control == "none" and says in run.clock_retry
    assert run.parts == ncu.parse_ncu_csv(DATA.read_text())
    assert run.note().startswith("profiled 3 of 3 samples under ncu, clock control none (base failed: ")


def test_run_ncu_clock_control_can_be_forced(tmp_path):
    fake = fake_ncu(tmp_path, CAPTURED)
    run = ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake, clock_control="none")
    assert calls(fake) == ["none"] and run.clock_control == "none" and run.clock_retry == ""
    with pytest.raises(ValueError, match="clock_control must be one of auto, base, none, got 'off'"):
        ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake, clock_control="off")
    with pytest.raises(ValueError, match="samples must be >= 1, got 0"):
        ncu.run_ncu("m.branchy", "x.f32", 0, ncu=fake)


def test_clock_refusals_are_told_from_other_ncu_messages():
    for line in ("==ERROR== Failed to lock clocks", "==WARNING== Could not set the GPU clocks",
                 "==ERROR== Clock control is not supported on this device",
                 "==WARNING== Unable to lock clocks to base: insufficient permissions"):
        assert ncu.CLOCK_REFUSED.search("==PROF== Connected\n" + line + "\n").group(0) == line
    for line in ("==WARNING== Found outstanding GPU clock reset, trying to revert...",
                 "==PROF== Profiling \"clock_kernel\" - 0: failed", "Failed to lock clocks",
                 "==ERROR== The application returned an error code (1)."):
        assert ncu.CLOCK_REFUSED.search(line) is None, line


def test_run_ncu_failures_are_explained(tmp_path):
    denied = ("open(log, 'w').write('==PROF== Connected to process 1\\n==ERROR== ERR_NVGPUCTRPERM - '\n"
              "    'The user does not have permission to access NVIDIA GPU Performance Counters '\n"
              "    'on the target device 0.\\n')\n")
    fake = fake_ncu(tmp_path / "a", denied)
    with pytest.raises(RuntimeError, match="NVreg_RestrictProfilingToAdminUsers=0"):
        ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake)
    assert calls(fake) == ["base"]  # other clocks would not grant the counters
    crashed = ("sys.stderr.write('python -m branchy_engine.profiling.gpu: error: profile --device cuda needs a "
               "CUDA GPU; torch sees none\\n')\nsys.exit(2)\n")
    fake = fake_ncu(tmp_path / "b", crashed)
    with pytest.raises(ncu.NcuFailed, match="(?s)with --clock-control base: ncu exited with status 2:.*"
                                            "needs a CUDA GPU.*with --clock-control none: ncu exited with status 2"):
        ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake)
    assert calls(fake) == ["base", "none"]
    slow = "import time\ntime.sleep(30)\n"
    fake = fake_ncu(tmp_path / "c", slow)
    with pytest.raises(RuntimeError, match="did not finish within 1 s"):
        ncu.run_ncu("m.branchy", "x.f32", 1, timeout=1, ncu=fake)
    assert calls(fake) == ["base"]


# ---- python -m branchy_engine.profiling.ncu ----

@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.branchy"
    write_model(tiny_net(), path, INPUT_SHAPE, "entropy", [0.5])
    return str(path)


def test_capture_writes_the_csv_as_ncu_wrote_it(tiny, tmp_path, monkeypatch, capsys):
    record = tmp_path / "args.txt"
    fake = fake_ncu(tmp_path, f"open({str(record)!r}, 'w').write('\\n'.join(args))\n" + CAPTURED)
    monkeypatch.setattr(ncu, "find_ncu", lambda: fake)
    out = tmp_path / "captured.csv"
    assert ncu.main([tiny, "--samples", "2", "--csv-out", str(out)]) == 0
    assert out.read_text() == PROF + DATA.read_text()
    assert capsys.readouterr().out == (f"wrote {out}: ncu's raw CSV, 14 kernels in stage0, exit0, stage1, exit1; "
                                       f"profiled 2 of 2 samples under ncu, clock control base\n")
    args = record.read_text().split("\n")
    raw = args[args.index("--raw") + 1]  # seeded noise of the model's input shape, 2 samples
    assert args[args.index("--samples") + 1] == "2" and raw.endswith("noise.f32")


def test_capture_refuses_a_csv_it_cannot_parse(tiny, tmp_path, monkeypatch, capsys):
    garbage = "open(log, 'w').write('==PROF== Connected to process 1\\nnot,a,table\\n')\n"
    monkeypatch.setattr(ncu, "find_ncu", lambda: fake_ncu(tmp_path, garbage))
    out = tmp_path / "captured.csv"
    assert ncu.main([tiny, "--samples", "2", "--csv-out", str(out), "--clock-control", "none"]) == 1
    err = capsys.readouterr().err
    assert "error: ncu gave no usable profile" in err and "no Nsight Compute CSV table" in err
    assert not out.exists() and (tmp_path / "captured.csv.rejected").read_text().endswith("not,a,table\n")
    assert f"{out}.rejected" in err
    assert ncu.main([tiny, "--samples", "0", "--csv-out", str(out)]) == 2
    assert "--samples must be >= 1, got 0" in capsys.readouterr().err


def test_capture_help():
    run = subprocess.run([sys.executable, "-m", "branchy_engine.profiling.ncu", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for option in ("--raw", "--samples", "--csv-out", "--clock-control", "--timeout",
                   f"At most {ncu.NCU_MAX_SAMPLES}"):
        assert option in " ".join(run.stdout.split()), option
