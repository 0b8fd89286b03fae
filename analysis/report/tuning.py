"""The tuning experiment's section: the search and its edges, steps and time to target with their resolution, the fit
of S(B) = S_min (1 + B_crit/B) and where perfect scaling ends, the noise scale at the target beside B_crit, the
ranking; and the text of speed against stability from the tuned runs."""

from __future__ import annotations

import math

import pandas as pd

from analysis.report.text import table
from analysis.stats import Interval
from analysis.tuning import PERFECT_SLOPE, REGIME_TOL, RESOLUTION, TuningFinding, agreement


def _n(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _it(i: Interval) -> str:
    """An interval in plain numbers: '1,400 [1,340, 1,460] (n=5)'."""
    if math.isnan(i.value):
        return "–"
    if not i.defined:
        return f"{_n(i.value)} (n={i.n}: no interval)"
    return f"{_n(i.value)} [{_n(i.low)}, {_n(i.high)}] (n={i.n})"


def _rate_text(choice) -> str:
    if choice is None or pd.isna(choice["chosen"]):
        return "none"
    edge = "" if choice["edge"] == "interior" else f" ({choice['edge']} edge{', limit' if choice['at_limit'] else ''})"
    return f"{choice['chosen']:.3g}{edge}"


def _rows(t: TuningFinding) -> list[dict]:
    tuned = t.steps[t.steps["role"] == "tuned"].sort_values(["optimizer", "batch_size"])
    rows = []
    for _, r in tuned.iterrows():
        c = t.choices[(t.choices["optimizer"] == r["optimizer"]) & (t.choices["batch_size"] == r["batch_size"])]
        choice = c.iloc[0] if len(c) else None
        rows.append({"optimizer": r["optimizer"], "batch": r["batch_label"], "chosen rate": _rate_text(choice),
                     "rates tried": (f"{choice['rates']} ({len(choice['widened'])} widened)" if choice is not None
                                     else "–"),
                     "check every / budget": f"{r['interval']:,} / {r['budget']:,}",
                     "updates to target": _it(r["steps"]) + f" ({r['reached']}/{r['runs']} reached)",
                     "resolution": f"{r['resolution']:.1%}" if not math.isnan(r["resolution"]) else "–",
                     "val. noise (updates)": f"{r['noise_steps']:.2g}" if not math.isnan(r["noise_steps"]) else "–",
                     "time to target s": r["time"].text(".3g"),
                     "B_simple at target": _it(r["b_simple"])})
    return rows


def _protocol(t: TuningFinding) -> str:
    return (
        f"Per optimizer and batch size, a base grid of learning rates half a decade apart was tried with "
        f"{len(t.trial_seeds)} trial seeds ({', '.join(map(str, t.trial_seeds))}); while the best rate sat on an edge "
        f"of the rates tried, the grid widened half a decade beyond that edge (at most {t.widen_limit} rate(s) per "
        f"side). The rate with the fewest updates to {t.target:.0%} validation accuracy (median over the trial seeds; "
        "ties: the lower median final validation loss; a rate with a seed that diverged or failed never wins) was "
        f"chosen, as Shallue et al. (2018) choose it, and final runs at it used seeds the choice never saw "
        f"({', '.join(map(str, t.final_seeds))}). Every run checks the validation split (the last {t.val_size:,} "
        f"training images, never trained on) {t.checks} times, every *check every* updates, so its budget is "
        f"{t.checks} intervals; the interval per optimizer and batch size is set so that it is a small share of the "
        "steps. **Updates to target** are interpolated linearly between the last check below the target and the "
        "first at or above it (the crossing lies between them: the *resolution* is that interval as a share of the "
        "steps); median over the final seeds that reached it, with its 95% bootstrap interval. Each check reads "
        f"all {t.val_size:,} validation images: at {t.target:.0%} an accuracy carries a binomial standard error of "
        f"{t.val_noise * 100:.2f} percentage points, which at the accuracy's climb where it crosses the target is "
        "the *val. noise* in updates (median over seeds). Time to target is the steps times this machine's steady "
        "time per update; B_simple is the gradient noise scale tr(Σ)/|G|² of the training subset, probed at the "
        "weights of the first check that reached the target (median over seeds).\n")


def _edges_text(t: TuningFinding) -> str:
    edges = t.edges()
    if edges.empty:
        return "**Interior rates:** every chosen rate has a worse neighbour on both sides among the rates tried."
    cells = [f"{r['optimizer']} at batch {r['batch_label']} ({r['edge']} edge"
             + (", the widening limit reached" if r["at_limit"] else "") + ")" for _, r in edges.iterrows()]
    return ("**Chosen rates still on an edge** (the best rate may lie beyond it; widen further with --lr-grid): "
            + "; ".join(cells) + ".")


def _resolution_text(t: TuningFinding) -> str:
    tuned = t.steps[(t.steps["role"] == "tuned") & (t.steps["reached"] > 0)]
    if tuned.empty:
        return "No tuned run reached the target: no step count to resolve."
    coarse = tuned[tuned["resolution"] > RESOLUTION]
    first = int(tuned["first_check"].sum())
    text = (f"**Resolution:** the check interval is at most {t.resolution:.1%} of the steps reported (the bar: "
            f"{RESOLUTION:.0%})" + ("." if coarse.empty else "; coarser than the bar at " + ", ".join(
                f"{o} batch {b} ({r:.1%})" for o, b, r in zip(coarse["optimizer"], coarse["batch_label"],
                                                             coarse["resolution"])) + "."))
    if first:
        text += f" {first} run(s) reached the target at their first check: their steps are that check's update."
    return text


def _fit_text(t: TuningFinding) -> str:
    """Per optimizer: the fit with its intervals, the regimes it implies, and the measured slopes beside it."""
    parts = []
    for opt, (end, slopes, first) in t.scaling_end.items():
        fit = t.fits.get(opt)
        s_text = ", ".join(f"{b1:,}→{b2:,}: {v:+.2f}" for (b1, b2), v in slopes.items()) or "none"
        if fit is None:
            parts.append(f"- **{opt}**: too few batch sizes reached the target for a fit (measured log-log slopes "
                         f"{s_text}).")
            continue
        parts.append(
            f"- **{opt}**: S_min = {_it(fit.s_min)} updates, B_crit = {fit.b_crit_text('.3g')} examples "
            f"({fit.runs} runs at batch {', '.join(f'{b:,}' for b in fit.batch_sizes)}"
            + (f"; {fit.left_out} run(s) that never reached the target left out" if fit.left_out else "") + "). "
            f"Perfect scaling (steps within {REGIME_TOL:.0%} of the perfect-scaling line, B ≤ B_crit/"
            f"{1 / REGIME_TOL:.0f}) up to batch {_it(fit.perfect_until)}; diminishing returns between; "
            f"maximal data parallelism (steps within {REGIME_TOL:.0%} of S_min, B ≥ {1 / REGIME_TOL:.0f} B_crit) "
            f"from batch {_it(fit.parallel_from)}. Measured log-log slopes of steps against batch: {s_text}"
            + (f" (near-perfect, {PERFECT_SLOPE:g} or steeper, up to batch {end:,})." if end else "."))
    return ("**B_crit** (least squares of log steps on S = S_min (1 + B_crit/B) over every final run that reached the "
            f"target; 95% intervals from {t.resamples:,} bootstrap resamples of the seeds within each batch size; "
            "'<' or '>' where the interval reaches the search's bound, two decades beyond the batch sizes "
            "measured):\n\n"
            + "\n".join(parts) + "\n")


def _noise_text(t: TuningFinding) -> str:
    rows = []
    for opt, fit in t.fits.items():
        verdict = agreement(fit)
        rows.append({"optimizer": opt, "B_crit (fit)": fit.b_crit_text(".3g"),
                     "B_simple at the target": _it(fit.b_simple), "B_simple / B_crit": fit.ratio.text(".2g"),
                     "verdict": verdict})
    if not rows:
        return ""
    return ("**B_simple against B_crit, from the same runs.** McCandlish et al. (2018) predict B_crit ≈ B_noise, "
            "with B_simple = tr(Σ)/|G|² an estimate of B_noise that ignores the Hessian's conditioning. B_simple "
            "here is the median over the final runs (all batch sizes) of the probe at the first check that reached "
            "the target, and its ratio to B_crit shares the fit's bootstrap (the same resampled runs); they *agree* "
            "when the ratio's 95% interval contains 1:\n\n" + table(pd.DataFrame(rows)) + "\n")


def tuning_text(t: TuningFinding) -> str:
    """Section 11: the search and its edges, steps to target with their resolution, B_crit and the regimes, the noise
    scale beside it, the search's map and the ranking."""
    return "\n".join([
        _protocol(t),
        table(pd.DataFrame(_rows(t))) + "\n",
        _edges_text(t) + " " + _resolution_text(t) + "\n",
        _fit_text(t),
        _noise_text(t),
        "![Learning-rate search](fig12_sensitivity.png)\n",
        f"{t.sensitivity_title()}.\n",
        "**The optimizer ranking** per batch size, by updates to the target at tuned rates and by final validation "
        "accuracy after the budget (median over the final seeds, 95% interval; the budgets differ by optimizer, so "
        "compare the accuracies with that in mind):\n",
        table(t.ranking) + "\n" if len(t.ranking) else "_no final runs_\n",
    ])


def _margin(t: TuningFinding) -> str:
    """How far the budgets reach beyond the steps the tuned runs needed."""
    tuned = t.steps[(t.steps["role"] == "tuned") & (t.steps["reached"] > 0)]
    ratios = [b / s.value for b, s in zip(tuned["budget"], tuned["steps"])]
    if not ratios:
        return "which no tuned run's steps to the target fitted in"
    return (f"{min(ratios):.1f} to {max(ratios):.1f} times the median steps its target needed "
            f"(median {sorted(ratios)[len(ratios) // 2]:.1f})")


def speed_vs_stability_text(t: TuningFinding) -> str:
    """Figure 3's text from the tuned runs: speed (time to target) and stability (seeds that reached it, divergences,
    spread of the final validation accuracy) per optimizer and batch size."""
    rows = []
    tuned = t.steps[t.steps["role"] == "tuned"]
    for _, s in t.stability.sort_values(["optimizer", "batch_size"]).iterrows():
        c = tuned[(tuned["optimizer"] == s["optimizer"]) & (tuned["batch_size"] == s["batch_size"])]
        rows.append({"optimizer": s["optimizer"], "batch": s["batch_label"],
                     "time to target s": c["time"].iloc[0].text(".3g") if len(c) else "–",
                     "reached the target": s["reached"].text(".0%"), "diverged": s["diverged"].text(".0%"),
                     "final val. accuracy": s["val_accuracy"].text(".3f"),
                     "seed-to-seed std (pp)": (f"{s['spread'].value * 100:.2f} [{s['spread'].low * 100:.2f}, "
                                               f"{s['spread'].high * 100:.2f}]" if s["spread"].defined else "–")})
    return (f"Speed and stability from the tuned runs ({len(t.final_seeds)} final seeds per cell, each at the rate "
            f"its search chose for speed): speed is this machine's steady time to {t.target:.0%} validation accuracy; "
            "stability is the share of seeds that reached the target within the budget and the share that diverged "
            "(95% Clopper-Pearson intervals), and the seed-to-seed standard deviation of the final validation accuracy "
            "(95% normal-theory interval, from the chi-square distribution of the seeds' variance). Unlike a fixed "
            "number of epochs at pinned rates, every cell here "
            f"ran at its own best rate for a budget of {t.checks} check intervals, {_margin(t)}. "
            f"{t.stability_title()}.\n\n" + (table(pd.DataFrame(rows)) if rows else "_no tuned runs_") + "\n")
