"""The lecture's speed claims, judged for each setting (machine x protocol: backend and dispatch mode included) from
the cells' steady samples:

1. one update at batch 10 costs about as much as one at batch 1 (the interval of the cost ratio, median over
   optimizers, lies below CLAIM1_COST);
2. past some batch size the time per update grows with the batch (the interval of the steepest local log-log
   slope of time per update against batch size, median over optimizers, lies above the knee's slope).

`default` dispatch measures a user's `model.fit`, Keras' per-step host work included; `fast` measures the device
(an epoch per compiled call). A claim about the hardware is judged in each, never across them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import metrics, stats
from analysis.stats import Interval, Verdict

CLAIM1_COST = 1.5  # "about as much": a batch-10 update costs less than 1.5 batch-1 updates (the lecture: 1.02)
MEASURES = {"default": "a user's model.fit, Keras' per-step host work included",
            "fast": "the device: an epoch per compiled call, no per-step host work"}


@dataclass
class Claims:
    """Claims 1 and 2 in one setting (metrics.SETTING: one machine, one protocol: backend and mode included)."""

    setting: dict  # metrics.SETTING column -> value
    name: str  # the setting's label among those judged together (metrics.setting_label)
    speedups: dict  # batch label -> Interval of epoch time at batch 1 / at that batch (median over optimizers)
    cost_bs10: Interval  # time per update at batch 10 / at batch 1, median over optimizers
    cost_bs100: Interval
    claim1: Verdict | None
    claim2: Verdict | None
    knees: list  # [(optimizer, knee, low, high)]: the knee and its 95 % bootstrap range (None: no knee)

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


def _pairs(cells: pd.DataFrame, column: str, numerator: int, denominator: int) -> list:
    """Per optimizer: (samples at batch `numerator`, samples at batch `denominator`)."""
    out = []
    for _, g in cells.groupby("optimizer", observed=True):
        by_bs = dict(zip(g["batch_size"], g[column]))
        if numerator in by_bs and denominator in by_bs:
            out.append((by_bs[numerator], by_bs[denominator]))
    return out


def steepest_slope(cells: pd.DataFrame) -> Interval:
    """The largest local log-log slope of time per update against batch size, of the curve of medians over
    optimizers, with its bootstrap interval (every cell's samples resampled)."""
    sizes = sorted(cells["batch_size"].unique())
    opts = sorted(cells["optimizer"].unique())
    table = {(o, b): s for o, b, s in zip(cells["optimizer"], cells["batch_size"], cells["update_samples_s"])}
    if len(sizes) < 2 or any((o, b) not in table for o in opts for b in sizes):
        return stats.NO_DATA
    groups = [table[(o, b)] for b in sizes for o in opts]
    dlog = np.diff(np.log(np.asarray(sizes, dtype=float)))

    def statistic(*gs, axis):
        med = np.stack([np.median(g, axis=axis) for g in gs]).reshape((len(sizes), len(opts)) + np.shape(
            np.median(gs[0], axis=axis)))
        curve = np.log(np.median(med, axis=1))
        return np.max(np.diff(curve, axis=0) / dlog.reshape((-1,) + (1,) * (curve.ndim - 1)), axis=0)

    return stats.bootstrap(groups, statistic)


def judge(cells: pd.DataFrame, knee_table: pd.DataFrame, setting: dict, name: str | None = None) -> Claims:
    """Claims 1 and 2 from one setting's cells (metrics.cell_summary rows; `setting`: its metrics.SETTING values)."""
    labels = dict(zip(cells["batch_size"], cells["batch_label"]))
    speedups = {labels[b]: stats.median_ratio(_pairs(cells, "epoch_samples_s", 1, b))
                for b in sorted(cells["batch_size"].unique())}
    cost10 = stats.median_ratio(_pairs(cells, "update_samples_s", 10, 1))
    cost100 = stats.median_ratio(_pairs(cells, "update_samples_s", 100, 1))
    claim1 = (stats.judge(cost10, CLAIM1_COST, "the batch-10 / batch-1 cost of an update (median over optimizers)")
              if cost10.n else None)
    slope = steepest_slope(cells)
    claim2 = (stats.judge(slope, metrics.KNEE_SLOPE, "the steepest log-log slope of time per update against batch "
                          "size (median over optimizers)", supported_below=False) if slope.n else None)
    mine = np.ones(len(knee_table), dtype=bool)
    for column, value in setting.items():
        if column in knee_table:
            mine &= (knee_table[column].astype(str) == str(value)).to_numpy()
    knees = [(r["optimizer"], _int(r["knee_batch_size"]), _int(r["knee_low"]), _int(r["knee_high"]))
             for _, r in knee_table[mine].iterrows()]
    return Claims(setting, name or str(setting.get("dispatch.mode")), speedups, cost10, cost100, claim1, claim2,
                  knees)


def _int(x):
    return None if x is None or pd.isna(x) else int(x)


def per_setting(by_mode: pd.DataFrame, knee_table: pd.DataFrame) -> list:
    """Claims for every setting in the cells (metrics.SETTING: machine x protocol, backend and mode included), each
    named by what varies among them."""
    several = metrics.varies(by_mode)
    out = []
    for key, cells in by_mode.groupby(metrics.SETTING, observed=True, sort=False, dropna=False):
        setting = dict(zip(metrics.SETTING, key))
        out.append(judge(cells, knee_table, setting, metrics.setting_label(setting, several)))
    return out
