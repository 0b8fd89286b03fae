"""The escape experiment's finding (bench/test_escape.py): per certified start point and learning rate, each arm's
escape times as right-censored survival data (Kaplan-Meier, scipy.stats.ecdf), arms compared by log-rank tests
(scipy.stats.logrank), and claim 3's verdict by a rule written before the run:

Preconditions (otherwise *not tested*, with the reason):
1. the start point carries a certificate and it certifies a strict saddle (bench/certify.py);
2. every rate of its grid is below 2 / lambda_max there (full-batch descent is stable: no catapult);
3. at every rate the full batch (float32, from the exact point) did not escape within its horizon, and that horizon
   is at least HORIZON_FACTOR (10) x the slowest minibatch arm's Kaplan-Meier median escape time (arms with a
   median).
Test, at each rate, each minibatch arm against the full batch over the updates both ran (log-rank, one-sided: the
minibatch escapes sooner):
* a rate *supports* the claim when some minibatch arm escapes sooner at p < ALPHA / (minibatch arms) (Bonferroni);
* it *contradicts* it when no minibatch arm escapes in most runs either: every arm's 95 % upper bound on the
  probability of escaping within its budget is below one half;
* otherwise it decides nothing.
Claim 3 is supported at the point when every rate supports it, contradicted when every rate contradicts it, and
not determined otherwise. The controls are reported beside it and do not enter the verdict: the full batch plus
isotropic noise of the minibatch noise's norm (log-rank against the full batch and against that minibatch arm), and
the full batch itself, whose only perturbation is float32 rounding (with the certificate's bound on the updates a
full batch provably stays within delta in float64 and from the rounded point).

Records of schema 2 (one uncertified stuck point, arms of the same updates and the same examples, the full batch at
other rates) are read as one uncertified start point: *not tested*.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats

from analysis import stats

NAME = "escape"  # the experiment's name in the records
ALPHA = 0.05
HORIZON_FACTOR = 10
LEGACY = "stuck point (schema 2, uncertified)"
RUN = ("machine", "profile", "escape.point", "escape.arm", "batch_size", "full_batch", "learning_rate", "seed",
       "escape.noise_batch", "repeat", "escape.budget_updates")  # what tells one run of the experiment from another


@dataclass
class Survival:
    """One arm at one rate: escape times (updates) with right censoring at each run's budget, and the Kaplan-Meier
    median with its 95 % interval (from the log-log pointwise band; inf: the band never falls to one half)."""

    arm: str  # minibatch, full, isotropic
    label: str  # "1", "10", "full", "isotropic (batch 10 noise)"
    batch_size: int
    rate: float
    times: np.ndarray  # updates to escape, or the budget where censored
    escaped: np.ndarray  # bool
    budgets: np.ndarray  # each run's update budget
    median: float = math.nan  # nan: the estimate never falls to one half
    low: float = math.nan
    high: float = math.inf
    # 95 % upper bound on the probability of escaping within the budget: Clopper-Pearson where every run that did not
    # escape ran the whole budget, else the Kaplan-Meier band's
    escape_high: float = math.nan

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def events(self) -> int:
        return int(self.escaped.sum())

    @property
    def budget(self) -> int:
        """The updates every run of the arm was given (the least budget)."""
        return int(self.budgets.min()) if self.n else 0

    def data(self) -> scipy.stats.CensoredData:
        return scipy.stats.CensoredData(uncensored=self.times[self.escaped], right=self.times[~self.escaped])

    def text(self) -> str:
        count = f"{self.events} of {self.n} escaped within {self.budget:,} updates"
        if math.isnan(self.median):
            return f"median not reached ({count})"
        high = "∞" if math.isinf(self.high) else f"{self.high:,.0f}"
        return f"median {self.median:,.0f} updates [{self.low:,.0f}, {high}] ({count})"


def kaplan_meier(s: Survival) -> Survival:
    """The arm's Kaplan-Meier median, its interval and the upper bound on escaping within the budget, filled in."""
    if not s.n:
        return s
    if (s.times[~s.escaped] >= s.budget).all():  # no run stopped early: the count within the budget is binomial
        s.escape_high = float(scipy.stats.binomtest(s.events, s.n).proportion_ci(stats.CONFIDENCE).high)
    if not s.events:
        return s
    fit = scipy.stats.ecdf(s.data())
    with warnings.catch_warnings():  # the band is undefined where the estimate reaches 0: NaN, read as 0
        warnings.simplefilter("ignore", RuntimeWarning)
        band = fit.sf.confidence_interval(stats.CONFIDENCE, method="log-log")
    t = fit.sf.quantiles

    def first(values) -> float:
        below = np.flatnonzero(np.nan_to_num(values, nan=0.0) <= 0.5)
        return float(t[below[0]]) if len(below) else math.inf

    s.median = first(fit.sf.probabilities)
    s.median = math.nan if math.isinf(s.median) else s.median
    s.low, s.high = first(band.low.probabilities), first(band.high.probabilities)
    if math.isnan(s.escape_high):  # runs censored before the budget: the Kaplan-Meier band at the budget
        s.escape_high = 1 - float(np.nan_to_num(band.low.evaluate(s.budget), nan=0.0))
    return s


