"""The `branchy` command line."""
import argparse
import os
import shlex
import subprocess
import sys

from branchy_engine.argtypes import floats, names

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one worth showing (not None, not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def cmd_info(args):
    from branchy_engine.build_info import describe
    print(describe())
    return 0


def add_run_parser(sub):
    from branchy_engine import data
    p = sub.add_parser(
        "run", help="classify a data split with a .branchy model through the CPU engine",
        formatter_class=Defaults,
        description="Runs every sample of a split alone (batch 1), as an embedded caller would, and "
                    "prints the accuracy, how many samples left at each exit, and the latency per "
                    "sample (each call timed in C++). Inputs are prepared as the model's training "
                    "data was (the normalisation recorded in the model file).")
    p.add_argument("model", help="a .branchy file from `branchy export`")
    p.add_argument("--data", help=f"one of {', '.join(data.DATASETS)} (default: the model's own)")
    p.add_argument("--data-dir", help="where the data lives (default: as for training)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="the test split, or the validation split held out of training (where "
                        "`branchy calibrate` chose the thresholds)")
    p.add_argument("--limit", type=int, help="use only the first N samples")
    p.add_argument("--threads", type=int, default=1, help="threads one call may use (oneDNN layers)")
    p.add_argument("--thresholds", type=floats,
                   help="override the file's thresholds: one per early exit, comma-separated")
    p.add_argument("--kernels", default="measure", choices=["measure", "own", "dnnl"],
                   help="measure: per layer, whichever of the own kernels and oneDNN is faster on "
                        "this machine; own: the runtime's own kernels only; dnnl: oneDNN wherever "
                        "it has the op")


def cmd_run(args):
    import torch
    from branchy_engine import data
    from branchy_engine.runtime.engine import Engine
    engine = Engine(args.model, threads=args.threads, thresholds=args.thresholds, kernels=args.kernels)
    x, labels, d = data.model_samples(engine.metadata, engine.input_shape, name=args.data,
                                      data_dir=args.data_dir, split=args.split, limit=args.limit)
    prediction, exit, _, micros = engine.run_timed(x)
    n = len(labels)
    print(f"{args.model}: {n} {args.split} samples of {d.name}, batch 1, {args.threads} thread(s)")
    print(f"accuracy: {100.0 * float((prediction == labels).double().mean()):.2f}%")
    print("exits: " + "  ".join(f"{e + 1}: {int((exit == e).sum())} ({100.0 * float((exit == e).double().mean()):.1f}%)"
                                for e in range(engine.num_exits)))
    q = micros.quantile(torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    print(f"latency per sample (us, timed in C++): mean {float(micros.mean()):.2f}  p50 {q[0]:.2f}  "
          f"p90 {q[1]:.2f}  p99 {q[2]:.2f}  max {float(micros.max()):.2f}")
    return 0


def add_profile_parser(sub):
    from branchy_engine.profiling.ncu import NCU_MAX_SAMPLES
    from branchy_engine.profiling.profile import COUNTERS, GPU_MODE, GPU_MODES, SIM_SAMPLES, SWEEP_SIM_SAMPLES
    p = sub.add_parser(
        "profile", help="latency per stage and exit, and cache behaviour (the paper's Figure 6)",
        formatter_class=Defaults,
        description="Runs the test split one sample at a time (batch 1) through the engine, with "
                    "a timer around every stage and exit head, and reports latency (mean, p50, "
                    "p90, p99, max) per sample, per stage and per exit, and throughput. Cache "
                    "behaviour: the CPU's hardware counters (perf_event_open) where the kernel "
                    "grants them, else valgrind's cache simulator on the same workload (I1/D1/LL "
                    "misses per inference); on the GPU, CUDA events, and Nsight Compute with "
                    "--ncu. --sweep plots runtime and cache misses against the threshold (Figure "
                    "6). Writes OUT/profile-NAME.json (-sweep.json) and PNG plots.")
    p.add_argument("model", help="a .branchy file, a checkpoint, or a shipped model's name "
                                 "(b_lenet, lenet, b_alexnet, b_resnet110)")
    p.add_argument("--device", default="cpu",
                   help="cpu: the CPU engine; cuda[:N]: the GPU engine on that GPU")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--thresholds", type=floats, help="one per early exit, comma-separated "
                                                          "(default: the model's)")
    group.add_argument("--sweep", action="store_true",
                       help="every early exit's threshold set to each value of a grid in turn")
    p.add_argument("--sweep-values", type=floats, help="the grid for --sweep (default: from no "
                                                        "early exit to all at the first)")
    p.add_argument("--counters", default="auto", choices=COUNTERS,
                   help="auto: hardware counters if granted, else the simulator; perf: counters "
                        "or an error; sim: the simulator; off: latency only")
    p.add_argument("--samples", type=int, default=1000, help="test samples (per sweep point)")
    p.add_argument("--rounds", type=int, default=5,
                   help="CPU: passes over the samples; each sample's figures are its median")
    p.add_argument("--sim-samples", type=int,
                   help=f"of those, how many run under the cache simulator, thousands of times "
                        f"slower (B-AlexNet: about 2 s a call); default {SIM_SAMPLES}, with --sweep "
                        f"{SWEEP_SIM_SAMPLES} a point")
    for level in ("i1", "d1", "ll"):
        p.add_argument(f"--cache-{level}", metavar="SIZE,ASSOC,LINE",
                       help=f"simulate this {level.upper()} cache (bytes) instead of the host's")
    p.add_argument("--gpu-mode", choices=GPU_MODES,
                   help=f"GPU: the engine mode to time (default {GPU_MODE}). eager: each stage, and "
                        f"each exit head with its decision and host read; graphs: each segment's "
                        f"CUDA graph (stages, exit head and decision), and each host read; "
                        f"conditional: one graph per inference, so only the whole inference")
    p.add_argument("--ncu", action="store_true",
                   help=f"GPU: L1/L2 hit rates and DRAM bytes per stage with Nsight Compute, over "
                        f"the first {NCU_MAX_SAMPLES} samples at most (ncu replays every kernel: "
                        f"seconds per sample), through the eager path")
    p.add_argument("--data-dir", help="where the data lives (default: as for training)")
    p.add_argument("--threads", type=int, default=1, help="threads one call may use (oneDNN layers)")
    p.add_argument("--out", default="profile", help="directory for the JSON and the plots")


def cmd_profile(args):
    from branchy_engine.profiling import cachesim, profile
    caches = {level.upper(): cachesim.parse_cache(getattr(args, f"cache_{level}"))
              for level in ("i1", "d1", "ll") if getattr(args, f"cache_{level}")}
    opts = profile.ProfileOptions(
        model=args.model, device=args.device, thresholds=args.thresholds, sweep=args.sweep,
        sweep_values=args.sweep_values, counters=args.counters, samples=args.samples,
        sim_samples=args.sim_samples, rounds=args.rounds, caches=caches, ncu=args.ncu,
        gpu_mode=args.gpu_mode, data_dir=args.data_dir, out=args.out, threads=args.threads)
    opts.argv = args.argv[1:]
    try:
        record = profile.run(opts)
    except RuntimeError as e:  # the simulator or ncu failed: its own words
        print(f"branchy profile: error: {e}", file=sys.stderr)
        return 1
    print(profile.table(record))
    return 0


def add_bench_parser(sub):
    p = sub.add_parser(
        "bench", help="time the fused exit decision against the PyTorch composite",
        description="Times the fused exit decision op (softmax, entropy, threshold and argmax in one "
                    "pass) against the PyTorch composite a user would write, with "
                    "pytest-benchmark over batch sizes and class counts, warmed up, and writes the "
                    "median ratios with their bars. Needs a checkout of the repository (bench/).")
    p.add_argument("--json", help="where to write the summary JSON, the Markdown table beside it "
                                  "(default bench/results/exit_decision-cpu.json)")
    p.add_argument("--raw", help="where to keep pytest-benchmark's own JSON, every round's time "
                                 "(default .benchmarks/NAME.json in the checkout, NAME as --json's; "
                                 "git ignores it)")
    p.add_argument("--rounds", type=int, default=30, help="minimum rounds per benchmark (default 30)")


def cmd_bench(args):
    """Times the fused exit decision against the PyTorch composite, writes the summary JSON and the
    ratio table, and prints the table."""
    bench_dir = os.path.join(REPO, "bench")
    if not os.path.isdir(bench_dir):
        print(f"branchy bench: {bench_dir} not found; run it from a checkout of the repository",
              file=sys.stderr)
        return 2
    json_path = args.json or os.path.join(REPO, "bench", "results", "exit_decision-cpu.json")
    raw_path = args.raw or os.path.join(REPO, ".benchmarks", os.path.basename(json_path))
    os.makedirs(os.path.dirname(os.path.abspath(raw_path)), exist_ok=True)
    run = [sys.executable, "-m", "pytest", os.path.join(bench_dir, "test_exit_decision_bench.py"), "-q",
           "--benchmark-warmup=on", f"--benchmark-min-rounds={args.rounds}", f"--benchmark-json={raw_path}"]
    code = subprocess.call(run, cwd=REPO)
    if code:
        return code
    return subprocess.call([sys.executable, os.path.join(bench_dir, "report.py"), raw_path,
                            "--subject", "fused", "--peer", "composite",
                            "--bar", "exit_decision cpu B=1 C=10=5",
                            "--bar", "exit_decision cpu B=4096 C=1000=1",
                            "--command", shlex.join(["branchy"] + args.argv),
                            "--summary", json_path, "-o", os.path.splitext(json_path)[0] + ".md"],
                           cwd=REPO)


def add_train_parser(sub):
    from branchy_engine import data, models
    from training import TrainConfig
    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train a network: its baseline first, then all exits jointly",
        formatter_class=Defaults,
        description="Phase 1 trains the baseline (the trunk with the final exit only); phase 2 trains "
                    "the BranchyNet jointly, initialised from phase 1, on the loss sum_n w_n * "
                    "cross-entropy(exit n). Writes OUT/NAME.pt and OUT/NAME.json for each phase. "
                    "Under torchrun every process trains a shard of each batch (DDP). Any "
                    "torchvision classifier trains too (--model torchvision:NAME), its exits "
                    "attached on its traced graph (--exits); --init-from and --freeze-backbone "
                    "train only the exit heads of a network already trained.")
    p.add_argument("--model", default=d.model,
                   help=f"zoo network ({', '.join(sorted(models.names()))}), or torchvision:NAME for "
                        f"a torchvision classification model (resnet18, mobilenet_v3_small, "
                        f"efficientnet_b0, ...) built with weights=None and num_classes from the "
                        f"dataset (a constructor that takes no num_classes gets its last nn.Linear "
                        f"replaced by one with num_classes outputs); it takes 3 channels, so grey "
                        f"data is repeated to 3")
    p.add_argument("--exits", type=names, default=None,
                   help="torchvision:NAME: where the early exits go, comma-separated names of "
                        "modules or graph ops (layer2,layer3; features.4,features.8); an unknown "
                        "name lists the valid ones. Default: two exits, on the block outputs "
                        "nearest a third and two thirds of the way through the trunk "
                        "(models.default_exits)")
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--data-dir", default=d.data_dir,
                   help="where the data lives (torchvision layout); fashion-mnist defaults to the "
                        "Debian package's files. imagefolder: DIR/train/CLASS/*.png (any image "
                        "type) with DIR/test/CLASS/ and/or DIR/val/CLASS/ beside it, or DIR/CLASS/ "
                        "alone, split by --val-fraction into validation and test")
    p.add_argument("--input-size", type=int, default=d.input_size,
                   help="resize every image to NxN (bilinear, antialiased); needed for an "
                        "imagefolder whose images differ in size")
    p.add_argument("--download", action="store_true", help="let torchvision download missing data")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of the training set held out for validation (threshold tuning)")
    p.add_argument("--limit", type=int, default=d.limit, help="use only the first N samples of each split")
    p.add_argument("--out", default=None, help="output directory (default runs/MODEL-DATASET)")
    p.add_argument("--baseline-epochs", type=int, default=d.baseline_epochs, help="phase 1 epochs")
    p.add_argument("--epochs", type=int, default=d.epochs, help="phase 2 (joint) epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--betas", type=floats, default=[d.beta1, d.beta2],
                   help="Adam beta1,beta2 (the authors' code ran 0.9; the paper says 0.99)")
    p.add_argument("--exit-weights", type=floats, default=None,
                   help="loss weight per exit, comma-separated (default all 1.0)")
    p.add_argument("--init-from", default=None,
                   help="skip phase 1 and start phase 2 from trained weights: for a zoo network its "
                        "baseline checkpoint from `branchy train`; for torchvision:NAME a plain "
                        "state_dict file (torch.save(model.state_dict(), FILE)), loaded strictly "
                        "into the model before the exits are attached")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the early-exit heads of the network --init-from gives: the "
                        "trunk and the final classifier keep their weights and BatchNorm "
                        "statistics (eval mode throughout); no phase 1")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seeds the weights' initialisation, dropout, the data order and which "
                        "training samples are held out for validation")
    p.add_argument("--device", default=d.device, choices=["cpu", "cuda"], help="where to train")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--save-every", type=int, default=d.save_every,
                   help="also checkpoint every N steps (0: at the end of every epoch only)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoints are in --out, where it stopped")


