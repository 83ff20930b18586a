"""The profiler (`branchy profile`): the instrumented run, counters or their absence, the cache
simulator and its parser, Figure 6, and the errors of bad options. Nothing here times anything:
latencies are only checked to be positive where a part ran and zero where it did not."""
import json
import math
import os

import pytest
import torch

from branchy_engine import _C, models
from branchy_engine.commands.cli import main
from branchy_engine.runtime.engine import Engine
from branchy_engine.export import export, write_model
from branchy_engine.profiling import cachesim, cpu, profile, summary
from branchy_engine.profiling.progress import SIM_START_S, Progress, duration

from tiny_models import INPUT_SHAPE, tiny_net

DATA = os.path.join(os.path.dirname(__file__), "data")
BENCH_PROFILE = os.path.join(os.path.dirname(__file__), "..", "bench", "results", "profile")
SHIPPED = profile.SHIPPED


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "tiny.branchy"
    write_model(tiny_net(), path, INPUT_SHAPE, "entropy", [0.9])
    return str(path)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """lenet.branchy and b_lenet.branchy (thresholds 0.5) from the shipped checkpoints."""
    out = tmp_path_factory.mktemp("shipped")
    export(os.path.join(SHIPPED, "lenet.pt"), out / "lenet.branchy")
    export(os.path.join(SHIPPED, "b_lenet.pt"), out / "b_lenet.branchy", thresholds=[0.5])
    return {"lenet": str(out / "lenet.branchy"), "b_lenet": str(out / "b_lenet.branchy")}


def samples(n, shape=INPUT_SHAPE, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


# ---- the instrumented run (C++ probes through _C.profile_plan) ----

def test_profile_plan_times_exactly_the_parts_each_sample_ran(tiny):
    x = samples(64)
    first_exit_entropy = Engine(tiny, thresholds=[math.inf])(x).score
    engine = Engine(tiny, kernels="own", thresholds=[float(first_exit_entropy.median())])
    raw = cpu.profile_cpu(engine, x, warmup=10)
    pred, exit, score = engine(x)
    assert torch.equal(raw["prediction"], pred) and torch.equal(raw["exit"], exit)
    assert torch.allclose(raw["score"], score)
    assert 0 < int((exit == 0).sum()) < 64, "thresholds should split the samples between exits"
    stage_ran, head_ran = summary.ran_masks(raw["exit"], [0, 1], 2)
    assert raw["stage_us"].shape == (64, 2) and raw["exit_us"].shape == (64, 2)
    assert bool((raw["stage_us"][stage_ran] > 0).all()) and bool((raw["stage_us"][~stage_ran] == 0).all())
    assert bool((raw["exit_us"][head_ran] > 0).all()) and bool((raw["exit_us"][~head_ran] == 0).all())
    parts = raw["stage_us"].sum(1) + raw["exit_us"].sum(1)
    assert bool((raw["total_us"] >= parts * 0.999).all()), "the whole call contains its parts"
    assert raw["counters_status"] == "not requested" and "counters" not in raw


def test_rounds_take_each_samples_median_and_keep_the_decisions(tiny):
    engine = Engine(tiny, thresholds=[1.0])
    x = samples(20)
    one = cpu.profile_cpu(engine, x, warmup=0)
    three = cpu.profile_cpu(engine, x, warmup=0, rounds=3)
    assert torch.equal(one["exit"], three["exit"]) and torch.equal(one["prediction"], three["prediction"])
    assert three["total_us"].shape == (20,) and bool((three["total_us"] > 0).all())
    assert three["rounds"] == 3 and "median of 3 rounds" in three["backend"]
    runs = [{"total_us": torch.tensor([1.0, 5.0]), "stage_us": torch.zeros(2, 1), "exit_us": torch.zeros(2, 1)},
            {"total_us": torch.tensor([3.0, 4.0]), "stage_us": torch.ones(2, 1), "exit_us": torch.zeros(2, 1)},
            {"total_us": torch.tensor([2.0, 9.0]), "stage_us": torch.ones(2, 1), "exit_us": torch.zeros(2, 1)}]
    assert cpu._median(runs)["total_us"].tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        cpu.profile_cpu(engine, x, rounds=0)


def test_profile_plan_rejects_bad_input_by_name(tiny):
    engine = Engine(tiny)
    context = engine._context()
    with pytest.raises(ValueError, match=r"\[N, C, H, W\], got \[2, 6, 6\]"):
        _C.profile_plan(engine.plan, context, samples(1)[0], False)
    with pytest.raises(TypeError, match="float32"):
        _C.profile_plan(engine.plan, context, samples(2).double(), False)
    bad = samples(3)
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="sample 2 contains NaN"):
        _C.profile_plan(engine.plan, context, bad, False)


