"""bench/report.py: medians paired by group, ratios against the peer, bars checked."""
import importlib.util
import json
import os

import pytest

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