def cmd_train(args):
    from training import TrainConfig, train
    if len(args.betas) != 2:
        raise ValueError(f"--betas takes two numbers, got {args.betas}")
    cfg = TrainConfig(
        model=args.model, exits=args.exits, dataset=args.dataset, data_dir=args.data_dir,
        download=args.download, val_fraction=args.val_fraction, limit=args.limit,
        input_size=args.input_size,
        out=args.out or os.path.join("runs", f"{args.model.replace(':', '-')}-{args.dataset}"),
        baseline_epochs=args.baseline_epochs, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, beta1=args.betas[0], beta2=args.betas[1], exit_weights=args.exit_weights,
        init_from=args.init_from, freeze_backbone=args.freeze_backbone, seed=args.seed,
        device=args.device, threads=args.threads, save_every=args.save_every, resume=args.resume,
        command=shlex.join(["branchy"] + args.argv))
    for name, path in train(cfg).items():
        print(f"{name}: {path}")
    return 0


def add_calibrate_parser(sub):
    from branchy_engine.calibrate import CRITERIA
    p = sub.add_parser(
        "calibrate", help="choose exit thresholds on the validation split and write them into a checkpoint",
        formatter_class=Defaults,
        description="Runs the network once over the validation and test splits (all exits), then "
                    "evaluates a grid of thresholds from that table: the authors' grid, a log-spaced "
                    "grid and the observed scores' quantiles. Picks the frontier's knee, or the "
                    "cheapest thresholds meeting --min-accuracy/--max-drop, or the most accurate "
                    "within --latency-budget, on validation; reports validation and test side by side; "
                    "writes the thresholds into CHECKPOINT and plots into --out.")
    p.add_argument("checkpoint", help="a BranchyNet checkpoint from `branchy train`")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--min-accuracy", type=float, help="the cheapest thresholds reaching this accuracy (%%)")
    target.add_argument("--max-drop", type=float,
                        help="the cheapest thresholds at most this many points below the final exit alone")
    target.add_argument("--latency-budget", type=float,
                        help="the most accurate thresholds whose expected cost fits (costs' unit: us or MFLOP)")
    target.add_argument("--thresholds", type=floats, help="evaluate these thresholds (comma-separated) instead")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="--min-accuracy/--max-drop must hold at this one-sided confidence on "
                        "validation (its sampling error taken into account); 0.5: the plain rule")
    p.add_argument("--criterion", default="entropy", choices=CRITERIA,
                   help="entropy < T (the paper), max softmax >= T, or patience k (consecutive exits agree)")
    p.add_argument("--cost", default="measure", choices=["measure", "flops"],
                   help="per-segment costs where --costs gives none: measure: PyTorch eager at "
                        "batch 1 on this machine (not the engine); flops: counted FLOPs")
    p.add_argument("--costs", dest="costs_file",
                   help="read per-segment costs from this file instead: the engine's own, from "
                        "`branchy costs CHECKPOINT` (as `branchy demo` does)")
    p.add_argument("--threads", type=int, default=1, help="threads for --cost measure")
    p.add_argument("--data-dir", help="where the checkpoint's dataset lives, if not where it was trained")
    p.add_argument("--out", dest="out_dir", help="plots and JSON (default: calibration-NAME beside the checkpoint)")
    p.add_argument("-o", "--output", help="write the calibrated checkpoint here instead of in place")
    p.add_argument("--dry-run", action="store_true", help="report only; write no checkpoint")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where PyTorch runs the network over the validation and test splits")


