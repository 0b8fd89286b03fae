"""Figure 4: the loss and gradient norm per update, plateaus and the curvature probes (saddle points)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
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
        for p in r.get("plateaus") or []:  # the run's own plateau records (bench.curvature); older records have none
            ax_l.axvspan(p["start_update"], max(p["end_update"], p["start_update"] + 0.5), color=color, alpha=0.12)
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


KIND_MARK = {"saddle": "S", "minimum": "M", "slope": "~"}


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
            ax.axvspan(p["start_update"], max(p["end_update"], p["start_update"] + 0.5), color=c, alpha=0.12)
            if p.get("kind"):
                ax.annotate(KIND_MARK[p["kind"]], (math.sqrt(p["start_update"] * max(p["end_update"], 1)), p["loss"]),
                            color=c, fontsize=11, fontweight="bold", ha="center", va="bottom")
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