def test_counters_are_reported_or_their_absence_explained(tiny):
    engine = Engine(tiny)
    raw = cpu.profile_cpu(engine, samples(8), counters=True, warmup=0)
    status = cpu.perf_status()
    assert raw["counters_status"] == status
    if cpu.perf_available():
        events = raw["counters"]
        assert {"cycles", "instructions"} <= set(events)
        assert bool((events["instructions"]["total"] > 0).all())
        # The parts are inside the whole call: their counts cannot exceed it.
        parts = events["instructions"]["stage"].sum(1) + events["instructions"]["exit"].sum(1)
        assert bool((parts <= events["instructions"]["total"]).all())
    else:  # as on the build machines: no counters, and the reason why
        assert "counters" not in raw
        assert status.startswith("perf_event_open(cycles): ") and "perf_event_paranoid" in status


def test_summary_percentiles_exits_and_accuracy():
    raw = {"exit": torch.tensor([0, 0, 1, 1]), "prediction": torch.tensor([1, 2, 3, 4]),
           "total_us": torch.tensor([1.0, 2.0, 10.0, 20.0], dtype=torch.float64),
           "stage_us": torch.tensor([[1.0, 0], [2, 0], [3, 5], [4, 10]], dtype=torch.float64),
           "exit_us": torch.tensor([[0.5, 0], [0.5, 0], [1, 1], [1, 1]], dtype=torch.float64)}
    s = summary.summarize(raw, [0, 1], labels=torch.tensor([1, 0, 3, 4]))
    assert s["latency_us"]["mean"] == pytest.approx(8.25) and s["latency_us"]["max"] == 20.0
    assert s["latency_us"]["p50"] == pytest.approx(6.0)
    assert s["throughput_per_s"] == pytest.approx(1e6 / 8.25)
    assert [e["percent"] for e in s["exits"]] == [50.0, 50.0]
    assert s["accuracy"] == 75.0 and [e["accuracy"] for e in s["exits"]] == [50.0, 100.0]
    assert s["stages"][0]["ran"] == 4 and s["stages"][1]["ran"] == 2
    assert s["stages"][1]["us"]["mean"] == pytest.approx(7.5)  # samples that ran it only
    assert s["exit_heads"][1]["us"]["mean"] == pytest.approx(1.0)
    assert s["exits"][1]["latency_us"]["mean"] == pytest.approx(15.0)


# ---- the cache simulator ----

def test_parse_callgrind_on_a_captured_file():
    # Captured here: build/branchy-run on 20 samples of B-LeNet under callgrind (tests/data/README.md).
    counts = cachesim.parse_callgrind(open(os.path.join(DATA, "callgrind.b_lenet.out")).read())
    assert counts == {"Ir": 3190806, "Dr": 1154505, "Dw": 69770, "I1mr": 936, "D1mr": 22409,
                      "D1mw": 12068, "ILmr": 32, "DLmr": 3, "DLmw": 0}
    p = cachesim.per_inference(counts, 20)
    assert p["d1_misses"] == pytest.approx((22409 + 12068) / 20)
    assert p["d1_miss_rate"] == pytest.approx((22409 + 12068) / (1154505 + 69770))
    assert p["ll_misses"] == pytest.approx(35 / 20)


def test_parse_callgrind_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="not a callgrind output"):
        cachesim.parse_callgrind("hello\n")
    with pytest.raises(ValueError, match="cache-sim=yes"):
        cachesim.parse_callgrind("events: Ir\ntotals: 5\n")