def cmd_calibrate(args):
    from branchy_engine.calibrate import Target
    from branchy_engine.calibrate.run import Options, calibrate, table_row
    opts = Options(
        checkpoint=args.checkpoint, criterion=args.criterion,
        target=Target(args.min_accuracy, args.max_drop, args.latency_budget, args.confidence),
        thresholds=args.thresholds, cost=args.cost, costs_file=args.costs_file, threads=args.threads,
        data_dir=args.data_dir, out_dir=args.out_dir, output=args.output, dry_run=args.dry_run,
        device=args.device)
    record = calibrate(opts)
    print(table_row(record, os.path.basename(args.checkpoint)))
    for warning in record["warnings"]:
        print(f"branchy calibrate: warning: {warning}", file=sys.stderr)
    print("files: " + ", ".join(record["files"].values()))
    if not args.dry_run:
        print(f"thresholds written into {args.output or args.checkpoint}")
    return 0


def add_export_parser(sub):
    p = sub.add_parser(
        "export", help="write a checkpoint as one .branchy model file for the C++ runtime",
        description="Folds BatchNorm into the convolutions, fuses ReLUs, drops dropout and writes the "
                    "stages, exits, exit rule, class names, metadata and weights into one file "
                    "(docs/model-format.md). The thresholds come from `branchy calibrate` unless given.")
    p.add_argument("checkpoint", help="a checkpoint from `branchy train` (calibrated, if it has early exits)")
    p.add_argument("-o", "--output", required=True, help="the model file to write, e.g. model.branchy")
    p.add_argument("--thresholds", type=floats,
                   help="one threshold per early exit, comma-separated ('inf' allowed), instead of the "
                        "checkpoint's calibration")
    p.add_argument("--criterion", choices=["entropy", "maxprob"],
                   help="exit rule for --thresholds: entropy < T or max softmax >= T (default entropy)")


