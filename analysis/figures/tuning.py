"""The tuning experiment's figures: steps and time to the validation target against batch size at tuned rates, with
the fit S = S_min (1 + B_crit/B) (figure 11, after Shallue et al. 2018), the learning-rate search of each optimizer
(figure 12), and speed against stability from the tuned runs (for figure 3)."""

from __future__ import annotations

import math

import matplotlib.colors
import matplotlib.patches
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.figures import batch_axis, two_or_five
from analysis.stats import Interval
from analysis.tuning import model_steps


def _colors(finding) -> dict:
    return dict(zip(finding.optimizers, sns.color_palette("tab10", n_colors=len(finding.optimizers))))


def _plain(v: float, digits: int = 3) -> str:
    """250, 1,200, 0.15: a tick label without powers of ten."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.{digits}g}"


def _plain_labels(ax) -> None:
    """Plain-number labels on a log y axis (250, not 2.5 x 10^2): the minor ticks too, every one where the axis spans
    less than a decade, else those at 2 and 5."""

    def minor(v, _):
        low, high = ax.get_ylim()
        return _plain(v, 2) if high / low < 10 or two_or_five(v) else ""

    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _plain(v)))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def _log_y(ax) -> None:
    ax.set_yscale("log")
    _plain_labels(ax)


def _errorbar(ax, xs, intervals, color, label, **kw):
    """Medians with their 95 % intervals (no bar where there is none)."""
    vals = list(intervals)
    ax.errorbar(list(xs), [v.value for v in vals], marker="o", color=color, capsize=3, label=label,
                yerr=[[v.value - v.low if v.defined else 0 for v in vals],
                      [v.high - v.value if v.defined else 0 for v in vals]], **kw)


def _fit_lines(ax, finding, color: dict, xs) -> None:
    """Each optimizer's fitted S(B) across the batch axis, B_crit as a vertical line with its interval shaded."""
    grid = np.logspace(math.log10(min(xs)), math.log10(max(xs)), 200)
    for opt, fit in finding.fits.items():
        c = color[opt]
        ax.plot(grid, model_steps(grid, fit.s_min.value, fit.b_crit.value), color=c, linewidth=1.2, alpha=0.8,
                label=f"{opt} fit: S_min {fit.s_min.value:.3g}, B_crit {fit.b_crit.value:.3g}")
        ax.axvline(fit.b_crit.value, color=c, linestyle="--", linewidth=0.9)
        if fit.b_crit.defined:
            ax.axvspan(max(fit.b_crit.low, min(xs) / 3), min(fit.b_crit.high, max(xs) * 3), color=c, alpha=0.08)


def _steps_panel(ax, tuned: pd.DataFrame, finding, color: dict) -> None:
    for opt, g in tuned.groupby("optimizer", sort=False):
        c = color[opt]
        done = g[g["reached"] > 0]
        _errorbar(ax, done["batch_size"], done["steps"], c, f"{opt} (tuned rate, median over seeds)",
                  linestyle="none")
        for b, by_seed in zip(g["batch_size"], g["steps_by_seed"]):
            ys = [s for s in by_seed if s is not None and not pd.isna(s)]
            ax.plot([b] * len(ys), ys, linestyle="none", marker=".", color=c, alpha=0.5)
        never = g[g["reached"] < g["runs"]]
        ax.plot(never["batch_size"], never["budget"], linestyle="none", marker="^", markerfacecolor="none",
                color=c, markersize=10)
        if len(done):  # down to half the fewest steps measured: it would stretch the axis to nothing
            b0, s0 = done["batch_size"].iloc[0], done["steps"].iloc[0].value
            floor = 0.5 * min(v.value for v in tuned["steps"] if v.n)
            xs = np.logspace(math.log10(b0), math.log10(min(max(g["batch_size"]), b0 * s0 / floor)), 50)
            ax.plot(xs, s0 * b0 / xs, linestyle=":", color=c, alpha=0.7)
    _fit_lines(ax, finding, color, list(tuned["batch_size"]))
    _log_y(ax)
    batch_axis(ax, tuned)
    ax.set_ylabel(f"updates to {finding.target:.0%} validation accuracy (log scale)")
    ax.set_title(f"Steps to target (interpolated between checks; resolution at most "
                 f"{finding.resolution:.1%} of the steps)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], linestyle=":", color="gray"), plt.Line2D([], [], linestyle="--", color="gray"),
                plt.Line2D([], [], marker="^", markerfacecolor="none", color="gray", linestyle="none")]
    labels += ["perfect scaling (steps x batch constant)", "B_crit (shaded: its 95 % interval)",
               "a seed never reached it (at its budget)"]
    ax.legend(handles, labels, fontsize="x-small")


