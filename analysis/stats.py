"""Uncertainty, and the three-valued verdicts intervals decide.

Timings (DESIGN.md, *What counts as evidence*): a cell's estimate is the geometric mean over its independent repeats
of each repeat's fastest steady sample, with Student's t interval over the repeats on a log scale
(bench.record.repeats_interval), a repeat disturbed as a whole left out (analysis.metrics.DISTURBED). Statistics of several cells of one sweep (a cost ratio, a slope, a knee) are
computed per replicate — the runs of one seed and repeat, which ran in the same round of the sweep — and take
Student's t over the replicates (`replicated`); a comparison of independent cells (two machines, two dispatch
modes) takes Welch's t on the logs (`welch_ratio`), and an aggregate of such comparisons (a median over
optimizers) is drawn from each cell's t distribution (`draws`, conservative). A percentile bootstrap that resamples
three repeats covers about 75 % for a nominal 95 % (the simulation in tests/test_evidence.py shows it): it is not
used for timings. `bootstrap` remains for statistics over seeds (the experiments')."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

from bench import record

CONFIDENCE = 0.95
RESAMPLES = 2000
SUPPORTED, CONTRADICTED, NOT_DETERMINED = "supported", "contradicted", "not determined"
NOT_TESTED = "not tested"  # the verdict's preconditions failed: no test was made (the reason says which)


@dataclass(frozen=True)
class Interval:
    """A statistic with its 95 % bootstrap interval and the number of samples behind it; without two samples in
    every group there is no interval (low and high are NaN)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def relative_width(self) -> float:
        return (self.high - self.low) / abs(self.value) if self.defined and self.value else math.nan

    def text(self, spec: str = ".3g", unit: str = "") -> str:
        """'1.18x [1.05, 1.31] (n=42)', or '1.18x (n=3: no interval)'."""
        if math.isnan(self.value):
            return "–"
        value = f"{self.value:{spec}}{unit}"
        if not self.defined:
            return f"{value} (n={self.n}: no interval)"
        return f"{value} [{self.low:{spec}}, {self.high:{spec}}] (n={self.n})"


NO_DATA = Interval(math.nan, math.nan, math.nan, 0)


def repeats(estimates) -> Interval:
    """A cell from its repeats' estimates (bench.record.repeats_interval): geometric mean, t interval on logs."""
    return Interval(*record.repeats_interval(list(estimates), CONFIDENCE))


def replication(estimates, another: int) -> Interval:
    """Where another sweep's estimate of the cell will fall, 95 %, if it runs `another` repeats: the t prediction
    interval (bench.record.repeats_interval with `another`). What `python -m analysis replicate` holds each sweep's
    estimate against; the confidence interval (`repeats`) says how well this sweep knows its own mean."""
    return Interval(*record.repeats_interval(list(estimates), CONFIDENCE, another=another))


def capture(n: int, m: int | None = None) -> float:
    """The share of replications (another sweep of m repeats, default n) whose estimate falls inside a 95 %
    confidence interval over n repeats, where both sweeps measure the same thing with the same spread: P(|T| <
    t_0.975 / sqrt(1 + n/m)), T Student's t with n - 1 degrees of freedom (Cumming & Maloney 2005). 0.88 for 5
    repeats a side, 0.91 for 3: a confidence interval is not a replication interval."""
    m = m or n
    if n < 2:
        return math.nan
    return float(2 * scipy.stats.t.cdf(_t(n - 1) / math.sqrt(1 + n / m), n - 1) - 1)


