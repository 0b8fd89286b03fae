"""The saddle benchmark's finding (bench/experiments/saddle.py): per budget and batch size, what the runs' plateaus,
curvature and noise scale measured. Numbers only: the report (analysis/report/saddle.py) words them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.record import FULL, PLATEAU_KINDS

NAME = "saddle"  # the experiment's name in the records


@dataclass
class BatchRow:
    """One budget x batch size of the saddle benchmark."""

    budget: str  # epochs or updates
    label: str  # batch label
    final_loss: float  # median final training loss over seeds
    seeds: int
    plateaus: int
    kinds: dict  # kind -> plateaus labelled so
    lambda_min_range: tuple | None  # (lowest, highest) lambda_min at plateaus
    end_lambda_min: float  # median at the run's end
    end_lambda_max: float
    b_simple: float | None  # median over probes


@dataclass
class SaddleBenchmark:
    """Figure 4 and section 4 from the saddle benchmark's records."""

    profile: str
    train_size: int
    seeds: int
    kind_counts: dict  # kind -> number of probed plateaus
    rows: list  # BatchRow per budget and batch size
    full_vs_best: tuple | None  # same updates: (full batch's final loss, best minibatch's, its batch label)
    unprobed: int  # plateaus no Hessian probe fell on
    finished: bool  # any run finished

    def title(self) -> str:
        total = sum(self.kind_counts.values())
        counts = ", ".join(f"{n} {k}" for k, n in self.kind_counts.items())
        return (f"Saddle benchmark ({self.profile}, {self.train_size:,} examples, {self.seeds} seed(s)): "
                f"{total} probed plateaus" + (f" — {counts}" if counts else ""))


def _row(budget, label, g) -> BatchRow:
    plats = [p for ps in g["plateaus"] for p in (ps or [])]
    kinds = [p["kind"] for p in plats if p.get("kind")]
    lmins = [p["lambda_min"] for p in plats if p.get("lambda_min") is not None]
    ns = [v for vs in g["noise_scale_by_epoch"] for v in (vs or []) if v is not None]
    return BatchRow(budget, label, float(g["train_loss"].median()), len(g), len(plats),
                    {k: kinds.count(k) for k in sorted(set(kinds))}, (min(lmins), max(lmins)) if lmins else None,
                    float(g["hessian.lambda_min"].median()), float(g["hessian.lambda_max"].median()),
                    float(np.median(ns)) if ns else None)


def benchmark_finding(saddle: pd.DataFrame) -> SaddleBenchmark | None:
    """The saddle benchmark's finding from its runs; None when there are none."""
    if saddle is None or not len(saddle):
        return None
    ok = saddle[saddle["status"] == "ok"]
    rows = [_row(budget, g["batch_label"].iloc[0], g) for budget in ("epochs", "updates")
            for _, g in ok[ok["budget"] == budget].groupby("batch_size")]
    upd = ok[ok["budget"] == "updates"].groupby("batch_label")["train_loss"].median()
    full_vs_best = None
    if FULL in upd.index and len(upd) > 1:
        minis = upd.drop(FULL)
        full_vs_best = (float(upd[FULL]), float(minis.min()), str(minis.idxmin()))
    kinds = [p.get("kind") for ps in ok["plateaus"] for p in (ps or [])]
    first = ok if len(ok) else saddle
    return SaddleBenchmark(str(first["profile"].iloc[0]), int(first["train_size"].iloc[0]), int(ok["seed"].nunique()),
                           {k: kinds.count(k) for k in PLATEAU_KINDS if k in kinds}, rows, full_vs_best,
                           kinds.count(None), not ok.empty)
