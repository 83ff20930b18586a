"""`branchy profile`: latency and cache behaviour of an early-exit model, CPU or GPU.

    run(ProfileOptions(model="b_lenet"))                  # latency per stage/exit, counters
    run(ProfileOptions(model="b_alexnet", sweep=True))    # the paper's Figure 6

Latency comes from timers in C++ around every stage and exit head (CPU) or CUDA events (GPU).
Cache behaviour comes from the thread's hardware counters where the kernel grants them
(--counters perf), else from valgrind's cache simulator on the same workload (--counters sim);
every figure names the backend that produced it.
"""
import concurrent.futures
import json
import math
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

from tqdm import tqdm

from branchy_engine import data as datasets
from branchy_engine.calibrate.costs import machine
from branchy_engine.runtime.engine import Engine
from branchy_engine.fileio import write_text
from branchy_engine.timing import usable_cpus
from branchy_engine.runtime.gpu.engine import MODES as GPU_MODES
from branchy_engine.runtime.ops import _C
from branchy_engine.profiling import cachesim, cpu, plots
from branchy_engine.profiling.progress import SIM_START_S, Progress, duration, simulated_point_seconds
from branchy_engine.profiling.summary import summarize

COUNTERS = ("auto", "perf", "sim", "off")
# The GpuEngine mode that --device cuda times unless --gpu-mode says otherwise: graphs, the fastest
# mode whose parts can still be timed one by one. Conditional (GpuEngine's own default) is one
# graph, of which only the whole inference can be timed; eager mostly times the kernel launches
# and per-exit host reads that the graphed modes exist to avoid.
GPU_MODE = "graphs"
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
# Samples under the cache simulator by default: a sweep simulates every point, each simulated
# call costing seconds (B-AlexNet: about 2 s, so 100 samples over 11 points take 30-45 minutes).
SIM_SAMPLES = 100
SWEEP_SIM_SAMPLES = 20


@dataclass
class ProfileOptions:
    model: str                                # .branchy file, checkpoint, or a shipped model's name
    device: str = "cpu"
    thresholds: Optional[List[float]] = None  # one per early exit; default: the model's
    sweep: bool = False                       # Figure 6: every early exit at each value in turn
    sweep_values: Optional[List[float]] = None
    counters: str = "auto"
    samples: int = 1000                       # test samples timed (per sweep point)
    rounds: int = 5                           # passes over them; per sample, the median
    sim_samples: Optional[int] = None         # of those, run under the cache simulator (per
                                              # point); None: SIM_SAMPLES, a sweep SWEEP_SIM_SAMPLES
    caches: dict = field(default_factory=dict)  # {"I1"|"D1"|"LL": cachesim.Cache} overrides
    ncu: bool = False
    gpu_mode: Optional[str] = None            # GPU: one of GPU_MODES; None: GPU_MODE
    data_dir: Optional[str] = None
    out: str = "profile"
    threads: int = 1
    warmup: int = 50
    quiet: bool = False                       # no progress bar, no progress lines


def check(opts: ProfileOptions):
    if opts.counters not in COUNTERS:
        raise ValueError(f"--counters must be one of {', '.join(COUNTERS)}, got {opts.counters!r}")
    if opts.samples < 1 or (opts.sim_samples is not None and opts.sim_samples < 1) or opts.rounds < 1:
        raise ValueError("--samples, --sim-samples and --rounds must be >= 1")
    if opts.sweep and opts.thresholds is not None:
        raise ValueError("give --thresholds or --sweep, not both")
    if not (opts.device == "cpu" or opts.device.startswith("cuda")):
        raise ValueError(f"--device must be cpu or cuda[:N], got {opts.device!r}")
    gpu = opts.device.startswith("cuda")
    if gpu and opts.counters in ("perf", "sim"):
        raise ValueError(f"--counters {opts.counters} measures the CPU engine; on the GPU use --ncu")
    if opts.ncu and not gpu:
        raise ValueError("--ncu profiles the GPU engine: add --device cuda")
    if opts.gpu_mode is not None:
        if not gpu:
            raise ValueError(f"--gpu-mode {opts.gpu_mode} picks the GPU engine's mode: add --device cuda")
        if opts.gpu_mode not in GPU_MODES:
            raise ValueError(f"--gpu-mode must be one of {', '.join(GPU_MODES)}, got {opts.gpu_mode!r}")
    for key in opts.caches:
        if key not in ("I1", "D1", "LL"):
            raise ValueError(f"unknown cache {key!r}: I1, D1 or LL")


