"""The tuning experiment's findings (bench/test_tuning.py): the searched and chosen learning rates and their edges,
steps to the validation target against batch size at tuned rates with the fit S(B) = S_min (1 + B_crit / B) (Shallue
et al. 2018; McCandlish et al. 2018), the gradient noise scale at the target from the same runs beside B_crit, this
machine's time to target, speed against stability, and the optimizer ranking."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats

from analysis import stats
from analysis.stats import Interval
from bench.record.tuning import steps_to_target

NAME = "tuning"  # the experiment's name in the records
PERFECT_SLOPE = -0.5  # steps vs batch size, log-log: -1 is perfect scaling, 0 none; steeper than this counts
RESOLUTION = 0.05  # the steps' resolution (the check interval) must be at most this share of the steps reported
REGIME_TOL = 0.10  # perfect scaling: steps within 10 % of the perfect-scaling line; maximal data parallelism: of S_min
FIT_DECADES = 2.0  # B_crit is searched from the smallest batch / 10^2 to the largest x 10^2; at a bound it is open
FIT_PER_DECADE = 200  # grid points of B_crit per decade (0.5 % apart), refined by a bounded scalar search
FIT_RESAMPLES = 2000


def model_steps(batch, s_min: float, b_crit: float):
    """S(B) = S_min (1 + B_crit / B): steps to a target at batch B (McCandlish et al. 2018, eq. 2.11)."""
    return s_min * (1 + b_crit / np.asarray(batch, dtype=float))


# --- the fit ----------------------------------------------------------------------------------------------------

@dataclass
class ScalingFit:
    """S(B) = S_min (1 + B_crit / B) fitted to one optimizer's final runs (least squares on log steps), with 95 %
    percentile intervals from a bootstrap that resamples the seeds within each batch size."""

    optimizer: str
    s_min: Interval
    b_crit: Interval
    runs: int  # step counts in the fit (runs that reached the target)
    batch_sizes: list
    left_out: int  # runs that never reached the target (censored: not in the fit)
    open_low: bool = False  # the interval's low end is at the search's bound: B_crit is not bounded below by these data
    open_high: bool = False
    bounds: tuple = (math.nan, math.nan)
    b_simple: Interval = stats.NO_DATA  # the noise scale at the target from the same runs (median), same bootstrap
    ratio: Interval = stats.NO_DATA  # b_simple / b_crit, same bootstrap

    @property
    def perfect_until(self) -> Interval:
        """The largest batch with steps within REGIME_TOL of perfect scaling: B_crit/(B+B_crit) >= 1/(1+tol)."""
        return _scaled(self.b_crit, REGIME_TOL)

    @property
    def parallel_from(self) -> Interval:
        """The smallest batch with steps within REGIME_TOL of S_min: 1 + B_crit/B <= 1 + tol."""
        return _scaled(self.b_crit, 1 / REGIME_TOL)

    def b_crit_text(self, spec: str = ".3g") -> str:
        return _open_text(self.b_crit, self.open_low, self.open_high, spec)


def _scaled(i: Interval, k: float) -> Interval:
    return Interval(i.value * k, i.low * k, i.high * k, i.n)


def _open_text(i: Interval, open_low: bool, open_high: bool, spec: str = ".3g") -> str:
    if math.isnan(i.value):
        return "–"
    if not i.defined:
        return i.text(spec)
    low = f"<{i.low:{spec}}" if open_low else f"{i.low:{spec}}"
    high = f">{i.high:{spec}}" if open_high else f"{i.high:{spec}}"
    return f"{i.value:{spec}} [{low}, {high}] (n={i.n})"


def _grid(batches) -> np.ndarray:
    lo = math.log10(min(batches)) - FIT_DECADES
    hi = math.log10(max(batches)) + FIT_DECADES
    return np.logspace(lo, hi, int((hi - lo) * FIT_PER_DECADE) + 1)


def _rss(logs: np.ndarray, batches: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Residual sums of squares of log S = log S_min + log(1 + c/B) at each c of `grid`, S_min at its optimum for
    each c (the mean residual): logs and batches are (..., n) arrays, the result (..., len(grid))."""
    shape = np.log1p(grid[:, None] / batches[..., None, :])  # (..., g, n)
    r = logs[..., None, :] - shape
    return ((r - r.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)


def fit_scaling(batches, steps) -> tuple[float, float, bool, bool]:
    """(S_min, B_crit, at the low bound, at the high bound) of S = S_min (1 + B_crit / B), least squares on log S:
    the profile over B_crit on a log grid, refined by a bounded scalar search between the grid's neighbours."""
    b, y = np.asarray(batches, dtype=float), np.log(np.asarray(steps, dtype=float))
    grid = _grid(b)
    k = int(np.argmin(_rss(y, b, grid)))
    if 0 < k < len(grid) - 1:
        res = scipy.optimize.minimize_scalar(lambda lc: float(_rss(y, b, np.array([math.exp(lc)]))[0]),
                                             bounds=(math.log(grid[k - 1]), math.log(grid[k + 1])), method="bounded")
        c = math.exp(res.x)
    else:
        c = float(grid[k])
    s_min = math.exp(float(np.mean(y - np.log1p(c / b))))
    return s_min, c, k == 0, k == len(grid) - 1


def _resample(groups: list, rng, resamples: int) -> list:
    """Per group (a batch size's runs), `resamples` x len(group) indices drawn with replacement."""
    return [rng.integers(0, len(g), size=(resamples, len(g))) for g in groups]


def bootstrap_fit(batches, steps, noise=None, resamples: int = FIT_RESAMPLES, seed: int = 0) -> dict:
    """The fit and its 95 % intervals, resampling the runs within each batch size (the seeds); with `noise` (each
    run's B_simple at the target, None where it has none) the median B_simple and its ratio to B_crit under the same
    resamples. Returns {s_min, b_crit, b_simple, ratio: Interval, open_low, open_high, bounds}."""
    b, s = np.asarray(batches, dtype=float), np.asarray(steps, dtype=float)
    z = np.array([np.nan if v is None else v for v in (noise if noise is not None else [None] * len(b))], float)
    sizes = sorted(set(b))
    groups = [np.flatnonzero(b == x) for x in sizes]
    s_min, c, at_low, at_high = fit_scaling(b, s)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([g[i] for g, i in zip(groups, _resample(groups, rng, resamples))], axis=1)  # (R, n)
    grid = _grid(b)
    cs = np.empty(resamples)
    for chunk in range(0, resamples, 100):
        part = idx[chunk:chunk + 100]
        cs[chunk:chunk + 100] = grid[np.argmin(_rss(np.log(s[part]), b[part], grid), axis=1)]
    mins = np.exp(np.mean(np.log(s[idx]) - np.log1p(cs[:, None] / b[idx]), axis=1))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any probed run: NaN, dropped below
        z_med = np.nanmedian(z[idx], axis=1) if np.isfinite(z).any() else None
    n = len(b)
    out = {"s_min": _interval(s_min, mins, n), "b_crit": _interval(c, cs, n),
           "open_low": at_low or bool(np.quantile(cs, 0.025) <= grid[0]),
           "open_high": at_high or bool(np.quantile(cs, 0.975) >= grid[-1]), "bounds": (grid[0], grid[-1]),
           "b_simple": stats.NO_DATA, "ratio": stats.NO_DATA}
    if z_med is not None:
        zn = int(np.isfinite(z).sum())
        out["b_simple"] = _interval(float(np.nanmedian(z)), z_med, zn)
        out["ratio"] = _interval(float(np.nanmedian(z)) / c, z_med / cs, zn)
    return out


def _interval(value: float, resampled, n: int) -> Interval:
    resampled = np.asarray(resampled, dtype=float)
    resampled = resampled[np.isfinite(resampled)]
    if n < 2 or len(resampled) < 2:
        return Interval(value, math.nan, math.nan, n)
    low, high = np.quantile(resampled, [(1 - stats.CONFIDENCE) / 2, (1 + stats.CONFIDENCE) / 2])
    return Interval(value, float(low), float(high), n)


# --- per run ----------------------------------------------------------------------------------------------------

def _crossing(row):
    if row["status"] != "ok":
        return None
    return steps_to_target(row["val_accuracy_by_epoch"], int(row["steps_per_epoch"]), float(row["target_accuracy"]))


def _with_steps(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with their crossing of the target: steps (interpolated), the checks around it, the accuracy's slope
    there, the check interval and the budget."""
    runs = runs.copy()
    crossings = [_crossing(r) for _, r in runs.iterrows()]
    runs["steps"] = [c.steps if c else None for c in crossings]
    runs["first_check"] = [bool(c and c.first_check) for c in crossings]
    runs["slope"] = [c.slope if c else None for c in crossings]
    runs["interval"] = runs["steps_per_epoch"].astype(int)
    runs["budget"] = (runs["epochs"] * runs["steps_per_epoch"]).astype(int)
    return runs


def _median(values) -> Interval:
    return stats.bootstrap([values], lambda x, axis: np.median(x, axis=axis))


def _share(k: int, n: int) -> Interval:
    """k of n, with its 95 % Clopper-Pearson interval."""
    if n == 0:
        return stats.NO_DATA
    ci = scipy.stats.binomtest(k, n).proportion_ci(stats.CONFIDENCE)
    return Interval(k / n, float(ci.low), float(ci.high), n)


def _column(df: pd.DataFrame, name: str, default=None) -> list:
    return list(df[name]) if name in df else [default] * len(df)


def val_noise(target: float, val_size: int) -> float:
    """The binomial standard error of an accuracy of `target` measured on `val_size` examples."""
    return math.sqrt(target * (1 - target) / val_size)


# --- trials -----------------------------------------------------------------------------------------------------

def _rates(trials: pd.DataFrame, chosen: dict) -> pd.DataFrame:
    """One row per optimizer, batch size and rate tried: its result over the trial seeds (median updates to the
    target, a seed that did not reach it counting as never; median final validation loss), whether every seed
    finished ok, and whether it was chosen."""
    rows = []
    for (opt, bs, lr), g in trials.groupby(["optimizer", "batch_size", "lr_setting"], sort=True):
        ok = g["status"] == "ok"
        steps = [s if o and s is not None and not pd.isna(s) else math.inf for s, o in zip(g["steps"], ok)]
        failed = {st: int((g["status"] == st).sum()) for st in sorted(set(g["status"])) if st != "ok"}
        rows.append({"optimizer": opt, "batch_size": int(bs), "batch_label": g["batch_label"].iloc[0],
                     "learning_rate": float(lr), "seeds": len(g), "reached": int(np.isfinite(steps).sum()),
                     "steps": float(np.median(steps)), "val_loss": float(np.median(
                         [v if v is not None and not pd.isna(v) else math.inf for v in g["val_loss"]])),
                     "val_accuracy": float(np.median([v if v is not None and not pd.isna(v) else 0.0
                                                      for v in g["val_accuracy"]])),
                     "status": ", ".join(f"{st} {k}/{len(g)}" for st, k in failed.items()) or "ok",
                     "eligible": bool(ok.all()), "base": bool(g["base"].all()),
                     "chosen": (opt, bs) in chosen and math.isclose(chosen[(opt, bs)], lr, rel_tol=1e-9)})
    return pd.DataFrame(rows)


def _choices(finals: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and batch size: the chosen rate, where it sits among the rates tried, the rates the widening
    added, and whether the widening reached its limit."""
    rows = []
    tuned = finals[finals["role"] == "tuned"]
    for (opt, bs), g in tuned.groupby(["optimizer", "batch_size"], sort=False):
        first = g.iloc[0]
        tried = rates[(rates["optimizer"] == opt) & (rates["batch_size"] == bs)]
        widened = [float(r) for r in (first.get("tuning.widened") or [])]
        limit = first.get("tuning.widen_limit")
        edge = first.get("tuning.edge")
        base = [float(r) for r in (first.get("tuning.grid") or [])]
        side = [r for r in widened if (r < min(base) if edge == "low" else r > max(base))] if base else []
        rows.append({"optimizer": opt, "batch_size": int(bs), "batch_label": first["batch_label"],
                     "chosen": first.get("tuning.chosen"), "edge": edge or "interior",
                     "rates": len(tried), "widened": widened,
                     "limit": None if limit is None or pd.isna(limit) else int(limit),
                     "at_limit": edge in ("low", "high") and limit is not None and not pd.isna(limit)
                     and len(side) >= int(limit)})
    return pd.DataFrame(rows)


# --- final runs ---------------------------------------------------------------------------------------------------

def _cell_steps(opt, bs, role, g: pd.DataFrame, noise_sd: float) -> dict:
    """One optimizer, batch size and role's final runs: median steps to the target over the seeds that reached it
    (95 % bootstrap interval), the time to target on this machine, the resolution and the validation noise in steps,
    and the median noise scale at the target."""
    reached = [float(s) for s in g["steps"] if s is not None and not pd.isna(s)]
    steps = _median(reached) if reached else stats.NO_DATA
    # time to target on this machine: each seed's steps at its own run's estimate (its fastest steady sample per
    # update, the suite's timing estimator); the seeds are the cell's repeats (stats.repeats: t over them)
    times = [float(s) * float(t) for s, t in zip(g["steps"], g["time_per_update_s"])
             if s is not None and not pd.isna(s) and t is not None and not pd.isna(t) and t > 0]
    time = stats.repeats(times) if times else stats.NO_DATA
    slopes = [s for s in g["slope"] if s is not None and not pd.isna(s) and s > 0]
    noise = [v for v in _column(g, "tuning.noise.b_simple") if v is not None and not pd.isna(v)]
    interval = int(g["interval"].iloc[0])
    return {"optimizer": opt, "batch_size": int(bs), "batch_label": g["batch_label"].iloc[0], "role": role,
            "steps": steps, "reached": len(reached), "runs": len(g), "time": time,
            "steps_by_seed": list(g["steps"]), "learning_rate": float(g["learning_rate"].iloc[0]),
            "interval": interval, "budget": int(g["budget"].iloc[0]),
            "resolution": interval / steps.value if reached else math.nan,
            "first_check": int(g["first_check"].sum()),
            "noise_steps": float(np.median([noise_sd / s for s in slopes])) if slopes else math.nan,
            "b_simple": _median(noise) if noise else stats.NO_DATA}


def std_interval(values) -> Interval:
    """The standard deviation of `values` with its 95 % normal-theory interval, s sqrt((n-1) / chi2_(n-1)) at the
    chi-square quantiles: over five seeds a percentile bootstrap of a standard deviation is far too narrow (its
    resamples repeat seeds, so it reaches zero)."""
    n = len(values)
    if n < 2:
        return Interval(math.nan, math.nan, math.nan, n)
    s = float(np.std(values, ddof=1))
    q = scipy.stats.chi2.ppf([(1 + stats.CONFIDENCE) / 2, (1 - stats.CONFIDENCE) / 2], n - 1)
    return Interval(s, s * math.sqrt((n - 1) / q[0]), s * math.sqrt((n - 1) / q[1]), n)


def _stability(finals: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and batch size, the tuned runs' speed (time to target on this machine) and stability: the share
    of seeds that reached the target (Clopper-Pearson), the share that diverged, and the seed-to-seed spread (standard
    deviation) of the final validation accuracy with its normal-theory interval (std_interval)."""
    rows = []
    for (opt, bs), g in finals[finals["role"] == "tuned"].groupby(["optimizer", "batch_size"], sort=False):
        acc = [float(a) for a, st in zip(g["val_accuracy"], g["status"]) if st == "ok" and a is not None
               and not pd.isna(a)]
        spread = std_interval(acc)
        reached = int(sum(s is not None and not pd.isna(s) for s in g["steps"]))
        rows.append({"optimizer": opt, "batch_size": int(bs), "batch_label": g["batch_label"].iloc[0],
                     "runs": len(g), "reached": _share(reached, len(g)),
                     "diverged": _share(int((g["status"] == "diverged").sum()), len(g)),
                     "failed": int((~g["status"].isin(["ok", "diverged"])).sum()), "spread": spread,
                     "val_accuracy": _median(acc) if acc else stats.NO_DATA})
    return pd.DataFrame(rows)


def _fits(finals: pd.DataFrame, resamples: int) -> dict:
    """Per optimizer, S(B) = S_min (1 + B_crit / B) over its tuned runs that reached the target (at least three batch
    sizes), with the noise scale at the target of the same runs; an optimizer with too few is left out."""
    out = {}
    for opt, g in finals[finals["role"] == "tuned"].groupby("optimizer", sort=False):
        done = g[[s is not None and not pd.isna(s) for s in g["steps"]]]
        if done["batch_size"].nunique() < 3:
            continue
        found = bootstrap_fit(list(done["batch_size"]), list(done["steps"]), _column(done, "tuning.noise.b_simple"),
                              resamples=resamples)
        out[opt] = ScalingFit(opt, found["s_min"], found["b_crit"], len(done), sorted(set(done["batch_size"])),
                              len(g) - len(done), found["open_low"], found["open_high"], found["bounds"],
                              found["b_simple"], found["ratio"])
    return out


def agreement(fit: ScalingFit) -> str:
    """B_simple against B_crit: 'agree' when the interval of their ratio contains 1, 'B_simple larger' or 'smaller'
    when it lies wholly above or below 1, 'not determined' without an interval (or with B_crit unbounded)."""
    r = fit.ratio
    if not r.defined or fit.open_low or fit.open_high:
        return stats.NOT_DETERMINED
    if r.low > 1:
        return "B_simple larger"
    if r.high < 1:
        return "B_simple smaller"
    return "agree"


def _ranking(finals: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the optimizers by updates to the target at tuned rates (fewest first), and by final validation
    accuracy at tuned and (where they ran) pinned rates, with whether tuning changed the winner."""
    rows = []
    for label, g in finals.groupby("batch_label", sort=False):
        row, winners = {"batch": label}, {}
        tuned = steps[(steps["role"] == "tuned") & (steps["batch_label"] == label)]
        order = tuned.sort_values("steps", key=lambda s: [v.value if v.n else math.inf for v in s])
        row["tuned: updates to target, fewest first"] = " < ".join(
            f"{r['optimizer']} {r['steps'].text('.3g')}" if r["reached"] else f"{r['optimizer']} never"
            for _, r in order.iterrows())
        for role in ("tuned", "pinned"):
            sel = g[g["role"] == role]
            if sel.empty:
                continue
            accs = {o: _median(list(s["val_accuracy"].dropna())) for o, s in sel.groupby("optimizer", sort=False)}
            best = sorted(accs, key=lambda o: -accs[o].value if not math.isnan(accs[o].value) else math.inf)
            winners[role] = best[0]
            row[f"{role}: final validation accuracy, best first"] = " > ".join(f"{o} {accs[o].text('.3f')}"
                                                                             for o in best)
        if len(winners) == 2:
            row["winner changed by tuning"] = "yes" if winners["pinned"] != winners["tuned"] else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def _scaling_end(steps: pd.DataFrame) -> dict:
    """Per optimizer: the last batch size up to which steps to target fall at least as 1/sqrt(batch) from one
    batch size to the next (log-log slope <= PERFECT_SLOPE), with every slope, and the first batch that reached it."""
    out = {}
    for opt, g in steps[steps["role"] == "tuned"].groupby("optimizer", sort=False):
        g = g.sort_values("batch_size")
        pts = [(b, s.value) for b, s, r in zip(g["batch_size"], g["steps"], g["reached"]) if r and s.n]
        slopes, end = {}, None
        for (b1, s1), (b2, s2) in zip(pts, pts[1:]):
            slopes[(int(b1), int(b2))] = math.log(s2 / s1) / math.log(b2 / b1)
        for (b1, b2), slope in slopes.items():
            if slope > PERFECT_SLOPE:
                break
            end = b2
        out[opt] = (end, slopes, int(pts[0][0]) if pts else None)  # None: no near-perfect step at all
    return out


@dataclass
class TuningFinding:
    profile: str
    train_size: int
    target: float
    optimizers: list
    checks: int  # validation checks per run
    val_size: int  # validation examples each check reads
    trial_seeds: list
    final_seeds: list
    widen_limit: int | None
    trial_runs: pd.DataFrame  # one row per trial run: optimizer, batch, learning_rate (lr_setting), seed, steps, ...
    trials: pd.DataFrame  # one row per optimizer, batch size and rate tried: its result over the trial seeds
    choices: pd.DataFrame  # per optimizer and batch size: chosen rate, edge, widened rates, at the limit
    steps: pd.DataFrame  # per optimizer, batch size and role: steps (Interval), reached, time, resolution, B_simple
    stability: pd.DataFrame  # per optimizer and batch size (tuned): reached, diverged (shares), spread, accuracy
    fits: dict  # optimizer -> ScalingFit
    ranking: pd.DataFrame
    scaling_end: dict = field(default_factory=dict)  # optimizer -> (end, {(b1, b2): slope}, first batch reached)
    resamples: int = FIT_RESAMPLES  # the fit's bootstrap resamples

    @property
    def val_noise(self) -> float:
        return val_noise(self.target, self.val_size)

    @property
    def budget_updates(self) -> int:
        return int(self.steps["budget"].max()) if len(self.steps) else 0

    @property
    def resolution(self) -> float:
        """The coarsest resolution among the tuned step counts reported: check interval / steps."""
        r = self.steps.loc[self.steps["role"] == "tuned", "resolution"].dropna() if len(self.steps) else []
        return float(max(r)) if len(r) else math.nan

    def edges(self) -> pd.DataFrame:
        """The chosen rates still on an edge of the rates tried."""
        return self.choices[self.choices["edge"] != "interior"] if len(self.choices) else self.choices

    def sensitivity_title(self) -> str:
        return f"Learning-rate search: {_chosen_text(self.choices)}"

    def title(self) -> str:
        parts = [f"{o}: B_crit {f.b_crit_text('.2g')}" for o, f in self.fits.items()]
        fit = "; ".join(parts) if parts else "too few batch sizes reached the target for a fit"
        return (f"Steps to {self.target:.0%} validation accuracy at tuned learning rates, S = S_min (1 + B_crit/B): "
                f"{fit}")

    def stability_title(self) -> str:
        s = self.stability
        if s.empty:
            return "Speed vs stability: no tuned runs"
        t = self.steps[(self.steps["role"] == "tuned") & (self.steps["reached"] > 0)]
        fastest = min(t.itertuples(), key=lambda r: r.time.value, default=None) if len(t) else None
        fast = (f"fastest to {self.target:.0%}: {fastest.optimizer} at batch {fastest.batch_label} "
                f"({fastest.time.value:.2g} s)" if fastest is not None and not math.isnan(fastest.time.value)
                else "no cell reached the target")
        short = s[[r.value < 1 for r in s["reached"]]]
        every = ("every seed reached it" if short.empty else
                 "seeds missed it at " + ", ".join(f"{o} {b}" for o, b in zip(short["optimizer"],
                                                                                short["batch_label"])))
        div = int(sum(round(d.value * d.n) for d in s["diverged"] if d.n))
        return f"Speed vs stability at tuned rates: {fast}; {every}; {div} run(s) diverged"


def _chosen_text(choices: pd.DataFrame) -> str:
    """Per optimizer: the chosen rates across batch sizes, and any still on an edge."""
    parts = []
    for opt, g in choices.groupby("optimizer", sort=False):
        g = g.sort_values("batch_size")
        picks = " → ".join(f"{c:.3g}" if c is not None and not pd.isna(c) else "none" for c in g["chosen"])
        edge = [f"{b} ({e})" for b, e in zip(g["batch_label"], g["edge"]) if e != "interior"]
        parts.append(f"{opt} {picks} (batch {' → '.join(map(str, g['batch_label']))})"
                     + (f", on an edge at batch {', '.join(edge)}" if edge else ", all interior"))
    return "; ".join(parts) or "no final runs"


def _trial_runs(trials: pd.DataFrame) -> pd.DataFrame:
    t = trials.copy()
    grids = _column(t, "tuning.grid", [])
    t["base"] = [any(math.isclose(lr, g, rel_tol=1e-9) for g in (grid or [])) for lr, grid in zip(t["lr_setting"],
                                                                                                   grids)]
    return t


def _seeds(df: pd.DataFrame) -> list:
    return sorted({int(s) for s in df["seed"]}) if len(df) else []


def finding(runs: pd.DataFrame, resamples: int = FIT_RESAMPLES) -> TuningFinding | None:
    """The tuning experiment's finding from its runs (records of experiment tuning, with add_run_metrics' columns);
    None when there are none."""
    runs = runs[runs["role"].notna()]
    if runs.empty:
        return None
    runs = _with_steps(runs)
    target = float(runs["target_accuracy"].iloc[0])
    trials = _trial_runs(runs[(runs["role"] == "trial") & runs["lr_setting"].notna()])
    finals = runs[runs["role"].isin(["tuned", "pinned"])]
    chosen = {(o, b): c for o, b, c in zip(finals["optimizer"], finals["batch_size"], _column(finals, "tuning.chosen"))
              if c is not None and not pd.isna(c)}
    rates = _rates(trials, chosen) if len(trials) else pd.DataFrame()
    val_size = int(runs["val_size"].dropna().iloc[0]) if runs["val_size"].notna().any() else 10_000
    noise_sd = val_noise(target, val_size)
    steps = pd.DataFrame([_cell_steps(o, b, role, g, noise_sd) for (o, b, role), g in
                          finals.groupby(["optimizer", "batch_size", "role"], sort=False)])
    limits = [v for v in _column(finals, "tuning.widen_limit") if v is not None and not pd.isna(v)]
    return TuningFinding(
        profile=str(runs["profile"].iloc[0]), train_size=int(runs["train_size"].iloc[0]), target=target,
        optimizers=list(dict.fromkeys(runs["optimizer"])), checks=int(runs["epochs"].max()), val_size=val_size,
        trial_seeds=_seeds(trials), final_seeds=_seeds(finals[finals["role"] == "tuned"]),
        widen_limit=int(max(limits)) if limits else None, trial_runs=trials, trials=rates,
        choices=_choices(finals, rates) if len(finals) else pd.DataFrame(),
        steps=steps, stability=_stability(finals) if len(finals) else pd.DataFrame(),
        fits=_fits(finals, resamples) if len(finals) else {},
        ranking=_ranking(finals, steps) if len(finals) else pd.DataFrame(),
        scaling_end=_scaling_end(steps) if len(steps) else {}, resamples=resamples)
