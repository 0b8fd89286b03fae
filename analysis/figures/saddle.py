"""Figure 4: the loss and gradient norm per update, plateaus and the curvature probes (saddle points)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.figures import batch_axis
from analysis.findings import curve_selection


def smooth(curve, points: int = 40) -> list[tuple[int, float]]:
    """A running median over about len/`points` points: the minibatch loss of small batches is noise-dominated."""
    pts = [(u, v) for u, v in (curve or []) if v is not None]
    w = max(1, len(pts) // points)
    if w == 1:
        return pts
    med = pd.Series([v for _, v in pts]).rolling(w, center=True, min_periods=1).median()
    return list(zip([u for u, _ in pts], med))


def saddle_curves(runs: pd.DataFrame, finding) -> plt.Figure:
    """Figure 4 from the grid: minibatch loss and gradient norm vs updates per batch size, plateaus shaded."""
    sel = curve_selection(runs, finding.optimizer)  # one seed per batch size keeps it legible
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
        for p in r.get("plateaus") or []:  # the run's own classified plateaus (bench.curvature); older records: none
            if p.get("kind"):
                ax_l.axvspan(p["start_update"], max(p["end_update"], p["start_update"] + 0.5), color=color, alpha=0.12)
                ax_l.annotate(KIND_MARK.get(p["kind"], "?"), (math.sqrt(p["start_update"] * max(p["end_update"], 1)),
                                                             p["loss"]), color=color, fontsize=10, ha="center")
    ax_l.set_yscale("log")
    ax_g.set_yscale("log")
    ax_g.set_xscale("log")
    ax_l.set_ylabel("minibatch training loss\n(running median; log)")
    ax_g.set_ylabel("minibatch gradient L2 norm\n(running median; log)")
    ax_g.set_xlabel("update (log scale)")
    ax_l.legend(fontsize="small", ncol=2)
    ax_l.set_title(finding.title())
    fig.tight_layout()
    return fig


KIND_MARK = {"saddle": "S", "minimum": "M", "slope": "~", "undetermined": "?"}


def _loss_panel(ax, data, budget, colors):
    """The loss curves of one budget, one seed per batch size, plateaus shaded and labelled by kind."""
    sel = data[data["budget"] == budget].sort_values(["batch_size", "seed"]).drop_duplicates("batch_size")
    if sel.empty:
        ax.set_axis_off()
        ax.set_title(f"no run with the same number of {budget}", fontsize=10)
        return
    for _, r in sel.iterrows():
        c = colors[r["batch_size"]]
        sm = smooth(r["loss_curve"])
        ax.plot([p[0] for p in sm], [p[1] for p in sm], color=c, label=f"batch {r['batch_label']}")
        for p in r["plateaus"] or []:
            if not p.get("kind"):
                continue  # a plateau no Hessian probe fell on is not shaded: nothing was classified
            ax.axvspan(p["start_update"], max(p["end_update"], p["start_update"] + 0.5), color=c, alpha=0.12)
            ax.annotate(KIND_MARK.get(p["kind"], "?"), (math.sqrt(p["start_update"] * max(p["end_update"], 1)),
                                                        p["loss"]), color=c, fontsize=11, fontweight="bold",
                        ha="center", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("update (log scale)")
    ax.set_ylabel("minibatch training loss (running median; log)")
    ax.set_title(f"SGD, the same number of {budget} for every batch size (seed {int(sel['seed'].min())})", fontsize=10)
    ax.legend(fontsize="small")


def _gradient_panel(ax, data, colors, labels):
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


def _curvature_panel(ax, data):
    ends = data.assign(lmin=data["hessian.lambda_min"], lmax=data["hessian.lambda_max"])
    for budget, marker in (("epochs", "o"), ("updates", "s")):
        e = ends[ends["budget"] == budget].groupby("batch_size")[["lmin", "lmax"]].median()
        ax.plot(e.index, e["lmax"], marker=marker, color="tab:blue", label=f"λ_max, same {budget}")
        ax.plot(e.index, e["lmin"], marker=marker, color="tab:red", linestyle="--", label=f"λ_min, same {budget}")
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_yscale("symlog", linthresh=1e-3)
    batch_axis(ax, data)
    ax.set_ylabel("Hessian eigenvalue at the end of the run\n(probe set; symlog, median over seeds)")
    ax.set_title("Extreme curvature where each run ended (λ_min < 0: a saddle direction)", fontsize=10)
    ax.legend(fontsize="small")


def saddle_benchmark(runs: pd.DataFrame, finding) -> plt.Figure | None:
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
        _loss_panel(ax, data, budget, colors)
    _gradient_panel(axes[1][0], data, colors, labels)
    _curvature_panel(axes[1][1], data)
    fig.suptitle(finding.title(), fontsize=12)
    fig.tight_layout()
    return fig


ARM_STYLE = {"updates": ("-", "o", "tab:blue"), "examples": ("--", "s", "tab:orange")}


def escape(runs: pd.DataFrame, finding) -> plt.Figure:
    """Figure 10: updates (left) and examples (right) each batch size needed to escape the stuck point, per arm
    (the same updates, the same examples): the median over seeds with its 95 % interval, every run as a dot, a
    run that never escaped as an open triangle at its budget; the full batch at other learning rates as crosses."""
    data = runs[runs["escape.arm"].notna() & (runs["status"] == "ok")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, unit in zip(axes, ("updates", "examples")):
        for arm, (line, marker, color) in ARM_STYLE.items():
            sel = data[data["escape.arm"] == arm].sort_values("batch_size")
            if sel.empty:
                continue
            scale = sel["batch_size"] if unit == "examples" else 1
            escaped = sel["escape.escaped"].astype(bool)
            done = pd.Series(np.where(escaped, sel["escape.updates_to_escape"].fillna(0),
                                      sel["escape.budget_updates"]), index=sel.index).astype(float) * scale
            ax.plot(sel["batch_size"], done.where(escaped), linestyle="none", marker=".", color=color,
                    alpha=0.5)
            ax.plot(sel["batch_size"], done.where(~escaped), linestyle="none", marker="^",
                    markerfacecolor="none", color=color, markersize=9)
            med = getattr(finding.arms[arm], unit)
            sizes = sel.groupby("batch_label", sort=False)["batch_size"].first()
            xs = [sizes[b] for b in med]
            vals = [med[b] for b in med]
            ax.errorbar(xs, [v.value for v in vals], linestyle=line, marker=marker, color=color, capsize=3,
                        label=f"same {arm} (median over seeds)",
                        yerr=[[v.value - v.low if v.defined else 0 for v in vals],
                              [v.high - v.value if v.defined else 0 for v in vals]])
        fair = data[data["escape.arm"] == "fairness"]
        points = {}  # runs that land on one point share one marker and one label
        for _, r in fair.iterrows():
            y = (r["escape.updates_to_escape"] if r["escape.escaped"] else r["escape.budget_updates"])
            y = y * (r["batch_size"] if unit == "examples" else 1)
            points.setdefault((r["batch_size"], y, bool(r["escape.escaped"])), []).append(r["learning_rate"])
        for (b, y, escaped), rates in points.items():
            ax.plot([b], [y], marker="x" if escaped else "^", color="tab:red", markerfacecolor="none", markersize=9,
                    linestyle="none")
            ax.annotate("lr " + ", ".join(f"{x:g}" for x in sorted(rates)), (b, y), xytext=(5, 0),
                        textcoords="offset points", fontsize=7, color="tab:red")
        ax.set_yscale("log")
        batch_axis(ax, data)
        ax.set_ylabel(f"{unit} to escape (log scale)")
        ax.set_title(f"{unit.capitalize()} until the probe-set loss is {finding.margin:.0%} below the stuck point's",
                     fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="^", markerfacecolor="none", color="gray", linestyle="none"),
                plt.Line2D([], [], marker="x", color="tab:red", linestyle="none")]
    labels += ["never escaped (at its budget)", "full batch at another learning rate"]
    axes[0].legend(handles, labels, fontsize="small")
    fig.suptitle(finding.title(), fontsize=11)
    fig.tight_layout()
    return fig