def simulated_samples(opts: ProfileOptions) -> int:
    """Samples (per point) under the cache simulator: --sim-samples, else the default for a single
    run or a sweep (fewer: every point is simulated)."""
    return opts.sim_samples or (SWEEP_SIM_SAMPLES if opts.sweep else SIM_SAMPLES)


def resolve_model(model: str, out: str, thresholds: Optional[List[float]], sweep: bool) -> tuple:
    """(path of a .branchy file, where it came from). A checkpoint (or a shipped model's name) is
    exported first, into `out`."""
    from branchy_engine import checkpoint
    from branchy_engine.export import export
    if model.endswith(".branchy"):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"{model}: no such model file")
        return model, model
    path = model if os.path.isfile(model) else os.path.join(SHIPPED, f"{model}.pt")
    if not os.path.isfile(path):
        shipped = sorted(f[:-3] for f in os.listdir(SHIPPED) if f.endswith(".pt"))
        raise FileNotFoundError(f"{model}: not a model file, a checkpoint or a shipped model "
                                f"({', '.join(shipped)})")
    ckpt = checkpoint.load(path)
    name = ckpt["model"]
    exits = len(ckpt.get("exit_weights") or [1.0])
    if thresholds is None and ckpt.get("thresholds") is None and exits > 1:
        if not sweep:
            raise ValueError(f"{path} is not calibrated: pass --thresholds, or --sweep, or "
                             f"calibrate it (branchy calibrate)")
        thresholds = [0.0] * (exits - 1)  # the sweep sets them
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, f"profile-{name}.branchy")  # never a file of the user's own name
    export(path, target, thresholds=thresholds)
    return target, path


def sweep_grid(criterion: str, num_classes: int) -> List[float]:
    """Thresholds from "no sample leaves early" to "every sample leaves at the first exit"."""
    if criterion == "maxprob":  # exit iff max probability >= T
        return [1.0, 0.9999, 0.999, 0.99, 0.95, 0.9, 0.8, 0.6, 0.4, 0.0]
    top = math.log(num_classes)  # the largest entropy there is
    return [0.0, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0, round(top + 0.01, 3)]


def counters_plan(opts: ProfileOptions) -> dict:
    """Which cache backend this run uses: perf, sim or none, and why."""
    if opts.device.startswith("cuda"):
        return {"perf": False, "sim": False, "why": "GPU: CUDA events" + (", Nsight Compute" if opts.ncu else "")}
    status = cpu.perf_status()
    have_perf = status.startswith("available")
    if opts.counters == "off":
        return {"perf": False, "sim": False, "why": "--counters off"}
    if opts.counters == "perf" and not have_perf:
        raise ValueError(f"--counters perf: hardware counters are unavailable here: {status}. "
                         f"--counters sim (or auto) simulates the caches instead")
    if have_perf and opts.counters in ("auto", "perf"):
        return {"perf": True, "sim": False, "why": status}
    try:
        cachesim.find_valgrind(), cachesim.find_runner()
    except cachesim.SimulatorUnavailable as e:
        if opts.counters == "sim":
            raise ValueError(f"--counters sim: {e}") from None
        return {"perf": False, "sim": False, "why": f"no counters: {status}; no simulator: {e}"}
    why = f"hardware counters unavailable ({status}); caches simulated" if opts.counters == "auto" \
        else "--counters sim"
    return {"perf": False, "sim": True, "why": why}


class _Bar:
    def __init__(self, total: int, desc: str, quiet: bool):
        self.bar = tqdm(total=total, desc=desc, unit="sample", disable=quiet or None, leave=False,
                        file=sys.stderr)
        self.base = 0

    def part(self, done: int):
        self.bar.n = self.base + done
        self.bar.refresh()

    def next(self, count: int):
        self.base += count

    def note(self, text: str):
        self.bar.set_postfix_str(text)

    def close(self):
        self.bar.close()


