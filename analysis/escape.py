"""The escape experiment's finding (bench/test_escape.py): from one stuck point of the lecture network, how many
updates and examples each batch size needs to escape it, with intervals over seeds, and the verdict on the
lecture's claim that the full batch stays stuck where minibatch noise escapes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.stats import Interval, Verdict

NAME = "escape"  # the experiment's name in the records
ARMS = {"updates": "the same number of updates", "examples": "the same number of examples",
        "fairness": "the full batch at other learning rates, the same updates"}


@dataclass
class EscapeArm:
    """One arm: per batch size, the updates (and examples) to escape over seeds, censored at the budget."""

    arm: str
    budget_updates: dict  # batch label -> the arm's update budget at that batch size
    updates: dict  # batch label -> Interval of the median updates to escape (a run that never escaped counts as its budget)
    examples: dict  # batch label -> Interval of the median examples to escape
    escaped: dict  # batch label -> (runs that escaped, runs)


@dataclass
class EscapeFinding:
    """Section 4's verdict and figure 10's data."""

    profile: str
    train_size: int
    seeds: int
    stuck: dict  # how the stuck point was reached (from the records)
    margin: float
    arms: dict  # arm -> EscapeArm
    best_full_lr: float | None  # the full batch's best learning rate in the fairness arm
    ratio: Interval  # the best minibatch's updates to escape / the full batch's (best learning rate)
    ratio_batch: str | None  # which minibatch size that is
    verdict: Verdict | None

    def title(self) -> str:
        v = self.verdict
        if v is None:
            return f"Escape from one stuck point ({self.train_size:,} examples, {self.seeds} seed(s))"
        return (f"Claim 3 {v.outcome}: from one stuck point ({self.train_size:,} examples, {self.seeds} seeds), batch "
                f"{self.ratio_batch} needs\n{self.ratio.text('.2g', 'x')} the updates the full batch needs at its best "
                "learning rate (95% interval over seeds)")


def _median(values) -> Interval:
    return stats.bootstrap([values], lambda x, axis: np.median(x, axis=axis))


def arm_of(runs: pd.DataFrame, arm: str) -> EscapeArm | None:
    sel = runs[runs["escape.arm"] == arm]
    if sel.empty:
        return None
    budget, updates, examples, escaped = {}, {}, {}, {}
    for label, g in sel.sort_values("batch_size").groupby("batch_label", sort=False):
        u = _censored(g)
        budget[label] = int(g["escape.budget_updates"].max())
        updates[label] = _median(u)
        examples[label] = _median(u * g["batch_size"].to_numpy(dtype=float))
        escaped[label] = (int(g["escape.escaped"].sum()), len(g))
    return EscapeArm(arm, budget, updates, examples, escaped)


def finding(runs: pd.DataFrame) -> EscapeFinding | None:
    """The escape experiment's finding from its runs (records of experiment escape); None when there are none."""
    runs = runs[runs["escape.arm"].notna() & (runs["status"] == "ok")]
    if runs.empty:
        return None
    arms = {a: arm_of(runs, a) for a in ARMS}
    arms = {a: v for a, v in arms.items() if v is not None}
    full, best_lr = _best_full_batch(runs)
    ratio, ratio_batch, verdict = stats.NO_DATA, None, None
    upd = runs[(runs["escape.arm"] == "updates") & ~runs["full_batch"]]
    if full is not None and len(upd):
        ratio, ratio_batch = _best_ratio(upd, full)
        verdict = stats.judge(ratio, 1.0, f"the updates batch {ratio_batch} needs to escape over the full batch's at "
                              "its best learning rate (median over seeds; a run that never escaped counts as its "
                              "budget)")
    first = runs.iloc[0]
    stuck = {k.removeprefix("escape.stuck."): first[k] for k in runs if k.startswith("escape.stuck.")}
    return EscapeFinding(str(first["profile"]), int(first["train_size"]), int(runs["seed"].nunique()), stuck,
                         float(first["escape.margin"]), arms, best_lr, ratio, ratio_batch, verdict)


def _censored(g) -> np.ndarray:
    return np.where(g["escape.escaped"], g["escape.updates_to_escape"].fillna(0),
                    g["escape.budget_updates"]).astype(float)


def _best_full_batch(runs) -> tuple:
    """The full batch's updates to escape at its best learning rate (same-updates arm and fairness arm)."""
    full = runs[runs["full_batch"] & runs["escape.arm"].isin(["updates", "fairness"])]
    if full.empty:
        return None, None
    by_lr = {lr: float(np.median(_censored(g))) for lr, g in full.groupby("learning_rate")}
    best = min(by_lr, key=lambda lr: (by_lr[lr], lr))
    return by_lr[best], float(best)


def _best_ratio(minibatch: pd.DataFrame, full_updates: float) -> tuple:
    """(Interval of min over minibatch sizes of median updates to escape / the full batch's, that batch size): the
    claim's most favourable minibatch, every size's seeds resampled."""
    groups = [_censored(g) for _, g in minibatch.sort_values("batch_size").groupby("batch_label", sort=False)]
    labels = list(dict.fromkeys(minibatch.sort_values("batch_size")["batch_label"]))
    medians = [np.median(g) for g in groups]
    best = labels[int(np.argmin(medians))]
    interval = stats.bootstrap(groups, lambda *gs, axis: np.min(np.stack([np.median(g, axis=axis) for g in gs]),
                                                                axis=0) / full_updates)
    return interval, best
