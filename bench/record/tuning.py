"""The tuning experiment's part of a record (bench/experiments/tuning.py): the search a run belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from bench.record.fields import doc as _f


@dataclass(kw_only=True)
class Trial:
    """One trial of a learning-rate search, as the final run that used the search saw it."""

    learning_rate: float = _f("the trial's learning rate")
    status: str = _f("the trial's status (a diverged trial never wins)")
    val_accuracy: float | None = _f("its validation accuracy at the end of the budget")
    val_loss: float | None = _f("its validation loss there (breaks ties)")


@dataclass(kw_only=True)
class Tuning:
    """The tuning experiment's part of a record (bench/experiments/tuning.py)."""

    grid: list[float] = _f("the search's learning rates")
    rule: str = _f("how the rate is chosen")
    trials: list[Trial] = _f("the trials the choice was made from (final runs; empty for a trial)", factory=list)
    chosen: float | None = _f("the chosen rate (final runs; None for a trial or when no trial finished)", None)
    pinned: float = _f("the suite's pinned rate for this optimizer (the grid's centre)")


def upgrade_v3_to_v4(tuning: dict) -> None:
    """The part as schema 4 has it, from a schema-3 record's `tuning` (changed in place)."""
