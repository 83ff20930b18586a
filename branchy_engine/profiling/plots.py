"""The profiler's pictures: latency per stage and exit, the exit histogram, and the paper's
Figure 6 (runtime per sample and cache-miss rate against the exit threshold)."""
from typing import List, Optional

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

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


# Where a point's label may go, in order of preference (offset from the point in points, and the
# label's horizontal and vertical alignment): above, below, then the diagonals, right and left.
_LABEL_PLACES = ((0, 6, "center", "bottom"), (0, -7, "center", "top"), (5, 5, "left", "bottom"),
                 (-5, -5, "right", "top"), (-5, 5, "right", "bottom"), (5, -5, "left", "top"),
                 (7, 0, "left", "center"), (-7, 0, "right", "center"))


def _along(points, step: float = 3.0) -> list:
    """Display coordinates every `step` pixels along the polyline through `points`."""
    out = []
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) / step))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(n)]
    return out + list(points[-1:])


def label_points(ax, xs: List[float], ys: List[float], texts: List[str], color: str) -> list:
    """Labels each point where the label overlaps no other label, no marker and no stretch of the
    line through the points, inside the axes: above the point, else below, diagonally, right or
    left; a label with no such place is left out (the sweep's table has every value). Call it once
    the axes' limits and the layout are final. Returns the labels placed (matplotlib Text)."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    shown = ax.transData.transform(list(zip(xs, ys)))
    markers = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in shown]
    line = [Bbox.from_bounds(px - 1, py - 1, 2, 2) for px, py in _along(shown)]
    placed, taken = [], []
    for x, y, text in zip(xs, ys, texts):
        for dx, dy, ha, va in _LABEL_PLACES:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                                va=va, fontsize=7, color=color)
            box = label.get_window_extent(renderer)
            if (inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
                    and not any(box.overlaps(o) for o in taken + markers + line)):
                placed.append(label)
                taken.append(box)
                break
            label.remove()
    return placed


def figure6(path, thresholds: List[float], runtime_us: List[float], misses: Optional[List[float]],
            miss_rate: Optional[List[float]], miss_label: str, rate_label: str, backend: str, title: str,
            exit_percent: Optional[List[float]] = None, criterion: str = "entropy"):
    """The paper's Figure 6: runtime per sample (top, each point labelled with the share of
    samples leaving at the first exit) and cache misses per inference (bottom, each point labelled
    with its miss rate) against the threshold every early exit uses."""
    rows = 2 if misses is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.8, 2.9 * rows + 0.6), sharex=True, squeeze=False)
    top = axes[0][0]
    top.plot(thresholds, runtime_us, "-o", color="tab:blue")
    top.set_ylabel("runtime per sample (us)")
    if exit_percent is not None:
        top.set_title("labels: % of samples leaving at the first exit", fontsize=8)
    if misses is not None:
        bottom = axes[1][0]
        bottom.plot(thresholds, misses, "-s", color="tab:red")
        bottom.set_ylabel(f"{miss_label}\nper inference")
        bottom.set_ylim(bottom=0, top=max(misses) * 1.18 if max(misses) > 0 else 1)
        if miss_rate is not None:
            bottom.set_title(f"labels: {rate_label}", fontsize=8)
    for row in axes:
        ax = row[0]
        ax.set_xscale("symlog", linthresh=1e-4)  # linear near T = 0, logarithmic beyond
        ax.set_xlim(min(thresholds) - 2e-5, max(thresholds) * 1.6)
        ax.grid(alpha=0.3)
    top.margins(y=0.15)  # room for the labels above the highest point and below the lowest
    axes[-1][0].set_xlabel(f"threshold T of every early exit ({criterion})")
    fig.suptitle(f"{title}\ncache figures: {backend}", fontsize=9)
    fig.tight_layout()
    # The labels last: where they fit depends on the final limits and layout.
    if exit_percent is not None:
        label_points(top, thresholds, runtime_us, [f"{e:.0f}%" for e in exit_percent], "tab:blue")
    if misses is not None and miss_rate is not None:
        label_points(axes[1][0], thresholds, misses, [f"{100 * r:.2f}%" for r in miss_rate], "tab:red")
    return save_figure(fig, path)
