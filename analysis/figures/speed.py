"""Figures 1, 2, 8 and 9: what a step and an epoch cost by batch size, against the lecture, the machine's own
peak, and the framework's dispatch."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from analysis import metrics
from analysis.figures import batch_axis, machine_style

# The lecture's speed slide (GTX 980, 50,000 training examples per epoch).
LECTURE_GTX980 = {1: 166.0, 10: 17.0}
LECTURE_TRAIN_SIZE = 50_000


LINESTYLE = {"default": "-", "fast": "--"}


def interval_lines(ax, cells: pd.DataFrame, y: str, scale) -> list:
    """`y` (times `scale`, a column or number) vs batch size: a colour per optimizer, a line style per dispatch
    mode (solid default, dashed fast) and a marker per machine; bars are the cells' 95 % intervals
    (`{y}`'s `_lo_s`/`_hi_s` columns), and a hollow marker is a cell whose timing is unstable. Returns the
    legend's handles."""
    base = y.removesuffix("_s")
    opts = list(dict.fromkeys(cells["optimizer"]))
    palette = dict(zip(opts, sns.color_palette(n_colors=len(opts))))
    machines = list(dict.fromkeys(cells["machine"].astype(str)))
    markers = dict(zip(machines, "osD^v"))
    cells = cells.assign(_scale=scale)
    keys = ["optimizer", "dispatch.mode", "machine"]
    for (opt, mode, machine), g in cells.sort_values("batch_size").groupby(keys, observed=True, sort=False):
        color, marker = palette[opt], markers[str(machine)]
        x, v = g["batch_size"], g[y] * g["_scale"]
        ax.plot(x, v, color=color, linestyle=LINESTYLE.get(mode, ":"), linewidth=1.4)
        err = [(v - g[f"{base}_lo_s"] * g["_scale"]).clip(lower=0), (g[f"{base}_hi_s"] * g["_scale"] - v).clip(lower=0)]
        ax.errorbar(x, v, yerr=[e.fillna(0) for e in err], fmt="none", ecolor=color, elinewidth=1, capsize=2)
        for unstable, part in g.groupby("unstable"):
            ax.plot(part["batch_size"], part[y] * part["_scale"], linestyle="none", marker=marker, markersize=6,
                    color=color, markerfacecolor="white" if unstable else color)
    handles = [Line2D([], [], color=palette[o], marker="o", label=o) for o in opts]
    handles += [Line2D([], [], color="gray", linestyle=LINESTYLE.get(m, ":"), label=f"dispatch {m}")
                for m in dict.fromkeys(cells["dispatch.mode"])]
    if len(machines) > 1:
        handles += [Line2D([], [], color="gray", marker=markers[m], linestyle="none", label=m) for m in machines]
    if cells["unstable"].any():
        handles.append(Line2D([], [], color="gray", marker="o", markerfacecolor="white", linestyle="none",
                              label="unstable timing"))
    return handles


def epoch_time(cells: pd.DataFrame, finding) -> plt.Figure:
    """Figure 1, the lecture's speed slide: steady-state epoch time vs batch size, a line per optimizer and
    dispatch mode, with the lecture's GTX 980 points."""
    comparable = bool((cells["train_size"] == LECTURE_TRAIN_SIZE).all())
    if comparable:
        scale, ylabel, refs = 1.0, "steady epoch time (s, 50,000 examples, log scale)", LECTURE_GTX980
    else:
        scale = 1000 / cells["train_size"]
        ylabel = "steady time per 1,000 training examples (s, log scale)"
        refs = {b: t / LECTURE_TRAIN_SIZE * 1000 for b, t in LECTURE_GTX980.items()}
    fig, ax = plt.subplots(figsize=(8.5, 6))
    handles = interval_lines(ax, cells, "epoch_time_s", scale)
    ax.plot(list(refs), list(refs.values()), linestyle="none", marker="*", markersize=16, color="black", zorder=5)
    handles.append(Line2D([], [], linestyle="none", marker="*", markersize=12, color="black", label="lecture, GTX 980"))
    ax.legend(handles=handles, fontsize="small", ncol=2)
    ax.set_yscale("log")
    batch_axis(ax, cells)
    ax.set_ylabel(ylabel)
    ax.set_title(finding.title(), fontsize=10)
    fig.tight_layout()
    return fig


def time_per_update(cells: pd.DataFrame, knee_table: pd.DataFrame, finding) -> plt.Figure:
    """Figure 2: time per update vs batch size, a line per optimizer and dispatch mode, each knee marked."""
    fig, ax = plt.subplots(figsize=(8.5, 6))
    handles = interval_lines(ax, cells, "time_per_update_s", 1000)
    opts = list(dict.fromkeys(cells["optimizer"]))
    palette = dict(zip(opts, sns.color_palette(n_colors=len(opts))))
    kn = knee_table.dropna(subset=["knee_batch_size"])
    for _, k in kn.iterrows():
        row = cells[(cells["optimizer"] == k["optimizer"]) & (cells["machine"] == k["machine"])
                    & (cells["dispatch.mode"] == k["dispatch.mode"]) & (cells["batch_size"] == k["knee_batch_size"])]
        ax.plot(row["batch_size"], row["time_per_update_s"] * 1000, marker="D", markersize=13, markerfacecolor="none",
                markeredgewidth=2, color=palette.get(k["optimizer"], "black"), linestyle="none")
    if len(kn):
        handles.append(Line2D([], [], marker="D", markerfacecolor="none", color="gray", linestyle="none",
                              label=f"knee (slope >= {metrics.KNEE_SLOPE})"))
    ax.legend(handles=handles, fontsize="small", ncol=2)
    ax.set_yscale("log")
    batch_axis(ax, cells)
    ax.set_ylabel("steady time per update (ms, log scale; bars: 95% intervals)")
    ax.set_title(finding.title(), fontsize=10)
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
    """Figure 9: what `--dispatch default` costs over `fast` per update, by batch size (median over optimizers,
    95 % interval bars)."""
    sizes = sorted(finding.ratio)
    values = [finding.ratio[b] for b in sizes]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.errorbar(sizes, [v.value for v in values], marker="o", color="tab:purple", capsize=3,
                yerr=[[max(0.0, v.value - v.low) if v.defined else 0 for v in values],
                      [max(0.0, v.high - v.value) if v.defined else 0 for v in values]])
    ax.axhline(1, color="gray", linewidth=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    batch_axis(ax, by_mode[by_mode["batch_size"].isin(sizes)])
    ax.set_ylabel("default / fast time per update (x, log scale; bars: 95% intervals)")
    ax.set_title(finding.title(), fontsize=10)
    fig.tight_layout()
    return fig
