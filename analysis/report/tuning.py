"""The tuning experiment's section: the tuned rates, steps and time to target, where perfect scaling ends, the
ranking at pinned and at tuned rates."""

from __future__ import annotations

import pandas as pd

from analysis.report.text import table
from analysis.tuning import PERFECT_SLOPE, TuningFinding


def tuning_text(t: TuningFinding) -> str:
    """Section 11: the tuned rates, steps to target, where perfect scaling ends, and the ranking."""
    tuned = t.steps[t.steps["role"] == "tuned"].sort_values(["optimizer", "batch_size"])
    rows = []
    for _, r in tuned.iterrows():
        pinned = t.steps[(t.steps["role"] == "pinned") & (t.steps["optimizer"] == r["optimizer"])
                         & (t.steps["batch_size"] == r["batch_size"])]
        p = pinned.iloc[0] if len(pinned) else None
        rows.append({"optimizer": r["optimizer"], "batch": r["batch_label"], "tuned rate": f"{r['learning_rate']:.3g}",
                     "updates to target (tuned)": r["steps"].text(".3g") + f" ({r['reached']}/{r['runs']} reached)",
                     "time to target s (tuned)": r["time"].text(".3g"),
                     "pinned rate": f"{p['learning_rate']:.3g}" if p is not None else "–",
                     "updates to target (pinned)": (p["steps"].text(".3g") + f" ({p['reached']}/{p['runs']} reached)"
                                                    if p is not None else "–")})
    ends = []
    for opt, (end, slopes, first) in t.scaling_end.items():
        s_text = ", ".join(f"{b1:,}→{b2:,}: {v:+.2f}" for (b1, b2), v in slopes.items())
        if not slopes:
            ends.append(f"{opt}: too few batch sizes reached the target to tell")
        elif end is None:
            ends.append(f"{opt}: no near-perfect scaling among the batch sizes that reached the target (from batch "
                        f"{first:,} on; log-log slopes {s_text})")
        else:
            ends.append(f"{opt}: near-perfect scaling up to batch {end:,} (log-log slopes of steps against batch, "
                        f"{s_text})")
    noise = (f" The gradient noise scale B_simple measured by the probes of these files' runs is {t.noise_scale:.3g} "
             "(median over runs and epochs); McCandlish et al. (2018) expect steps to stop halving around it."
             if t.noise_scale else " These files carry no gradient-noise-scale probe to compare with (the tuning "
             "runs are unprobed; see the grid report's probes).")
    changed = t.ranking[t.ranking["winner changed by tuning"] == "yes"]["batch"].tolist() if len(t.ranking) else []
    return "\n".join([
        f"Per optimizer and batch size, {t.trials.groupby('optimizer')['learning_rate'].nunique().max()} learning rates half a decade apart "
        f"around the pinned rate were tried for {t.budget_updates:,} updates each on {t.train_size:,} training "
        f"examples; the rate with the best validation accuracy at the end of the budget was chosen (ties: lower "
        f"validation loss; a diverged trial never wins), then final runs at that rate and at the pinned rate, with "
        f"other seeds than the trial's. Steps to target: updates until the validation accuracy (the last 10,000 "
        f"training images, never trained on) first reaches {t.target:.0%}, checked every {t.check_every} updates; "
        "median over seeds with its 95% bootstrap interval over the seeds that reached it.\n",
        table(pd.DataFrame(rows)) + "\n",
        "**Where perfect scaling ends** (steps falling at least as 1/sqrt(batch), a log-log slope of "
        f"{PERFECT_SLOPE:g} or steeper, from one batch size to the next; perfect scaling is -1): "
        + "; ".join(ends) + "." + noise + "\n",
        "![Learning-rate sensitivity](fig12_sensitivity.png)\n",
        f"{t.sensitivity_title()}. A rate chosen at the grid's edge means the best rate may lie beyond it: widen "
        "the grid there (--lr-grid).\n",
        "**The optimizer ranking**, by final validation accuracy after the budget (median over the final seeds, "
        "95% interval), with pinned and with tuned rates:\n",
        table(t.ranking) + "\n" if len(t.ranking) else "_no final runs_\n",
        (f"Tuning changed the winner at batch {', '.join(changed)}." if changed
         else "Tuning changed the winner at no batch size."),
    ])
