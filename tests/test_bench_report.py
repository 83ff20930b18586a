"""bench/report.py: medians paired by group, ratios against the peer, bars checked, and a summary
JSON small enough for bench/results/ in place of pytest-benchmark's raw dump."""
import datetime
import importlib
import importlib.util
import json
import os
import subprocess
import types

import pytest

from branchy_engine.commands import cli

spec = importlib.util.spec_from_file_location(
    "bench_report", os.path.join(os.path.dirname(__file__), "..", "bench", "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def results(fused_b1, composite_b1):
    def bench(group, impl, median):
        return {"group": group, "name": f"{group}-{impl}", "extra_info": {"impl": impl, "threads": 1},
                "stats": {"median": median}}
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}}, "datetime": "2026-01-01",
            "benchmarks": [bench("g B=1", "fused", fused_b1), bench("g B=1", "composite", composite_b1),
                           bench("g B=64", "fused", 2e-6), bench("g B=64", "composite", 1e-6)]}


def test_ratios_and_bars(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results(1e-6, 6e-6)))
    out = tmp_path / "r.md"
    code = report.main([str(path), "--subject", "fused", "--peer", "composite", "--bar", "g B=1=5",
                        "-o", str(out)])
    text = out.read_text()
    assert code == 0
    assert "| g B=1 | 1.00 us | 6.00 us | 6.00x | 1 | PASS (>= 5x) |" in text
    assert "| g B=64 | 2.00 us | 1.00 us | 0.50x | 1 |  |" in text
    assert "Test CPU, 2 logical CPUs" in text


def test_a_missed_bar_fails(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results(2e-6, 6e-6)))
    assert report.main([str(path), "--subject", "fused", "--peer", "composite", "--bar", "g B=1=5"]) == 1
    assert report.main([str(path), "--subject", "fused", "--peer", "composite", "--bar", "nothing=1"]) == 1


def test_a_malformed_bar_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results(1e-6, 6e-6)))
    with pytest.raises(SystemExit, match="GROUP=RATIO"):
        report.main([str(path), "--subject", "fused", "--peer", "composite", "--bar", "5"])


def raw_run(groups, rounds):
    """pytest-benchmark's JSON as --benchmark-json writes it: every round's time in stats["data"]."""
    def bench(group, impl, median):
        data = [median * (1 + (i % 7) / 10) for i in range(rounds)]
        return {"group": group, "name": f"test[{group}-{impl}]", "param": f"{group}-{impl}",
                "fullname": f"bench/x.py::test[{group}-{impl}]", "params": {"impl": impl},
                "extra_info": {"impl": impl, "threads": 2, "cpu_isa": "avx2"},
                "options": {"min_rounds": 30, "timer": "perf_counter", "warmup": 100000},
                "stats": {"min": min(data), "max": max(data), "mean": sum(data) / rounds, "stddev": 1e-7,
                          "rounds": rounds, "median": median, "iqr": 2e-7, "q1": median * 0.9,
                          "q3": median * 1.1, "iqr_outliers": 3, "stddev_outliers": 4, "outliers": "4;3",
                          "ld15iqr": min(data), "hd15iqr": max(data), "ops": 1 / median, "total": sum(data),
                          "data": data, "iterations": 10}}
    return {"machine_info": {"node": "vm", "machine": "x86_64", "python_version": "3.11.7",
                             "system": "Linux", "release": "6.1",
                             "cpu": {"brand_raw": "Test CPU", "count": 2, "flags": ["avx2"] * 100}},
            "commit_info": {"id": "abc", "dirty": False}, "datetime": "2026-01-01T00:00:00",
            "version": "5.3.1",
            "benchmarks": [bench(group, impl, median) for group, medians in groups.items()
                           for impl, median in medians.items()]}


GROUPS = {f"exit_decision cpu B={b} C={c}": {"fused": 1e-6 * b, "composite": 6e-6 * b}
          for b in (1, 64, 4096) for c in (10, 1000)}


def test_the_summary_is_written_and_small(tmp_path):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(raw_run(GROUPS, rounds=100_000)))  # about the committed dump's size
    summary, md = tmp_path / "s.json", tmp_path / "s.md"
    code = report.main([str(raw), "--subject", "fused", "--peer", "composite",
                        "--bar", "exit_decision cpu B=1 C=10=5", "--command", "branchy bench",
                        "--note", "converted", "--summary", str(summary), "-o", str(md)])
    assert code == 0
    assert raw.stat().st_size > 10_000_000
    assert summary.stat().st_size < 20_000  # bench/results/ keeps JSON under 1 MB
    s = json.loads(summary.read_text())
    assert s["format"] == report.FORMAT and s["note"] == "converted" and s["command"] == "branchy bench"
    assert s["machine"] == {"cpu": "Test CPU", "cpus": 2, "arch": "x86_64", "hz_advertised": "?",
                            "system": "Linux 6.1", "python": "3.11.7"}
    assert list(s["groups"]) == sorted(GROUPS)
    fused = s["groups"]["exit_decision cpu B=1 C=10"]["impls"]["fused"]
    assert set(fused) == {"name", *report.STATS, "extra_info", "options"}
    assert fused["median"] == 1e-6 and fused["rounds"] == 100_000 and fused["iterations"] == 10
    assert s["groups"]["exit_decision cpu B=1 C=10"]["ratio"] == pytest.approx(6.0)
    assert s["bars"] == {"exit_decision cpu B=1 C=10": {"required": 5.0, "ratio": pytest.approx(6.0),
                                                        "pass": True}}
    assert s["pass"] is True
    assert "| exit_decision cpu B=1 C=10 | 1.00 us | 6.00 us | 6.00x | 2 | PASS (>= 5x) |" in md.read_text()
    assert md.read_text().startswith("Machine: Test CPU, 2 logical CPUs, Linux 6.1, Python 3.11.7\n")