def test_host_cache_geometry_from_sysfs(tmp_path):
    for i, (level, kind, size, ways) in enumerate([(1, "Data", "48K", 12), (1, "Instruction", "32K", 8),
                                                   (2, "Unified", "2048K", 16), (3, "Unified", "30M", 20)]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("ways_of_associativity", ways), ("coherency_line_size", 64)):
            (d / name).write_text(f"{value}\n")
    caches = cachesim.host_caches(str(tmp_path))
    assert caches["D1"] == cachesim.Cache(48 << 10, 12, 64)
    assert caches["I1"] == cachesim.Cache(32 << 10, 8, 64)
    assert caches["LL"] == cachesim.Cache(30 << 20, 20, 64)  # the last level, not L2
    # 30 MiB / (20 * 64) = 24576 sets: valgrind needs a power of two, so 16384 sets (20 MiB).
    assert cachesim.simulable(caches["LL"]) == cachesim.Cache(20 << 20, 20, 64)
    assert cachesim.simulable(caches["D1"]) == caches["D1"]
    with pytest.raises(RuntimeError, match="cannot read the I1, D1, LL"):
        cachesim.host_caches(str(tmp_path / "nowhere"))


def test_cache_overrides_are_checked():
    assert cachesim.parse_cache("32768,8,64") == cachesim.Cache(32768, 8, 64)
    for bad in ("32K,8,64", "32768,8", "1000,8,64", "0,1,64"):
        with pytest.raises(ValueError):
            cachesim.parse_cache(bad)


def test_simulator_counts_misses_and_more_for_a_bigger_model(shipped, tmp_path):
    # LeNet (0.3 MB of weights) against AlexNet for CIFAR (untrained: the weights' values do not
    # change the accesses), a few samples each after warm-up.
    alexnet = tmp_path / "alexnet.branchy"
    write_model(models.create("alexnet").eval(), alexnet, (3, 32, 32))
    small = cachesim.simulate(shipped["lenet"], samples(6, (1, 28, 28)), kernels="own", warmup=3)
    big = cachesim.simulate(str(alexnet), samples(6, (3, 32, 32)), kernels="own", warmup=3)
    for sim in (small, big):
        assert sim["backend"] == cachesim.BACKEND and sim["samples"] == 6 and sim["exit_counts"] == [6]
        p = sim["per_inference"]
        assert p["instructions"] > 0 and p["d1_misses"] > 0 and 0 < p["d1_miss_rate"] < 1
    assert big["per_inference"]["d1_misses"] > 2 * small["per_inference"]["d1_misses"]


def test_a_model_that_fits_in_d1_misses_nothing_once_warm(tiny):
    # A stated D1 (48 KiB, 12-way, as on recent Intel cores), not the host's: on an 8-way 32 KiB D1
    # (AMD EPYC build machines) the tiny model's page-aligned buffers share sets and conflict-miss
    # a few lines per inference (measured 2-4), which is the host's geometry, not a cold cache. Even
    # at 12 ways, where the heap puts the buffers moves a line or so in and out of conflict between
    # builds (measured 0.1 and 1.1 per inference): under 2, where a cold or too-small cache misses
    # thousands (LeNet: about 6,700).
    caches = dict(cachesim.host_caches(), D1=cachesim.Cache(49152, 12, 64))
    sim = cachesim.simulate(tiny, samples(10), kernels="own", warmup=5, caches=caches)
    assert sim["per_inference"]["instructions"] > 0 and sum(sim["exit_counts"]) == 10
    assert sim["per_inference"]["d1_misses"] < 2.0


def test_simulator_sees_early_exits_save_misses(shipped):
    x = samples(10, (1, 28, 28))
    kernels = "pin:" + Engine(shipped["b_lenet"], kernels="own").choices
    none_early = cachesim.simulate(shipped["b_lenet"], x, thresholds=[0.0], kernels=kernels, warmup=5)
    all_early = cachesim.simulate(shipped["b_lenet"], x, thresholds=[1e9], kernels=kernels, warmup=5)
    assert none_early["exit_counts"] == [0, 10] and all_early["exit_counts"] == [10, 0]
    assert all_early["per_inference"]["d1_misses"] < none_early["per_inference"]["d1_misses"] / 2


