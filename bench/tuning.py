"""The tuning experiment's choice of a learning rate (`pytest bench --experiment tuning`): DeepOBS' protocol on a
validation split. Per optimizer x batch size, trials at each rate of a log grid for a fixed budget; the rate
with the best validation accuracy at the end of the budget wins (ties: the lower validation loss; a trial that
did not finish, diverged included, never wins); final runs at that rate, with other seeds than the trial's,
and at the pinned rate for the comparison. Every final record carries the search it used."""

from __future__ import annotations

import dataclasses
import math

from bench import record
from bench.grid import LEARNING_RATES, RunConfig, lr_grid
from bench.record import Trial, Tuning

RULE = ("best validation accuracy at the end of the budget; ties: lower validation loss; a trial that did not "
        "finish ok (diverged, oom, error) never wins")


def choose(trials: list[Trial]) -> float | None:
    """The winning rate of `trials` (RULE), or None when no trial finished ok."""
    ok = [t for t in trials if t.status == "ok" and t.val_accuracy is not None and math.isfinite(t.val_accuracy)]
    if not ok:
        return None
    best = max(ok, key=lambda t: (t.val_accuracy, -(t.val_loss if t.val_loss is not None and
                                                    math.isfinite(t.val_loss) else math.inf), -t.learning_rate))
    return best.learning_rate


def trials_in(entries, cell: RunConfig, machine: str, grid: tuple) -> list[Trial]:
    """The trials of `cell`'s search in the store's entries: same protocol, optimizer and batch size, this
    machine, role trial, a rate of the current grid (the latest attempt of each rate)."""
    found = {}
    for e in entries:
        r = e["record"]
        if (record.value(r, "tuning.role") != "trial" or r.get("profile") != cell.profile
                or r.get("optimizer") != cell.optimizer or r.get("batch_size") != cell.batch_size
                or r.get("train_size") != cell.train_size or record.machine_id(e.get("machine") or {}) != machine):
            continue
        rate = r.get("lr_setting")
        if rate is not None and any(math.isclose(rate, g, rel_tol=1e-9) for g in grid):
            found[rate] = Trial(learning_rate=rate, status=r["status"], val_accuracy=r.get("val_accuracy"),
                                val_loss=r.get("val_loss"))
    return [found[k] for k in sorted(found)]


def prepare(cell: RunConfig, entries, machine: str, lr_text: str | None, points: int) -> tuple[RunConfig, Tuning]:
    """The configuration to train (a final run at the rate its role asks for) and the record's Tuning entry."""
    grid = list(lr_grid(cell.optimizer, points, lr_text))
    pinned = LEARNING_RATES[cell.optimizer]
    if cell.tuning_role == "trial":
        return cell, Tuning(role="trial", grid=grid, rule=RULE, pinned=pinned)
    trials = trials_in(entries, cell, machine, tuple(grid))
    chosen = choose(trials)
    rate = chosen if cell.tuning_role == "tuned" else pinned
    if rate is None:
        raise NoTrials(f"{cell.test_id}: no trial of {cell.optimizer} at batch {cell.batch_size} finished ok; "
                       f"run the trials first (they come first in --experiment tuning)")
    return (dataclasses.replace(cell, learning_rate=rate),
            Tuning(role=cell.tuning_role, grid=grid, rule=RULE, trials=trials, chosen=chosen, pinned=pinned))


class NoTrials(RuntimeError):
    """A tuned final run found no finished trial to choose from."""
