"""The tuning experiment's findings (bench/test_tuning.py): the chosen learning rates, steps to the validation
target against batch size at tuned rates (Shallue et al.'s figure), this machine's time to target, the
learning-rate sensitivity of each optimizer, and the optimizer ranking at pinned and at tuned rates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import metrics, stats
from analysis.stats import Interval

NAME = "tuning"  # the experiment's name in the records
PERFECT_SLOPE = -0.5  # steps vs batch size, log-log: -1 is perfect scaling, 0 none; steeper than this counts


@dataclass
class TuningFinding:
    profile: str
    train_size: int
    budget_updates: int
    check_every: int
    target: float
    optimizers: list
    trials: pd.DataFrame  # optimizer, batch_size, batch_label, learning_rate, status, val_accuracy, chosen
    steps: pd.DataFrame  # optimizer, batch_size, batch_label, role, steps (Interval), reached, runs, time (Interval)
    ranking: pd.DataFrame  # batch, pinned, tuned, winner changed
    scaling_end: dict  # optimizer -> (last batch size with near-perfect scaling or None, {(b1, b2): slope}, first
    # batch size that reached the target)
    noise_scale: float | None  # median B_simple of the runs in these files that measured it

    def sensitivity_title(self) -> str:
        return f"Learning-rate sensitivity: best rates {_chosen_text(self.trials)}"

    def title(self) -> str:
        ends = [f"{o} up to batch {e[0]:,}" for o, e in self.scaling_end.items() if e[0] is not None]
        end = "; ".join(ends) if ends else "between none of the batch sizes that reached it"
        return (f"Steps to {self.target:.0%} validation accuracy at tuned learning rates: near-perfect scaling "
                f"(steps fall at least as 1/sqrt(batch)) {end}")


def _chosen_text(trials: pd.DataFrame) -> str:
    """Per optimizer: the chosen rates across batch sizes, and whether any sits at the grid's edge."""
    parts = []
    for opt, g in trials.groupby("optimizer", sort=False):
        rates = sorted(g["learning_rate"].unique())
        chosen = g[g["chosen"]].sort_values("batch_size")
        if chosen.empty:
            parts.append(f"{opt}: none chosen")
            continue
        picks = list(dict.fromkeys(f"{r:.3g}" for r in chosen["learning_rate"]))
        edge = [b for b, r in zip(chosen["batch_label"], chosen["learning_rate"]) if r in (rates[0], rates[-1])]
        text = (f"{opt} {picks[0]} at every batch size" if len(picks) == 1 else
                f"{opt} " + " → ".join(f"{r:.3g} (batch {b})" for b, r in zip(chosen["batch_label"],
                                                                              chosen["learning_rate"])))
        parts.append(text + (f", at the grid's edge for batch {', '.join(edge)}" if edge else ""))
    return "; ".join(parts)


def _updates_to_target(row) -> float | None:
    k = row["epochs_to_target"]
    return k * row["steps_per_epoch"] if k is not None and not pd.isna(k) else None


def _median(values) -> Interval:
    return stats.bootstrap([values], lambda x, axis: np.median(x, axis=axis))