def steps_to_target(steps: pd.DataFrame, finding) -> plt.Figure:
    """Left: updates to the target against batch size, log-log, per optimizer at its tuned rate: the median over the
    final seeds with its 95 % interval, every seed a dot, a seed that never reached it an open triangle at its
    budget, the fit S = S_min (1 + B_crit/B) with B_crit and its interval, and the perfect-scaling line through the
    smallest batch. Right: this machine's steady time to the target (steps x measured time per update)."""
    tuned = steps[steps["role"] == "tuned"].sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.8))
    color = _colors(finding)
    _steps_panel(left, tuned, finding, color)
    for opt, g in tuned.groupby("optimizer", sort=False):
        done = g[g["reached"] > 0]
        _errorbar(right, done["batch_size"], done["time"], color[opt], f"{opt} (tuned rate)")
    _log_y(right)
    batch_axis(right, tuned)
    right.set_ylabel("steady training time to the target (s, log scale)")
    right.set_title("This machine: steps x measured time per update", fontsize=10)
    right.legend(fontsize="small")
    fig.suptitle(finding.title(), fontsize=11)
    fig.tight_layout()
    return fig


def _cell_text(r) -> str:
    """A trialled rate's label: its median steps over the trial seeds, or why it has none."""
    if not r["eligible"]:
        return r["status"]
    return f"{r['steps']:.0f}" if math.isfinite(r["steps"]) else f"never\n({r['reached']}/{r['seeds']})"


def _search_map(ax, fig, g: pd.DataFrame, choices: pd.DataFrame, title: str) -> None:
    rates = sorted(g["learning_rate"].unique())
    sizes = sorted(g["batch_size"].unique())
    labels = dict(zip(g["batch_size"], g["batch_label"]))
    grid = np.full((len(sizes), len(rates)), np.nan)
    for _, r in g.iterrows():
        if r["eligible"] and math.isfinite(r["steps"]):
            grid[sizes.index(r["batch_size"]), rates.index(r["learning_rate"])] = r["steps"]
    norm = matplotlib.colors.LogNorm(vmin=np.nanmin(grid), vmax=np.nanmax(grid)) if np.isfinite(grid).any() else None
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="lower")
    for _, r in g.iterrows():
        i, j = sizes.index(r["batch_size"]), rates.index(r["learning_rate"])
        shade = cmap(norm(grid[i, j])) if norm is not None and not math.isnan(grid[i, j]) else (0.85,) * 3
        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
        ax.text(j, i, _cell_text(r), ha="center", va="center", fontsize=7, color="white" if dark else "black")
        if r["chosen"]:
            edge = choices[(choices["batch_size"] == r["batch_size"])]["edge"]
            on_edge = len(edge) and edge.iloc[0] != "interior"
            ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2.5,
                                                      edgecolor="orange" if on_edge else "red",
                                                      linestyle="--" if on_edge else "-"))
    base = set(g.loc[g["base"], "learning_rate"])
    ax.set_xticks(range(len(rates)), [f"{x:.3g}" + ("" if x in base else "\n(widened)") for x in rates],
              fontsize=8)
    ax.set_yticks(range(len(sizes)), [labels[s] if labels[s] == "full" else f"{s:,}" for s in sizes])
    ax.set_xlabel("learning rate (half a decade apart, log-spaced)")
    ax.set_ylabel("batch size (examples per update)")
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    if norm is not None:
        _plain_labels(fig.colorbar(image, ax=ax, label="updates to target (median, log scale)").ax)