@dataclass
class LogRank:
    """A log-rank test of `arm` against `against` (scipy.stats.logrank; z > 0: `arm` escapes sooner)."""

    arm: str
    against: str
    rate: float
    statistic: float
    pvalue: float  # one-sided (arm sooner) unless `sided` says two-sided
    sided: str = "one-sided"

    def text(self) -> str:
        return f"z = {self.statistic:.2f}, p = {self.pvalue:.2g} ({self.sided})"

    def names(self) -> tuple[str, str]:
        """The two arms as the report names them ('batch 10', 'full batch', the isotropic arm's label)."""
        return tuple(f"batch {a}" if a.isdigit() else "the full batch" if a == "full" else a
                     for a in (self.arm, self.against))


def log_rank(a: Survival, b: Survival, alternative: str = "greater") -> LogRank:
    """`a` against `b` over the updates both ran (each censored at the shorter budget): a longer horizon of one arm
    is no evidence about the times the other never watched. No event in either: z = 0, p = 1."""
    horizon = min(a.budget, b.budget)

    def cut(s: Survival) -> scipy.stats.CensoredData:
        done = s.escaped & (s.times <= horizon)
        times = np.minimum(s.times, horizon)
        return scipy.stats.CensoredData(uncensored=times[done], right=times[~done])

    x, y = cut(a), cut(b)
    if not (len(x._uncensored) + len(y._uncensored)):
        return LogRank(a.label, b.label, a.rate, 0.0, 1.0, "one-sided" if alternative != "two-sided" else alternative)
    with warnings.catch_warnings():  # every event at one time with nobody left at risk: no variance, no evidence
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.logrank(x, y, alternative=alternative)
    z, p = float(res.statistic), float(res.pvalue)
    return LogRank(a.label, b.label, a.rate, z if math.isfinite(z) else 0.0, p if math.isfinite(p) else 1.0,
                   "two-sided" if alternative == "two-sided" else "one-sided")


@dataclass
class PointVerdict:
    """Claim 3's verdict at one start point, with what decided it."""

    outcome: str  # stats.SUPPORTED, CONTRADICTED, NOT_DETERMINED or NOT_TESTED
    reason: str  # what decided it (the failed precondition for NOT_TESTED)
    deciding: LogRank | None = None  # the test at the rate that decided (the weakest rate's best arm)
    interval: Survival | None = None  # that arm's survival (its median and interval)


@dataclass
class PointResult:
    """One start point: its certificate, every arm at every rate, the tests, the controls and the verdict."""

    point: str
    certificate: dict | None  # the Certificate's fields (None: schema 2)
    rates: list
    arms: dict  # (rate, label) -> Survival
    tests: list  # LogRank: each minibatch arm against the full batch
    controls: list  # LogRank: the isotropic arm against the full batch and against its minibatch arm
    verdict: PointVerdict | None = None

    def at(self, rate: float, arm: str) -> list[Survival]:
        return [s for (r, _), s in self.arms.items() if r == rate and s.arm == arm]


@dataclass
class EscapeFinding:
    """Section 10's verdicts and figure 10's data."""

    profile: str
    train_size: int
    delta: float | None
    margin: float
    points: dict = field(default_factory=dict)  # point -> PointResult

    def title(self) -> str:
        """The verdict per point and, at its first rate, the medians that say why: the full batch's, the fastest
        minibatch arm's and the isotropic control's."""
        lines = [f"Claim 3 at certified saddles ({self.train_size:,} examples): fraction of runs still at the point "
                 "(Kaplan-Meier; + censored)"]
        for p in self.points.values():
            line = f"{p.point}: {p.verdict.outcome}"
            if p.rates:
                medians = _first_rate_medians(p, p.rates[0])
                if medians:
                    line += f"; median updates to escape at rate {p.rates[0]:g}: " + ", ".join(medians)
            lines.append(line)
        return "\n".join(lines)


