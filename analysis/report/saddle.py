"""The saddle benchmark's section, worded from its finding's numbers (analysis.saddle)."""

from __future__ import annotations

from analysis.saddle import BatchRow, SaddleBenchmark
from bench.record import PLATEAU_KINDS


def _batch_text(r: BatchRow) -> str:
    """One batch size's sentence: its final loss, plateaus by kind, curvature and noise scale."""
    text = (f"batch {r.label}: final loss {r.final_loss:.3f}, {r.plateaus} plateau(s) over {r.seeds} seed(s)"
            + (f" ({', '.join(f'{n} {k}' for k, n in r.kinds.items())})" if r.kinds else ""))
    if r.lambda_min_range:
        text += f", λ_min at plateaus {r.lambda_min_range[0]:.3g} to {r.lambda_min_range[1]:.3g}"
    text += f"; at the end λ_min {r.end_lambda_min:.3g}, λ_max {r.end_lambda_max:.3g}"
    if r.b_simple is not None:
        text += f"; B_simple {r.b_simple:.3g} (median over probes)"
    return text


def text(f: SaddleBenchmark) -> str:
    """The section's paragraphs."""
    if not f.finished:
        return "No saddle-benchmark run finished."
    parts = []
    for budget in ("epochs", "updates"):
        rows = [r for r in f.rows if r.budget == budget]
        if rows:
            parts.append(f"**Same {budget}:** " + "; ".join(map(_batch_text, rows)) + ".")
    if f.full_vs_best:
        full, best, label = f.full_vs_best
        parts.append(f"With the same number of updates the full batch ends at training loss {full:.3f}, "
                     + ("as low as or lower than" if full <= 1.1 * best else "above")
                     + f" the best minibatch ({best:.3f}, batch {label}): where the full batch stalls after the same "
                     "epochs, it is because it made fewer updates.")
    total = sum(f.kind_counts.values()) + f.unprobed
    counts = ", ".join(f"{f.kind_counts[k]} {k}" for k in PLATEAU_KINDS if k in f.kind_counts)
    parts.append(f"Plateaus of the probe set's loss: {total} in all"
                 + (f" ({counts}; {f.unprobed} with no Hessian probe on them)" if total else "")
                 + ". A plateau is labelled from the gradient, loss and Hessian extremes measured at one and the same "
                 "point on it (bench.curvature.classify); claim 3's verdict comes from the escape experiment.")
    return "\n\n".join(parts)
