"""The tuning experiment's figures: steps and time to the validation target against batch size at tuned rates
(figure 11, after Shallue et al. 2018), and each optimizer's learning-rate sensitivity map (figure 12)."""

from __future__ import annotations

import math

import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.figures import batch_axis


def steps_to_target(steps: pd.DataFrame, finding) -> plt.Figure:
    """Left: updates to the target against batch size, log-log, per optimizer at its tuned rate, the median over
    seeds with its 95 % interval, every seed a dot, a cell whose seeds never reached it within the budget an open
    triangle at the budget, and the perfect-scaling line (steps halve when the batch doubles) through each
    optimizer's smallest batch. Right: this machine's time to the target (steps x measured time per update)."""
    tuned = steps[steps["role"] == "tuned"].sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = dict(zip(finding.optimizers, sns.color_palette("tab10", n_colors=len(finding.optimizers))))
    for opt, g in tuned.groupby("optimizer", sort=False):
        c = colors[opt]
        done = g[g["reached"] > 0]
        for ax, col in ((left, "steps"), (right, "time")):
            vals = list(done[col])
            ax.errorbar(done["batch_size"], [v.value for v in vals], marker="o", color=c, capsize=3,
                        label=f"{opt} (tuned rate, median over seeds)",
                        yerr=[[v.value - v.low if v.defined else 0 for v in vals],
                              [v.high - v.value if v.defined else 0 for v in vals]])
        for b, by_seed in zip(g["batch_size"], g["steps_by_seed"]):
            ys = [s for s in by_seed if s is not None and not pd.isna(s)]
            left.plot([b] * len(ys), ys, linestyle="none", marker=".", color=c, alpha=0.5)
        never = g[g["reached"] < g["runs"]]
        left.plot(never["batch_size"], [finding.budget_updates] * len(never), linestyle="none", marker="^",
                  markerfacecolor="none", color=c, markersize=10)
        if len(done):
            b0, s0 = done["batch_size"].iloc[0], done["steps"].iloc[0].value
            xs = np.array(sorted(g["batch_size"]), dtype=float)
            left.plot(xs, s0 * b0 / xs, linestyle=":", color=c, alpha=0.7)
    left.axhline(finding.budget_updates, color="gray", linewidth=0.8)
    left.annotate(f"budget: {finding.budget_updates:,} updates", (0.01, finding.budget_updates),
                  xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", fontsize=8,
                  color="gray")
    for ax in (left, right):
        ax.set_yscale("log")
        batch_axis(ax, steps)
    left.set_ylabel(f"updates to {finding.target:.0%} validation accuracy (log scale)")
    left.set_title(f"Steps to target (resolution {finding.check_every} updates)", fontsize=10)
    right.set_ylabel("steady training time to the target (s, log scale)")
    right.set_title("This machine: steps x measured time per update", fontsize=10)
    handles, labels = left.get_legend_handles_labels()
    handles += [plt.Line2D([], [], linestyle=":", color="gray"),
                plt.Line2D([], [], marker="^", markerfacecolor="none", color="gray", linestyle="none")]
    labels += ["perfect scaling (steps x batch constant)", "a seed never reached it (at the budget)"]
    left.legend(handles, labels, fontsize="small")
    fig.suptitle(finding.title(), fontsize=11)
    fig.tight_layout()
    return fig


def sensitivity(trials: pd.DataFrame, finding) -> plt.Figure:
    """Per optimizer, a batch size x learning rate map of the trials' final validation accuracy; a trial that
    did not finish ok is marked with its status, the chosen rate of each batch size is outlined."""
    opts = finding.optimizers
    fig, axes = plt.subplots(1, len(opts), figsize=(6.2 * len(opts), 4.8), squeeze=False)
    for ax, opt in zip(axes[0], opts):
        g = trials[trials["optimizer"] == opt]
        rates = sorted(g["learning_rate"].unique())
        sizes = sorted(g["batch_size"].unique())
        labels = dict(zip(g["batch_size"], g["batch_label"]))
        grid = np.full((len(sizes), len(rates)), np.nan)
        for _, r in g.iterrows():
            i, j = sizes.index(r["batch_size"]), rates.index(r["learning_rate"])
            if r["status"] == "ok" and r["val_accuracy"] is not None and not pd.isna(r["val_accuracy"]):
                grid[i, j] = r["val_accuracy"]
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
        for _, r in g.iterrows():
            i, j = sizes.index(r["batch_size"]), rates.index(r["learning_rate"])
            text = f"{grid[i, j]:.2f}" if not math.isnan(grid[i, j]) else r["status"]
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if math.isnan(grid[i, j]) or grid[i, j] < 0.6 else "black")
            if r["chosen"]:
                ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                                          linewidth=2.5))
        ax.set_xticks(range(len(rates)), [f"{x:.3g}" for x in rates])
        ax.set_yticks(range(len(sizes)), [labels[s] if labels[s] == "full" else f"{s:,}" for s in sizes])
        ax.set_xlabel("learning rate (log-spaced grid)")
        ax.set_ylabel("batch size (examples per update)")
        ax.set_title(f"{opt}: validation accuracy after {finding.budget_updates:,} updates", fontsize=10)
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="validation accuracy")
    handles = [matplotlib.patches.Patch(fill=False, edgecolor="red", linewidth=2.5)]
    axes[0][0].legend(handles, ["chosen rate (best validation accuracy)"], fontsize="small", loc="upper left",
                      bbox_to_anchor=(0, -0.14))
    fig.suptitle(f"{finding.sensitivity_title()}\n({finding.profile}, {finding.train_size:,} training examples, "
                 f"{finding.budget_updates:,} updates per trial)", fontsize=11)
    fig.tight_layout()
    return fig
