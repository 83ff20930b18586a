"""Turns a pytest-benchmark JSON into a summary JSON and a Markdown table of medians and ratios
against a named peer.

    python bench/report.py RAW.json --subject fused --peer composite [--bar GROUP=RATIO ...]
                           [--summary OUT.json] [-o OUT.md] [--command CMD] [--note TEXT]

RAW.json is pytest-benchmark's own file (--benchmark-json), which holds every round's time: 27 MB
for the exit decision's twelve benchmarks. It is not kept in bench/results/; the summary is (a few
kB): per benchmark the median, quartiles, IQR, min, max, mean, standard deviation, rounds and
iterations in seconds, its extra_info and options; per group the ratio and the bar; the machine,
date, commit and command. The Markdown is drawn from the summary.

Benchmarks are paired by their group (pytest-benchmark's `benchmark.group`) and told apart by
extra_info["impl"]. A bar "GROUP=R" requires peer/subject >= R in that group; the report marks each
PASS or FAIL (a group without both sides measured fails its bar), and the exit status is 1 if any
bar fails.
"""
import argparse
import datetime
import json
import os
import platform
import sys

from branchy_engine import _C
from branchy_engine.calibrate.costs import cpu_model
from branchy_engine.fileio import write_text

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

FORMAT = "branchy-engine benchmark summary"
FORMAT_VERSION = 1
# pytest-benchmark's statistics that the summary keeps, in seconds (rounds and iterations: counts;
# a round times `iterations` calls and counts their mean). Its per-round list ("data") is dropped.
STATS = ("median", "q1", "q3", "iqr", "min", "max", "mean", "stddev", "rounds", "iterations")


def load(path):
    """pytest-benchmark's JSON; a summary given instead is refused with a message saying so."""
    with open(path) as f:
        data = json.load(f)
    if data.get("format") == FORMAT:
        raise SystemExit(f"{path} is a summary written by bench/report.py, not pytest-benchmark's "
                         f"own JSON (--benchmark-json); give the raw file")
    return data


def machine(data):
    """The machine of a pytest-benchmark run, in a few fields."""
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    return {"cpu": cpu.get("brand_raw", m.get("processor") or "?"), "cpus": cpu.get("count", "?"),
            "arch": cpu.get("arch_string_raw", m.get("machine", "?")),
            "hz_advertised": cpu.get("hz_advertised_friendly", "?"),
            "system": f"{m.get('system', '?')} {m.get('release', '')}".strip(),
            "python": m.get("python_version", "?")}


def parse_bars(bars):
    out = {}
    for bar in bars:
        group, _, ratio = bar.rpartition("=")
        if not group:
            raise SystemExit(f"--bar must look like 'GROUP=RATIO', got {bar!r}")
        out[group] = float(ratio)
    return out


def summarize(data, subject, peer, bars, command, note=None):
    """The summary of a pytest-benchmark run (a dict, as written to JSON): see the module's doc.

    Args:
        data: pytest-benchmark's JSON, loaded.
        subject, peer: the extra_info["impl"] of the thing measured and of what it is compared to.
        bars: {group: least peer/subject ratio}.
        command: the command that ran the benchmarks.
        note: a line kept in the summary as it is (e.g. where the figures came from).
    """
    groups = {}
    for b in data["benchmarks"]:
        group = groups.setdefault(b.get("group") or b["name"],
                                  {"threads": b["extra_info"].get("threads"), "impls": {}})
        group["impls"][b["extra_info"].get("impl", b["name"])] = {
            "name": b["name"], **{k: b["stats"][k] for k in STATS if k in b["stats"]},
            "extra_info": b["extra_info"], "options": b.get("options", {})}
    for group in groups.values():
        impls = group["impls"]
        both = subject in impls and peer in impls
        group["ratio"] = impls[peer]["median"] / impls[subject]["median"] if both else None
    checked = {}
    for group, required in bars.items():
        ratio = groups[group]["ratio"] if group in groups else None
        checked[group] = {"required": required, "ratio": ratio,
                          "pass": ratio is not None and ratio >= required}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "date": data.get("datetime", "?"), "command": command, **({"note": note} if note else {}),
        "machine": machine(data), "commit": data.get("commit_info", {}),
        "pytest_benchmark": data.get("version", "?"),
        "unit": "s", "subject": subject, "peer": peer,
        "ratio": "peer median / subject median (above 1: the subject is faster)",
        "groups": dict(sorted(groups.items())), "bars": checked,
        "pass": all(bar["pass"] for bar in checked.values()),
    }


def fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.3f} ms"


def markdown(summary):
    """The summary as a Markdown table: one row per group measured on both sides, then each bar
    whose group was not."""
    m, subject, peer, bars = summary["machine"], summary["subject"], summary["peer"], summary["bars"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} logical CPUs, {m['system']}, Python {m['python']}",
        f"Date: {summary['date']}; command: `{summary['command']}`",
        "Each time is pytest-benchmark's median over its rounds, after warm-up; the timed function",
        "synchronises the device. Ratio = peer / subject (above 1: the subject is faster).",
        "",
        f"| group | {subject} | {peer} | ratio | threads | bar |",
        "|---|---|---|---|---|---|",
    ]
    for name, group in summary["groups"].items():
        if group["ratio"] is None:
            continue
        bar = bars.get(name)
        verdict = f"{'PASS' if bar['pass'] else 'FAIL'} (>= {bar['required']:g}x)" if bar else ""
        threads = "" if group["threads"] is None else group["threads"]
        lines.append(f"| {name} | {fmt_time(group['impls'][subject]['median'])} | "
                     f"{fmt_time(group['impls'][peer]['median'])} | {group['ratio']:.2f}x | "
                     f"{threads} | {verdict} |")
    for name, bar in bars.items():
        if bar["ratio"] is None:
            lines.append(f"| {name} | not measured | | | | FAIL (bar {bar['required']:g}x) |")
    return "\n".join(lines) + "\n"


def write_run(script, argv, fields, markdown, out=RESULTS, quick=False, indent=1, **machine):
    """The end of a bench/*.py script's main(): its record, printed as Markdown and, unless quick,
    written to OUT/NAME.json and OUT/NAME.md (NAME: the script's file name without .py, "_" as "-",
    e.g. python-threads).

    Args:
        script: the script's __file__.
        argv: main's argv (None: sys.argv[1:]), for the record's command.
        fields: what the script measured, in the record's order after date, command and machine.
        markdown: record -> the Markdown text.
        quick: print only (a quick run proves the script runs; its figures are not kept).
        indent: the JSON's indent.
        machine: more machine fields, between "isa" and "platform" (e.g. threads=1).
    Returns:
        the record: {"date", "command", "machine": {"cpu", "isa", **machine, "platform"}, **fields}.
    """
    name = os.path.basename(script)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": f"python bench/{name} " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"cpu": cpu_model(), "isa": _C.cpu_isa(), **machine, "platform": platform.platform()},
              **fields}
    text = markdown(record)
    print(text)
    if not quick:
        stem = os.path.join(out, os.path.splitext(name)[0].replace("_", "-"))
        os.makedirs(out, exist_ok=True)
        write_text(stem + ".json", json.dumps(record, indent=indent) + "\n")
        write_text(stem + ".md", text)
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="pytest-benchmark's JSON (--benchmark-json)")
    ap.add_argument("--subject", required=True, help="extra_info impl of the thing measured")
    ap.add_argument("--peer", required=True, help="extra_info impl it is compared against")
    ap.add_argument("--bar", action="append", default=[], metavar="GROUP=RATIO",
                    help="required peer/subject ratio in a group (repeatable)")
    ap.add_argument("--command", default="make bench", help="the command that produced the JSON")
    ap.add_argument("--note", help="a line to keep in the summary (e.g. where the figures came from)")
    ap.add_argument("--summary", help="write the summary JSON here")
    ap.add_argument("-o", "--output", help="also write the Markdown here")
    args = ap.parse_args(argv)
    summary = summarize(load(args.results), args.subject, args.peer, parse_bars(args.bar),
                        args.command, args.note)
    text = markdown(summary)
    print(text, end="")
    if args.summary:
        write_text(args.summary, json.dumps(summary, indent=1) + "\n")
    if args.output:
        write_text(args.output, text)
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
