"""The Nsight Compute side of the GPU profiler: the CSV parser on a file in ncu's format
(tests/data/README.md), the command line, finding ncu, and run_ncu against a stand-in ncu."""
import csv
import io
import stat
import sys
from pathlib import Path

import pytest

from branchy_engine.profiling import ncu

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
                 ["--page", "raw"], ["--print-units", "base"], ["--csv"], ["--log-file", "/t/log.csv"]):
        assert any(options[i:i + len(pair)] == pair for i in range(len(options))), pair
    assert options[options.index("--metrics") + 1].split(",") == list(ncu.METRICS)
    human = ncu.ncu_command("ncu", ["w"], report_csv=False, cache_control="none")
    assert "--csv" not in human and "--page" not in human and "--log-file" not in human
    assert human[human.index("--cache-control") + 1] == "none"
    with pytest.raises(ValueError, match="cache_control"):
        ncu.ncu_command("ncu", ["w"], cache_control="some")


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
    """A stand-in ncu: a Python script that gets ncu's arguments (body sees `args` and `log`)."""
    return str(executable(tmp_path / "ncu", f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                                            f"log = args[args.index('--log-file') + 1]\n{body}"))


def test_run_ncu_runs_the_workload_under_ncu_and_parses_its_log(tmp_path):
    record = tmp_path / "args.txt"
    body = (f"open({str(record)!r}, 'w').write('\\n'.join(args))\n"
            f"open(log, 'w').write({PROF + DATA.read_text()!r})\n")
    parts = ncu.run_ncu("m.branchy", "x.f32", 7, thresholds=[0.25, float("inf")],
                        ncu=fake_ncu(tmp_path, body))
    assert parts == ncu.parse_ncu_csv(DATA.read_text())
    args = record.read_text().split("\n")
    workload = args[args.index(sys.executable):]
    assert workload == [sys.executable, "-m", "branchy_engine.profiling.gpu", "m.branchy", "--raw", "x.f32",
                        "--samples", "7", "--warmup", "0", "--thresholds", "0.25,inf"]
    assert args[:args.index(sys.executable)][:-2] == ncu.ncu_command("ncu", [])[1:]


def test_run_ncu_failures_are_explained(tmp_path):
    denied = ("open(log, 'w').write('==PROF== Connected to process 1\\n==ERROR== ERR_NVGPUCTRPERM - '\n"
              "    'The user does not have permission to access NVIDIA GPU Performance Counters '\n"
              "    'on the target device 0.\\n')\n")
    with pytest.raises(RuntimeError, match="NVreg_RestrictProfilingToAdminUsers=0"):
        ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake_ncu(tmp_path / "a", denied))
    crashed = ("sys.stderr.write('python -m branchy_engine.profiling.gpu: error: profile --device cuda needs a "
               "CUDA GPU; torch sees none\\n')\nsys.exit(2)\n")
    with pytest.raises(RuntimeError, match="(?s)status 2:.*needs a CUDA GPU"):
        ncu.run_ncu("m.branchy", "x.f32", 1, ncu=fake_ncu(tmp_path / "b", crashed))
    slow = "import time\ntime.sleep(30)\n"
    with pytest.raises(RuntimeError, match="did not finish within 1 s"):
        ncu.run_ncu("m.branchy", "x.f32", 1, timeout=1, ncu=fake_ncu(tmp_path / "c", slow))
