"""The saddle benchmark (`pytest bench --experiment saddle`, bench/test_saddle.py): plain SGD from batch 1 to the
full batch, once for the same number of epochs and once for the same number of updates, several seeds, each run
probed for plateaus, gradient norm, noise scale and the Hessian's extreme eigenvalues (bench/curvature.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.experiments.base import Experiment, Option
from bench.grid import FULL, BadOption, RunConfig, parse_seeds, parse_train_size
from bench.record import Target

NAME = "saddle"


@dataclass(frozen=True)
class SaddleProfile:
    """Plain SGD from 1 to the full batch, once for the same number of epochs and once for the same number of
    updates, probed at `intervals` equal steps."""

    name: str
    train_size: int
    batch_sizes: tuple
    seeds: tuple
    epochs: int  # the "same epochs" budget
    updates: int  # the "same updates" budget
    intervals: int  # probe and evaluation points per run
    about: str
    target: Target = Target(value=0.90, split="validation")


PROFILES = {
    "smoke": SaddleProfile("saddle-smoke", 200, (1, 10, FULL), (0,), 2, 100, 4, "the tests: seconds"),
    "cpu": SaddleProfile("saddle", 1_000, (1, 10, 100, FULL), (0, 1, 2), 10, 1_000, 10,
                         "3 seeds on 1,000 examples: about 10 minutes on 2 CPU cores"),
}


def profile(name: str | None) -> SaddleProfile:
    name = "cpu" if name is None else name
    if name not in PROFILES:
        raise BadOption(f"--saddle-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def cells(name: str | None = None, train_size=None, seeds=None) -> list[RunConfig]:
    """The saddle benchmark's grid; `train_size`/`seeds` (command-line strings) override the profile's."""
    p = profile(name)
    n = p.train_size if train_size is None else parse_train_size(train_size)
    out = []
    for bs in p.batch_sizes:
        size = n if bs == FULL else bs
        if size > n:
            continue
        epochs_updates = p.epochs * math.ceil(n / size)
        for budget, total in (("epochs", epochs_updates), ("updates", p.updates)):
            intervals = math.gcd(total, p.intervals)  # equal intervals of whole updates
            for seed in (p.seeds if seeds is None else parse_seeds(seeds)):
                out.append(RunConfig(p.name, "sgd", size, bs == FULL, "sigmoid", seed, n, intervals,
                                     budget=budget, total_updates=total, experiment=NAME, target=p.target))
    return out


class Saddle(Experiment):
    name = NAME
    about = "the saddle benchmark: SGD from batch 1 to the full batch, probed for plateaus and curvature"
    module = "test_saddle.py"
    options = (Option("--saddle-profile", "--experiment saddle's grid: " + ", ".join(
        f"{k} ({p.about})" for k, p in PROFILES.items()) + " (default: cpu)"),)
    reads = ("--train-size", "--seeds")
    fixed_budget = True

    def cells(self, given: dict) -> list[RunConfig]:
        return cells(given.get("--saddle-profile"), given.get("--train-size"), given.get("--seeds"))


EXPERIMENT = Saddle()
