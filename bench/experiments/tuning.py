"""The tuning experiment (`pytest bench --experiment tuning`, bench/test_tuning.py): Shallue et al. (2018)'s protocol on
a validation split. Per optimizer x batch size, trials at each rate of a base grid, every trial seed; the grid widens
half a decade at a time while the best rate sits on its edge (within a stated limit); the rate with the fewest updates
to the target (median over the trial seeds) wins; final runs at that rate, with seeds the choice never saw, carry the
gradient noise scale at the first check that reached the target. Every final record carries the search it used."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from bench import record
from bench.experiments.base import Context, Experiment, Option, Plan, PlanError
from bench.grid import LEARNING_RATES, BadOption, RunConfig, _items, parse_dispatch, parse_seeds
from bench.record import Target, Trial, Tuning
from bench.record.tuning import NoiseAtTarget, edge_of, steps_to_target

NAME = "tuning"
RULE = ("fewest updates to the target (interpolated between checks), median over the trial seeds (a seed that did "
        "not reach it counts as never); ties: the lower median final validation loss; a rate with a trial seed that "
        "did not finish ok (diverged, oom, error) never wins")
SPACING = 10 ** 0.5  # half a decade between neighbouring rates
ANY = "*"  # the intervals of an optimizer a profile does not list
NOISE_SMALL_BATCH = 32  # examples per minibatch of the tr(Sigma) estimate at the target
NOISE_BATCHES = 64  # minibatches: the estimate's spread within a run is its b_simple_low/high
NOISE_EXAMPLES = 10_000  # the probe's gradients cover at most this many of the training subset (all on the CPU)


@dataclass(frozen=True)
class TuningProfile:
    """Per optimizer x batch size: trials at each rate of a base grid (and the widening's), every trial seed; final
    runs at the chosen rate (and at the pinned rate, for the pinned seeds). Every run checks the validation split
    `checks` times, every `interval` updates, so its budget is checks x interval: the interval per optimizer and batch
    size makes the steps' resolution a small share of the steps themselves."""

    name: str
    train_size: int
    batch_sizes: tuple
    optimizers: tuple
    checks: int  # validation checks per run
    intervals: dict  # {optimizer (ANY: any other): {batch size: updates between checks}}
    grid_points: int  # rates of the base grid, half a decade apart
    centres: dict  # {optimizer: the base grid's centre}; an optimizer not listed: its pinned rate
    widen: int  # rates the widening loop may add beyond each edge of the base grid
    trial_seeds: tuple
    final_seeds: tuple
    pinned_seeds: tuple  # final runs at the pinned rate, for the ranking at pinned rates (empty: none)
    about: str
    target: Target  # steps to target read it

    def interval(self, optimizer: str, batch_size: int) -> int:
        table = self.intervals.get(optimizer, self.intervals.get(ANY))
        if table is None or batch_size not in table:
            raise BadOption(f"--optimizers: the tuning profile {self.name!r} sets no check interval for {optimizer} "
                            f"at batch {batch_size}; choose among {', '.join(o for o in self.intervals if o != ANY)}")
        return table[batch_size]

    def centre(self, optimizer: str) -> float:
        return self.centres.get(optimizer, LEARNING_RATES.get(optimizer, 0.001))


# The cpu profile's intervals are about 4 % of the updates a pilot run at a good rate needed to reach 90 % (seed 1,
# checks every 5-75 updates, this 2-core VM): adam 340/140/55/50/46 and sgd 1,600/700/420/300/255 at batch
# 10/30/100/300/1,000. The budget (60 checks) is then about 2.4 times those steps. The report checks the resolution
# against the steps the run measured, not against this plan.
_CPU = {"sgd": {10: 40, 30: 24, 100: 16, 300: 12, 1000: 10}, "adam": {10: 12, 30: 6, 100: 2, 300: 2, 1000: 2}}
PROFILES = {
    # two base rates: the best is always on an edge, so every test sweep widens for real
    "test": TuningProfile("tuning-test", 1_000, (10, 100), ("sgd", "adam"), 8,
                          {"sgd": {10: 25, 100: 10}, "adam": {10: 8, 100: 4}}, 2, {"sgd": 10 ** 0.25,
                                                                                   "adam": 10 ** -2.25}, 1,
                          (0, 1, 2), (3, 4), (3,), "the tests: a few minutes", Target(value=0.7, split="validation")),
    "cpu": TuningProfile("tuning-cpu", 5_000, (10, 30, 100, 300, 1000), ("sgd", "adam"), 60, _CPU, 3,
                         {"sgd": 1.0, "adam": 10 ** -2.5}, 2, (0, 1, 2), (3, 4, 5, 6, 7), (),
                         "sgd and adam, batch 10 to 1,000, 5,000 examples, 3 rates widened up to 2 per side, 3 trial "
                         "and 5 final seeds, 60 checks per run: about 55 minutes on an idle 2-core CPU in fast "
                         "dispatch (per run: ~16 s, sgd at batch 1,000 ~28 s)",
                         Target(value=0.90, split="validation")),
    "gpu": TuningProfile("tuning-lecture", 50_000, (10, 100, 1000, 10000, 50000),
                         ("sgd", "rmsprop", "adam", "adamax", "nadam", "adagrad", "adadelta"), 200,
                         {ANY: {10: 50, 100: 10, 1000: 5, 10000: 3, 50000: 3}}, 5, {}, 2, (0, 1, 2), (3, 4, 5, 6, 7),
                         (3, 4, 5), "the lecture's 50,000 examples, seven optimizers, 5 rates widened up to 2 per side; "
                         "its check intervals are a guess until a GPU pilot sets them (a check costs milliseconds "
                         "there)", Target(value=0.97, split="validation")),
}


def profile(name: str | None) -> TuningProfile:
    name = "cpu" if name is None else name
    if name not in PROFILES:
        raise BadOption(f"--tuning-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def _rate(x: float) -> float:
    return float(f"{x:.4g}")


def parse_lr_grid(text: str) -> tuple:
    """--lr-grid: comma-separated positive numbers, from 1e-8 to 1e3 (beyond, an update is below float32's resolution
    of the weights or diverges at once)."""
    rates = []
    for item in _items("--lr-grid", text):
        try:
            rate = float(item)
        except ValueError:
            rate = -1.0
        if not (rate > 0 and math.isfinite(rate)):
            raise BadOption(f"--lr-grid: {item!r} is not a positive learning rate; give e.g. 0.001,0.01,0.1")
        if not 1e-8 <= rate <= 1e3:
            raise BadOption(f"--lr-grid: {item} is outside 1e-8 to 1e3; give e.g. 0.001,0.01,0.1")
        rates.append(rate)
    return tuple(sorted(set(rates)))


@dataclass(frozen=True)
class SearchGrid:
    """The rates a search may try: the base grid at indices 0..points-1, and `limit` rates beyond each edge, half a
    decade apart, at -1, -2, ... and points, points+1, ..."""

    rates: dict  # {index: rate}
    points: int
    limit: int

    @property
    def base(self) -> tuple:
        return tuple(self.rates[i] for i in range(self.points))

    def index(self, rate: float) -> int | None:
        return next((i for i, r in self.rates.items() if math.isclose(r, rate, rel_tol=1e-9)), None)


def search_grid(centre: float, points: int, limit: int, text: str | None = None) -> SearchGrid:
    """`points` rates half a decade apart centred on `centre` (or --lr-grid's `text`), and `limit` more beyond each
    edge. A generated grid takes every rate from the exact centre, so each prints in four digits (0.001, 0.003162)."""
    if text is None:
        rates = {i: _rate(centre * SPACING ** (i - (points - 1) / 2)) for i in range(-limit, points + limit)}
        return SearchGrid(rates, points, limit)
    base = parse_lr_grid(text)
    rates = dict(enumerate(base))
    rates.update({-k: _rate(base[0] / SPACING ** k) for k in range(1, limit + 1)})
    rates.update({len(base) - 1 + k: _rate(base[-1] * SPACING ** k) for k in range(1, limit + 1)})
    return SearchGrid(rates, len(base), limit)


def grid_of(p: TuningProfile, optimizer: str, text: str | None) -> SearchGrid:
    return search_grid(p.centre(optimizer), p.grid_points, p.widen, text)


# --- the search ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RateResult:
    """One rate of a search across its trial seeds."""

    rate: float
    finished: int  # trial seeds with a finished trial (ok, diverged, oom)
    complete: bool  # every trial seed finished
    eligible: bool  # complete, and every trial seed finished ok
    steps: float  # median over the seeds of the updates to the target (inf: a seed that did not reach it)
    loss: float  # median final validation loss (inf: missing)


def _finite(x) -> float:
    return x if x is not None and math.isfinite(x) else math.inf


def summarise(trials: list[Trial], seeds) -> list[RateResult]:
    """Each rate's result over the trial `seeds`, lowest rate first (the latest trial of each rate and seed)."""
    by_rate: dict = {}
    for t in trials:
        if t.seed in seeds and t.status in record.FINISHED:
            by_rate.setdefault(t.learning_rate, {})[t.seed] = t
    out = []
    for rate in sorted(by_rate):
        done = list(by_rate[rate].values())
        complete = len(done) == len(seeds)
        ok = complete and all(t.status == "ok" for t in done)
        out.append(RateResult(rate, len(done), complete, ok,
                              float(np.median([_finite(t.steps_to_target) if t.status == "ok" else math.inf
                                               for t in done])),
                              float(np.median([_finite(t.val_loss) for t in done]))))
    return out


def choose(trials: list[Trial], seeds) -> float | None:
    """The winning rate (RULE) among the rates every trial seed finished, or None when no rate is eligible."""
    ok = [r for r in summarise(trials, seeds) if r.eligible]
    return min(ok, key=lambda r: (r.steps, r.loss, r.rate)).rate if ok else None


def next_index(trials: list[Trial], seeds, grid: SearchGrid) -> tuple[int | None, str]:
    """The widening loop's next step: (the grid index of the rate to try next, why) or (None, why not). It widens
    while the best of the rates every seed finished sits on an edge of them, up to the grid's limit beyond each edge
    of the base grid; it decides only once the base grid's trials are all finished."""
    results = {r.rate: r for r in summarise(trials, seeds)}
    missing = [f"{r:g}" for r in grid.base if not (r in results and results[r].complete)]
    if missing:
        return None, f"the base grid's trials are not all finished (rates {', '.join(missing)})"
    tried = sorted(i for i, rate in grid.rates.items() if rate in results and results[rate].complete)
    best = choose([t for t in trials if grid.index(t.learning_rate) in tried], seeds)
    if best is None:
        return None, "no rate finished ok with every trial seed: nothing to widen from"
    pos = tried.index(grid.index(best))
    if 0 < pos < len(tried) - 1:
        return None, (f"the best rate {best:g} is interior (worse neighbours {grid.rates[tried[pos - 1]]:g} and "
                      f"{grid.rates[tried[pos + 1]]:g})")
    side, step = ("low", -1) if pos == 0 else ("high", 1)
    if tried[pos] + step not in grid.rates:
        return None, f"the best rate {best:g} is on the {side} edge at the widening limit ({grid.limit} per side)"
    return tried[pos] + step, f"the best rate {best:g} is on the {side} edge"


def widening_decision(cell: RunConfig, trials: list[Trial], seeds, grid: SearchGrid) -> str | None:
    """Why the trial `cell` need not be trained now (None: train it): a base-grid trial always trains, a widening
    rate only when the search's next step is that rate."""
    index = grid.index(cell.learning_rate)
    if index is None or 0 <= index < grid.points:
        return None
    wanted, why = next_index(trials, seeds, grid)
    if wanted == index:
        return None
    return f"widening {cell.optimizer} at batch {cell.batch_size} to {cell.learning_rate:g} is not needed: {why}"


# --- cells ------------------------------------------------------------------------------------------------------

def _optimizers(p: TuningProfile, optimizers) -> tuple:
    opts = p.optimizers if optimizers is None else tuple(_items("--optimizers", optimizers))
    unknown = [o for o in opts if o not in LEARNING_RATES]
    if unknown:
        raise BadOption(f"--optimizers: {unknown[0]!r} has no pinned rate to centre a search on; choose among "
                        f"{', '.join(LEARNING_RATES)}")
    for o in opts:
        for b in p.batch_sizes:
            p.interval(o, b)  # BadOption when the profile sets none
    return opts


def cells(name: str | None = None, optimizers=None, lr_text: str | None = None, seeds=None,
          dispatch: str | None = None) -> list[RunConfig]:
    """Base-grid trials first (every optimizer x batch size x rate x trial seed), then the widening rounds (round k:
    the k-th rate beyond each edge, every pair and seed: each trains only if the search still needs it), then the
    final runs: pytest runs them in this order, so every widening step and final run finds the trials before it."""
    p = profile(name)
    opts = _optimizers(p, optimizers)
    final_seeds = p.final_seeds if seeds is None else parse_seeds(seeds)
    seen = sorted(set(final_seeds) & set(p.trial_seeds))
    if seen:
        raise BadOption(f"--seeds: {seen[0]} is a trial seed of --tuning-profile {name or 'cpu'} (trial seeds "
                        f"{', '.join(map(str, p.trial_seeds))}); the final runs need seeds the choice never saw")
    if lr_text is not None:
        parse_lr_grid(lr_text)  # a bad --lr-grid is a usage error before anything runs
    mode = "fast" if dispatch is None else parse_dispatch(dispatch)

    def cell(opt, bs, seed, role, lr=None):
        interval = p.interval(opt, bs)
        return RunConfig(p.name, opt, min(bs, p.train_size), bs >= p.train_size, "sigmoid", seed, p.train_size,
                         p.checks, dispatch=mode, probes=False, budget="updates", total_updates=p.checks * interval,
                         learning_rate=lr, experiment=NAME, role=role, target=p.target,
                         evaluate_test_each_epoch=False)

    pairs = [(o, b) for o in opts for b in p.batch_sizes]
    grids = {o: grid_of(p, o, lr_text) for o in opts}
    trials = [cell(o, b, s, "trial", lr) for o, b in pairs for lr in grids[o].base for s in p.trial_seeds]
    widening = [cell(o, b, s, "trial", grids[o].rates[i]) for k in range(1, p.widen + 1) for o, b in pairs
                for i in (-k, grids[o].points - 1 + k) for s in p.trial_seeds]
    pinned_seeds = p.pinned_seeds if seeds is None or not p.pinned_seeds else final_seeds
    finals = [cell(o, b, s, "tuned") for o, b in pairs for s in final_seeds]
    finals += [cell(o, b, s, "pinned") for o, b in pairs for s in pinned_seeds]
    return trials + widening + finals


def trials_in(entries: list[record.Entry], cell: RunConfig, machine: str) -> list[Trial]:
    """The trials of `cell`'s search in the store's entries: same protocol, budget and target, optimizer and batch
    size, this machine, role trial (the latest attempt of each rate and seed), with their steps to target."""
    found = {}
    for e in entries:
        r = e.record
        if (r.role != "trial" or r.experiment != cell.experiment or r.profile != cell.profile
                or r.optimizer != cell.optimizer or r.batch_size != cell.batch_size
                or r.train_size != cell.train_size or r.epochs != cell.epochs
                or r.steps_per_epoch != cell.steps_per_epoch or r.target.value != cell.target.value
                or r.lr_setting is None or e.machine.id != machine):
            continue
        crossing = steps_to_target(r.val_accuracy_by_epoch, r.steps_per_epoch, r.target.value)
        found[(r.lr_setting, r.seed)] = Trial(learning_rate=r.lr_setting, status=r.status, val_accuracy=r.val_accuracy,
                                              val_loss=r.val_loss, seed=r.seed,
                                              steps_to_target=crossing.steps if crossing and r.status == "ok" else None)
    return [found[k] for k in sorted(found)]


# --- the noise scale at the target ------------------------------------------------------------------------------

def noise_scale_at(probe, small: int = NOISE_SMALL_BATCH, batches: int = NOISE_BATCHES, seed: int = 0) -> dict:
    """B_simple = tr(Sigma) / |G|^2 of the probe's examples at the current weights. They are the population the run
    samples its minibatches from (the training subset), so their mean gradient G is exact, not an estimate; minibatches
    of b = `small` examples drawn without replacement have E|G_b|^2 = |G|^2 + tr(Sigma)/b (N-b)/(N-1), Sigma the
    per-example gradients' covariance (divisor N), so tr(Sigma) = b (mean |G_b|^2 - |G|^2) (N-1)/(N-b). The interval
    (b_simple_low/high) resamples the `batches` minibatches: the estimate's own spread within the run."""
    rng = np.random.default_rng(seed)
    n = probe.size
    if not 0 < small < n:
        raise ValueError(f"the noise scale needs 0 < small batch < examples, got {small} and {n}")
    loss, g2 = probe.loss_and_grad_norm_sq()
    sq = np.array([probe.grad_norm_sq(*probe.subset(rng.choice(n, size=small, replace=False)))
                   for _ in range(batches)])
    factor = small * (n - 1) / (n - small)
    trace = float(factor * (sq.mean() - g2))
    resampled = factor * (rng.choice(sq, size=(1000, len(sq))).mean(axis=1) - g2) / g2 if g2 > 0 else None
    low, high = (np.quantile(resampled, [0.025, 0.975]) if resampled is not None else (math.nan, math.nan))
    return {"train_loss": float(loss), "grad_sq": float(g2), "trace_sigma": trace,
            "b_simple": trace / g2 if g2 > 0 and trace > 0 else None,
            "b_simple_low": float(low) if low > 0 else None, "b_simple_high": float(high) if high > 0 else None,
            "small_batch": small, "batches": batches, "examples": n}


class TargetProbe:
    """A final run's stop rule and record part: at the first check whose validation accuracy reaches the target, the
    noise scale at those weights over the training subset (`x`, `y`); training goes on to the end of the budget."""

    def __init__(self, x, y, target: float, seed: int, tuning: Tuning):
        self.x, self.y, self.target, self.seed, self.tuning = x, y, target, seed, tuning
        self.found: NoiseAtTarget | None = None

    def stop(self, check) -> bool:
        if self.found is None and check.val_accuracy is not None and check.val_accuracy >= self.target:
            from bench import backends

            started = time.perf_counter()
            probe = backends.current().probe(check.model, self.x, self.y)
            measured = noise_scale_at(probe, seed=self.seed)
            self.found = NoiseAtTarget(update=int(check.update), val_accuracy=float(check.val_accuracy),
                                       seconds=round(time.perf_counter() - started, 3), **measured)
        return False

    def part(self, cell, setup, hessian) -> dict:
        return {"tuning": dataclasses.replace(self.tuning, noise=self.found)}


# --- the experiment ---------------------------------------------------------------------------------------------

class NoTrials(PlanError):
    """A tuned final run found no rate that every trial seed finished ok."""


def prepare(cell: RunConfig, entries, machine: str, p: TuningProfile, lr_text: str | None, mnist=None) -> Plan:
    """A run's plan: a trial trains its cell; a final run trains at the rate its role asks for (the search's choice
    from the stored trials, or the pinned rate) and probes the noise scale at the target (with `mnist`)."""
    grid = grid_of(p, cell.optimizer, lr_text)
    base = grid.base
    pinned = LEARNING_RATES[cell.optimizer]
    part = Tuning(grid=list(base), rule=RULE, pinned=pinned, trial_seeds=list(p.trial_seeds), widen_limit=p.widen)
    if cell.role == "trial":
        return Plan(cell, fields={"tuning": part})
    trials = [t for t in trials_in(entries, cell, machine) if grid.index(t.learning_rate) is not None]
    chosen = choose(trials, p.trial_seeds)
    rate = chosen if cell.role == "tuned" else pinned
    if rate is None:
        raise NoTrials(f"{cell.test_id}: no rate of {cell.optimizer} at batch {cell.batch_size} finished ok with every "
                       f"trial seed ({', '.join(map(str, p.trial_seeds))}); run the trials first (they come first in "
                       "--experiment tuning)")
    complete = [r.rate for r in summarise(trials, p.trial_seeds) if r.complete]
    part = dataclasses.replace(part, trials=trials, chosen=chosen, widened=[r for r in complete if r not in base],
                               edge=edge_of(chosen, complete) if chosen is not None else None)
    trained = dataclasses.replace(cell, learning_rate=rate)
    if mnist is None:
        return Plan(trained, fields={"tuning": part})
    x, y, _, _ = mnist.prepared(cell.train_size)
    probe = TargetProbe(x[:NOISE_EXAMPLES], y[:NOISE_EXAMPLES], cell.target.value, cell.seed, part)
    return Plan(trained, stop=probe.stop, part=probe.part, fields={"tuning": part})


class TuningExperiment(Experiment):
    name = NAME
    about = "learning rates tuned per optimizer and batch size for steps to a validation target"
    module = "test_tuning.py"
    options = (Option("--tuning-profile", "--experiment tuning's grid: " + ", ".join(
                   f"{k} ({p.about})" for k, p in PROFILES.items()) + " (default: cpu)"),
               Option("--lr-grid", "--experiment tuning's base learning rates for every optimizer, comma-separated "
                                   "(default: the profile's count of rates half a decade apart around its centre for "
                                   "each optimizer); the search widens beyond them while the best rate is on an edge"))
    reads = ("--optimizers", "--seeds", "--dispatch")
    fixed_budget = True

    def cells(self, given: dict) -> list[RunConfig]:
        return cells(given.get("--tuning-profile"), given.get("--optimizers"), given.get("--lr-grid"),
                     given.get("--seeds"), given.get("--dispatch"))

    def not_needed(self, cell: RunConfig, ctx: Context) -> str | None:
        """Why a widening trial need not train (None: train it; every other cell always trains)."""
        if cell.role != "trial":
            return None
        p = profile(ctx.option("--tuning-profile"))
        grid = grid_of(p, cell.optimizer, ctx.option("--lr-grid"))
        index = grid.index(cell.learning_rate)
        if index is None or 0 <= index < grid.points:
            return None  # a base-grid trial: no need to read the store
        return widening_decision(cell, trials_in(ctx.read_store().entries, cell, ctx.machine_id), p.trial_seeds, grid)

    def plan(self, cell: RunConfig, ctx: Context) -> Plan:
        """A final run trains at the rate its role asks for (chosen from the stored trials, or the pinned one)."""
        p = profile(ctx.option("--tuning-profile"))
        entries = ctx.read_store().entries if cell.role != "trial" else []
        return prepare(cell, entries, ctx.machine_id, p, ctx.option("--lr-grid"), ctx.mnist)


EXPERIMENT = TuningExperiment()