def test_one_simulation_of_several_points_counts_each_apart(shipped):
    # Three points in one valgrind process (the sweep's way): each point's counts are its own,
    # as one process a point gives them (within 5%: the heap of a later point's plan lies
    # elsewhere, so a few conflict misses differ), in the order given.
    x = samples(10, (1, 28, 28))
    kernels = "pin:" + Engine(shipped["b_lenet"], kernels="own").choices
    points = [[0.0], [1e9], [0.0]]
    seen = []  # as each point ends, for a sweep's progress lines
    together = cachesim.simulate_points(shipped["b_lenet"], x, points, kernels=kernels, warmup=5,
                                        on_point=lambda i, sim: seen.append((i, sim)))
    assert seen == list(enumerate(together))
    apart = [cachesim.simulate(shipped["b_lenet"], x, thresholds=t, kernels=kernels, warmup=5) for t in points[:2]]
    assert [s["exit_counts"] for s in together] == [[0, 10], [10, 0], [0, 10]]
    for got, want in zip(together, apart + apart[:1]):
        assert got["per_inference"]["instructions"] == pytest.approx(want["per_inference"]["instructions"], rel=1e-3)
        assert got["per_inference"]["d1_misses"] == pytest.approx(want["per_inference"]["d1_misses"], rel=0.05)
    with pytest.raises(ValueError, match="every point's thresholds"):
        cachesim.simulate_points(shipped["b_lenet"], x, [[0.0], None], kernels=kernels)


def test_simulator_missing_tools_are_named(monkeypatch, tiny):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(cachesim.SimulatorUnavailable, match="valgrind"):
        cachesim.simulate(tiny, samples(2))
    monkeypatch.setenv("BRANCHY_RUN", "/nonexistent/branchy-run")
    monkeypatch.setattr(cachesim, "__file__", "/nonexistent/pkg/profiling/cachesim.py")
    with pytest.raises(cachesim.SimulatorUnavailable, match="branchy-run"):
        cachesim.find_runner()


# ---- the command ----

