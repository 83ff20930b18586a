"""The `branchy` command line."""
import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmd_info(args):
    from branchy_engine.build_info import describe
    print(describe())
    return 0


def cmd_bench(args):
    """Times the fused exit decision against the PyTorch composite and prints the ratio table."""
    bench_dir = os.path.join(REPO, "bench")
    if not os.path.isdir(bench_dir):
        print(f"branchy bench: {bench_dir} not found; run it from a checkout of the repository",
              file=sys.stderr)
        return 2
    json_path = args.json or os.path.join(REPO, "bench", "results", "exit_decision-cpu.json")
    run = [sys.executable, "-m", "pytest", os.path.join(bench_dir, "test_exit_decision_bench.py"), "-q",
           "--benchmark-warmup=on", f"--benchmark-min-rounds={args.rounds}", f"--benchmark-json={json_path}"]
    code = subprocess.call(run, cwd=REPO)
    if code:
        return code
    return subprocess.call([sys.executable, os.path.join(bench_dir, "report.py"), json_path,
                            "--subject", "fused", "--peer", "composite",
                            "--bar", "exit_decision cpu B=1 C=10=5",
                            "--bar", "exit_decision cpu B=4096 C=1000=1",
                            "--command", " ".join(["branchy"] + sys.argv[1:]),
                            "-o", json_path[:-len(".json")] + ".md"], cwd=REPO)


def cmd_demo(args):
    print("branchy demo: the fused exit decision against the PyTorch composite (the end-to-end "
          "Table I demo arrives with the engine)\n")
    cmd_info(args)
    args.json, args.rounds = None, 30
    return cmd_bench(args)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="branchy",
        description="BranchyNet early-exit networks: train in PyTorch, serve with a compiled engine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="what the compiled extension holds (torch version, CUDA, CPU ISA)")
    bench = sub.add_parser("bench", help="time the fused exit decision against the PyTorch composite")
    bench.add_argument("--json", help="where to write the pytest-benchmark JSON "
                                      "(default bench/results/exit_decision-cpu.json)")
    bench.add_argument("--rounds", type=int, default=30, help="minimum rounds per benchmark (default 30)")
    sub.add_parser("demo", help="the main job (for now: the exit-decision benchmark)")
    args = parser.parse_args(argv)
    return {"info": cmd_info, "bench": cmd_bench, "demo": cmd_demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
