"""The tuning experiment (`pytest bench --experiment tuning`, bench/test_tuning.py): DeepOBS' protocol on a
validation split. Per optimizer x batch size, trials at each rate of a log grid for a fixed budget; the rate
with the best validation accuracy at the end of the budget wins (ties: the lower validation loss; a trial that
did not finish, diverged included, never wins); final runs at that rate, with other seeds than the trial's,
and at the pinned rate for the comparison. Every final record carries the search it used."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from bench import record
from bench.experiments.base import Context, Experiment, Option, Plan, PlanError
from bench.grid import LEARNING_RATES, BadOption, RunConfig, _items, parse_dispatch, parse_seeds
from bench.record import Target, Trial, Tuning

NAME = "tuning"
RULE = ("best validation accuracy at the end of the budget; ties: lower validation loss; a trial that did not "
        "finish ok (diverged, oom, error) never wins")
SPACING = 10 ** 0.5  # half a decade between neighbouring rates


@dataclass(frozen=True)
class TuningProfile:
    """Per optimizer x batch size, trials at each rate of a log-spaced grid centred on the pinned rate, for a fixed
    number of updates checked at equal steps on the validation split; then final runs at the chosen rate and at
    the pinned rate, other seeds than the trials'."""

    name: str
    train_size: int
    batch_sizes: tuple
    optimizers: tuple
    updates: int  # every run's budget, whatever the batch size (steps to target are counted within it)
    checks: int  # validation checks per run: steps to target are resolved to updates / checks
    grid_points: int  # learning rates in the search, half a decade apart, centred on the pinned rate
    trial_seed: int
    final_seeds: tuple
    about: str
    target: Target  # steps to target read it


PROFILES = {
    "test": TuningProfile("tuning-test", 300, (10, 100), ("sgd", "adam"), 40, 4, 3, 0, (1, 2),
                          "the tests: about a minute", Target(value=0.5, split="validation")),
    "cpu": TuningProfile("tuning-cpu", 5_000, (10, 100, 1000), ("sgd", "adam"), 400, 16, 5, 0, (1, 2, 3),
                         "sgd and adam, batch 10/100/1,000, 5 rates, 5,000 examples, 400 updates: about 22 minutes "
                         "on 2 CPU cores in fast dispatch", Target(value=0.85, split="validation")),
    "cpu-full": TuningProfile("tuning", 5_000, (10, 30, 100, 300, 1000), ("sgd", "adam"), 400, 16, 5, 0, (1, 2, 3),
                              "cpu with batch 30 and 300 too (reports/tuning): 41 minutes on 2 CPU cores",
                              Target(value=0.85, split="validation")),
    "gpu": TuningProfile("tuning-lecture", 50_000, (10, 100, 1000, 10000, 50000),
                         ("sgd", "rmsprop", "adam", "adamax", "nadam", "adagrad", "adadelta"), 5_000, 50, 7, 0,
                         (1, 2, 3), "the lecture's 50,000 examples, 7 rates, 5,000 updates",
                         Target(value=0.97, split="validation")),
}


