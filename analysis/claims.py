"""The lecture's speed claims, judged for each setting (machine x protocol: backend and dispatch mode included) from
the cells' repeats, each statistic computed per replicate (one round of the sweep) with Student's t over the
replicates (analysis.stats.replicated):

1. one update at batch 10 costs about as much as one at batch 1: the interval of the cost ratio (median over
   optimizers) lies below CLAIM1_COST (contradicted above it);
2. the time per update is flat up to a knee and grows past it: both halves are tested. The slope of time per update
   against batch size, log-log, between the two smallest batch sizes must lie below KNEE_SLOPE (flat) and the
   steepest slope above it (growth): supported when both intervals say so; contradicted when the first slope lies
   above (the cost grows from batch 1 on: no flat region) or the steepest lies below (it never grows); not
   determined otherwise.

Each verdict is also given at half and at double its threshold (CLAIM1_COST's excess over 1 halved and doubled),
so a reader sees how much it rests on the threshold's choice. `default` dispatch measures a user's `model.fit`,
Keras' per-step host work included; `fast` measures the device. Claims 1-2 are about a GPU: a verdict judged on a
CPU says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import metrics, stats
from analysis.stats import CONTRADICTED, NOT_DETERMINED, SUPPORTED, Interval, Verdict

CLAIM1_COST = 1.5  # "about as much": a batch-10 update costs less than 1.5 batch-1 updates (the lecture: 1.02)
MEASURES = {"default": "a user's model.fit, Keras' per-step host work included",
            "fast": "the device: an epoch per compiled call, no per-step host work"}


@dataclass
class TwoSided:
    """Claim 2's verdict: a flat region (the first slope below the threshold) and growth (the steepest above)."""

    outcome: str
    flat: Interval  # log-log slope between the two smallest batch sizes
    growth: Interval  # the steepest log-log slope
    threshold: float
    what: str = "the log-log slope of time per update against batch size (median over optimizers)"

    @property
    def interval(self) -> Interval:
        return self.growth

    def decided_by(self) -> str:
        return (f"first slope {self.flat.text('.3g')} (flat: below {self.threshold:g}), steepest slope "
                f"{self.growth.text('.3g')} (growth: above {self.threshold:g})")

    def text(self) -> str:
        why = {SUPPORTED: "the first slope lies below it and the steepest above it",
               CONTRADICTED: ("the first slope lies above it: the cost grows from the smallest batch on"
                              if self.flat.defined and self.flat.low > self.threshold
                              else "the steepest slope lies below it: the cost never grows like that"),
               NOT_DETERMINED: "an interval straddles it, or there is none"}[self.outcome]
        return (f"**{self.outcome}**: of {self.what}, {self.decided_by()}; against {self.threshold:g}, {why}")


def two_sided(flat: Interval, growth: Interval, threshold: float) -> TwoSided:
    """Claim 2's rule: supported when the first slope's interval lies below `threshold` and the steepest's above;
    contradicted when the first lies above it or the steepest below; not determined otherwise."""
    if flat.defined and flat.low > threshold or growth.defined and growth.high < threshold:
        outcome = CONTRADICTED
    elif flat.defined and growth.defined and flat.high < threshold and growth.low > threshold:
        outcome = SUPPORTED
    else:
        outcome = NOT_DETERMINED
    return TwoSided(outcome, flat, growth, threshold)


@dataclass
class Claims:
    """Claims 1 and 2 in one setting (metrics.SETTING: one machine, one protocol: backend and mode included)."""

    setting: dict  # metrics.SETTING column -> value
    name: str  # the setting's label among those judged together (metrics.setting_label)
    device: str  # CPU or GPU: what the runs trained on
    speedups: dict  # batch label -> Interval of epoch time at batch 1 / at that batch (median over optimizers)
    cost_bs10: Interval  # time per update at batch 10 / at batch 1, median over optimizers
    cost_bs100: Interval
    claim1: Verdict | None
    claim2: TwoSided | None
    knees: list  # [(optimizer, knee, low, high)]: the knee and the range of its replicates' knees (None: no knee)
    sensitivity: dict  # claim -> {threshold: outcome} at half and double the threshold

    @property
    def machine(self) -> str:
        return str(self.setting["machine"])

    @property
    def mode(self) -> str:
        return str(self.setting["dispatch.mode"])

    @property
    def backend(self) -> str:
        return str(self.setting["dispatch.backend"])

    @property
    def measures(self) -> str:
        return MEASURES.get(self.mode, self.mode)

    def label(self, machines: int = 1) -> str:
        return self.name

    @property
    def speedup_bs10(self) -> Interval:
        return self.speedups.get("10", stats.NO_DATA)


def _replicate_table(cells: pd.DataFrame, per: str | None) -> dict:
    """{(optimizer, batch size): {replicate: the run's epoch estimate (per `per`, e.g. steps per epoch)}}."""
    out = {}
    for _, c in cells.iterrows():
        divisor = c[per] if per else 1
        out[(c["optimizer"], c["batch_size"])] = {rep: v / divisor for rep, v in zip(c["replicates"], c["run_epoch_s"])
                                                  if v is not None and v > 0}
    return out


