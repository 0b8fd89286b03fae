"""The escape experiment's part of a record (bench/experiments/escape.py): how its start point was reached and
certified, and what each run measured from it."""

from __future__ import annotations

from dataclasses import dataclass

from bench.record.fields import doc as _f


@dataclass(kw_only=True)
class Stuck:
    """How the escape experiment's stuck point was reached (bench/experiments/escape.py)."""

    how: str = _f("full-batch descent to a flat point with negative curvature, and where it stopped")
    updates: int = _f("full-batch SGD updates from the seed-0 initialisation to the stuck point")
    loss: float = _f("the probe set's loss there")
    grad_norm: float = _f("the probe set's gradient L2 norm there")
    lambda_min: float | None = _f("smallest Hessian eigenvalue there")
    lambda_max: float | None = _f("largest Hessian eigenvalue there")
    flatness: float | None = _f("|g|^2 / (2 lambda_max L) there")
    kind: str = _f("the classifier's label of the point (bench.curvature.classify)")
    digest: str = _f("sha256 of its weights: every run of the experiment starts from them")


@dataclass(kw_only=True)
class Escape:
    """One run of the escape experiment: from the stuck point, did the probe set's loss fall margin below it?"""

    arm: str = _f("examples or updates (the quantity held equal across batch sizes), or fairness (the full batch "
                  "at another learning rate)")
    start_digest: str = _f("sha256 of the weights this run started from (equal to stuck.digest)")
    start_loss: float = _f("the probe set's loss at the start")
    target_loss: float = _f("escaped below this: start_loss x (1 - margin)")
    margin: float = _f("the escape margin")
    escaped: bool = _f("the probe set's loss fell below target_loss within the budget")
    updates_to_escape: int | None = _f("updates to the first probe point below the target (None: not escaped); "
                                       "resolution: check_every")
    examples_to_escape: int | None = _f("examples to that point")
    budget_updates: int = _f("the run's update budget")
    check_every: int = _f("updates between probe points")
    exit_loss: float | None = _f("the probe set's loss where the run stopped")
    exit_lambda_min: float | None = _f("smallest Hessian eigenvalue where the run stopped")
    exit_lambda_max: float | None = _f("largest Hessian eigenvalue where the run stopped")
    deterministic: bool = _f("the full batch: no minibatch order, one run stands for every seed")
    stuck: Stuck = _f("how the stuck point was reached")


def upgrade_v3_to_v4(escape: dict) -> None:
    """The part as schema 4 has it, from a schema-3 record's `escape` (changed in place)."""
