"""Pure plotting functions: a runs DataFrame (from analysis.load + analysis.metrics) in, a matplotlib Figure out."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")  # figures are files and tests: never a window
matplotlib.rcParams["svg.hashsalt"] = "mnist-mlp-bench"  # stable SVG ids across regenerations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import metrics  # noqa: E402

# The lecture's speed slide (GTX 980, 50,000 training examples per epoch).
LECTURE_GTX980 = {1: 166.0, 10: 17.0}
LECTURE_TRAIN_SIZE = 50_000

sns.set_theme(style="whitegrid", context="notebook")


def _batch_axis(ax, summary: pd.DataFrame):
    sizes = sorted(summary["batch_size"].unique())
    labels = dict(zip(summary["batch_size"], summary["batch_label"]))
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{labels[s]}" if labels[s] == "full" else f"{s:,}" for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size (examples per update, log scale)")


def _style(summary):
    return "machine" if summary["machine"].nunique() > 1 else None


def epoch_time(summary: pd.DataFrame) -> plt.Figure:
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
    sns.lineplot(data=data, x="batch_size", y="y", hue="optimizer", style=_style(data), marker="o", ax=ax,
                 estimator="median", errorbar=None)
    ax.plot(list(refs), list(refs.values()), linestyle="none", marker="*", markersize=16, color="black",
            label="lecture, GTX 980", zorder=5)
    ax.set_yscale("log")
    _batch_axis(ax, data)
    ax.set_ylabel(ylabel)
    speedup = metrics.median_at(summary, "epoch_speedup_vs_bs1", 10)
    finding = (f"An epoch at batch 10 is {speedup:.1f}x faster than at batch 1 here"
               if not math.isnan(speedup) else "Epoch time vs batch size")
    ax.set_title(f"{finding} (lecture's GTX 980: {166 / 17:.1f}x)")
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def time_per_update(summary: pd.DataFrame, knee_table: pd.DataFrame) -> plt.Figure:
    """Figure 2: time per update vs batch size, each optimizer's saturation knee marked."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    data = summary.assign(ms=summary["time_per_update_s"] * 1000)
    sns.lineplot(data=data, x="batch_size", y="ms", hue="optimizer", style=_style(data), marker="o", ax=ax,
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
    _batch_axis(ax, data)
    ax.set_ylabel("time per update (ms, log scale)")
    cost = metrics.median_at(summary, "update_cost_vs_bs1", 10)
    common = kn["knee_batch_size"].mode()
    parts = []
    if not math.isnan(cost):
        parts.append(f"One update at batch 10 costs {cost:.2f}x one at batch 1")
    parts.append(f"knee at batch {int(common.iloc[0]):,}" if len(common) else "no knee within the grid")
    ax.set_title("; ".join(parts))
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def speed_vs_stability(summary: pd.DataFrame) -> plt.Figure:
    """Figure 3: training time (x) against final test accuracy (y, seed spread), a point per batch size."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    opts = list(summary["optimizer"].unique())
    palette = dict(zip(opts, sns.color_palette(n_colors=len(opts))))
    for (opt, machine), g in summary.sort_values("batch_size").groupby(["optimizer", "machine"], observed=True, sort=False):
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
    best = summary.loc[summary["test_accuracy"].idxmax()]
    ax.set_title(f"Best: {best['optimizer']} at batch {best['batch_label']} "
                 f"({best['test_accuracy']:.3f} in {best['train_time_s']:.0f} s); labels = batch size")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def smooth(curve, points: int = 40) -> list[tuple[int, float]]:
    """A running median over about len/`points` points: the minibatch loss of small batches is noise-dominated."""
    pts = [(u, v) for u, v in (curve or []) if v is not None]
    w = max(1, len(pts) // points)
    if w == 1:
        return pts
    med = pd.Series([v for _, v in pts]).rolling(w, center=True, min_periods=1).median()
    return list(zip([u for u, _ in pts], med))


def plateaus(curve, rel: float = 0.01, window: int | None = None) -> list[tuple[int, int]]:
    """Segments [(start_update, end_update)] where the smoothed loss moves by less than `rel` over `window` points."""
    pts = smooth(curve)
    n = len(pts)
    if n < 6:
        return []
    w = window or max(3, n // 20)
    flat = np.zeros(n, dtype=bool)
    for i in range(n - w):
        a, b = pts[i][1], pts[i + w][1]
        if a > 0 and abs(b - a) / a < rel:
            flat[i:i + w + 1] = True
    segs, start = [], None
    for i, f in enumerate(flat):
        if f and start is None:
            start = i
        if (not f or i == n - 1) and start is not None:
            end = i if f else i - 1
            segs.append((pts[start][0], pts[end][0]))
            start = None
    return segs


def saddle_curves(runs: pd.DataFrame, optimizer: str | None = None) -> plt.Figure | None:
    """Figure 4: minibatch loss and gradient norm vs updates per batch size, plateaus shaded; None without curves."""
    ok = runs[runs["loss_curve"].map(bool)]
    if ok.empty:
        return None
    optimizer = optimizer or ("sgd" if "sgd" in set(ok["optimizer"]) else ok["optimizer"].iloc[0])
    sel = ok[(ok["optimizer"] == optimizer)].sort_values(["batch_size", "seed"])
    sel = sel.drop_duplicates(["machine", "batch_size"])  # one seed per batch size keeps it legible
    fig, (ax_l, ax_g) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    colors = sns.color_palette("viridis", n_colors=len(sel))
    for color, (_, r) in zip(colors, sel.iterrows()):
        marker = "o" if len(r["loss_curve"]) < 30 else None
        for ax, curve in ((ax_l, r["loss_curve"]), (ax_g, r["grad_norm_curve"])):
            if len(curve) >= 80:  # raw minibatch values faintly, their running median on top
                ax.plot([p[0] for p in curve], [p[1] for p in curve], color=color, alpha=0.15, linewidth=0.6)
            sm = smooth(curve)
            ax.plot([p[0] for p in sm], [p[1] for p in sm], color=color, marker=marker, markersize=4,
                    label=f"batch {r['batch_label']}" if ax is ax_l else None)
        recorded = r.get("plateaus")  # the run's own plateau records; older records have none
        spans = ([(p["start_update"], p["end_update"]) for p in recorded] if isinstance(recorded, list)
                 else plateaus(r["loss_curve"]))
        for a, b in spans:
            ax_l.axvspan(a, max(b, a + 0.5), color=color, alpha=0.12)
    ax_l.set_yscale("log")
    ax_g.set_yscale("log")
    ax_g.set_xscale("log")
    ax_l.set_ylabel("minibatch training loss\n(running median; log)")
    ax_g.set_ylabel("minibatch gradient L2 norm\n(running median; log)")
    ax_g.set_xlabel("update (log scale)")
    ax_l.legend(fontsize="small", ncol=2)
    final = sel.set_index("batch_label")["train_loss"]
    first, last = final.index[0], final.index[-1]
    ax_l.set_title(f"{optimizer}: final training loss {final.iloc[0]:.2f} at batch {first} vs "
                   f"{final.iloc[-1]:.2f} at batch {last}\nshaded: plateaus (smoothed loss flat within 1%)")
    fig.tight_layout()
    return fig


def learning_curves(runs: pd.DataFrame) -> plt.Figure:
    """Figure 5: test accuracy per epoch, a panel per optimizer, colour by batch size."""
    rows = [{"optimizer": r["optimizer"], "batch": r["batch_label"], "batch_size": r["batch_size"],
             "epoch": i + 1, "test accuracy": acc}
            for _, r in runs.iterrows() for i, acc in enumerate(r["test_accuracy_by_epoch"] or [])]
    data = pd.DataFrame(rows).sort_values("batch_size")
    order = list(dict.fromkeys(data["batch"]))
    grid = sns.relplot(data=data, x="epoch", y="test accuracy", hue="batch", hue_order=order, col="optimizer",
                       col_order=list(dict.fromkeys(runs["optimizer"])),
                       col_wrap=min(4, data["optimizer"].nunique()), kind="line", marker="o", height=2.8,
                       palette="viridis", errorbar=("pi", 100))
    grid.set_axis_labels("epoch", "test accuracy")
    for ax in grid.axes.flat:
        ax.set_xticks(sorted(data["epoch"].unique()))
    final = runs.groupby("batch_label")["test_accuracy"].mean()
    grid.figure.suptitle(f"Test accuracy by epoch: batch {final.idxmax()} ends highest ({final.max():.3f} mean over "
                         f"optimizers), batch {final.idxmin()} lowest ({final.min():.3f})", y=1.02)
    grid.legend.set_title("batch size")
    return grid.figure


def gpu_usage(summary: pd.DataFrame) -> plt.Figure | None:
    """Figure 6: GPU utilisation and power vs batch size; None when no run had a GPU."""
    data = summary.dropna(subset=["gpu_util_mean_pct"])
    if data.empty:
        return None
    fig, (ax_u, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    sns.lineplot(data=data, x="batch_size", y="gpu_util_mean_pct", hue="optimizer", style=_style(data),
                 marker="o", ax=ax_u, errorbar=None)
    sns.lineplot(data=data, x="batch_size", y="gpu_power_mean_w", hue="optimizer", style=_style(data),
                 marker="o", ax=ax_p, errorbar=None, legend=False)
    for ax in (ax_u, ax_p):
        _batch_axis(ax, data)
    ax_u.set_ylabel("GPU utilisation during epochs (%)")
    ax_u.set_ylim(0, 105)
    ax_p.set_ylabel("GPU power during epochs (W)")
    top = data.loc[data["gpu_util_mean_pct"].idxmax()]
    fig.suptitle(f"GPU busiest at batch {top['batch_label']} ({top['gpu_util_mean_pct']:.0f}% utilisation)")
    fig.tight_layout()
    return fig


def machines_relative(summary: pd.DataFrame) -> plt.Figure | None:
    """Figure 7: each machine's epoch time relative to the first machine, per batch size; None for one machine."""
    machines = list(summary["machine"].cat.categories if hasattr(summary["machine"], "cat")
                    else dict.fromkeys(summary["machine"]))
    machines = [m for m in machines if m in set(summary["machine"])]
    if len(machines) < 2:
        return None
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
    _batch_axis(ax, data)
    ax.set_ylabel(f"epoch time / {machines[0]}'s (log; below 1 = faster)")
    med = data.groupby(["machine", "batch_size"], observed=True)["relative"].median()
    sizes = sorted(data["batch_size"].unique())
    other = machines[1]
    ax.set_title(f"{other}: {med[(other, sizes[0])]:.2g}x the epoch time of {machines[0]} at batch "
                 f"{sizes[0]:,}, {med[(other, sizes[-1])]:.2g}x at {sizes[-1]:,}\n(median over optimizers)")
    fig.tight_layout()
    return fig


def _by_mode_lines(ax, data: pd.DataFrame, y: str) -> pd.DataFrame:
    """`y` vs batch size, coloured by dispatch mode (default, fast), one line style per optimizer; returns
    the rows drawn, with a `dispatch` column."""
    data = data[data["dispatch.mode"].isin(["default", "fast"])]
    data = data.assign(dispatch=data["dispatch.mode"])
    sns.lineplot(data=data, x="batch_size", y=y, hue="dispatch", hue_order=["default", "fast"],
                 style="optimizer" if data["optimizer"].nunique() > 1 else None, marker="o", ax=ax,
                 estimator="median", errorbar=None)
    return data


def efficiency(summary: pd.DataFrame, by_mode: pd.DataFrame | None = None) -> plt.Figure | None:
    """Figure 8: achieved GFLOP/s as a fraction of the machine's measured matmul peak vs batch size; None
    when no run was scored against a calibration. With `by_mode` (cell summaries with `dispatch.mode`)
    holding both dispatch modes, both are drawn, coloured by mode."""
    both = by_mode is not None and {"default", "fast"} <= set(by_mode.dropna(subset=["peak_fraction"])["dispatch.mode"])
    data = (by_mode if both else summary).dropna(subset=["peak_fraction"])
    if data.empty:
        return None
    data = data.assign(pct=data["peak_fraction"] * 100)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if both:
        data = _by_mode_lines(ax, data, "pct")
    else:
        sns.lineplot(data=data, x="batch_size", y="pct", hue="optimizer", style=_style(data), marker="o", ax=ax,
                     estimator="median", errorbar=None)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.axhline(100, color="gray", linewidth=1)
    ax.axhline(50, color="gray", linewidth=1, linestyle=":")
    _batch_axis(ax, data)
    ax.set_ylabel("achieved / measured matmul peak (%, log scale)")
    peak = float((data["achieved_gflops"] / data["peak_fraction"]).median())
    if both:
        med = data.groupby(["dispatch", "batch_size"])["pct"].median()
        big = int(data["batch_size"].max())
        ax.set_title(f"At batch {big:,}: {med['default'][big]:.0f}% (default) and {med['fast'][big]:.0f}% (fast) of "
                     f"the measured {peak:.0f} GFLOP/s matmul peak\n(model FLOPs: forward + backward matmuls; "
                     "median over optimizers)", fontsize=10)
        ax.legend(fontsize="small", ncol=2)
    else:
        med = data.groupby("batch_size")["pct"].median()
        gflops = data.groupby("batch_size")["achieved_gflops"].median()
        big, small = med.index.max(), med.index.min()
        ax.set_title(f"{med[big]:.0f}% of the measured {peak:.0f} GFLOP/s matmul peak at batch {big:,} "
                     f"({gflops[big]:.0f} GFLOP/s), {med[small]:.2g}% at batch {small:,}\n(model FLOPs: forward + "
                     "backward matmuls; median over optimizers)", fontsize=10)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def dispatch_gap(runs_summary: pd.DataFrame) -> plt.Figure | None:
    """Figure 9: time per update with `--dispatch default` and `fast` vs batch size; None unless both were run."""
    modes = set(runs_summary["dispatch.mode"])
    if not {"default", "fast"} <= modes:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    data = _by_mode_lines(ax, runs_summary.assign(ms=runs_summary["time_per_update_s"] * 1000), "ms")
    ax.set_yscale("log")
    _batch_axis(ax, data)
    ax.set_ylabel("time per update (ms, log scale)")
    wide = data.pivot_table(index=["machine", "optimizer", "batch_size"], columns="dispatch.mode", values="ms",
                            observed=True).dropna()
    ratio = (wide["default"] / wide["fast"]).groupby(level="batch_size").median()
    ax.set_title(f"Per-step dispatch: default costs {ratio.iloc[0]:.2g}x fast at batch {ratio.index[0]:,}, "
                 f"{ratio.iloc[-1]:.2g}x at {ratio.index[-1]:,}\n(fast = XLA + one call per epoch; "
                 "median over optimizers)", fontsize=10)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


# --- several machines (python -m analysis compare): a Comparison's table in, a Figure out -----------------

def _machine_order(table: pd.DataFrame) -> list:
    order = table["machine"].cat.categories if hasattr(table["machine"], "cat") else dict.fromkeys(table["machine"])
    return [m for m in order if m in set(table["machine"])]


def _with_note(ax, finding: str, note: str = ""):
    """Title = the finding; a protocol-mismatch note, if any, in red just above the axes."""
    ax.set_title(finding, pad=20 if note else 6, fontsize=11)
    if note:
        ax.text(0.5, 1.01, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="firebrick")


def _median_by_bs(table, machine, column):
    return table[table["machine"] == machine].groupby("batch_size")[column].median()


def compare_times(table: pd.DataFrame, baseline: str, value: str = "epoch_time_s", knees: pd.DataFrame | None = None,
                  note: str = "") -> plt.Figure:
    """Epoch time (or time per update, with knees) vs batch size, one colour per machine, one dash per optimizer."""
    machines = _machine_order(table)
    per_update = value == "time_per_update_s"
    data = table.assign(y=table[value] * (1000 if per_update else 1), machine=table["machine"].astype(str))
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    palette = dict(zip(machines, sns.color_palette(n_colors=len(machines))))
    style = "optimizer" if data["optimizer"].nunique() > 1 else None
    sns.lineplot(data=data, x="batch_size", y="y", hue="machine", hue_order=machines, palette=palette, style=style,
                 marker="o", ax=ax, estimator="median", errorbar=None)
    ax.set_yscale("log")
    _batch_axis(ax, data)
    if per_update:
        ax.set_ylabel("time per update (ms, log scale)")
        finding = []
        if knees is not None and len(knees):
            for m in machines:
                k = knees.loc[knees["machine"] == m, "knee_batch_size"].dropna()
                if len(k):
                    b = int(k.median())
                    row = data[(data["machine"] == m) & (data["batch_size"] == b)]
                    ax.plot(row["batch_size"], row["y"], marker="D", markersize=12, markerfacecolor="none",
                            markeredgewidth=2, color=palette[m], linestyle="none")
                finding.append(f"{m} at {int(k.median()):,}" if len(k) else f"{m}: none")
            ax.plot([], [], marker="D", markerfacecolor="none", color="gray", linestyle="none",
                    label=f"knee (slope >= {metrics.KNEE_SLOPE})")
        title = ("Saturation knee (median over optimizers): " + ", ".join(finding)) if finding else \
            "Time per update vs batch size"
    else:
        ax.set_ylabel("steady-state epoch time (s, log scale)")
        base = _median_by_bs(table, baseline, "epoch_time_s")
        parts = []
        for m in machines[1:]:
            r = base / _median_by_bs(table, m, "epoch_time_s")
            r = r.dropna()
            labels = dict(zip(table["batch_size"], table["batch_label"]))
            name = lambda b: "full" if labels.get(b) == "full" else f"{b:,}"  # noqa: E731
            if len(r):
                parts.append(f"{m}: {r.iloc[0]:.2g}x the speed of {baseline} at batch {name(r.index[0])}, "
                             f"{r.iloc[-1]:.2g}x at {name(r.index[-1])}")
        title = "; ".join(parts[:2]) or "Epoch time vs batch size"
        title += " (median over optimizers)"
    _with_note(ax, title, note)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def compare_speedup(table: pd.DataFrame, baseline: str, note: str = "") -> plt.Figure:
    """Each machine's speed relative to the baseline (baseline epoch time / its epoch time) vs batch size."""
    machines = _machine_order(table)
    others = [m for m in machines if m != baseline]
    data = table[table["machine"].astype(str).isin(others)].assign(machine=lambda d: d["machine"].astype(str))
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    palette = dict(zip(machines, sns.color_palette(n_colors=len(machines))))
    style = "optimizer" if data["optimizer"].nunique() > 1 else None
    sns.lineplot(data=data, x="batch_size", y="speedup", hue="machine", hue_order=others, palette=palette,
                 style=style, marker="o", ax=ax, estimator="median", errorbar=None)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.axhline(1, color="gray", linewidth=1)
    ax.annotate(f"as fast as {baseline}", (ax.get_xlim()[0], 1), xytext=(4, 3), textcoords="offset points",
                fontsize=8, color="gray")
    _batch_axis(ax, data)
    ax.set_ylabel(f"speed relative to {baseline} (x, log scale; above 1 = faster)")
    parts = []
    for m in others:
        g = data[data["machine"] == m]
        if len(g):
            best = g.groupby("batch_size")["speedup"].median()
            top = best.idxmax()
            top = "full" if dict(zip(g["batch_size"], g["batch_label"])).get(top) == "full" else f"{top:,}"
            parts.append(f"{m}: {g['speedup'].min():.2g}x to {g['speedup'].max():.2g}x, most at batch {top}")
    _with_note(ax, f"Speed relative to {baseline}: " + "; ".join(parts[:2]), note)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def compare_time_to_target(table: pd.DataFrame, note: str = "") -> plt.Figure:
    """Each machine's fastest time to the target test accuracy per optimizer (bars labelled with the batch size)."""
    machines = _machine_order(table)
    rows = []
    for (opt, m), g in table.groupby(["optimizer", "machine"], observed=True):
        r = g.dropna(subset=["time_to_target_s"])
        best = r.loc[r["time_to_target_s"].idxmin()] if len(r) else None
        rows.append({"optimizer": opt, "machine": str(m), "s": best["time_to_target_s"] if best is not None else np.nan,
                     "batch": best["batch_label"] if best is not None else None})
    data = pd.DataFrame(rows)
    target = table["target_accuracy"].dropna()
    target = float(target.iloc[0]) if len(target) and target.nunique() == 1 else None
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
    ax.set_yscale("log")
    ax.set_xlabel("optimizer")
    what = f"{target:.0%} test accuracy" if target else "the profile's target accuracy"
    ax.set_ylabel(f"time to {what} (s, log scale; fastest batch size)")
    reached = data.dropna(subset=["s"])
    if len(reached):
        best = reached.loc[reached["s"].idxmin()]
        finding = (f"Fastest to {what}: {best['machine']}, {best['optimizer']} at batch {best['batch']} "
                   f"({best['s']:.3g} s)")
    else:
        finding = f"No machine reached {what}"
    _with_note(ax, finding, note)
    ax.legend(title=None, fontsize="small")
    ax.margins(y=0.25)
    fig.tight_layout()
    return fig


# --- the saddle benchmark (bench/test_saddle.py) ------------------------------------------------------------

KIND_MARK = {"saddle": "S", "minimum": "M", "slope": "~"}


def saddle_benchmark(runs: pd.DataFrame) -> plt.Figure | None:
    """Figure 4 from the saddle benchmark's records: loss vs updates for the same epochs and for the same
    updates (plateaus shaded, labelled S = saddle, M = minimum, ~ = slow slope), the full-batch gradient norm
    at the probes, and the Hessian's extreme eigenvalues at the end of each run vs batch size."""
    data = runs[runs["budget"].notna() & (runs["status"] == "ok")] if "budget" in runs else runs.iloc[0:0]
    if data.empty:
        return None
    sizes = sorted(data["batch_size"].unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", n_colors=len(sizes))))
    labels = dict(zip(data["batch_size"], data["batch_label"]))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, budget in zip(axes[0], ("epochs", "updates")):
        sel = data[data["budget"] == budget].sort_values(["batch_size", "seed"]).drop_duplicates("batch_size")
        if sel.empty:
            ax.set_axis_off()
            ax.set_title(f"no run with the same number of {budget}", fontsize=10)
            continue
        for _, r in sel.iterrows():
            c = colors[r["batch_size"]]
            sm = smooth(r["loss_curve"])
            ax.plot([p[0] for p in sm], [p[1] for p in sm], color=c, label=f"batch {r['batch_label']}")
            for p in r["plateaus"] or []:
                ax.axvspan(p["start_update"], max(p["end_update"], p["start_update"] + 0.5), color=c, alpha=0.12)
                if p.get("kind"):
                    ax.annotate(KIND_MARK[p["kind"]], (math.sqrt(p["start_update"] * max(p["end_update"], 1)),
                                                       p["loss"]), color=c, fontsize=11, fontweight="bold",
                                ha="center", va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("update (log scale)")
        ax.set_ylabel("minibatch training loss (running median; log)")
        ax.set_title(f"SGD, the same number of {budget} for every batch size (seed {int(sel['seed'].min())})",
                     fontsize=10)
        ax.legend(fontsize="small")
    ax = axes[1][0]
    upd = data[data["budget"] == "updates"].sort_values(["batch_size", "seed"])
    for bs, g in upd.groupby("batch_size"):
        r = g.iloc[0]
        steps = r["steps_per_epoch"]
        norms = r["full_grad_norm_by_epoch"] or []
        ax.plot([steps * (i + 1) for i in range(len(norms))], norms, marker="o", color=colors[bs],
                label=f"batch {labels[bs]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("update (log scale)")
    ax.set_ylabel("full-batch gradient L2 norm\n(probe set, log)")
    ax.set_title("Gradient norm on the fixed probe set, same number of updates", fontsize=10)
    ax.legend(fontsize="small")
    ax = axes[1][1]
    ends = data.assign(lmin=data["hessian.lambda_min"], lmax=data["hessian.lambda_max"])
    for budget, marker in (("epochs", "o"), ("updates", "s")):
        e = ends[ends["budget"] == budget].groupby("batch_size")[["lmin", "lmax"]].median()
        ax.plot(e.index, e["lmax"], marker=marker, color="tab:blue", label=f"λ_max, same {budget}")
        ax.plot(e.index, e["lmin"], marker=marker, color="tab:red", linestyle="--", label=f"λ_min, same {budget}")
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_yscale("symlog", linthresh=1e-3)
    _batch_axis(ax, data)
    ax.set_ylabel("Hessian eigenvalue at the end of the run\n(probe set; symlog, median over seeds)")
    ax.set_title("Extreme curvature where each run ended (λ_min < 0: a saddle direction)", fontsize=10)
    ax.legend(fontsize="small")
    kinds = [p.get("kind") for ps in data["plateaus"] for p in (ps or []) if p.get("kind")]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("saddle", "minimum", "slope") if k in kinds)
    fig.suptitle(f"Saddle benchmark ({data['profile'].iloc[0]}, {data['train_size'].iloc[0]:,} examples, "
                 f"{data['seed'].nunique()} seed(s)): {len(kinds)} probed plateaus" + (f" — {counts}" if counts else ""),
                 fontsize=12)
    fig.tight_layout()
    return fig
