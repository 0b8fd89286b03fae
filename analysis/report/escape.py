"""The escape experiment's section: the decision rule, each start point's certificate, each arm's survival at each
rate, the tests and controls, claim 3's verdict per point, and what the data say about the claim."""

from __future__ import annotations

import math

from analysis.escape import ALPHA, HORIZON_FACTOR, EscapeFinding, PointResult, push
from bench.record.escape import Certificate

RULE = (f"**The decision rule** (fixed before the run; `analysis/escape.py`). Claim 3 is judged at each start point "
        f"separately. It is *not tested* there unless (1) the point is certified a strict saddle in float64 on the "
        f"whole training subset, (2) every rate of its grid is below 2/λ_max, and (3) at every rate the full batch, "
        f"started from the exact point in float32, did not escape within a horizon of at least {HORIZON_FACTOR}× the "
        f"slowest minibatch arm's Kaplan–Meier median. Then, at each rate, each minibatch arm is compared with the "
        f"full batch over the updates both ran by a one-sided log-rank test (scipy.stats.logrank); the rate supports "
        f"the claim when some arm escapes sooner at p < {ALPHA:g} / (number of minibatch arms), contradicts it when "
        f"no arm escapes in most runs either (every arm's 95 % upper bound on escaping within its budget below one "
        f"half), and decides nothing otherwise. The claim is supported at the point when every rate supports it, "
        f"contradicted when every rate contradicts it, not determined otherwise. Escape times are right-censored at "
        f"each run's budget; a median is Kaplan–Meier's (scipy.stats.ecdf), its 95 % interval from the log-log band.")


def verdict_rows(e: EscapeFinding) -> list[dict]:
    """Claim 3's rows of the report's verdict table (claim, setting, verdict, decided by), one per start point."""
    rows = []
    for p in e.points.values():
        v = p.verdict
        decided = v.reason
        if v.deciding is not None:
            decided = (f"{v.reason}; deciding rate {v.deciding.rate:g}: batch {v.deciding.arm} vs the full batch, "
                       f"log-rank {v.deciding.text()}; batch {v.interval.label}: {v.interval.text()}")
        rows.append({"claim": "3: the full batch stays stuck where minibatch noise escapes",
                     "setting": f"escape experiment from the {p.point} point ({e.train_size:,} examples; "
                                f"rates {', '.join(f'{r:g}' for r in p.rates)})",
                     "verdict": f"**{v.outcome}**", "decided by (95% interval)": decided})
    return rows


def _certificate_text(p: PointResult) -> str:
    c = p.certificate
    if c is None:
        return f"**{p.point}**: no certificate (a record from before certified start points)."
    status = ("a **certified strict saddle**" if c["certified"] else "**not certified** (" + "; ".join(c["failed"])
              + "): no verdict is drawn from it")
    noise = ", ".join(f"batch {b}: {v:.3g}" for b, v in (c.get("noise_norm_by_batch") or {}).items())
    t = c.get("thresholds") or {}
    return (f"**{p.point}**: {c['how']}. In float64 on all {int(c['examples']):,} training examples: loss "
            f"{c['loss']:.6g}, gradient norm {c['grad_norm']:.3g} ({c['grad_norm_rounded']:.3g} at the point rounded "
            f"to float32, what the runs load), flatness {c['flatness']:.3g}, λ_max {c['lambda_max']:.4g} (residual "
            f"{c['lambda_max_residual']:.2g}), λ_min {c['lambda_min']:.4g} (residual {c['lambda_min_residual']:.2g}), "
            f"the lowest Ritz values {', '.join(f'{v:.3g}' for v in c['negative'])}: {status} (thresholds: flatness "
            f"< {t.get('flatness', math.nan):g}, residuals ≤ {t.get('residual_tol', math.nan):g} λ_max, λ_min + "
            f"residual < −{t.get('saddle_tol', math.nan):g} λ_max). 2/λ_max = {2 / c['lambda_max']:.3g}; the grid: "
            f"{', '.join(f'{r:g}' for r in p.rates)}. Minibatch gradient noise there, √E|g_B − g|²: {noise}.")