def _per_round(table: dict, opts: list, keys: list) -> dict:
    """{replicate: [optimizers whose every cell of `keys` (batch sizes) has an undisturbed run in it]}, for the
    replicates where at least half of `opts` do: a median over optimizers of one round is taken over those (a
    disturbed run leaves its optimizer out of that round, not the round out of the statistic)."""
    rounds = set().union(*(set(table[(o, b)]) for o in opts for b in keys if (o, b) in table)) if opts else set()
    out = {}
    for r in sorted(rounds):
        present = [o for o in opts if all((o, b) in table and r in table[(o, b)] for b in keys)]
        if 2 * len(present) >= len(opts):
            out[r] = present
    return out


def ratio(cells: pd.DataFrame, numerator: int, denominator: int, per: str | None) -> Interval:
    """Per replicate: median over optimizers of (the numerator batch's estimate / the denominator's); t over the
    replicates on logs."""
    table = _replicate_table(cells, per)
    opts = sorted({o for o, b in table if (o, numerator) in table and (o, denominator) in table})
    if not opts:
        return stats.NO_DATA
    values = [float(np.median([table[(o, numerator)][r] / table[(o, denominator)][r] for o in present]))
              for r, present in _per_round(table, opts, [numerator, denominator]).items()]
    return stats.replicated(values, log=True)


def slopes(cells: pd.DataFrame) -> tuple[Interval, Interval]:
    """(first, steepest) log-log slope of time per update against batch size, of the curve of medians over
    optimizers, per replicate; t over the replicates."""
    sizes = sorted(cells["batch_size"].unique())
    table = _replicate_table(cells, "steps_per_epoch")
    opts = sorted({o for o, _ in table})
    if len(sizes) < 2 or any((o, b) not in table for o in opts for b in sizes):
        return stats.NO_DATA, stats.NO_DATA
    dlog = np.diff(np.log(np.asarray(sizes, dtype=float)))
    first, steepest = [], []
    for r, present in _per_round(table, opts, sizes).items():
        curve = np.log([np.median([table[(o, b)][r] for o in present]) for b in sizes])
        s = np.diff(curve) / dlog
        first.append(float(s[0]))
        steepest.append(float(s.max()))
    return stats.replicated(first, log=False), stats.replicated(steepest, log=False)


def judge(cells: pd.DataFrame, knee_table: pd.DataFrame, setting: dict, name: str | None = None) -> Claims:
    """Claims 1 and 2 from one setting's cells (metrics.cell_summary rows; `setting`: its metrics.SETTING values)."""
    labels = dict(zip(cells["batch_size"], cells["batch_label"]))
    sizes = sorted(cells["batch_size"].unique())
    speedups = {labels[b]: ratio(cells, 1, b, None) for b in sizes} if 1 in sizes else {}  # over batch 1
    cost10 = ratio(cells, 10, 1, "steps_per_epoch")
    cost100 = ratio(cells, 100, 1, "steps_per_epoch")
    claim1 = (stats.judge(cost10, CLAIM1_COST, "the batch-10 / batch-1 cost of an update (median over optimizers)")
              if cost10.n else None)
    flat, growth = slopes(cells)
    claim2 = two_sided(flat, growth, metrics.KNEE_SLOPE) if growth.n else None
    sensitivity = {}
    if claim1 is not None:
        sensitivity["1"] = {t: stats.judge(cost10, t, "").outcome for t in (1 + (CLAIM1_COST - 1) / 2,
                                                                           1 + (CLAIM1_COST - 1) * 2)}
    if claim2 is not None:
        sensitivity["2"] = {t: two_sided(flat, growth, t).outcome for t in (metrics.KNEE_SLOPE / 2,
                                                                           metrics.KNEE_SLOPE * 2)}
    mine = np.ones(len(knee_table), dtype=bool)
    for column, value in setting.items():
        if column in knee_table:
            mine &= (knee_table[column].astype(str) == str(value)).to_numpy()
    knees = [(r["optimizer"], _int(r["knee_batch_size"]), _int(r["knee_low"]), _int(r["knee_high"]))
             for _, r in knee_table[mine].iterrows()]
    device = str(cells["device"].iloc[0]) if "device" in cells and len(cells) else "CPU"
    return Claims(setting, name or str(setting.get("dispatch.mode")), device, speedups, cost10, cost100, claim1,
                  claim2, knees, sensitivity)


def _int(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x) else int(x)


def per_setting(by_mode: pd.DataFrame, knee_table: pd.DataFrame) -> list:
    """Claims for every setting in the cells (metrics.SETTING: machine x protocol, backend and mode included), each
    named by what varies among them."""
    several = metrics.varies(by_mode)
    out = []
    for key, cells in by_mode.groupby(metrics.SETTING, observed=True, sort=False, dropna=False):
        setting = dict(zip(metrics.SETTING, key))
        out.append(judge(cells, knee_table, setting, metrics.setting_label(setting, several)))
    return out