def _measure(opts, path, thresholds, kernels, x, labels, plan_counters, stage_of_exit, bar) -> dict:
    """One setting of the thresholds: the timed run, counters, and the simulator if asked."""
    if opts.device.startswith("cuda"):
        from branchy_engine.profiling.gpu import profile_gpu
        raw = profile_gpu(path, x, thresholds=thresholds, device=opts.device, progress=bar.part,
                          mode=opts.gpu_mode or GPU_MODE)
        stage_of_exit = list(range(raw["stage_us"].shape[1]))
        report = summarize(raw, stage_of_exit, labels)
        report["timing"] = f"{raw['backend']}, GpuEngine mode {raw['mode']}"
        report["device"] = raw["device"]
        report["gpu_mode"] = {"asked": opts.gpu_mode or GPU_MODE, "ran": raw["mode"],
                              "fallback_reason": raw["fallback_reason"], "part_timing": raw["part_timing"]}
        if opts.ncu:
            from branchy_engine.profiling import ncu
            bar.note("Nsight Compute")
            with tempfile.TemporaryDirectory(prefix="branchy-ncu-") as tmp:
                raw_file = os.path.join(tmp, "samples.f32")
                x[:ncu.NCU_MAX_SAMPLES].contiguous().numpy().tofile(raw_file)
                run = ncu.run_ncu(path, raw_file, x.shape[0], thresholds=thresholds)
            report["ncu"] = run.parts
            report["ncu_run"] = run.record()
        return report
    engine = Engine(path, threads=opts.threads, thresholds=thresholds, kernels=kernels)
    raw = cpu.profile_cpu(engine, x, counters=plan_counters["perf"], warmup=opts.warmup, rounds=opts.rounds,
                          progress=bar.part)
    report = summarize(raw, stage_of_exit, labels)
    report["timing"] = raw["backend"]
    report["thresholds"] = engine.thresholds
    if "counters" in report:
        report["counters_backend"] = f"{cpu.PERF_BACKEND}: {raw['counters_status']}"
    report["choices"] = engine.choices
    return report


def _workers(points: int) -> int:
    """valgrind processes for a simulation of that many points: one per CPU, at most 8 (each holds
    its own copy of the model and the simulated caches)."""
    return max(1, min(points, usable_cpus(), 8))


def _simulate_all(path, points, x, caches, progress):
    """Every point's cache simulation, after all the timing (so that none disturbs it): the points
    dealt round-robin to as many valgrind processes as there are CPUs (the sweep's deep points
    cost most and come first), each process simulating its points in turn (simulate_points: one
    start and one code translation for all). A sweep of 11 points on 2 CPUs: 26 -> 9 s."""
    n = x.shape[0]
    groups = {}  # kernels -> indices of the points pinned to them
    for i, p in enumerate(points):
        groups.setdefault("pin:" + p.pop("choices"), []).append(i)
    workers = _workers(len(points))
    jobs = [(kernels, ids[w::workers]) for kernels, ids in groups.items() for w in range(workers)
            if ids[w::workers]]
    warmup_calls = max(cachesim.WARMUP, n)
    progress.start_simulation([ids for _, ids in jobs],
                              [simulated_point_seconds(p["latency_us"]["mean"], n, warmup_calls) for p in points],
                              n, [p["sweep_value"] for p in points] if "sweep_value" in points[0] else None)

    def simulate(job):
        kernels, ids = job
        return cachesim.simulate_points(path, x, [points[i]["thresholds"] for i in ids], kernels=kernels,
                                        caches=caches, on_point=lambda k, sim: progress.simulated(ids[k], sim))

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for (_, ids), sims in zip(jobs, list(pool.map(simulate, jobs))):
            for i, sim in zip(ids, sims):
                points[i]["simulated"] = sim


def _whole_network_us(path, kernels, criterion, num_exits, threads, sample) -> float:
    """Microseconds of one sample through every stage (no early exit): what the dearest point of
    a sweep costs, for the estimates said up front. A few dozen calls."""
    never = [0.0 if criterion == "entropy" else math.inf] * (num_exits - 1)
    engine = Engine(path, threads=threads, thresholds=never, kernels=kernels)
    return statistics.median(engine.time_run(sample, warmup=5, rounds=3, calls=5))


