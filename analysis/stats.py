"""Uncertainty: percentile-bootstrap intervals (scipy.stats.bootstrap) over each cell's steady samples (pooled
over seeds) or over seeds, and the three-valued verdicts those intervals decide."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

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

    def text(self, spec: str = ".3g") -> str:
        side = ("below" if self.supported_below else "above")
        why = {SUPPORTED: f"lies {side}", CONTRADICTED: f"lies {'above' if self.supported_below else 'below'}",
               NOT_DETERMINED: "straddles"}[self.outcome]
        if not self.interval.defined:
            why = "is not defined (fewer than two samples in a group)"
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
