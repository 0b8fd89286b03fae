"""Figures 1, 2, 8 and 9: what a step and an epoch cost by batch size, against the lecture, the machine's own
peak, and the framework's dispatch."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from analysis import metrics
from analysis.figures import batch_axis, machine_style

# The lecture's speed slide (GTX 980, 50,000 training examples per epoch).
LECTURE_GTX980 = {1: 166.0, 10: 17.0}
LECTURE_TRAIN_SIZE = 50_000


def epoch_time(summary: pd.DataFrame, finding) -> plt.Figure:
    """Figure 1, the lecture's speed slide: steady-state epoch time vs batch size, one line per optimizer."""
    comparable = bool((summary["train_size"] == LECTURE_TRAIN_SIZE).all()) if "train_size" in summary else False
    data = summary.copy()
    if comparable:
        data["y"] = data["epoch_time_s"]
        ylabel, refs = "epoch time (s, 50,000 examples, log scale)", LECTURE_GTX980
    else:
        data["y"] = data["epoch_time_s"] / data["train_size"] * 1000
        ylabel = "time per 1,000 training examples (s, log scale)"
        refs = {b: t / LECTURE_TRAIN_SIZE * 1000 for b, t in LECTURE_GTX980.items()}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sns.lineplot(data=data, x="batch_size", y="y", hue="optimizer", style=machine_style(data), marker="o", ax=ax,
                 estimator="median", errorbar=None)
    ax.plot(list(refs), list(refs.values()), linestyle="none", marker="*", markersize=16, color="black",
            label="lecture, GTX 980", zorder=5)
    ax.set_yscale("log")
    batch_axis(ax, data)
    ax.set_ylabel(ylabel)
    ax.set_title(finding.title())
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def time_per_update(summary: pd.DataFrame, knee_table: pd.DataFrame, finding) -> plt.Figure:
    """Figure 2: time per update vs batch size, each optimizer's saturation knee marked."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    data = summary.assign(ms=summary["time_per_update_s"] * 1000)
    sns.lineplot(data=data, x="batch_size", y="ms", hue="optimizer", style=machine_style(data), marker="o", ax=ax,
                 estimator="median", errorbar=None)
    palette = dict(zip(data["optimizer"].unique(), sns.color_palette(n_colors=data["optimizer"].nunique())))
    kn = knee_table.dropna(subset=["knee_batch_size"])
    for _, k in kn.iterrows():
        row = data[(data["optimizer"] == k["optimizer"]) & (data["machine"] == k["machine"])
                   & (data["batch_size"] == k["knee_batch_size"])]
        ax.plot(row["batch_size"], row["ms"], marker="D", markersize=13, markerfacecolor="none",
                markeredgewidth=2, color=palette.get(k["optimizer"], "black"), linestyle="none")
    if len(kn):
        ax.plot([], [], marker="D", markerfacecolor="none", color="gray", linestyle="none",
                label=f"knee (slope >= {metrics.KNEE_SLOPE})")
    ax.set_yscale("log")
    batch_axis(ax, data)
    ax.set_ylabel("time per update (ms, log scale)")
    ax.set_title(finding.title())
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def by_mode_lines(ax, data: pd.DataFrame, y: str) -> pd.DataFrame:
    """`y` vs batch size, coloured by dispatch mode (default, fast), one line style per optimizer; returns
    the rows drawn, with a `dispatch` column."""
    data = data[data["dispatch.mode"].isin(["default", "fast"])]
    data = data.assign(dispatch=data["dispatch.mode"])
    sns.lineplot(data=data, x="batch_size", y=y, hue="dispatch", hue_order=["default", "fast"],
                 style="optimizer" if data["optimizer"].nunique() > 1 else None, marker="o", ax=ax,
                 estimator="median", errorbar=None)
    return data


def efficiency(summary: pd.DataFrame, by_mode: pd.DataFrame, finding) -> plt.Figure:
    """Figure 8: achieved GFLOP/s as a fraction of the machine's measured matmul peak vs batch size; both
    dispatch modes, coloured by mode, when both carry a calibration."""
    both = finding.pct_by_mode is not None
    data = (by_mode if both else summary).dropna(subset=["peak_fraction"])
    data = data.assign(pct=data["peak_fraction"] * 100)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if both:
        data = by_mode_lines(ax, data, "pct")
    else:
        sns.lineplot(data=data, x="batch_size", y="pct", hue="optimizer", style=machine_style(data), marker="o",
                     ax=ax, estimator="median", errorbar=None)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.axhline(100, color="gray", linewidth=1)
    ax.axhline(50, color="gray", linewidth=1, linestyle=":")
    batch_axis(ax, data)
    ax.set_ylabel("achieved / measured matmul peak (%, log scale)")
    ax.set_title(finding.title(), fontsize=10)
    ax.legend(fontsize="small", ncol=2 if both else 1)
    fig.tight_layout()
    return fig


def dispatch_gap(by_mode: pd.DataFrame, finding) -> plt.Figure:
    """Figure 9: time per update with `--dispatch default` and `fast` vs batch size."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    data = by_mode_lines(ax, by_mode.assign(ms=by_mode["time_per_update_s"] * 1000), "ms")
    ax.set_yscale("log")
    batch_axis(ax, data)
    ax.set_ylabel("time per update (ms, log scale)")
    ax.set_title(finding.title(), fontsize=10)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig
