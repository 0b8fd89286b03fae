"""The saddle benchmark's finding (bench/test_saddle.py): per budget and batch size, what the runs' plateaus,
curvature and noise scale say, and whether that supports the lecture's claim."""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("saddle", "minimum", "slope", "undetermined")


def _batch_text(label, g) -> str:
    """One batch size's sentence: its final loss, plateaus by kind, curvature and noise scale."""
    plats = [p for ps in g["plateaus"] for p in (ps or [])]
    kinds = [p["kind"] for p in plats if p.get("kind")]
    lmins = [p["lambda_min"] for p in plats if p.get("lambda_min") is not None]
    end_min, end_max = g["hessian.lambda_min"].median(), g["hessian.lambda_max"].median()
    ns = [v for vs in g["noise_scale_by_epoch"] for v in (vs or []) if v is not None]
    text = (f"batch {label}: final loss {g['train_loss'].median():.3f}, {len(plats)} plateau(s) over "
            f"{len(g)} seed(s)" + (f" ({', '.join(f'{kinds.count(k)} {k}' for k in sorted(set(kinds)))})"
                                   if kinds else ""))
    if lmins:
        text += f", λ_min at plateaus {min(lmins):.3g} to {max(lmins):.3g}"
    text += f"; at the end λ_min {end_min:.3g}, λ_max {end_max:.3g}"
    if ns:
        text += f"; B_simple {np.median(ns):.3g} (median over probes)"
    return text


def text(saddle: pd.DataFrame) -> str:
    """The section's paragraphs, numbers filled in from the saddle benchmark's records."""
    ok = saddle[saddle["status"] == "ok"]
    if ok.empty:
        return "No saddle-benchmark run finished."
    parts = []
    for budget in ("epochs", "updates"):
        sel = ok[ok["budget"] == budget]
        if sel.empty:
            continue
        rows = []
        for bs, g in sel.groupby("batch_size"):
            label = g["batch_label"].iloc[0]
            sentence = _batch_text(label, g)
            rows.append(sentence)
        parts.append(f"**Same {budget}:** " + "; ".join(rows) + ".")
    upd = ok[ok["budget"] == "updates"].groupby("batch_label")["train_loss"].median()
    if "full" in upd.index and len(upd) > 1:
        best_mini = upd.drop("full").min()
        parts.append(f"With the same number of updates the full batch ends at training loss {upd['full']:.3f}, "
                     + ("as low as or lower than" if upd["full"] <= 1.1 * best_mini else "above")
                     + f" the best minibatch ({best_mini:.3f}, batch {upd.drop('full').idxmin()}): where the full "
                     "batch stalls after the same epochs, it is because it made fewer updates.")
    kinds = [p.get("kind") for ps in ok["plateaus"] for p in (ps or [])]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in KINDS if k in kinds)
    parts.append(f"Plateaus of the probe set's loss: {len(kinds)} in all"
                 + (f" ({counts}; {kinds.count(None)} with no Hessian probe on them)" if kinds else "")
                 + ". A plateau is labelled from the gradient, loss and Hessian extremes measured at one and the same "
                 "point on it (bench.curvature.classify); claim 3's verdict comes from the escape experiment.")
    return "\n\n".join(parts)


def benchmark_finding(saddle: pd.DataFrame):
    """findings.SaddleBenchmark from the saddle benchmark's runs; None when there are none."""
    from analysis.findings import SaddleBenchmark

    if saddle is None or not len(saddle):
        return None
    data = saddle[saddle["status"] == "ok"]
    kinds = [p.get("kind") for ps in data["plateaus"] for p in (ps or []) if p.get("kind")]
    counts = {k: kinds.count(k) for k in KINDS if k in kinds}
    first = data if len(data) else saddle
    return SaddleBenchmark(str(first["profile"].iloc[0]), int(first["train_size"].iloc[0]),
                           int(data["seed"].nunique()), counts, text(saddle))