def cmd_export(args):
    from branchy_engine.export import export, report
    print(report(export(args.checkpoint, args.output, args.thresholds, args.criterion)))
    return 0


def add_inspect_parser(sub):
    p = sub.add_parser(
        "inspect", help="show a .branchy model file as the C++ runtime reads it",
        description="Reads the model file through the C++ runtime's own reader (its checks "
                    "included) and prints the input shape, classes, exit rule and thresholds, and "
                    "one table of ops per stage and exit head (stages and exits numbered from 1; "
                    "values by their id in the file), the weights and the metadata's keys.")
    p.add_argument("model", help="a .branchy model file")
    p.add_argument("--json", action="store_true", help="print the runtime's JSON summary as it is")


def cmd_inspect(args):
    from branchy_engine.export import model_file
    if args.json:
        print(model_file.summary_json(args.model))
    else:
        print(model_file.describe(model_file.summary(args.model), title=args.model))
    return 0


def add_costs_parser(sub):
    p = sub.add_parser(
        "costs", help="measure a checkpoint's per-segment costs at batch 1 (for calibrate --costs)",
        formatter_class=Defaults,
        description="Times what a sample pays between consecutive exits (stages, the exit's head "
                    "and decision) and the baseline network, at batch 1 on this machine, and writes "
                    "a costs file for `branchy calibrate --costs`. The file records how it was measured.")
    p.add_argument("checkpoint", help="a BranchyNet checkpoint (.pt) from `branchy train`")
    p.add_argument("-o", "--output", help="costs file (default: NAME.costs.json beside the checkpoint)")
    p.add_argument("--method", default="engine", choices=["engine", "pytorch", "flops"],
                   help="the CPU engine, PyTorch eager, or counted FLOPs")
    p.add_argument("--threads", type=int, default=1, help="threads for the timed calls")