def test_a_summary_is_not_taken_for_a_raw_run(tmp_path):
    raw, summary = tmp_path / "raw.json", tmp_path / "s.json"
    raw.write_text(json.dumps(raw_run(GROUPS, rounds=10)))
    args = ["--subject", "fused", "--peer", "composite", "--summary", str(summary)]
    assert report.main([str(raw), *args]) == 0
    with pytest.raises(SystemExit, match="not pytest-benchmark's own JSON"):
        report.main([str(summary), *args])


def test_branchy_bench_keeps_the_raw_dump_out_of_the_results(tmp_path, monkeypatch):
    """`branchy bench` with the benchmark run replaced: the summary and the table at --json, the
    raw dump at --raw."""
    calls, run = [], subprocess.call

    def call(command, **kwargs):
        calls.append(command)
        if "pytest" in command:
            json_option = next(a for a in command if a.startswith("--benchmark-json="))
            with open(json_option.split("=", 1)[1], "w") as f:
                json.dump(raw_run(GROUPS, rounds=1000), f)
            return 0
        return run(command, **kwargs)

    monkeypatch.setattr(cli.subprocess, "call", call)
    summary, raw = tmp_path / "results" / "exit_decision-cpu.json", tmp_path / "raw" / "run.json"
    assert cli.main(["bench", "--json", str(summary), "--raw", str(raw)]) == 0
    assert len(calls) == 2
    assert json.loads(raw.read_text())["benchmarks"][0]["stats"]["data"]
    s = json.loads(summary.read_text())
    assert s["format"] == report.FORMAT and s["command"] == f"branchy bench --json {summary} --raw {raw}"
    assert all(bar["pass"] for bar in s["bars"].values()) and len(s["bars"]) == 2
    assert (tmp_path / "results" / "exit_decision-cpu.md").read_text().count("PASS") == 2
    assert sorted(os.listdir(tmp_path / "results")) == ["exit_decision-cpu.json", "exit_decision-cpu.md"]


BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")


@pytest.mark.parametrize("script, name, indent, machine", [
    ("denormals", "denormals", 1, []), ("python_threads", "python-threads", 1, []),
    ("any_network", "any-network", 2, ["threads"]), ("capi", "capi", 2, ["threads"])])
def test_a_bench_script_record_rewritten_by_write_run_is_byte_identical(tmp_path, monkeypatch, capsys,
                                                                        script, name, indent, machine):
    # The committed record's date, command and machine given back through write_run (with the
    # script's own markdown and the indent its main passes) give the committed files byte for byte:
    # the shared tail keeps the scripts' formats.
    monkeypatch.syspath_prepend(BENCH)
    markdown = importlib.import_module(script).markdown
    committed = os.path.join(BENCH, "results", name)
    with open(committed + ".json") as f:
        record = json.load(f)
    m = record["machine"]
    when = datetime.datetime.fromisoformat(record["date"])
    monkeypatch.setattr(report, "cpu_model", lambda: m["cpu"])
    monkeypatch.setattr(report, "_C", types.SimpleNamespace(cpu_isa=lambda: m["isa"]))
    monkeypatch.setattr(report.platform, "platform", lambda: m["platform"])
    monkeypatch.setattr(report, "datetime", types.SimpleNamespace(
        datetime=types.SimpleNamespace(now=lambda tz: when), timezone=datetime.timezone))
    fields = {k: v for k, v in record.items() if k not in ("date", "command", "machine")}
    argv = record["command"].split(" ")[2:]
    out = tmp_path / "results"
    extra = {k: m[k] for k in machine}
    got = report.write_run(f"bench/{script}.py", argv, fields, markdown, str(out), indent=indent, **extra)
    assert got == record
    for ext in (".json", ".md"):
        with open(committed + ext) as f:
            assert (out / (name + ext)).read_text() == f.read()
    assert capsys.readouterr().out == (out / (name + ".md")).read_text() + "\n"
    # A quick run prints the same and writes nothing.
    quick = tmp_path / "quick"
    report.write_run(f"bench/{script}.py", argv, fields, markdown, str(quick), quick=True, indent=indent, **extra)
    assert not quick.exists() and capsys.readouterr().out == markdown(got) + "\n"
