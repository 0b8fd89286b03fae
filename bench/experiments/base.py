"""The interface every experiment satisfies (and the grid's own), the registry, and the check of the options
given against what the chosen experiment reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bench import grid
from bench.grid import BadOption, RunConfig
from bench.record import GRID


@dataclass(frozen=True)
class Option:
    """A command-line option of an experiment: `pytest bench --help` lists it under mnist-mlp-bench."""

    flag: str  # "--escape-profile"
    help: str

    @property
    def dest(self) -> str:
        return "bench_" + self.flag.lstrip("-").replace("-", "_")


@dataclass
class Plan:
    """What an experiment hands one run besides its cell."""

    cell: RunConfig  # what to train (the tuning's final runs: the cell at the rate its trials chose)
    weights: list | None = None  # start from these weights (model.get_weights() order) instead of the seed's
    stop: Callable[..., bool] | None = None  # at each epoch's end (bench.train.Check): True ends the run there
    part: Callable[..., dict] | None = None  # part(cell, setup, hessian) -> the record fields the experiment adds
    fields: dict | None = None  # record fields known before the run (e.g. the tuning's search)
    probe_noise: bool = True  # the probes measure the gradient noise scale at each probe point (escape: no)
    validate: bool = True  # evaluate the validation split at every epoch / check (escape: its own loss decides)
    no_probes_reason: str | None = None  # why the cell takes no probes, where the experiment decides it


class PlanError(RuntimeError):
    """A run its experiment cannot prepare (e.g. a tuned run with no finished trial); the message is one line."""


class Context:
    """What an experiment may ask of the session (bench.session.Session provides it)."""

    mnist: object  # bench.data.Mnist
    store: str  # the run store's path
    machine_id: str

    def option(self, flag: str):
        """The raw command-line value of `flag` (None when not given)."""
        raise NotImplementedError

    def read_store(self):
        """The run store as it is now (bench.record.Store)."""
        raise NotImplementedError


class Experiment:
    """The interface. Subclasses set the class attributes and override `cells` (and `begin`, `plan` if needed)."""

    name: str = ""
    about: str = ""
    module: str = "test_train.py"  # the benchmark module in bench/ that runs its cells
    options: tuple = ()  # its own Options
    reads: tuple = ()  # the common grid options (grid.COMMON_OPTIONS) it reads; any other given is a usage error
    fixed_budget: bool = False  # its runs need a backend with fixed update budgets (FIXED_BUDGET)
    # its results are timings: each round of repeats trains in a fresh process (bench.worker), so that what varies
    # between processes varies between its repeats; its plans must then pickle (no callables)
    fresh_process_rounds: bool = False

    def cells(self, given: dict) -> list[RunConfig]:
        """Its cells, from its options' values as given on the command line ({flag: text or None})."""
        raise NotImplementedError

    def begin(self, ctx: Context) -> list[str]:
        """Once before the first run (MNIST loaded); returns lines to print."""
        return []

    def plan(self, cell: RunConfig, ctx: Context) -> Plan:
        """What the run of `cell` trains with besides the cell."""
        return Plan(cell)


class Grid(Experiment):
    """The grid: every optimizer x batch size x seed of a profile, each axis overridable."""

    name = GRID
    about = "the sweep of optimizers x batch sizes of a profile (" + ", ".join(grid.PROFILES) + ")"
    reads = tuple(grid.COMMON_OPTIONS)
    fresh_process_rounds = True

    def cells(self, given: dict) -> list[RunConfig]:
        from bench.backends import optimizer_names

        values = {dest: given.get(flag) for flag, (dest, _) in grid.COMMON_OPTIONS.items()
                  if flag not in ("--no-probes", "--probes")}
        if given.get("--probes") and given.get("--no-probes"):
            raise BadOption("--probes and --no-probes: give one of them")
        probes = True if given.get("--probes") else False if given.get("--no-probes") else None
        return grid.parse_sweep(**values, discover=optimizer_names, probes=probes).cells()


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add an experiment under its name (a plugin's own experiment too); its options must be new."""
    taken = {o.flag for e in REGISTRY.values() for o in e.options} | set(grid.COMMON_OPTIONS)
    clash = [o.flag for o in experiment.options if o.flag in taken]
    if clash and REGISTRY.get(experiment.name) is not experiment:
        raise ValueError(f"experiment {experiment.name!r}: option {clash[0]} is taken")
    REGISTRY[experiment.name] = experiment
    return experiment


def get(name: str | None) -> Experiment:
    """The experiment `--experiment name` asks for (the grid without one); BadOption when unknown."""
    if name is None:
        return REGISTRY[GRID]
    if name not in REGISTRY or name == GRID:
        raise BadOption(f"--experiment: unknown experiment {name!r}; choose one of "
                        f"{', '.join(n for n in REGISTRY if n != GRID)}")
    return REGISTRY[name]


def check_given(experiment: Experiment, given: dict) -> None:
    """BadOption for an option given on the command line that `experiment` does not read: another experiment's own
    option, or a grid option it ignores (either would be silently dropped)."""
    for flag, value in given.items():
        if value in (None, False) or flag in experiment.reads or flag in {o.flag for o in experiment.options}:
            continue
        owner = next((e.name for e in REGISTRY.values() if flag in {o.flag for o in e.options}), None)
        if owner is not None:
            raise BadOption(f"{flag}: an option of --experiment {owner}, not of "
                            + (f"--experiment {experiment.name}" if experiment.name != GRID else "the grid")
                            + (f"; add --experiment {owner}" if experiment.name == GRID else ""))
        what = f"--experiment {experiment.name}" if experiment.name != GRID else "the grid"
        reads = ", ".join(experiment.reads + tuple(o.flag for o in experiment.options)) or "no other option"
        raise BadOption(f"{flag}: {what} does not use it (it reads {reads})")


def all_options() -> list[Option]:
    return [o for e in REGISTRY.values() for o in e.options]

