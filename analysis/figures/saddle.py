"""Figures 4 and 10: loss, gradient norm and curvature per update (saddle points); the escape survival curves."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from analysis.figures import batch_axis, two_or_five
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
    ax.set_title("Extreme curvature where each run ended: λ_min < 0 at every end, so negative\ncurvature alone "
                 "marks no saddle (the gradient decides: see the plateau labels)", fontsize=10)
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


def _arm_style(s, sizes) -> dict:
    """Line style of an arm: minibatch sizes on one colour scale, the full batch black, the isotropic control red."""
    count = f" ({s.events} of {s.n} escaped)"
    if s.arm == "full":
        return {"color": "black", "linewidth": 2.2, "label": "full batch, no noise" + count}
    if s.arm == "isotropic":
        return {"color": "tab:red", "linestyle": "--", "label": "full batch + " + s.label + count}
    colors = dict(zip(sizes, sns.color_palette("viridis", n_colors=max(len(sizes), 1))))
    return {"color": colors[s.batch_size], "label": f"batch {s.label}" + count}


def _survival_curve(ax, s, style, start):
    """A Kaplan-Meier step curve from 1 at `start` (the log axis' left end), censored runs marked '+' on it where
    they stopped."""
    times = np.sort(np.unique(s.times))
    at_risk = [(s.times >= t).sum() for t in times]
    events = [((s.times == t) & s.escaped).sum() for t in times]
    surv = np.cumprod([1 - e / n for e, n in zip(events, at_risk)])
    xs, ys = np.concatenate([[start], times]), np.concatenate([[1.0], surv])
    ax.step(xs, ys, where="post", **style)
    censored = s.times[~s.escaped]
    if len(censored):
        level = [ys[np.searchsorted(xs, t, side="right") - 1] for t in censored]
        ax.plot(censored, level, linestyle="none", marker="+", markersize=11, color=style["color"])


def escape(runs: pd.DataFrame, finding) -> plt.Figure:
    """Figure 10: per start point (rows) and learning rate (columns), the fraction of runs of each arm still at the
    point after so many updates (Kaplan-Meier), censored runs marked '+' at their budget; each panel's title gives
    the point's certificate and its verdict."""
    points = list(finding.points.values())
    columns = max(len(p.rates) for p in points)
    fig, axes = plt.subplots(len(points), columns, figsize=(6.2 * columns, 4.4 * len(points)), squeeze=False)
    for row, point in zip(axes, points):
        sizes = sorted({s.batch_size for s in point.arms.values() if s.arm == "minibatch"})
        for ax, rate in zip(row, point.rates):
            arms = sorted((s for s in point.arms.values() if s.rate == rate),
                          key=lambda s: (s.arm != "minibatch", s.batch_size))
            start = 0.5 * min(float(s.times.min()) for s in arms)  # half the first check: the curves' left end
            for s in arms:
                _survival_curve(ax, s, _arm_style(s, sizes), start)
            ax.set_xscale("log")
            ax.set_xlim(left=start)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if two_or_five(v) else ""))  # 200, 500: not every minor tick (they crowd)
            ax.set_ylim(-0.03, 1.05)
            ax.set_xlabel("updates from the start point (log scale)")
            ax.set_ylabel("fraction of runs not yet escaped")
            c = point.certificate
            where = (f"λ_min {c['lambda_min']:.3g}, λ_max {c['lambda_max']:.3g}, rate {rate:g} = "
                     f"{rate * c['lambda_max'] / 2:.2f} × 2/λ_max" if c else f"rate {rate:g}, uncertified")
            ax.set_title(f"{point.point}: {point.verdict.outcome}\n{where}", fontsize=10)
            ax.legend(fontsize="x-small", loc="lower left")
        for ax in row[len(point.rates):]:
            ax.set_axis_off()
    fig.suptitle(finding.title(), fontsize=11)
    fig.tight_layout()
    return fig
