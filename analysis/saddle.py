"""The saddle benchmark's finding (bench/test_saddle.py): per budget and batch size, what the runs' plateaus,
curvature and noise scale say, and whether that supports the lecture's claim."""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("saddle", "minimum", "slope")


def _batch_text(label, g) -> tuple[str, float]:
    """One batch size's sentence, and the share of its seeds that ended on a saddle plateau."""
    plats = [p for ps in g["plateaus"] for p in (ps or [])]
    kinds = [p["kind"] for p in plats if p.get("kind")]
    lmins = [p["lambda_min"] for p in plats if p.get("lambda_min") is not None]
    end_min, end_max = g["hessian.lambda_min"].median(), g["hessian.lambda_max"].median()
    ns = [v for vs in g["noise_scale_by_epoch"] for v in (vs or []) if v is not None]
    stuck_end = sum(1 for ps, n in zip(g["plateaus"], g["updates"])
                    for p in (ps or []) if p.get("kind") == "saddle" and p["end_update"] >= 0.9 * n)
    text = (f"batch {label}: final loss {g['train_loss'].median():.3f}, {len(plats)} plateau(s) over "
            f"{len(g)} seed(s)" + (f" ({', '.join(f'{kinds.count(k)} {k}' for k in sorted(set(kinds)))})"
                                   if kinds else ""))
    if lmins:
        text += f", λ_min at plateaus {min(lmins):.3g} to {max(lmins):.3g}"
    text += f"; at the end λ_min {end_min:.3g}, λ_max {end_max:.3g}"
    if ns:
        text += f"; B_simple {np.median(ns):.3g} (median over probes)"
    return text, stuck_end / len(g)


def _verdict(verdict: dict) -> str | None:
    full = [v for (b, lab), v in verdict.items() if lab == "full"]
    small = [v for (b, lab), v in verdict.items() if lab in ("1", "10")]
    if not (full and small):
        return None
    if max(full) > 0 and max(small) == 0:
        return ("The full batch ends on a saddle plateau in some seeds while batches of 1 and 10 do not: these "
                "records **support** the lecture's claim.")
    if max(full) == 0:
        return ("No full-batch run ended on a plateau classified as a saddle (λ_min < 0 beyond the tolerance): "
                "these records **do not support** the lecture's claim that the full batch gets stuck at saddle "
                "points; see the numbers above for where it did stall.")
    return ("Small batches also ended on saddle plateaus: the records **do not separate** full batch from "
            "minibatches as the lecture claims.")


def text(saddle: pd.DataFrame) -> str:
    """The section's paragraphs, numbers filled in from the saddle benchmark's records."""
    ok = saddle[saddle["status"] == "ok"]
    if ok.empty:
        return "No saddle-benchmark run finished."
    parts, verdict = [], {}
    for budget in ("epochs", "updates"):
        sel = ok[ok["budget"] == budget]
        if sel.empty:
            continue
        rows = []
        for bs, g in sel.groupby("batch_size"):
            label = g["batch_label"].iloc[0]
            sentence, verdict[(budget, label)] = _batch_text(label, g)
            rows.append(sentence)
        parts.append(f"**Same {budget}:** " + "; ".join(rows) + ".")
    upd = ok[ok["budget"] == "updates"].groupby("batch_label")["train_loss"].median()
    if "full" in upd.index and len(upd) > 1:
        best_mini = upd.drop("full").min()
        parts.append(f"With the same number of updates the full batch ends at training loss {upd['full']:.3f}, "
                     + ("as low as or lower than" if upd["full"] <= 1.1 * best_mini else "above")
                     + f" the best minibatch ({best_mini:.3f}, batch {upd.drop('full').idxmin()}): where the full "
                     "batch stalls after the same epochs, it is because it made fewer updates.")
    end = _verdict(verdict)
    if end:
        parts.append(end)
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
