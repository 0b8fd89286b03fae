"""The escape experiment's section: the stuck point, each arm's updates and examples to escape, claim 3's verdict."""

from __future__ import annotations

from analysis.escape import ARMS, EscapeFinding


def verdict_rows(e: EscapeFinding) -> list[dict]:
    """Claim 3's rows of the report's verdict table (claim, setting, verdict, decided by)."""
    if e.verdict is None:
        return []
    return [{"claim": "3: the full batch stays stuck where minibatch noise escapes",
             "setting": f"escape experiment, same updates ({e.train_size:,} examples)",
             "verdict": f"**{e.verdict.outcome}**",
             "decided by (95% interval)": f"{e.verdict.what}: {e.ratio.text('.3g')} vs 1"}]


def _counts(done: tuple) -> str:
    return f"{done[0]} of {done[1]}"


def escape_text(e: EscapeFinding) -> str:
    s = e.stuck
    parts = [f"The stuck point: {s.get('how')}; after {int(s.get('updates', 0))} updates the probe set's loss was "
             f"{s.get('loss', float('nan')):.4g}, its gradient norm {s.get('grad_norm', float('nan')):.3g}, "
             f"λ_min {s.get('lambda_min', float('nan')):.3g}, λ_max {s.get('lambda_max', float('nan')):.3g} "
             f"(classified **{s.get('kind')}**). Every run starts from those weights (checked by their digest) and "
             f"has escaped once the probe set's loss is {e.margin:.0%} below it."]
    for arm, a in e.arms.items():
        rows = ", ".join(f"batch {b}: {a.updates[b].text('.3g')} updates, {a.examples[b].text('.3g')} examples "
                         f"({_counts(a.escaped[b])} escaped within {a.budget_updates[b]:,} updates)" for b in a.updates)
        parts.append(f"**{ARMS[arm].capitalize()}** (median over seeds; a run that never escaped counts as its "
                     f"budget): {rows}.")
    if e.verdict is not None:
        best = f"{e.best_full_lr:g}" if e.best_full_lr is not None else "–"
        parts.append(f"The full batch's best learning rate in the grid: {best}. Claim 3 is {e.verdict.text()}: the "
                     "same-updates arm decides it, since the claim is that the exact gradient stalls where noisy "
                     "steps move on; the same-examples arm gives the full batch fewer updates, which is a budget, not "
                     "noise.")
    return "\n\n".join(parts)
