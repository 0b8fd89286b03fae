"""The tuning experiment's part of a record (bench/experiments/tuning.py): the search a run belongs to, the noise probe
at the target, and how steps to target are read from a run's checks (both halves read them the same way)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.record.fields import doc as _f

EDGES = ("interior", "low", "high")  # where a chosen rate sits among the rates tried


@dataclass(kw_only=True)
class Trial:
    """One trial of a learning-rate search, as the final run that used the search saw it."""

    learning_rate: float = _f("the trial's learning rate")
    status: str = _f("the trial's status (a rate with a trial that did not finish ok never wins)")
    val_accuracy: float | None = _f("its validation accuracy at the end of the budget")
    val_loss: float | None = _f("its validation loss there (breaks ties)")
    seed: int | None = _f("the trial's seed (schema-2 searches had one trial seed, 0)", None)
    steps_to_target: float | None = _f("updates to the target, interpolated between the two checks around its first "
                                       "crossing (steps_to_target); None: not reached within the budget, or not "
                                       "recorded (schema 2)", None)


@dataclass(kw_only=True)
class NoiseAtTarget:
    """The gradient noise scale at the weights of the first check that reached the target (McCandlish et al. 2018's
    B_simple = tr(Sigma) / |G|^2 of the training subset)."""

    update: int = _f("the update after which the weights were probed (the first check at or above the target)")
    val_accuracy: float = _f("the validation accuracy there")
    train_loss: float = _f("the training subset's mean loss there: the loss at which B_simple was measured")
    grad_sq: float = _f("|G|^2: the squared norm of the whole training subset's mean gradient (exact)")
    trace_sigma: float = _f("tr(Sigma): the per-example gradient covariance's trace over the training subset, from "
                            "minibatches drawn without replacement (finite-population corrected)")
    b_simple: float | None = _f("tr(Sigma) / |G|^2 (None: the estimate of tr(Sigma) was not positive)")
    b_simple_low: float | None = _f("2.5 % bootstrap quantile of b_simple over the minibatches (within this run)",
                                    None)
    b_simple_high: float | None = _f("97.5 % bootstrap quantile of b_simple over the minibatches", None)
    small_batch: int = _f("examples per minibatch of the tr(Sigma) estimate")
    batches: int = _f("minibatches drawn")
    examples: int = _f("training examples the gradients cover (the whole training subset)")
    seconds: float = _f("time the probe took (outside the timed epochs)")


@dataclass(kw_only=True)
class Tuning:
    """The tuning experiment's part of a record (bench/experiments/tuning.py)."""

    grid: list[float] = _f("the base grid's learning rates (the widening loop may add rates beyond its edges)")
    rule: str = _f("how the rate is chosen")
    trials: list[Trial] = _f("the trials the choice was made from, every trial seed (final runs; empty for a trial)",
                             factory=list)
    chosen: float | None = _f("the chosen rate (final runs; None for a trial or when no trial finished)", None)
    pinned: float = _f("the suite's pinned rate for this optimizer")
    trial_seeds: list[int] = _f("the seeds every rate is tried with (the choice takes the median over them)",
                                factory=list)
    widen_limit: int | None = _f("rates the widening loop may add beyond each edge of the base grid, half a decade "
                                 "apart (None: not recorded)", None)
    widened: list[float] = _f("the rates the widening loop added (final runs)", factory=list)
    edge: str | None = _f("where the chosen rate sits among the rates tried: interior (a worse neighbour on both "
                          "sides), low or high (an edge: the best rate may lie beyond it); None for a trial", None)
    noise: NoiseAtTarget | None = _f("the noise-scale probe at the first check that reached the target (final runs; "
                                     "None: not reached, or not probed)", None)


def upgrade_v3_to_v4(tuning: dict) -> None:
    """The part as schema 4 has it, from a schema-3 record's `tuning` (changed in place): schema-2 and 3 searches
    tried every rate with one trial seed, 0, and chose among the grid alone, so the trials' seed and the chosen
    rate's edge are known; their steps to target were not recorded."""
    trials = tuning.get("trials") if isinstance(tuning.get("trials"), list) else []
    for t in trials:
        if isinstance(t, dict):
            t.setdefault("seed", 0)
    tuning.setdefault("trial_seeds", [0])
    tuning.setdefault("widen_limit", 0)
    grid, chosen = tuning.get("grid") or [], tuning.get("chosen")
    tuning.setdefault("edge", edge_of(chosen, grid) if chosen is not None else None)


def edge_of(rate: float, rates) -> str:
    """'low' or 'high' when `rate` is the lowest or highest of `rates` (an edge: no worse neighbour on that side),
    else 'interior'."""
    rates = sorted(rates)
    if not rates or math.isclose(rate, rates[0], rel_tol=1e-6):
        return "low"
    return "high" if math.isclose(rate, rates[-1], rel_tol=1e-6) else "interior"


@dataclass(frozen=True)
class Crossing:
    """Where a run's checked validation accuracy first reached the target."""

    steps: float  # updates to the target, interpolated linearly between the checks before and at the crossing
    before: int  # the last check below the target (0: none, the crossing is at the first check)
    at: int  # the first check at or above it
    first_check: bool  # the crossing is at the first check: no check before it to interpolate from (steps = at)
    slope: float | None  # validation accuracy gained per update between the two checks (None: first check)


def steps_to_target(accuracies, interval: int, target: float) -> Crossing | None:
    """Updates until the validation accuracy, checked every `interval` updates (`accuracies[k-1]` after k x interval
    updates), first reaches `target`: the first check at or above it is at update k x interval, the crossing lies in
    the interval before it, and the steps are interpolated linearly between the two checks (their resolution is the
    interval). A crossing at the first check has no check before it: its steps are that check's update. None when
    no check reaches the target."""
    previous = None
    for k, acc in enumerate(accuracies or [], start=1):
        if acc is None or not math.isfinite(acc):
            return None  # a diverged run's last check: no crossing after it
        if acc >= target:
            if previous is None:
                return Crossing(float(k * interval), 0, k * interval, True, None)
            steps = (k - 1) * interval + interval * (target - previous) / (acc - previous)
            return Crossing(float(steps), (k - 1) * interval, k * interval, False, (acc - previous) / interval)
        previous = acc
    return None