def sensitivity(trials: pd.DataFrame, finding) -> plt.Figure:
    """Per optimizer, a batch size x learning rate map of the search: each rate's median updates to the target over
    the trial seeds (grey: no median, a seed did not finish ok or most never reached it), the widening's rates
    marked, the chosen rate of each batch size outlined (dashed orange where it is still on an edge)."""
    opts = [o for o in finding.optimizers if o in set(trials["optimizer"])]
    fig, axes = plt.subplots(1, len(opts), figsize=(6.8 * len(opts), 5.4), squeeze=False)
    for ax, opt in zip(axes[0], opts):
        g = trials[trials["optimizer"] == opt]
        choices = finding.choices[finding.choices["optimizer"] == opt] if len(finding.choices) else finding.choices
        _search_map(ax, fig, g, choices, f"{opt}: updates to {finding.target:.0%} validation accuracy, "
                                         f"median of {len(finding.trial_seeds)} trial seeds")
    handles = [matplotlib.patches.Patch(fill=False, edgecolor="red", linewidth=2.5),
               matplotlib.patches.Patch(fill=False, edgecolor="orange", linewidth=2.5, linestyle="--")]
    fig.legend(handles, ["chosen rate (fewest updates), interior", "chosen rate on an edge of the rates tried "
                         "(the best may lie beyond it)"], fontsize="small", loc="lower center", ncol=min(2, len(opts)))
    fig.suptitle(f"{finding.sensitivity_title()}\n({finding.profile}, {finding.train_size:,} training examples, "
                 f"widening limit {finding.widen_limit} rate(s) per side)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 * (3 - min(2, len(opts))), 1, 1))
    return fig


def speed_vs_stability(stability: pd.DataFrame, finding) -> plt.Figure:
    """Figure 3 from the tuned runs, per optimizer against batch size: speed as this machine's steady time to the
    target (median over seeds, 95 % interval), and stability as the share of seeds that reached the target, the share
    that diverged (Clopper-Pearson 95 % intervals), and the seed-to-seed spread of the final validation accuracy
    (standard deviation in percentage points, 95 % normal-theory interval)."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (speed, spread), (reached, diverged) = axes
    color = _colors(finding)
    tuned = finding.steps[finding.steps["role"] == "tuned"]
    shift = {o: 1 + 0.05 * (k - (len(finding.optimizers) - 1) / 2) for k, o in enumerate(finding.optimizers)}
    for opt, g in stability.sort_values("batch_size").groupby("optimizer", sort=False):
        c, x = color[opt], g["batch_size"] * shift[opt]  # side by side: the optimizers' bars do not hide each other
        t = tuned[(tuned["optimizer"] == opt) & (tuned["reached"] > 0)].sort_values("batch_size")
        _errorbar(speed, t["batch_size"] * shift[opt], t["time"], c, opt)
        _errorbar(reached, x, g["reached"], c, opt)
        _errorbar(diverged, x, g["diverged"], c, opt)
        _errorbar(spread, x, [Interval(s.value * 100, s.low * 100, s.high * 100, s.n) for s in g["spread"]], c, opt)
    _log_y(speed)
    speed.set_ylabel(f"steady time to {finding.target:.0%} validation accuracy (s, log scale)")
    speed.set_title("Speed: time to target on this machine", fontsize=10)
    seeds = len(finding.final_seeds)
    for ax, what in ((reached, "reached the target"), (diverged, "diverged")):
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(f"share of the {seeds} final seeds")
        ax.set_title(f"Stability: seeds that {what} (95 % Clopper-Pearson)", fontsize=10)
    spread.set_ylabel("std of final validation accuracy over seeds (pp)")
    spread.set_title("Stability: seed-to-seed spread of final validation accuracy (95 % χ² interval)", fontsize=10)
    for ax in axes.flat:
        batch_axis(ax, stability)
        ax.legend(fontsize="small")
    fig.suptitle(finding.stability_title(), fontsize=11)
    fig.tight_layout()
    return fig
