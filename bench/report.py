"""Turns a pytest-benchmark JSON into a Markdown table of medians and ratios against a named peer.

    python bench/report.py RESULTS.json --subject fused --peer composite [--bar GROUP=RATIO ...] [-o OUT.md]

Benchmarks are paired by their group (pytest-benchmark's `benchmark.group`) and told apart by
extra_info["impl"]. A bar "GROUP=R" requires peer/subject >= R in that group; the report marks each
PASS or FAIL, and the exit status is 1 if any bar fails.
"""
import argparse
import json
import platform
import sys
from collections import defaultdict

from branchy_engine.fileio import write_text


def load(path):
    with open(path) as f:
        return json.load(f)


def medians(data):
    """{group: {impl: median seconds}} and {group: extra_info of the first benchmark}."""
    table, info = defaultdict(dict), {}
    for b in data["benchmarks"]:
        group = b.get("group") or b["name"]
        table[group][b["extra_info"].get("impl", b["name"])] = b["stats"]["median"]
        info.setdefault(group, b["extra_info"])
    return table, info


def fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.3f} ms"


def machine_line(data):
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    return (f"{cpu.get('brand_raw', m.get('processor', '?'))}, {cpu.get('count', '?')} logical CPUs, "
            f"{m.get('system', platform.system())} {m.get('release', '')}, "
            f"Python {m.get('python_version', '?')}")


def parse_bars(bars):
    out = {}
    for bar in bars:
        group, _, ratio = bar.rpartition("=")
        if not group:
            raise SystemExit(f"--bar must look like 'GROUP=RATIO', got {bar!r}")
        out[group] = float(ratio)
    return out


def report(data, subject, peer, bars, command):
    table, info = medians(data)
    missing = [g for g in bars if g not in table]
    lines = [
        f"Machine: {machine_line(data)}",
        f"Date: {data.get('datetime', '?')}; command: `{command}`",
        "Each time is pytest-benchmark's median over its rounds, after warm-up; the timed function",
        "synchronises the device. Ratio = peer / subject (above 1: the subject is faster).",
        "",
        f"| group | {subject} | {peer} | ratio | threads | bar |",
        "|---|---|---|---|---|---|",
    ]
    failed = bool(missing)
    for group in sorted(table):
        row = table[group]
        if subject not in row or peer not in row:
            continue
        ratio = row[peer] / row[subject]
        bar = ""
        if group in bars:
            ok = ratio >= bars[group]
            failed |= not ok
            bar = f"{'PASS' if ok else 'FAIL'} (>= {bars[group]:g}x)"
        lines.append(f"| {group} | {fmt_time(row[subject])} | {fmt_time(row[peer])} | {ratio:.2f}x | "
                     f"{info[group].get('threads', '')} | {bar} |")
    for group in missing:
        lines.append(f"| {group} | not measured | | | | FAIL (bar {bars[group]:g}x) |")
    return "\n".join(lines) + "\n", failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--subject", required=True, help="extra_info impl of the thing measured")
    ap.add_argument("--peer", required=True, help="extra_info impl it is compared against")
    ap.add_argument("--bar", action="append", default=[], metavar="GROUP=RATIO",
                    help="required peer/subject ratio in a group (repeatable)")
    ap.add_argument("--command", default="make bench", help="the command that produced the JSON")
    ap.add_argument("-o", "--output", help="also write the Markdown here")
    args = ap.parse_args(argv)
    text, failed = report(load(args.results), args.subject, args.peer, parse_bars(args.bar), args.command)
    print(text, end="")
    if args.output:
        write_text(args.output, text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
