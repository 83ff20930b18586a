"""Calibration pictures: accuracy vs cost with the frontier (the paper's Figure 3), accuracy vs the
first exit's threshold (Figure 4), and each exit's entropy histogram split by correct and wrong."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from branchy_engine.calibrate.outcome import evaluate  # noqa: E402
from branchy_engine.fileio import save_figure  # noqa: E402


def frontier_plot(path, outcome, front, chosen, baseline_cost, unit, title):
    """Every grid point, the Pareto frontier, the chosen point starred, the baseline's cost."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(outcome.cost, outcome.accuracy, s=4, color="0.75", label="threshold grid", rasterized=True)
    ax.plot(outcome.cost[front], outcome.accuracy[front], "-o", ms=3, color="tab:blue", label="Pareto frontier")
    ax.plot([outcome.cost[chosen]], [outcome.accuracy[chosen]], "*", ms=16, color="tab:red", label="chosen")
    ax.axvline(baseline_cost, color="k", ls="--", lw=1, label="baseline network")
    lo = float(outcome.accuracy[front].min())
    ax.set_ylim(max(0.0, lo - 2), float(outcome.accuracy.max()) + 0.5)
    ax.set_xlabel(f"expected cost per sample ({unit})")
    ax.set_ylabel("accuracy on the validation split (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def threshold_plot(path, table, criterion, chosen_params, segment_costs, title):
    """Overall accuracy and exit-1 fraction as the first exit's threshold sweeps, the others held."""
    scores = (table.entropy if criterion == "entropy" else table.max_prob)[:, 0]
    lo = max(float(scores[scores > 0].min()) if (scores > 0).any() else 1e-6, 1e-6)
    hi = max(float(scores.max()), lo * 10)
    sweep = torch.logspace(math.log10(lo), math.log10(hi * 1.01), 200, dtype=torch.float64)
    grid = torch.tensor(chosen_params, dtype=torch.float64).repeat(len(sweep), 1)
    grid[:, 0] = sweep
    outcome = evaluate(table, criterion, grid, segment_costs)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.semilogx(sweep, outcome.accuracy, color="tab:blue", label="overall accuracy")
    ax.axvline(chosen_params[0], color="tab:red", ls="--", lw=1, label="chosen threshold")
    ax.set_xlabel(f"exit 1 threshold ({'entropy, nats' if criterion == 'entropy' else 'max probability'})")
    ax.set_ylabel("accuracy on the validation split (%)")
    twin = ax.twinx()
    twin.semilogx(sweep, outcome.fractions[:, 0], color="tab:green", label="% leaving at exit 1")
    twin.set_ylabel("% of samples leaving at exit 1")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def entropy_histograms(path, table, thresholds, criterion, title):
    """Per exit: the entropy of samples it classifies right and wrong, thresholds marked."""
    e = table.num_exits
    fig, axes = plt.subplots(1, e, figsize=(4.2 * e, 3.4), squeeze=False)
    correct = table.correct
    top = max(float(table.entropy.max()), 1e-3)
    bins = torch.linspace(0, top, 50).tolist()
    for i, ax in enumerate(axes[0]):
        h = table.entropy[:, i]
        ax.hist(h[correct[:, i]].tolist(), bins=bins, alpha=0.6, color="tab:blue", label="correct")
        ax.hist(h[~correct[:, i]].tolist(), bins=bins, alpha=0.6, color="tab:red", label="wrong")
        if criterion == "entropy" and i < len(thresholds):
            ax.axvline(thresholds[i], color="k", ls="--", lw=1, label="threshold")
        ax.set_yscale("log")
        ax.set_xlabel("entropy (nats)")
        ax.set_title(f"exit {i + 1}: {100 * float(correct[:, i].double().mean()):.1f}% right")
        if i == 0:
            ax.set_ylabel("samples")
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)