def cmd_costs(args):
    from branchy_engine import checkpoint
    from branchy_engine.calibrate import costs as costs_mod
    ckpt = checkpoint.load(args.checkpoint)
    net = checkpoint.build_model(ckpt)
    shape = ckpt["dataset"]["input_shape"]
    if args.method == "engine":
        from branchy_engine.runtime.engine_costs import measure_engine
        costs = measure_engine(net, shape, threads=args.threads)
    elif args.method == "pytorch":
        costs = costs_mod.measure_pytorch(net, shape, threads=args.threads)
    else:
        costs = costs_mod.count_flops(net, shape)
    output = args.output or os.path.splitext(args.checkpoint)[0] + ".costs.json"
    costs_mod.save(output, costs)
    print(f"{net.name}: segments {', '.join(f'{c:.2f}' for c in costs.segments)} {costs.unit}; "
          f"baseline {costs.baseline:.2f} {costs.unit}\n{costs.method}\nwrote {output}")
    return 0


def add_demo_parser(sub):
    p = sub.add_parser(
        "demo", help="the main job: Table I on Fashion-MNIST, end to end, against real peers",
        formatter_class=Defaults,
        description="With the shipped LeNet and B-LeNet (or --retrain): measure the engine's costs, "
                    "calibrate on the validation split, export, run the test set at batch 1 through "
                    "the CPU engine, time the baselines in the engine, ONNX Runtime and PyTorch "
                    "eager, and print Table I. Writes OUT/table1.{json,md}, the plots and the model.")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--retrain", action="store_true", help="train LeNet and B-LeNet afresh first")
    p.add_argument("--epochs", type=int, default=50, help="epochs per phase with --retrain")
    p.add_argument("--limit", type=int, help="use only the first N test samples")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine and peer")
    p.add_argument("--data-dir", help="where Fashion-MNIST lives (default: the Debian package)")


