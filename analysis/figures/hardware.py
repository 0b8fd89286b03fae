"""Figures 6 and 7: the GPU's utilisation and power, and machines side by side."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from analysis.figures import batch_axis, machine_order, machine_style


def gpu_usage(summary: pd.DataFrame, finding) -> plt.Figure:
    """Figure 6: GPU utilisation and power vs batch size."""
    data = summary.dropna(subset=["gpu_util_mean_pct"])
    fig, (ax_u, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    sns.lineplot(data=data, x="batch_size", y="gpu_util_mean_pct", hue="optimizer", style=machine_style(data),
                 marker="o", ax=ax_u, errorbar=None)
    sns.lineplot(data=data, x="batch_size", y="gpu_power_mean_w", hue="optimizer", style=machine_style(data),
                 marker="o", ax=ax_p, errorbar=None, legend=False)
    for ax in (ax_u, ax_p):
        batch_axis(ax, data)
    ax_u.set_ylabel("GPU utilisation during epochs (%)")
    ax_u.set_ylim(0, 105)
    ax_p.set_ylabel("GPU power during epochs (W)")
    fig.suptitle(finding.title())
    fig.tight_layout()
    return fig


def machines_relative(summary: pd.DataFrame, finding) -> plt.Figure:
    """Figure 7: each machine's epoch time relative to the first machine, per batch size."""
    machines = machine_order(summary)
    base = summary[summary["machine"] == machines[0]].set_index(["optimizer", "batch_size"])["epoch_time_s"]
    data = summary.join(base.rename("base"), on=["optimizer", "batch_size"])
    data["relative"] = data["epoch_time_s"] / data["base"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sns.lineplot(data=data, x="batch_size", y="relative", hue="machine", marker="o", ax=ax,
                 estimator="median", errorbar=None)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2gx"))
    ax.axhline(1, color="gray", linewidth=1)
    batch_axis(ax, data)
    ax.set_ylabel(f"epoch time / {machines[0]}'s (log; below 1 = faster)")
    ax.set_title(finding.title())
    fig.tight_layout()
    return fig
