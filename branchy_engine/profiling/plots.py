"""The profiler's pictures: latency per stage and exit, the exit histogram, and the paper's
Figure 6 (runtime per sample and cache-miss rate against the exit threshold)."""
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from branchy_engine.fileio import save_figure  # noqa: E402


def stage_latency(path, stage_us: List[float], exit_us: List[float], title: str):
    """Mean microseconds of each stage and each exit head (with its decision), over the samples
    that ran it."""
    labels = [f"stage {i + 1}" for i in range(len(stage_us))] + [f"exit {i + 1}" for i in range(len(exit_us))]
    values = list(stage_us) + list(exit_us)
    colors = ["tab:blue"] * len(stage_us) + ["tab:orange"] * len(exit_us)
    fig, ax = plt.subplots(figsize=(1.1 * len(values) + 2.5, 3.6))
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_ylabel("mean time per sample that ran it (us)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def exit_histogram(path, percent: List[float], title: str):
    fig, ax = plt.subplots(figsize=(1.2 * len(percent) + 2.5, 3.4))
    bars = ax.bar([f"exit {i + 1}" for i in range(len(percent))], percent, color="tab:green")
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_ylabel("% of samples")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    return save_figure(fig, path)


def figure6(path, thresholds: List[float], runtime_us: List[float], misses: Optional[List[float]],
            miss_rate: Optional[List[float]], miss_label: str, rate_label: str, backend: str, title: str,
            exit_percent: Optional[List[float]] = None, criterion: str = "entropy"):
    """The paper's Figure 6: runtime per sample (top) and cache misses per inference (bottom,
    each point labelled with its miss rate) against the threshold every early exit uses."""
    rows = 2 if misses is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.8, 2.9 * rows + 0.6), sharex=True, squeeze=False)
    top = axes[0][0]
    top.plot(thresholds, runtime_us, "-o", color="tab:blue")
    top.set_ylabel("runtime per sample (us)")
    if exit_percent is not None:
        for t, r, e in zip(thresholds, runtime_us, exit_percent):
            top.annotate(f"{e:.0f}%", (t, r), textcoords="offset points", xytext=(0, 6), fontsize=7,
                         ha="center", color="tab:blue")
        top.set_title("labels: % of samples leaving at the first exit", fontsize=8)
    if misses is not None:
        bottom = axes[1][0]
        bottom.plot(thresholds, misses, "-s", color="tab:red")
        bottom.set_ylabel(f"{miss_label}\nper inference")
        bottom.set_ylim(bottom=0, top=max(misses) * 1.18 if max(misses) > 0 else 1)
        if miss_rate is not None:
            for t, m, r in zip(thresholds, misses, miss_rate):
                bottom.annotate(f"{100 * r:.2f}%", (t, m), textcoords="offset points", xytext=(0, 6),
                                fontsize=7, ha="center", color="tab:red")
            bottom.set_title(f"labels: {rate_label}", fontsize=8)
    for row in axes:
        ax = row[0]
        ax.set_xscale("symlog", linthresh=1e-4)  # linear near T = 0, logarithmic beyond
        ax.set_xlim(min(thresholds) - 2e-5, max(thresholds) * 1.6)
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel(f"threshold T of every early exit ({criterion})")
    fig.suptitle(f"{title}\ncache figures: {backend}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