def _first_rate_medians(p: PointResult, rate: float) -> list[str]:
    def median(s: Survival) -> str:
        return "never" if math.isnan(s.median) else f"{s.median:,.0f}"

    out = [f"full batch {median(s)}" for s in p.at(rate, "full")]
    minis = [s for s in p.at(rate, "minibatch") if not math.isnan(s.median)]
    if minis:
        best = min(minis, key=lambda s: s.median)
        out.append(f"fastest minibatch (batch {best.batch_size}) {median(best)}")
    out += [f"{s.label} {median(s)}" for s in p.at(rate, "isotropic")]
    return out


def _times(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    escaped = g["escape.escaped"].astype(bool).to_numpy()
    times = np.where(escaped, g["escape.updates_to_escape"].fillna(0), g["escape.budget_updates"]).astype(float)
    if "updates" in g:  # a run that stopped early without escaping (diverged) is censored where it stopped
        done = g["updates"].to_numpy(dtype=float)
        times = np.where(escaped | np.isnan(done), times, np.minimum(times, done))
    return times.astype(float), escaped


def _arm_of(row) -> tuple[str, str]:
    """(arm, label) of a record: schema 2's arms read as minibatch and full of the same updates."""
    arm = row["escape.arm"]
    if arm == "isotropic":
        return arm, f"isotropic (batch {int(row['escape.noise_batch'])} noise)"
    if arm in ("full", "minibatch"):
        return arm, row["batch_label"]
    return ("full" if row["full_batch"] else "minibatch"), row["batch_label"]


def survivals(runs: pd.DataFrame) -> dict:
    """{(rate, label): Survival} of one start point's runs (the same-updates runs of schema 2)."""
    runs = runs[~runs["escape.arm"].isin(["examples"])]
    keyed = runs.assign(_arm=[_arm_of(r) for _, r in runs.iterrows()])
    out = {}
    for (rate, (arm, label)), g in keyed.groupby(["learning_rate", "_arm"], sort=True):
        times, escaped = _times(g)
        budgets = g["escape.budget_updates"].to_numpy(dtype=float)
        out[(float(rate), label)] = kaplan_meier(Survival(arm, label, int(g["batch_size"].iloc[0]), float(rate),
                                                          times, escaped, budgets))
    return out


def push(certificate: dict | None) -> str:
    """What moves the full batch off a point: float32 rounding where the float64 gradient is at rounding level
    (the rounded point's gradient 100x larger), else the point's own residual gradient."""
    if certificate is None:
        return "its gradient"
    if certificate["grad_norm_rounded"] > 100 * certificate["grad_norm"]:
        return (f"float32 rounding alone (‖g‖ {certificate['grad_norm']:.2g} in float64, "
                f"{certificate['grad_norm_rounded']:.2g} at the rounded point)")
    return f"the point's residual gradient (‖g‖ {certificate['grad_norm']:.2g}) with float32 rounding"


def _limits(point: PointResult) -> str | None:
    """The failed precondition 1 or 2, or None."""
    c = point.certificate
    if c is None:
        return "the start point carries no certificate (a record from before certified start points)"
    if not c.get("certified"):
        return "the start point is not a certified strict saddle: " + "; ".join(c.get("failed") or ["no reason"])
    lmax = c.get("lambda_max") or math.nan
    above = [r for r in point.rates if not r * lmax < 2]
    if above:
        return (f"rate {above[0]:g} is not below 2 / lambda_max = {2 / lmax:.3g}: full-batch descent is unstable "
                "there, and a loss spike is not an escape")
    return None


def _full_stayed(point: PointResult) -> str | None:
    """The failed precondition 3, or None."""
    for rate in point.rates:
        full, mini = point.at(rate, "full"), point.at(rate, "minibatch")
        if not full:
            return f"no full-batch run at rate {rate:g}"
        f = full[0]
        if f.events:
            first = int(f.times[f.escaped].min())
            return (f"the full batch escaped at rate {rate:g} ({f.events} of {f.n} runs, the first after {first:,} "
                    f"updates): {push(point.certificate)} took it off the point")
        medians = [s.median for s in mini if not math.isnan(s.median)]
        if medians and f.budget < HORIZON_FACTOR * max(medians):
            return (f"the full batch's horizon at rate {rate:g} ({f.budget:,} updates) is shorter than "
                    f"{HORIZON_FACTOR}x the slowest minibatch arm's median ({max(medians):,.0f})")
    return None


def _rate_outcome(point: PointResult, rate: float) -> tuple[str, LogRank | None, Survival | None]:
    """One rate's outcome by the rule (module docstring), the deciding test and its arm."""
    mini = point.at(rate, "minibatch")
    tests = [t for t in point.tests if t.rate == rate]
    if not tests:
        return stats.NOT_DETERMINED, None, None
    best = min(tests, key=lambda t: (t.pvalue, -t.statistic))
    arm = next(s for s in mini if s.label == best.arm)
    if best.pvalue < ALPHA / len(mini):
        return stats.SUPPORTED, best, arm
    if all(s.escape_high < 0.5 for s in mini):
        return stats.CONTRADICTED, best, arm
    return stats.NOT_DETERMINED, best, arm


def decide(point: PointResult) -> PointVerdict:
    """Claim 3's verdict at one start point (the rule in the module docstring)."""
    failed = _limits(point) or _full_stayed(point)
    if failed:
        return PointVerdict(stats.NOT_TESTED, failed)
    outcomes = {rate: _rate_outcome(point, rate) for rate in point.rates}
    kinds = {o for o, _, _ in outcomes.values()}
    single = len(kinds) == 1 and kinds <= {stats.SUPPORTED, stats.CONTRADICTED}
    outcome = next(iter(kinds)) if single else stats.NOT_DETERMINED
    weakest = max(outcomes, key=lambda r: outcomes[r][1].pvalue if outcomes[r][1] else math.inf)
    _, test, arm = outcomes[weakest]
    words = {stats.SUPPORTED: "at every rate a minibatch arm escapes sooner than the full batch, which stays",
             stats.CONTRADICTED: "at every rate no minibatch arm escapes in most runs either",
             stats.NOT_DETERMINED: ("the rates do not agree: " + ", ".join(
                 f"{r:g}: {o}" for r, (o, _, _) in outcomes.items()) if len(kinds | {outcome}) > 1 else
                 "no minibatch arm escaped significantly sooner than the full batch, nor did every arm mostly stay "
                 "(too few runs or escapes to tell)")}
    return PointVerdict(outcome, words[outcome], test, arm)


def point_result(point: str, runs: pd.DataFrame) -> PointResult:
    """One start point's arms, tests, controls and verdict."""
    cert_cols = [c for c in runs if c.startswith("escape.certificate.")]
    first = runs.iloc[0]
    certificate = ({c.removeprefix("escape.certificate."): first[c] for c in cert_cols}
                   if cert_cols and isinstance(first.get("escape.certificate.point"), str) else None)
    arms = survivals(runs)
    rates = sorted({r for r, _ in arms})
    result = PointResult(point, certificate, rates, arms, [], [])
    for rate in rates:
        full = result.at(rate, "full")
        for s in result.at(rate, "minibatch"):
            if full:
                result.tests.append(log_rank(s, full[0]))
        for iso in result.at(rate, "isotropic"):
            if full:
                result.controls.append(log_rank(iso, full[0]))
            batch = iso.label.split("batch ")[-1].split(" ")[0]
            result.controls += [log_rank(s, iso, "two-sided") for s in result.at(rate, "minibatch") if s.label == batch]
    result.verdict = decide(result)
    return result


def finding(runs: pd.DataFrame) -> EscapeFinding | None:
    """The escape experiment's finding from its runs (records of experiment escape); None when there are none."""
    runs = runs[runs["escape.arm"].notna() & runs["status"].isin(["ok", "diverged"])]
    if runs.empty:
        return None
    # one row per run: a join elsewhere that matched several rows (the speed-up over batch 1 across rates) must not
    # count a run twice in its survival data
    runs = runs.drop_duplicates(subset=[c for c in RUN if c in runs])
    points = runs["escape.point"].fillna(LEGACY) if "escape.point" in runs else pd.Series(LEGACY, index=runs.index)
    first = runs.iloc[0]
    delta = first.get("escape.delta")
    out = EscapeFinding(str(first["profile"]), int(first["train_size"]),
                        None if delta is None or pd.isna(delta) else float(delta), float(first["escape.margin"]))
    for point in dict.fromkeys(points):
        out.points[point] = point_result(point, runs[points == point])
    return out
