"""`python -m analysis compare`'s figures: machines side by side (a Comparison's table in, a Figure out)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import matplotlib.transforms
import pandas as pd
import seaborn as sns

from analysis import metrics
from analysis.figures import batch_axis, machine_order


def _with_note(ax, finding: str, note: str = ""):
    """Title = the finding; a protocol-mismatch note, if any, in red just above the axes."""
    ax.set_title(finding, pad=20 if note else 6, fontsize=11)
    if note:
        ax.text(0.5, 1.01, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="firebrick")


def _bars(ax, data: pd.DataFrame, y: str, low: str, high: str, palette: dict, scale: float = 1.0) -> None:
    """The 95 % interval of each plotted cell as a vertical bar in its machine's colour."""
    for (machine, _), g in data.groupby(["machine", "optimizer"], observed=True):
        err = [(g[y] - g[low] * scale).clip(lower=0).fillna(0), (g[high] * scale - g[y]).clip(lower=0).fillna(0)]
        ax.errorbar(g["batch_size"], g[y], yerr=err, fmt="none", ecolor=palette[machine], elinewidth=0.8, capsize=2)


def compare_times(table: pd.DataFrame, finding, value: str = "epoch_time_s", note: str = "") -> plt.Figure:
    """Epoch time (or time per update, with each machine's knee) vs batch size, one colour per machine, one dash
    per optimizer; `finding`: analysis.compare.CompareFindings."""
    machines = machine_order(table)
    per_update = value == "time_per_update_s"
    data = table.assign(y=table[value] * (1000 if per_update else 1), machine=table["machine"].astype(str))
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    palette = dict(zip(machines, sns.color_palette(n_colors=len(machines))))
    style = "optimizer" if data["optimizer"].nunique() > 1 else None
    sns.lineplot(data=data, x="batch_size", y="y", hue="machine", hue_order=machines, palette=palette, style=style,
                 marker="o", ax=ax, estimator="median", errorbar=None)
    base = value.removesuffix("_s")
    _bars(ax, data, "y", f"{base}_lo_s", f"{base}_hi_s", palette, 1000 if per_update else 1)
    ax.set_yscale("log")
    batch_axis(ax, data)
    if per_update:
        ax.set_ylabel("steady time per update (ms, log scale; bars: 95% intervals)")
        for m, b in finding.knees.items():
            if b is not None:
                row = data[(data["machine"] == m) & (data["batch_size"] == b)]
                ax.plot(row["batch_size"], row["y"], marker="D", markersize=12, markerfacecolor="none",
                        markeredgewidth=2, color=palette[m], linestyle="none")
        if finding.knees:
            ax.plot([], [], marker="D", markerfacecolor="none", color="gray", linestyle="none",
                    label=f"knee (slope >= {metrics.KNEE_SLOPE})")
        title = finding.knee_title()
    else:
        ax.set_ylabel("steady epoch time (s, log scale; bars: 95% intervals)")
        title = finding.epoch_title()
    _with_note(ax, title, note)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def compare_speedup(table: pd.DataFrame, finding, note: str = "") -> plt.Figure:
    """Each machine's speed relative to the baseline (baseline epoch time / its epoch time) vs batch size."""
    machines = machine_order(table)
    baseline = finding.baseline
    others = [m for m in machines if m != baseline]
    data = table[table["machine"].astype(str).isin(others)].assign(machine=lambda d: d["machine"].astype(str))
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    palette = dict(zip(machines, sns.color_palette(n_colors=len(machines))))
    style = "optimizer" if data["optimizer"].nunique() > 1 else None
    sns.lineplot(data=data, x="batch_size", y="speedup", hue="machine", hue_order=others, palette=palette,
                 style=style, marker="o", ax=ax, estimator="median", errorbar=None)
    _bars(ax, data, "speedup", "speedup_lo", "speedup_hi", palette)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.axhline(1, color="gray", linewidth=1)
    ax.annotate(f"as fast as {baseline}", (ax.get_xlim()[0], 1), xytext=(4, 3), textcoords="offset points",
                fontsize=8, color="gray")
    batch_axis(ax, data)
    ax.set_ylabel(f"speed relative to {baseline} (x, log scale; above 1 = faster)")
    _with_note(ax, finding.speedup_title(), note)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def compare_time_to_target(table: pd.DataFrame, finding, note: str = "") -> plt.Figure:
    """Each machine's fastest time to the profile's target per optimizer (bars labelled with the batch size); a
    cell that never reached it is marked, and a figure where none did says so on a linear axis."""
    machines = machine_order(table)
    data = finding.fastest
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * data["optimizer"].nunique() * len(machines) / 2 + 3), 5.5))
    palette = dict(zip(machines, sns.color_palette(n_colors=len(machines))))
    sns.barplot(data=data, x="optimizer", y="s", hue="machine", hue_order=machines, palette=palette, ax=ax)
    order = [t.get_text() for t in ax.get_xticklabels()]
    width = 0.8 / len(machines)
    bottom = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for i, opt in enumerate(order):
        for j, m in enumerate(machines):
            row = data[(data["optimizer"] == opt) & (data["machine"] == m)]
            if row.empty:
                continue
            x = i - 0.4 + width * (j + 0.5)
            if pd.isna(row["s"].iloc[0]):
                ax.text(x, 0.02, "not reached", transform=bottom, rotation=90, ha="center", va="bottom",
                        fontsize=7, color=palette[m])
            else:
                ax.text(x, row["s"].iloc[0] * 1.08, f"bs {row['batch'].iloc[0]}", rotation=90, ha="center",
                        va="bottom", fontsize=7)
    reached = data["s"].dropna()
    if len(reached) and (reached > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("optimizer")
    ax.set_ylabel(f"time to {finding.target_text} (s" + (", log scale" if ax.get_yscale() == "log" else "")
                  + "; fastest batch size)")
    _with_note(ax, finding.target_title(), note)
    ax.legend(title=None, fontsize="small")
    ax.margins(y=0.25)
    fig.tight_layout()
    return fig