def _ranking(finals: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label, g in finals.groupby("batch_label", sort=False):
        row = {"batch": label}
        winners = {}
        for role in ("pinned", "tuned"):
            sel = g[g["role"] == role]
            accs = {o: _median(list(s["val_accuracy"].dropna())) for o, s in sel.groupby("optimizer", sort=False)}
            order = sorted(accs, key=lambda o: -accs[o].value if not math.isnan(accs[o].value) else math.inf)
            winners[role] = order[0] if order else None
            row[f"{role} rates: validation accuracy, best first"] = " > ".join(
                f"{o} {accs[o].text('.3f')}" for o in order)
        row["winner changed by tuning"] = ("yes" if winners["pinned"] != winners["tuned"] else "no")
        rows.append(row)
    return pd.DataFrame(rows)


def _scaling_end(steps: pd.DataFrame) -> dict:
    """Per optimizer: the last batch size up to which steps to target fall at least as 1/sqrt(batch) from one
    batch size to the next (log-log slope <= PERFECT_SLOPE), with every slope."""
    out = {}
    for opt, g in steps[steps["role"] == "tuned"].groupby("optimizer", sort=False):
        g = g.sort_values("batch_size")
        pts = [(b, s.value) for b, s, r in zip(g["batch_size"], g["steps"], g["reached"]) if r and s.n]
        slopes, end = {}, None
        for (b1, s1), (b2, s2) in zip(pts, pts[1:]):
            slopes[(int(b1), int(b2))] = math.log(s2 / s1) / math.log(b2 / b1)
        for (b1, b2), slope in slopes.items():
            if slope > PERFECT_SLOPE:
                break
            end = b2
        out[opt] = (end, slopes, int(pts[0][0]) if pts else None)  # None: no near-perfect step at all
    return out


def finding(runs: pd.DataFrame) -> TuningFinding | None:
    """The tuning experiment's finding from its runs (records of experiment tuning, with add_run_metrics' columns);
    None when there are none."""
    runs = runs[runs["role"].notna()].copy()
    if runs.empty:
        return None
    profile = runs["profile"].iloc[0]
    target = float(runs["target_accuracy"].iloc[0])
    trials = runs[runs["role"] == "trial"]
    finals = runs[runs["role"].isin(["tuned", "pinned"]) & (runs["status"] == "ok")].copy()
    chosen = {(o, b): c for o, b, c in zip(finals["optimizer"], finals["batch_size"], finals["tuning.chosen"])
              if c is not None and not pd.isna(c)}
    t = trials[["optimizer", "batch_size", "batch_label", "lr_setting", "status", "val_accuracy"]].rename(
        columns={"lr_setting": "learning_rate"}).copy()
    t["chosen"] = [chosen.get((o, b)) is not None and math.isclose(chosen[(o, b)], lr, rel_tol=1e-9)
                   for o, b, lr in zip(t["optimizer"], t["batch_size"], t["learning_rate"])]
    finals["updates_to_target"] = [_updates_to_target(r) for _, r in finals.iterrows()]
    rows = []
    for (opt, bs, role), g in finals.groupby(["optimizer", "batch_size", "role"], sort=False):
        reached = g["updates_to_target"].dropna()
        per_update = [s for lst in g["update_samples_s"] for s in (lst or [])] if "update_samples_s" in g else []
        steps = _median(list(reached)) if len(reached) else stats.NO_DATA
        time = stats.bootstrap([list(reached), per_update], lambda a, b, axis: np.median(a, axis=axis)
                               * np.median(b, axis=axis)) if len(reached) and per_update else stats.NO_DATA
        rows.append({"optimizer": opt, "batch_size": int(bs), "batch_label": g["batch_label"].iloc[0], "role": role,
                     "steps": steps, "reached": len(reached), "runs": len(g), "time": time,
                     "steps_by_seed": list(g["updates_to_target"]),
                     "learning_rate": float(g["learning_rate"].iloc[0])})
    steps = pd.DataFrame(rows)
    noise = [v for lst in runs.get("noise_scale_by_epoch", pd.Series(dtype=object)).dropna() for v in (lst or [])
             if v is not None]
    return TuningFinding(
        profile=profile, train_size=int(runs["train_size"].iloc[0]),
        budget_updates=int((runs["epochs"] * runs["steps_per_epoch"]).max()),
        check_every=int(runs["steps_per_epoch"].iloc[0]), target=target,
        optimizers=list(dict.fromkeys(runs["optimizer"])), trials=t, steps=steps,
        ranking=_ranking(finals) if len(finals) else pd.DataFrame(),
        scaling_end=_scaling_end(steps) if len(steps) else {},
        noise_scale=float(np.median(noise)) if noise else None)