def _t(df: float) -> float:
    return float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def replicated(values, log: bool = True) -> Interval:
    """A statistic computed once per replicate (one round of the sweep: the runs of one seed and repeat), with
    Student's t interval over the replicates: on the logarithms for a ratio (`log`), as is for a slope."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x) and (x > 0 or not log)], dtype=float)
    if len(v) == 0:
        return NO_DATA
    w = np.log(v) if log else v
    back = np.exp if log else (lambda x: x)
    mean = float(w.mean())
    if len(w) < 2:
        return Interval(float(back(mean)), math.nan, math.nan, len(w))
    half = _t(len(w) - 1) * float(w.std(ddof=1)) / math.sqrt(len(w))
    return Interval(float(back(mean)), float(back(mean - half)), float(back(mean + half)), len(w))


def welch_ratio(a, b) -> Interval:
    """Geometric mean of `a` over that of `b`, two independent cells' repeat estimates, with Welch's t interval on
    the logarithms (Welch-Satterthwaite degrees of freedom)."""
    la = np.log([x for x in a if x and x > 0])
    lb = np.log([x for x in b if x and x > 0])
    if not len(la) or not len(lb):
        return NO_DATA
    value = float(np.exp(la.mean() - lb.mean()))
    if len(la) < 2 or len(lb) < 2:
        return Interval(value, math.nan, math.nan, min(len(la), len(lb)))
    va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    if va + vb == 0:
        return Interval(value, value, value, min(len(la), len(lb)))
    df = (va + vb) ** 2 / (va ** 2 / (len(la) - 1) + vb ** 2 / (len(lb) - 1))
    half = _t(df) * math.sqrt(va + vb)
    return Interval(value, value * math.exp(-half), value * math.exp(half), min(len(la), len(lb)))


DRAWS = 4000


def draws(estimates, seed: int = 0) -> np.ndarray:
    """DRAWS values of a cell's geometric-mean estimate from its t sampling distribution (log mean + its standard
    error x Student's t, repeats - 1 degrees of freedom): what an aggregate over independent cells is computed on.
    A cell of one repeat has no spread to draw from: its draws are its value (the aggregate's n says so)."""
    logs = np.log([x for x in estimates if x and x > 0])
    rng = np.random.default_rng(seed)
    if len(logs) < 2:
        return np.full(DRAWS, np.exp(logs.mean()) if len(logs) else np.nan)
    se = logs.std(ddof=1) / math.sqrt(len(logs))
    return np.exp(logs.mean() + se * rng.standard_t(len(logs) - 1, DRAWS))


def from_draws(value: float, drawn: np.ndarray, n: int, defined: bool = True) -> Interval:
    """An aggregate's interval from its draws (central 95 %); `defined` False when a cell behind it had one repeat."""
    if not defined or not np.isfinite(drawn).any():
        return Interval(value, math.nan, math.nan, n)
    low, high = np.nanpercentile(drawn, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return Interval(value, float(low), float(high), n)


def bootstrap(groups, statistic) -> Interval:
    """`statistic(*groups, axis=-1)` with its interval, each group resampled on its own (independent samples).
    `statistic` must be vectorised: it gets arrays whose last axis holds a resample of each group."""
    groups = [np.asarray(g, dtype=float) for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        return NO_DATA
    value = float(statistic(*groups, axis=-1))
    n = sum(len(g) for g in groups)
    if any(len(g) < 2 for g in groups) or not math.isfinite(value):
        return Interval(value, math.nan, math.nan, n)
    if all(np.ptp(g) == 0 for g in groups):  # no spread at all: the interval is the point
        return Interval(value, value, value, n)
    res = scipy.stats.bootstrap(groups, statistic, vectorized=True, paired=False, method="percentile",
                                n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                                random_state=np.random.default_rng(0))
    return Interval(value, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def median_of(groups) -> Interval:
    """The median of one pooled sample."""
    return bootstrap([np.concatenate([np.asarray(g, float) for g in groups])] if groups else [],
                     lambda x, axis: np.median(x, axis=axis))


def median_ratio(pairs) -> Interval:
    """The median over pairs (numerator samples, denominator samples) of median(numerator) / median(denominator),
    e.g. a batch-10 update's cost over a batch-1 update's, median over optimizers."""
    pairs = [(a, b) for a, b in pairs if len(a) and len(b)]
    if not pairs:
        return NO_DATA
    groups = [g for pair in pairs for g in pair]

    def statistic(*gs, axis):
        ratios = [np.median(gs[i], axis=axis) / np.median(gs[i + 1], axis=axis) for i in range(0, len(gs), 2)]
        return np.median(np.stack(ratios), axis=0)

    return bootstrap(groups, statistic)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict, decided by where an interval lies against a threshold."""

    outcome: str  # supported, contradicted or not determined
    interval: Interval
    threshold: float
    what: str  # the statistic whose interval decided it
    supported_below: bool  # the claim holds when the statistic is below the threshold

    def decided_by(self) -> str:
        return f"{self.what}: {self.interval.text('.3g')} vs {self.threshold:g}"

    def text(self, spec: str = ".3g") -> str:
        side = ("below" if self.supported_below else "above")
        why = {SUPPORTED: f"lies {side}", CONTRADICTED: f"lies {'above' if self.supported_below else 'below'}",
               NOT_DETERMINED: "straddles"}[self.outcome]
        if not self.interval.defined:
            why = "is not defined (fewer than two independent repeats)"
        return (f"**{self.outcome}**: the 95% interval of {self.what}, {self.interval.text(spec)}, {why} "
                f"{self.threshold:g} (the claim holds {side} it)")


def judge(interval: Interval, threshold: float, what: str, supported_below: bool = True) -> Verdict:
    """SUPPORTED when the whole interval lies on the claim's side of `threshold`, CONTRADICTED when it lies on the
    other side, NOT_DETERMINED when it straddles the threshold or there is no interval."""
    if not interval.defined:
        outcome = NOT_DETERMINED
    elif (interval.high < threshold) if supported_below else (interval.low > threshold):
        outcome = SUPPORTED
    elif (interval.low > threshold) if supported_below else (interval.high < threshold):
        outcome = CONTRADICTED
    else:
        outcome = NOT_DETERMINED
    return Verdict(outcome, interval, threshold, what, supported_below)