def test_profile_command_writes_report_json_and_plots(shipped, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["profile", shipped["b_lenet"], "--samples", "60", "--sim-samples", "4",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency per sample (us): mean" in text and "p99" in text and "throughput" in text
    record = json.loads((out / "profile-b_lenet.json").read_text())
    assert record["samples"] == 60 and record["thresholds"] == [0.5]
    assert sum(e["percent"] for e in record["exits"]) == pytest.approx(100.0)
    assert sum(e["samples"] for e in record["exits"]) == 60
    lat = record["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    for key in ("stages", "exits", "json"):
        assert os.path.getsize(record["files"][key]) > 0
    if cpu.perf_available():
        assert "cycles" in record["counters"]
    else:
        assert record["cache_backend"]["sim"] and "simulated" in record
        assert record["simulated"]["per_inference"]["d1_misses"] > 0
        assert "callgrind cache simulation" in text and "perf_event_open" in text


def test_profile_sweep_draws_figure6(shipped, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["profile", shipped["b_lenet"], "--sweep", "--sweep-values", "0,1e9",
                 "--samples", "30", "--sim-samples", "3", "--counters", "sim", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    # Progress on stderr, in the order things happen: the plan with its expected times, each
    # point as it is timed, the simulation's expected time, each point as it is simulated.
    said = [line.removeprefix("profile b_lenet: ") for line in printed.err.splitlines()]
    assert said[0].startswith("2 thresholds, each timed on 30 samples x 5 rounds (at most about ")
    assert ", then 3 samples a point under valgrind's cache simulator" in said[0] and "at most roughly" in said[0]
    assert said[1].startswith("point 1/2 (T = 0) timed: ") and "0% leave at exit 1; about " in said[1]
    assert said[2].startswith("point 2/2 (T = 1e+09) timed: ") and said[2].endswith("100% leave at exit 1")
    assert said[3].startswith("cache simulation of 2 points x 3 samples under valgrind")
    first, second = sorted(said[4:])  # the two valgrind processes end in either order
    assert first.startswith("point 1/2 (T = 0) simulated: ") and "leaving 0 / 3 at each exit" in first
    assert second.startswith("point 2/2 (T = 1e+09) simulated: ") and "leaving 3 / 0 at each exit" in second
    # The table gives each point's simulated exits; the closing line gives none to misread.
    rows = printed.out.splitlines()
    assert rows[3].rstrip().endswith("0 / 3") and rows[4].rstrip().endswith("3 / 0")
    closing = next(r for r in rows if r.startswith("callgrind cache simulation"))
    assert "leaving" not in closing and "each row's simulated exits" in closing
    record = json.loads((out / "profile-b_lenet-sweep.json").read_text())
    low, high = record["sweep"]
    assert [low["sweep_value"], high["sweep_value"]] == [0.0, 1e9]
    assert low["exits"][1]["percent"] == 100.0 and high["exits"][0]["percent"] == 100.0
    assert high["simulated"]["per_inference"]["d1_misses"] < low["simulated"]["per_inference"]["d1_misses"]
    assert os.path.getsize(record["files"]["figure6"]) > 0
    series = profile.figure6_series(record)
    assert series["misses"] == [p["simulated"]["per_inference"]["d1_misses"] for p in record["sweep"]]
    assert "D1 miss" in printed.out
    assert "each row's simulated exits" in (out / "profile-b_lenet-sweep.md").read_text()


def test_figure6_labels_overlap_neither_each_other_nor_the_line(tmp_path):
    import matplotlib.pyplot as plt
    from branchy_engine.profiling import plots
    # B-AlexNet's sweep as shipped. With every label above its point, the miss rates at T = 0.05
    # and 0.1, and at 0.2 and 0.4, ran into each other, and eight labels into the line.
    record = json.loads(open(os.path.join(BENCH_PROFILE, "profile-b_alexnet-sweep.json")).read())
    series = profile.figure6_series(record)
    for values, texts in ((series["runtime_us"], [f"{e:.0f}%" for e in series["exit_percent"]]),
                          (series["misses"], [f"{100 * r:.2f}%" for r in series["miss_rate"]])):
        fig, ax = plt.subplots(figsize=(6.8, 2.9))
        ax.plot(series["thresholds"], values, "-o")
        ax.set_xscale("symlog", linthresh=1e-4)
        ax.margins(y=0.15)
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        labels = plots.label_points(ax, series["thresholds"], values, texts, "tab:blue")
        boxes = [label.get_window_extent(renderer) for label in labels]
        assert [label.get_text() for label in labels] == texts  # every one found a place
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        shown = ax.transData.transform(list(zip(series["thresholds"], values)))
        line = plots._along(shown)
        assert not any(box.contains(x, y) for box in boxes for x, y in line)
        frame = ax.get_window_extent(renderer)
        assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
        plt.close(fig)
    assert os.path.getsize(plots.figure6(tmp_path / "fig6.png", **series)) > 0


def test_a_sweep_simulates_fewer_samples_by_default():
    assert profile.simulated_samples(profile.ProfileOptions("m")) == profile.SIM_SAMPLES
    assert profile.simulated_samples(profile.ProfileOptions("m", sweep=True)) == profile.SWEEP_SIM_SAMPLES
    assert profile.SWEEP_SIM_SAMPLES <= profile.SIM_SAMPLES / 4
    assert profile.simulated_samples(profile.ProfileOptions("m", sweep=True, sim_samples=7)) == 7


def test_progress_says_each_point_and_the_time_left(capsys):
    now = [0.0]
    progress = Progress("profile net", 3, clock=lambda: now[0])
    report = lambda us, first: {"latency_us": {"mean": us}, "exits": [{"percent": first}]}  # noqa: E731
    progress.start_timing()
    now[0] = 20.0
    progress.timed(0, 0.0, report(300.0, 0.0))
    now[0] = 30.0
    progress.timed(1, 0.5, report(200.0, 60.0))
    progress.timed(2, 2.0, report(100.0, 100.0))
    # Two valgrind processes: points 0 and 2 in one, 1 in the other; expected 100, 60 and 40 s.
    now[0] = 100.0
    progress.start_simulation([[0, 2], [1]], [100.0, 60.0, 40.0], 20, [0.0, 0.5, 2.0])
    sim = lambda counts: {"per_inference": {"d1_misses": 1234.0}, "exit_counts": counts}  # noqa: E731
    now[0] = 100.0 + 2 * (SIM_START_S + 60.0)  # process 2's point took twice as long as expected
    progress.simulated(1, sim([0, 20]))
    now[0] = 100.0 + 2 * (SIM_START_S + 100.0)  # so did process 1's first
    progress.simulated(0, sim([0, 0, 20]))
    progress.simulated(2, sim([20, 0, 0]))
    said = [line.removeprefix("profile net: ") for line in capsys.readouterr().err.splitlines()]
    assert said == [
        "point 1/3 (T = 0) timed: 300.0 us per sample, 0% leave at exit 1; about 40 s of timing left",
        "point 2/3 (T = 0.5) timed: 200.0 us per sample, 60% leave at exit 1; about 15 s of timing left",
        "point 3/3 (T = 2) timed: 100.0 us per sample, 100% leave at exit 1",
        f"cache simulation of 3 points x 20 samples under valgrind, 2 processes: roughly "
        f"{duration(SIM_START_S + 140.0)}",
        "point 2/3 (T = 0.5) simulated: 1,234 D1 misses per inference, leaving 0 / 20 at each exit; "
        "1 of 3 simulated, about 2 min 40 s left",  # twice the 143 s expected, less 126 s gone
        "point 1/3 (T = 0) simulated: 1,234 D1 misses per inference, leaving 0 / 0 / 20 at each exit; "
        "2 of 3 simulated, about 1 min 20 s left",  # less 206 s gone
        "point 3/3 (T = 2) simulated: 1,234 D1 misses per inference, leaving 20 / 0 / 0 at each exit"]
    Progress("quiet", 1, quiet=True).say("nothing")
    assert capsys.readouterr().err == ""


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.2, 45, 200, 180, 725, 3900, 7200)] == [
        "under 1 s", "45 s", "3 min 20 s", "3 min", "12 min", "1 h 5 min", "2 h"]


def test_profile_takes_a_shipped_name_and_exports_it(tmp_path):
    (tmp_path / "lenet.branchy").write_text("the user's own file")
    record = profile.run(profile.ProfileOptions(model="lenet", samples=5, counters="off",
                                                out=str(tmp_path), quiet=True))
    assert record["source"].endswith("lenet.pt") and os.path.isfile(record["model_file"])
    assert (tmp_path / "lenet.branchy").read_text() == "the user's own file"
    assert [e["percent"] for e in record["exits"]] == [100.0]


@pytest.mark.parametrize("argv, says", [
    (["--thresholds", "0.1,0.2"], "takes 1 values (one per early exit), got 2"),
    (["--ncu"], "--ncu profiles the GPU engine"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--samples", "0"], "must be >= 1"),
    (["--cache-d1", "48K"], "SIZE,ASSOC,LINE"),
])
def test_bad_options_are_named(shipped, tmp_path, capsys, argv, says):
    code = main(["profile", shipped["b_lenet"], "--out", str(tmp_path)] + argv)
    assert code == 2
    assert says in capsys.readouterr().err


def test_unknown_counter_set_and_missing_model_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "b_lenet", "--counters", "pmu"])
    assert e.value.code == 2 and "invalid choice: 'pmu'" in capsys.readouterr().err
    assert main(["profile", "no_such_net", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_net: not a model file, a checkpoint or a shipped model" in err and "b_lenet" in err


def test_counters_perf_where_there_are_none_says_so(shipped, tmp_path, capsys):
    if cpu.perf_available():
        pytest.skip("this machine grants hardware counters")
    assert main(["profile", shipped["b_lenet"], "--counters", "perf", "--out", str(tmp_path)]) == 2
    assert "hardware counters are unavailable here" in capsys.readouterr().err


def test_gpu_profile_without_a_gpu_says_so(shipped, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["profile", shipped["b_lenet"], "--device", "cuda", "--samples", "2", "--out", str(tmp_path)])
    assert code != 0
    assert "cuda" in capsys.readouterr().err.lower()