def _arms_text(p: PointResult, delta: float | None) -> str:
    """Per rate: every arm's survival, its log-rank test against the full batch, and the float64 stay bound."""
    cert = Certificate(**p.certificate) if p.certificate else None
    out = []
    for rate in p.rates:
        tests = {t.arm: t for t in p.tests if t.rate == rate}
        rows = []
        for s in sorted((s for (r, _), s in p.arms.items() if r == rate), key=lambda s: (s.arm, s.batch_size)):
            test = f"; against the full batch: {tests[s.label].text()}" if s.label in tests else ""
            examples = (f" = {s.median * s.batch_size:,.0f} examples" if s.arm == "minibatch"
                        and not math.isnan(s.median) else "")
            rows.append(f"{s.label if s.arm != 'minibatch' else 'batch ' + s.label}: {s.text()}{examples}{test}")
        bound = ""
        if cert is not None and delta:
            exact, rounded = cert.stay_updates(rate, delta, rounded=False), cert.stay_updates(rate, delta)
            if exact is not None and rounded is not None:
                bound = (f" The quadratic model bounds how long full-batch descent stays within δ = {delta:g}: "
                         f"{exact:,.0f} updates from the exact point in float64, {rounded:,.0f} from its float32 "
                         "rounding.")
        out.append(f"*Rate {rate:g}*: " + "; ".join(rows) + "." + bound)
    return "\n\n".join(out)


def _controls_text(p: PointResult) -> str:
    if not p.controls:
        return ""
    parts = [f"{t.names()[0]} against {t.names()[1]} at rate {t.rate:g}: {t.text()}" for t in p.controls]
    return "*Controls* (log-rank; z > 0: the first escapes sooner): " + "; ".join(parts) + "."


def _fastest(p: PointResult, rate: float):
    arms = [s for s in p.at(rate, "minibatch") if not math.isnan(s.median)]
    return min(arms, key=lambda s: s.median) if arms else None


def _rate_note(p: PointResult, rate: float) -> str:
    """One rate's sentence: the fastest minibatch arm, the full batch, the isotropic control."""
    best, say = _fastest(p, rate), [f"at rate {rate:g}"]
    test = next((t for t in p.tests if best is not None and t.rate == rate and t.arm == best.label), None)
    say.append(f"the fastest minibatch arm (batch {best.label}) left the point after a median {best.median:,.0f} "
               f"updates (against the full batch: log-rank {test.text() if test else '–'})" if best is not None
               else "no minibatch arm left the point in most of its runs")
    for f in p.at(rate, "full"):
        if not f.events:
            runs = f"all {f.n} of its runs" if f.n > 1 else "its one run"
            say.append(f"the full batch stayed for all {f.budget:,} updates in {runs}")
            continue
        when = (f"after a median {f.median:,.0f} updates" + (f", {f.median / best.median:.2g}× the fastest "
                "minibatch arm's" if best is not None else "") if not math.isnan(f.median)
                else f"in {f.events} of {f.n} runs, the first after {int(f.times[f.escaped].min()):,} updates")
        say.append(f"the full batch, moved by {push(p.certificate)}, left it too, {when}")
    for s in p.at(rate, "isotropic"):
        left = f"left after a median {s.median:,.0f} updates" if not math.isnan(s.median) else "mostly did not leave"
        say.append(f"the full batch plus {s.label} {left}")
    text = ", ".join(say) + "."
    return text[0].upper() + text[1:]


def _note(p: PointResult) -> str:
    """What the data say about the claim at this point, whichever way they fall."""
    v = p.verdict
    return (f"*What the data say at the {p.point} point*: " + " ".join(_rate_note(p, r) for r in p.rates)
            + f" Claim 3 is **{v.outcome}** here: {v.reason}.")


def escape_text(e: EscapeFinding) -> str:
    margin = f"the loss is {e.margin:.0%} below the point's"
    where = (f"Escape: the projection of w − w* on the span of the point's lowest Ritz vectors exceeds δ = "
             f"{e.delta:g} and {margin}, at the same check (the record keeps the first check of each)."
             if e.delta else f"Escape (schema 2): {margin}.")
    parts = [RULE, where]
    for p in e.points.values():
        parts += [_certificate_text(p), _arms_text(p, e.delta), _controls_text(p), _note(p)]
    return "\n\n".join(x for x in parts if x)