def profile(name: str | None) -> TuningProfile:
    name = "cpu" if name is None else name
    if name not in PROFILES:
        raise BadOption(f"--tuning-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def lr_grid(optimizer: str, points: int, text: str | None = None) -> tuple:
    """The search's rates: `text` (--lr-grid, comma-separated positive numbers), else `points` rates half a decade
    apart centred on the optimizer's pinned rate."""
    if text is not None:
        rates = []
        for item in _items("--lr-grid", text):
            try:
                rate = float(item)
            except ValueError:
                rate = -1.0
            if not (rate > 0 and math.isfinite(rate)):
                raise BadOption(f"--lr-grid: {item!r} is not a positive learning rate; give e.g. 0.001,0.01,0.1")
            rates.append(rate)
        return tuple(sorted(set(rates)))
    centre = LEARNING_RATES.get(optimizer, 0.001)
    return tuple(float(f"{centre * SPACING ** (i - (points - 1) / 2):.4g}") for i in range(points))


def cells(name: str | None = None, optimizers=None, lr_text: str | None = None, seeds=None,
          dispatch: str | None = None) -> list[RunConfig]:
    """Trials first (every optimizer x batch size x rate, the trial seed), then the final runs (the tuned and the
    pinned rate, each final seed): pytest runs them in this order, so every final run finds its trials."""
    p = profile(name)
    opts = p.optimizers if optimizers is None else tuple(_items("--optimizers", optimizers))
    unknown = [o for o in opts if o not in LEARNING_RATES]
    if unknown:
        raise BadOption(f"--optimizers: {unknown[0]!r} has no pinned rate to centre a search on; choose among "
                        f"{', '.join(LEARNING_RATES)}")
    final_seeds = p.final_seeds if seeds is None else parse_seeds(seeds)
    mode = "fast" if dispatch is None else parse_dispatch(dispatch)

    def cell(opt, bs, seed, role, lr=None):
        full = bs >= p.train_size
        return RunConfig(p.name, opt, min(bs, p.train_size), full, "sigmoid", seed, p.train_size, p.checks,
                         dispatch=mode, probes=False, budget="updates", total_updates=p.updates, learning_rate=lr,
                         experiment=NAME, role=role, target=p.target, evaluate_test_each_epoch=False)

    trials = [cell(o, b, p.trial_seed, "trial", lr) for o in opts for b in p.batch_sizes
              for lr in lr_grid(o, p.grid_points, lr_text)]
    finals = [cell(o, b, s, role) for o in opts for b in p.batch_sizes for role in ("tuned", "pinned")
              for s in final_seeds]
    return trials + finals


def choose(trials: list[Trial]) -> float | None:
    """The winning rate of `trials` (RULE), or None when no trial finished ok."""
    ok = [t for t in trials if t.status == "ok" and t.val_accuracy is not None and math.isfinite(t.val_accuracy)]
    if not ok:
        return None
    best = max(ok, key=lambda t: (t.val_accuracy, -(t.val_loss if t.val_loss is not None and
                                                    math.isfinite(t.val_loss) else math.inf), -t.learning_rate))
    return best.learning_rate


def trials_in(entries: list[record.Entry], cell: RunConfig, machine: str, grid: tuple) -> list[Trial]:
    """The trials of `cell`'s search in the store's entries: same protocol, optimizer and batch size, this
    machine, role trial, a rate of the current grid (the latest attempt of each rate)."""
    found = {}
    for e in entries:
        r = e.record
        if (r.role != "trial" or r.experiment != cell.experiment or r.profile != cell.profile
                or r.optimizer != cell.optimizer or r.batch_size != cell.batch_size
                or r.train_size != cell.train_size or e.machine.id != machine):
            continue
        rate = r.lr_setting
        if rate is not None and any(math.isclose(rate, g, rel_tol=1e-9) for g in grid):
            found[rate] = Trial(learning_rate=rate, status=r.status, val_accuracy=r.val_accuracy,
                                val_loss=r.val_loss)
    return [found[k] for k in sorted(found)]


def prepare(cell: RunConfig, entries, machine: str, lr_text: str | None, points: int) -> tuple[RunConfig, Tuning]:
    """The configuration to train (a final run at the rate its role asks for) and the record's Tuning entry."""
    grid = list(lr_grid(cell.optimizer, points, lr_text))
    pinned = LEARNING_RATES[cell.optimizer]
    if cell.role == "trial":
        return cell, Tuning(grid=grid, rule=RULE, pinned=pinned)
    trials = trials_in(entries, cell, machine, tuple(grid))
    chosen = choose(trials)
    rate = chosen if cell.role == "tuned" else pinned
    if rate is None:
        raise NoTrials(f"{cell.test_id}: no trial of {cell.optimizer} at batch {cell.batch_size} finished ok; "
                       f"run the trials first (they come first in --experiment tuning)")
    return (dataclasses.replace(cell, learning_rate=rate),
            Tuning(grid=grid, rule=RULE, trials=trials, chosen=chosen, pinned=pinned))


class NoTrials(PlanError):
    """A tuned final run found no finished trial to choose from."""


class TuningExperiment(Experiment):
    name = NAME
    about = "learning rates tuned per optimizer and batch size on the validation split"
    module = "test_tuning.py"
    options = (Option("--tuning-profile", "--experiment tuning's grid: " + ", ".join(
                   f"{k} ({p.about})" for k, p in PROFILES.items()) + " (default: cpu)"),
               Option("--lr-grid", "--experiment tuning's learning rates for every optimizer, comma-separated "
                                   "(default: the profile's count of rates half a decade apart, centred on each "
                                   "optimizer's pinned rate)"))
    reads = ("--optimizers", "--seeds", "--dispatch")
    fixed_budget = True

    def cells(self, given: dict) -> list[RunConfig]:
        return cells(given.get("--tuning-profile"), given.get("--optimizers"), given.get("--lr-grid"),
                     given.get("--seeds"), given.get("--dispatch"))

    def plan(self, cell: RunConfig, ctx: Context) -> Plan:
        """A final run trains at the rate its role asks for (chosen from the stored trials, or the pinned one)."""
        points = profile(ctx.option("--tuning-profile")).grid_points
        trained, part = prepare(cell, ctx.read_store().entries if cell.role != "trial" else [], ctx.machine_id,
                                ctx.option("--lr-grid"), points)
        return Plan(trained, fields={"tuning": part})


EXPERIMENT = TuningExperiment()
