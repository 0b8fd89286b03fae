"""The grid and the named experiments beside it, behind one small interface: each is an `Experiment` with its
name, its options (its own, and the common grid options it reads), its cells (from its profiles, each with its
target), what it prepares once before the first run (`begin`), and what it hands each run besides its cell
(`plan`: start weights, a stop rule, its part of the record). The session and the pytest plugin only ever call
this interface; adding an experiment is one module that registers itself (a test defines a toy one in one file).

Experiments run by name: `pytest bench --experiment escape`; without --experiment the grid runs.
"""

from __future__ import annotations

from bench.experiments import escape, saddle, tuning
from bench.experiments.base import (REGISTRY, Context, Experiment, Grid, Option, Plan, PlanError, all_options,
                                    check_given, get, register)

register(Grid())
for _module in (saddle, escape, tuning):  # the built-in experiments, in the order `--help` lists them
    register(_module.EXPERIMENT)

__all__ = ["REGISTRY", "Context", "Experiment", "Grid", "Option", "Plan", "PlanError", "all_options", "check_given",
           "get", "register"]