def print_tables(out, result):
    with open(os.path.join(out, "table1.md")) as f:
        print(f.read())
    files = {os.path.join(out, "table1.json"), os.path.join(out, "table1.md")}
    for table in result["networks"]:
        files |= set(table["files"].values())
        if table.get("figure6"):
            files |= {table["figure6"]["figure"], table["figure6"]["json"]}
    files |= {os.path.join(out, f) for f in os.listdir(out) if f.endswith(".png")}  # the plots
    print("files: " + ", ".join(sorted(files)))


def cmd_demo(args):
    from branchy_engine.commands.demo import DemoOptions, run
    result = run(DemoOptions(out=args.out, retrain=args.retrain, limit=args.limit,
                             threads=args.threads, data_dir=args.data_dir, epochs=args.epochs))
    print_tables(args.out, result)
    return 0


def add_reproduce_parser(sub):
    from branchy_engine import data
    p = sub.add_parser(
        "reproduce", help="the whole pipeline for the paper's networks: train, calibrate, export, benchmark",
        formatter_class=Defaults,
        description="For each network: train the baseline, then the BranchyNet jointly; measure the "
                    "engine's costs; calibrate on the validation split (the knee); export; run the "
                    "test set at batch 1 through the engine against ONNX Runtime and PyTorch eager. "
                    "Resumable: re-running skips finished steps. Without --dataset, LeNet uses MNIST "
                    "and the others CIFAR-10 where --data-dir holds them, else Fashion-MNIST and its "
                    "32x32x3 stand-in (named as such in the outputs). A GPU is advised for ResNet-110 "
                    "training (--device cuda).")
    p.add_argument("--networks", default="lenet,alexnet,resnet110",
                   help="comma-separated: lenet, alexnet, resnet110")
    p.add_argument("--dataset", help=f"one data set for every network: {', '.join(data.DATASETS)}")
    p.add_argument("--data-dir", help="where MNIST / CIFAR-10 live (torchvision layout)")
    p.add_argument("--out", default="reproduce", help="output directory")
    p.add_argument("--epochs", type=int, default=50, help="epochs per training phase")
    p.add_argument("--threads", type=int, default=1, help="threads for the timed runs")
    p.add_argument("--limit", type=int, help="test samples timed per network (default: all)")
    p.add_argument("--train-limit", type=int,
                   help="train on the first N samples of each split only: a quick run, whose "
                        "accuracies mean little (default: all)")
    p.add_argument("--sim-samples", type=int, default=30,
                   help="Figure 6: of each point's test samples, how many run under the cache "
                        "simulator where the CPU grants no counters (thousands of times slower)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="for training")


def cmd_reproduce(args):
    from branchy_engine.commands.reproduce import ReproduceOptions, run
    result = run(ReproduceOptions(networks=args.networks.split(","), dataset=args.dataset,
                                  data_dir=args.data_dir, out=args.out, epochs=args.epochs,
                                  threads=args.threads, limit=args.limit,
                                  train_limit=args.train_limit, sim_samples=args.sim_samples,
                                  device=args.device))
    print_tables(args.out, result)
    return 0


def parser() -> argparse.ArgumentParser:
    """The `branchy` command line: one subcommand per step."""
    top = argparse.ArgumentParser(
        prog="branchy",
        description="BranchyNet early-exit networks: train in PyTorch, serve with a compiled engine.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="what the compiled extension holds (torch version, CUDA, CPU ISA)",
                   description="Prints the torch version the extension was built against, whether "
                               "its CUDA kernels were compiled, the instruction set the CPU kernels "
                               "use and the best this CPU has, and the GPU, if one is visible.")
    add_demo_parser(sub)
    add_reproduce_parser(sub)
    add_train_parser(sub)
    add_calibrate_parser(sub)
    add_costs_parser(sub)
    add_export_parser(sub)
    add_inspect_parser(sub)
    add_run_parser(sub)
    add_profile_parser(sub)
    add_bench_parser(sub)
    return top


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    commands = {"info": cmd_info, "bench": cmd_bench, "demo": cmd_demo, "train": cmd_train,
                "calibrate": cmd_calibrate, "export": cmd_export, "inspect": cmd_inspect,
                "costs": cmd_costs, "run": cmd_run, "profile": cmd_profile, "reproduce": cmd_reproduce}
    try:
        return commands[args.command](args)
    except (ValueError, OSError) as e:
        # Bad options, data or files: a message naming the problem, not a traceback.
        print(f"branchy {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