def _plan(opts, values, samples, native_us, sim_samples, sim) -> str:
    """What the run will do and how long it takes at most, said before it starts. native_us: one
    sample's time through the whole network (_whole_network_us), or None on the GPU."""
    points = len(values)
    text = (f"{points} thresholds, each timed on {samples} samples x {opts.rounds} rounds" if opts.sweep
            else f"{samples} samples x {opts.rounds} rounds")
    if native_us is not None:
        text += f" (at most about {duration(points * samples * opts.rounds * native_us * 1e-6)})"
    if sim:
        per_point = simulated_point_seconds(native_us, sim_samples, max(cachesim.WARMUP, sim_samples))
        seconds = SIM_START_S + -(-points // _workers(points)) * per_point
        text += (f", then {sim_samples} samples{' a point' if opts.sweep else ''} under valgrind's "
                 f"cache simulator, thousands of times slower than natively: at most roughly "
                 f"{duration(seconds)} (--sim-samples or --counters off for less)")
    return text


def run(opts: ProfileOptions) -> dict:
    """Profiles, writes OUT/profile-NAME.json and the plots (a sweep: profile-NAME-sweep.json and
    .md, and profile-NAME-fig6.png), returns the record."""
    check(opts)
    path, source = resolve_model(opts.model, opts.out, opts.thresholds, opts.sweep)
    spec = _C.load_model_ops(path)
    meta = json.loads(spec["metadata_json"] or "{}")
    name = meta.get("model") or os.path.splitext(os.path.basename(path))[0]
    num_exits = len(spec["exits"])
    if opts.thresholds is not None and len(opts.thresholds) != num_exits - 1:
        raise ValueError(f"{name} has {num_exits} exits, so --thresholds takes {num_exits - 1} "
                         f"values (one per early exit), got {len(opts.thresholds)}")
    if opts.sweep and num_exits < 2:
        raise ValueError(f"{name} has a single exit: there is no threshold to sweep")
    stage_of_exit = [int(e["stage"]) for e in spec["exits"]]
    x, labels, d = datasets.model_samples(meta, tuple(spec["input_shape"]), data_dir=opts.data_dir,
                                          limit=opts.samples)
    plan_counters = counters_plan(opts)
    gpu = opts.device.startswith("cuda")
    sim = plan_counters["sim"] and not gpu
    sim_samples = min(simulated_samples(opts), x.shape[0])
    values = (opts.sweep_values or sweep_grid(spec["criterion"], int(spec["num_classes"]))) if opts.sweep else [None]
    progress = Progress(f"profile {name}", len(values), quiet=opts.quiet)
    # The kernels the engine chooses here, measured once; sweep points reuse them unmeasured.
    kernels, native_us = "measure", None
    if not gpu:
        engine = Engine(path, threads=opts.threads, thresholds=opts.thresholds)
        kernels = "pin:" + engine.choices
    if (opts.sweep or sim) and not opts.quiet:
        native_us = None if gpu else _whole_network_us(path, kernels, spec["criterion"], num_exits, opts.threads, x[0])
        progress.say(_plan(opts, values, x.shape[0], native_us, sim_samples, sim))

    bar = _Bar(len(values) * x.shape[0], f"profiling {name} ({opts.device})", opts.quiet)
    points = []
    try:
        progress.start_timing()
        for i, v in enumerate(values):
            thresholds = opts.thresholds if v is None else [float(v)] * (num_exits - 1)
            if v is not None:
                bar.note(f"T = {v:g}")
            report = _measure(opts, path, thresholds, kernels, x, labels, plan_counters, stage_of_exit, bar)
            if v is not None:
                report["sweep_value"] = float(v)
                progress.timed(i, v, report)
            points.append(report)
            bar.next(x.shape[0])
        bar.close()
        if sim:
            caches = {**cachesim.host_caches(), **opts.caches} if opts.caches else None
            _simulate_all(path, points, x[:sim_samples], caches, progress)
        for p in points:
            p.pop("choices", None)
    finally:
        bar.close()

    record = {
        "format": "branchy-engine profile", "model": name, "model_file": path, "source": source,
        "device": opts.device, "threads": opts.threads, "criterion": spec["criterion"],
        "dataset": f"{d.name}, the first {x.shape[0]} test samples",
        "batch": 1, "warmup_calls": opts.warmup, "rounds": opts.rounds, "kernels": kernels,
        "cache_backend": {"asked": opts.counters, **plan_counters},
        "machine": machine(), "date": _now(),
        "command": "branchy profile " + " ".join(getattr(opts, "argv", []) or [opts.model]),
    }
    os.makedirs(opts.out, exist_ok=True)
    stem = os.path.join(opts.out, f"profile-{name}" + ("-cuda" if opts.device.startswith("cuda") else "")
                        + ("-sweep" if opts.sweep else ""))
    if opts.sweep:
        record["sweep"] = points
        record["files"] = {"figure6": plots.figure6(stem.removesuffix("-sweep") + "-fig6.png",
                                                    **figure6_series(record))}
    else:
        record.update(points[0])
        record["files"] = {}
        if any(part["us"] for part in record["stages"] + record["exit_heads"]):  # not mode conditional
            record["files"]["stages"] = plots.stage_latency(
                stem + "-stages.png",
                [s["us"]["mean"] if s["us"] else 0.0 for s in record["stages"]],
                [h["us"]["mean"] if h["us"] else 0.0 for h in record["exit_heads"]],
                f"{name}: mean time of each part, batch 1 ({opts.device})")
        record["files"]["exits"] = plots.exit_histogram(
            stem + "-exits.png", [e["percent"] for e in record["exits"]],
            f"{name}: where {x.shape[0]} test samples leave")
    record["files"]["json"] = stem + ".json"
    if opts.sweep:
        record["files"]["markdown"] = stem + ".md"
        write_text(stem + ".md", sweep_markdown(record))
    write_text(stem + ".json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    return record


def sweep_markdown(record: dict) -> str:
    """A sweep as a Markdown table, with how it was measured."""
    points = record["sweep"]
    sim = "simulated" in points[0]
    exits = len(points[0]["exits"])
    head = ["T", "mean us", "p99 us", "accuracy %"] + [f"exit {e + 1} %" for e in range(exits)]
    if sim:
        head += ["instructions / inf.", "D1 misses / inf.", "D1 miss rate", "LL misses / inf.", "simulated exits"]
    lines = [f"`{record['command']}`: {record['model']} on {record['device']} ({record['machine']['processor']}, "
             f"{record['machine']['cpus']} CPUs), batch 1, {record['threads']} thread(s), {record['dataset']}, "
             f"{record['date']}. Timing: {points[0]['timing']}, after {record['warmup_calls']} warm-up calls. "
             f"Cache figures: {record['cache_backend']['why']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        row = [f"{p['sweep_value']:g}", f"{p['latency_us']['mean']:.2f}", f"{p['latency_us']['p99']:.2f}",
               f"{p['accuracy']:.2f}" if p["accuracy"] is not None else "-"]
        row += [f"{e['percent']:.1f}" for e in p["exits"]]
        if sim:
            q = p["simulated"]["per_inference"]
            row += [f"{q['instructions']:,.0f}", f"{q['d1_misses']:,.0f}", f"{100 * q['d1_miss_rate']:.2f}%",
                    f"{q['ll_misses']:,.1f}", _sim_exits(p["simulated"])]
        lines.append("| " + " | ".join(row) + " |")
    if sim:
        lines += ["", _sim_setup(points[0]["simulated"]) + ", the same for every point; each row's "
                  "simulated exits are where those samples left; " + "; ".join(points[0]["simulated"]["notes"]) + "."]
    return "\n".join(lines) + "\n"


def figure6_series(record: dict) -> dict:
    """The series of the Figure 6 plot: runtime per sample and cache misses per threshold, from
    whichever backend measured them."""
    points = record["sweep"]
    series = {"thresholds": [p["sweep_value"] for p in points],
              "runtime_us": [p["latency_us"]["mean"] for p in points],
              "exit_percent": [p["exits"][0]["percent"] for p in points],
              "misses": None, "miss_rate": None, "miss_label": "", "rate_label": "",
              "backend": "none (" + record["cache_backend"]["why"] + ")", "criterion": record["criterion"],
              "title": f"{record['model']}: runtime and cache misses against the threshold "
                       f"({record['device']}, batch 1)"}
    first = points[0]
    if "simulated" in first:
        sims = [p["simulated"]["per_inference"] for p in points]
        series.update(misses=[s["d1_misses"] for s in sims], miss_rate=[s["d1_miss_rate"] for s in sims],
                      miss_label="D1 misses", rate_label="D1 miss rate (of data accesses)",
                      backend=f"{cachesim.BACKEND}, {first['simulated']['samples']} samples")
    elif "l1d_read_misses" in first.get("counters", {}) and "instructions" in first["counters"]:
        c = [p["counters"] for p in points]
        series.update(misses=[x["l1d_read_misses"]["per_inference"] for x in c],
                      miss_rate=[x["l1d_read_misses"]["per_inference"] / x["instructions"]["per_inference"]
                                 for x in c],
                      miss_label="L1D read misses", rate_label="L1D read misses per instruction",
                      backend=cpu.PERF_BACKEND)
    elif "ncu" in first:
        hit = [_weighted_l2(p["ncu"]) for p in points]
        series.update(misses=[100.0 - h for h in hit], miss_label="L2 miss rate (%)",
                      backend="Nsight Compute")
    return series


def _weighted_l2(parts: dict) -> float:
    """The whole inference's L2 hit rate (%) from ncu's parts: weighted by the sectors each part
    requested where collected, else the mean over parts."""
    known = [p for p in parts.values() if p.get("l2_hit_pct") is not None]
    if known and all(p.get("l2_sectors") for p in known):
        total = sum(p["l2_sectors"] for p in known)
        return sum(p["l2_hit_pct"] * p["l2_sectors"] for p in known) / total
    return sum(p["l2_hit_pct"] for p in known) / len(known) if known else float("nan")


def _now() -> str:
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def table(record: dict) -> str:
    """The terminal report of one profiling run or a sweep."""
    if "sweep" in record:
        return _sweep_table(record)
    lines = [f"{record['model']} on {record['device']}, batch 1, {record['threads']} thread(s): "
             f"{record['samples']} samples ({record['dataset']})"]
    lat = record["latency_us"]
    lines.append(f"latency per sample (us): mean {lat['mean']:.2f}  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}"
                 f"  p99 {lat['p99']:.2f}  max {lat['max']:.2f};  throughput {record['throughput_per_s']:,.0f}"
                 f" samples/s" + (f";  accuracy {record['accuracy']:.2f}%" if record["accuracy"] is not None else ""))
    lines.append(f"timing: {record['timing']}")
    if "gpu_mode" in record:
        mode = record["gpu_mode"]
        if mode["fallback_reason"]:
            lines.append(f"mode {mode['asked']} fell back to {mode['ran']}: {mode['fallback_reason']}")
        lines.append(f"parts: {mode['part_timing']}")
    events = list(record.get("counters") or {})
    head = f"{'part':<10}{'ran':>7}{'mean us':>10}{'p50':>9}{'p99':>9}" + "".join(f"{e:>18}" for e in events)
    lines += ["", head, "-" * len(head)]
    for kind, rows, key in (("stage", record["stages"], "per_stage"), ("exit head", record["exit_heads"], "per_exit_head")):
        for i, row in enumerate(rows):
            us = row["us"]
            times = (f"{us['mean']:>10.2f}{us['p50']:>9.2f}{us['p99']:>9.2f}" if us
                     else f"{'-':>10}{'-':>9}{'-':>9}")
            cells = "".join(f"{_num(record['counters'][e][key][i]):>18}" for e in events)
            lines.append(f"{kind[:5] + ' ' + str(i + 1):<10}{row['ran']:>7}{times}{cells}")
    lines += ["", f"{'exit':<6}{'samples':>9}{'%':>8}{'mean us':>10}{'p99 us':>9}{'accuracy':>10}"]
    for e in record["exits"]:
        lat = e["latency_us"] or {"mean": float("nan"), "p99": float("nan")}
        acc = f"{e['accuracy']:.2f}%" if e["accuracy"] is not None else "-"
        lines.append(f"{e['exit'] + 1:<6}{e['samples']:>9}{e['percent']:>8.1f}{lat['mean']:>10.2f}{lat['p99']:>9.2f}{acc:>10}")
    lines.append("")
    if events:
        lines.append(f"counters ({record['counters_backend']}), per inference: " +
                     ", ".join(f"{e} {record['counters'][e]['per_inference']:,.0f}" for e in events))
    else:
        lines.append(f"cache figures: {record['cache_backend']['why']}")
    if "simulated" in record:
        lines.append(_sim_line(record["simulated"]))
    if "ncu" in record:
        lines.append(f"Nsight Compute ({record['ncu_run']['note']}; every kernel from cold caches, "
                     f"mode eager), per part over the profiled samples:")
        for part, p in record["ncu"].items():
            pct = lambda v: "-" if v is None else f"{v:.1f}%"  # noqa: E731
            lines.append(f"  {_part_label(part):<8} {p['kernels']:>5} kernels  {p['time_us']:>10.1f} us  L1 hit "
                         f"{pct(p['l1_hit_pct'])}  L2 hit {pct(p['l2_hit_pct'])}  DRAM "
                         f"{p['dram_bytes'] / 1e6:.3f} MB")
    lines.append("wrote " + ", ".join(record["files"].values()))
    return "\n".join(lines)


def _part_label(part: str) -> str:
    """An NVTX range's name ("stage0", "exit1": 0-based, as the API counts) as a report prints
    it: "stage 1", "exit 2"."""
    kind, index = re.fullmatch(r"([a-z]+)(\d+)", part).groups()
    return f"{kind} {int(index) + 1}"


def _sim_setup(sim: dict) -> str:
    """How a simulation ran, the same for every point of a sweep: tool, samples, warm-up, caches."""
    caches = ", ".join(f"{k} {cachesim.Cache(**v).text()}" for k, v in sim["caches"].items())
    return (f"{sim['backend']} ({sim['tool']}, {sim['samples']} samples after {sim['warmup_calls']} "
            f"warm-up calls; {caches})")


def _sim_exits(sim: dict) -> str:
    return " / ".join(str(c) for c in sim["exit_counts"])


def _sim_line(sim: dict) -> str:
    p = sim["per_inference"]
    return (f"{_sim_setup(sim)}, the samples leaving {_sim_exits(sim)} at each exit; per inference: "
            f"instructions {p['instructions']:,.0f}, I1 misses {p['i1_misses']:,.1f}, D1 misses {p['d1_misses']:,.1f} "
            f"({100 * p['d1_miss_rate']:.2f}% of data accesses), LL misses {p['ll_misses']:,.1f}; "
            + "; ".join(sim["notes"]))


def _num(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _sweep_table(record: dict) -> str:
    points = record["sweep"]
    lines = [f"{record['model']} on {record['device']}, batch 1: sweep of every early exit's threshold "
             f"({record['criterion']}), {points[0]['samples']} samples per point ({record['dataset']})"]
    exits = len(points[0]["exits"])
    head = (f"{'T':>9}{'mean us':>10}{'p99 us':>9}{'accuracy':>10}" + "".join(f"{'exit ' + str(e + 1):>9}" for e in range(exits)))
    sim = "simulated" in points[0]
    perf = "counters" in points[0]
    if sim:
        head += f"{'D1 miss/inf':>13}{'D1 miss %':>11}{'LL miss/inf':>13}  simulated exits"
    if perf:
        head += "".join(f"{e:>18}" for e in points[0]["counters"])
    lines += [head, "-" * len(head)]
    for p in points:
        acc = f"{p['accuracy']:.2f}%" if p["accuracy"] is not None else "-"
        row = (f"{p['sweep_value']:>9.4g}{p['latency_us']['mean']:>10.2f}{p['latency_us']['p99']:>9.2f}{acc:>10}"
               + "".join(f"{e['percent']:>8.1f}%" for e in p["exits"]))
        if sim:
            s = p["simulated"]["per_inference"]
            row += (f"{s['d1_misses']:>13,.0f}{100 * s['d1_miss_rate']:>10.2f}%{s['ll_misses']:>13,.1f}"
                    f"  {_sim_exits(p['simulated'])}")
        if perf:
            row += "".join(f"{p['counters'][e]['per_inference']:>18,.0f}" for e in p["counters"])
        lines.append(row)
    lines.append(f"timing: {points[0]['timing']}")
    lines.append(f"cache figures: {record['cache_backend']['why']}")
    if sim:
        lines.append(f"{_sim_setup(points[0]['simulated'])}, the same for every point; each row's "
                     f"simulated exits are where those samples left")
    lines.append("wrote " + ", ".join(record["files"].values()))
    return "\n".join(lines)
