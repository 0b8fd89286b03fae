"""Figures 3 and 5: what each batch size and optimizer reached, and how fast."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def speed_vs_stability(summary: pd.DataFrame, finding) -> plt.Figure:
    """Figure 3: training time (x) against final test accuracy (y, seed spread), a point per batch size."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    opts = list(summary["optimizer"].unique())
    palette = dict(zip(opts, sns.color_palette(n_colors=len(opts))))
    for (opt, machine), g in summary.sort_values("batch_size").groupby(["optimizer", "machine"], observed=True,
                                                                          sort=False):
        yerr = None
        if g["seeds"].max() > 1:
            yerr = [g["test_accuracy"] - g["test_accuracy_min"], g["test_accuracy_max"] - g["test_accuracy"]]
        ax.errorbar(g["train_time_s"], g["test_accuracy"], yerr=yerr, marker="o", capsize=3,
                    color=palette[opt], label=opt if summary["machine"].nunique() == 1 else f"{opt}, {machine}")
        for _, r in g.iterrows():
            ax.annotate(r["batch_label"], (r["train_time_s"], r["test_accuracy"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=palette[opt])
    ax.set_xscale("log")
    ax.set_xlabel("training time, all epochs (s, log scale)")
    ax.set_ylabel("final test accuracy" + (" (bars: min-max over seeds)" if summary["seeds"].max() > 1 else ""))
    ax.axhline(0.1, color="gray", linestyle=":", linewidth=1)
    ax.annotate("chance", (ax.get_xlim()[0], 0.1), xytext=(3, 3), textcoords="offset points", fontsize=8, color="gray")
    ax.set_title(finding.title())
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def learning_curves(runs: pd.DataFrame, finding) -> plt.Figure:
    """Figure 5: accuracy per epoch on the target's split (validation; test in older records), a panel per
    optimizer, colour by batch size."""
    split = finding.split
    rows = [{"optimizer": r["optimizer"], "batch": r["batch_label"], "batch_size": r["batch_size"],
             "epoch": i + 1, f"{split} accuracy": acc}
            for _, r in runs.iterrows() for i, acc in enumerate(r["accuracy_by_epoch"] or [])]
    data = pd.DataFrame(rows).sort_values("batch_size")
    order = list(dict.fromkeys(data["batch"]))
    grid = sns.relplot(data=data, x="epoch", y=f"{split} accuracy", hue="batch", hue_order=order, col="optimizer",
                       col_order=list(dict.fromkeys(runs["optimizer"])),
                       col_wrap=min(4, data["optimizer"].nunique()), kind="line", marker="o", height=2.8,
                       palette="viridis", errorbar=("pi", 100))
    grid.set_axis_labels("epoch", f"{split} accuracy")
    for ax in grid.axes.flat:
        ax.set_xticks(sorted(data["epoch"].unique()))
    grid.figure.suptitle(finding.title(), y=1.02)
    grid.legend.set_title("batch size")
    return grid.figure
