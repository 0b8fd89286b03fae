"""The sweep's parameters, declared once: profiles, optimizers, learning rates, batch sizes and their parsing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from bench.record import FULL, GRID, Cell, Protocol, RunKey, Settings, Target

MNIST_TRAIN_SIZE = 60_000
MAX_TRAIN_SIZE = 50_000  # the rest is the validation split (bench.data.VALIDATION_SIZE)
MNIST_TEST_SIZE = 10_000
MAX_CURVE_POINTS = 1000

# The lecture's seven, in the lecture's order; `all` adds every other optimizer Keras ships.
LECTURE_OPTIMIZERS = ("sgd", "rmsprop", "adagrad", "adadelta", "adam", "adamax", "nadam")

# Fixed hyperparameters. The lecture used SGD(lr=0.1) and Keras 1/2 defaults for the others;
# Keras 3 lowered several defaults (Adadelta 1.0 -> 0.001 barely trains), so the lecture-era
# values are pinned here. Optimizers not listed use the default of the installed Keras.
LEARNING_RATES = {
    "sgd": 0.1,
    "rmsprop": 0.001,
    "adagrad": 0.01,
    "adadelta": 1.0,
    "adam": 0.001,
    "adamax": 0.002,
    "nadam": 0.002,
}

ACTIVATIONS = ("sigmoid", "relu")
DTYPE = "float32"  # Keras' default floatx, which the suite never changes



@dataclass(frozen=True)
class Profile:
    """A protocol of the grid, fixed by one name; its target is written into each of its records."""

    name: str
    train_size: int
    epochs: int
    batch_sizes: tuple
    purpose: str
    target: Target
    repeats: int = 3  # independent repeats of every cell (DESIGN.md: at least 3)
    probes: bool = True  # the curvature and noise probes (in the first repeat of each cell)


# Every profile gives each repeat of a cell at least 5 steady samples (epochs after the first, which compiles: the
# evidence rule of bench.record, MIN_SAMPLES) and runs 3 independent repeats. On a 2-core CPU `quick`'s time is its
# batch-1 steps in default dispatch (Keras' host work per step, 2.5-5 ms on the EPYC VM this is developed on): 500
# examples x 6 epochs x 3 repeats x 7 optimizers keeps its sweep under 10 minutes there, with batch 1, 10, 100 and
# the full 500; its probes are off (the saddle and escape experiments are where curvature is measured).
# Targets: validation accuracy (the last 10,000 training images) reachable by the better cells of each protocol on
# a CPU, so that time to target separates them (chance is 0.10).
PROFILES = {
    "smoke": Profile("smoke", 200, 6, (1, 10, 100, FULL), "tests and CI, minutes on 2 CPU cores",
                     Target(value=0.60, split="validation")),
    "quick": Profile("quick", 500, 6, (1, 10, 100, FULL), "a laptop or CI-size CPU: under 10 minutes on 2 cores",
                     Target(value=0.75, split="validation"), probes=False),
    "lecture": Profile("lecture", 50_000, 20, (1, 10, 100, 1000, 10000, FULL), "a GPU",
                       Target(value=0.97, split="validation")),
}
DEFAULT_TARGET = Target(value=0.90, split="validation")  # a cell of no known profile (tests' own cells)
DEFAULT_PROFILE = "quick"


class BadOption(ValueError):
    """A command-line value that is not allowed; the message is one line for the user."""


@dataclass(frozen=True)
class RunConfig:
    """One cell of the grid or of an experiment: everything that fixes a training run."""

    profile: str
    optimizer: str
    batch_size: int
    full_batch: bool
    activation: str
    seed: int
    train_size: int
    epochs: int
    dispatch: str = "default"
    probes: bool = True  # curvature and noise probes outside the timed epochs (bench/curvature.py)
    # A fixed budget: `total_updates` updates in `epochs` equal intervals, drawn from the training set reshuffled
    # at each pass (None: ordinary epochs over the training set).
    budget: str | None = None  # "epochs", "examples" or "updates": which quantity is held equal across batch sizes
    total_updates: int | None = None
    learning_rate: float | None = None  # None: the suite's pinned rate (LEARNING_RATES) or Keras' default
    experiment: str = GRID  # the experiment the cell belongs to (bench/experiments)
    role: str | None = None  # its kind of run within the experiment (the tuning's trial, tuned, pinned)
    target: Target | None = field(default=None, compare=False)  # None: the profile's (DEFAULT_TARGET if unknown)
    evaluate_test_each_epoch: bool = True  # False: the test set once, at the end (the tuning's frequent checks)
    repeat: int = 1  # which independent repeat of the cell (a fresh model instance in its own round of the sweep)
    repeats: int = 1

    def __post_init__(self):
        if self.target is None:
            profile = PROFILES.get(self.profile)
            object.__setattr__(self, "target", profile.target if profile else DEFAULT_TARGET)

    @property
    def steps_per_epoch(self) -> int:
        if self.total_updates is not None:
            return self.total_updates // self.epochs
        return math.ceil(self.train_size / self.batch_size)

    @property
    def expected_updates(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def label(self) -> str:
        return FULL if self.full_batch else str(self.batch_size)

    @property
    def test_id(self) -> str:
        """'adam-bs100-seed0'; a fixed budget adds '-same<budget>' (unless the cell has a role), a set learning rate
        '-lr<rate>', else a role '-<role>'."""
        budget = f"-same{self.budget}" if self.budget and not self.role else ""
        rate = (f"-lr{self.learning_rate:g}" if self.learning_rate is not None
                else f"-{self.role}" if self.role else "")
        repeat = f"-r{self.repeat}" if self.repeats > 1 else ""
        return f"{self.optimizer}-bs{self.label}{budget}{rate}-seed{self.seed}{repeat}"

    @property
    def params(self) -> dict:
        """pytest-benchmark's `params` of the cell's benchmark (what `--group-by=param:...` reads)."""
        return {"optimizer": self.optimizer, "batch_size": FULL if self.full_batch else self.batch_size,
                "seed": self.seed, "repeat": self.repeat}

    def run_key(self, backend: str, threads: int | None, precision: str, machine: str) -> RunKey:
        """The key its finished record will have (bench.record.run_key): what --resume and shard plans match."""
        protocol = Protocol(experiment=self.experiment, profile=self.profile, train_size=self.train_size,
                            epochs=self.epochs, activation=self.activation, dtype=DTYPE, mode=self.dispatch,
                            backend=backend)
        cell = Cell(optimizer=self.optimizer, batch_size=self.batch_size, full_batch=self.full_batch,
                    budget=self.budget, lr_setting=self.learning_rate, role=self.role)
        return RunKey(protocol, Settings(threads=threads, probes=self.probes, precision=precision), cell, self.seed,
                      self.repeat, machine)


@dataclass(frozen=True)
class Sweep:
    """The whole grid after parsing: a profile with any axis overridden."""

    profile: str
    train_size: int
    epochs: int
    batch_sizes: tuple
    optimizers: tuple
    seeds: tuple
    activation: str
    dispatch: str = "default"
    probes: bool = True
    target: Target = DEFAULT_TARGET
    repeats: int = 1

    def cells(self) -> list[RunConfig]:
        """Every cell `repeats` times, in rounds: the whole grid once, then again, so that the repeats of one cell
        are spread over the sweep and a slow spell of the host lands on different cells' repeats, never on all of
        one cell's. The probes (which follow the trajectory, the same in every repeat of a seed) run in round 1."""
        return [
            RunConfig(
                profile=self.profile,
                optimizer=opt,
                batch_size=self.train_size if bs == FULL else bs,
                full_batch=bs == FULL,
                activation=self.activation,
                seed=seed,
                train_size=self.train_size,
                epochs=self.epochs,
                dispatch=self.dispatch,
                probes=self.probes and repeat == 1,
                target=self.target,
                evaluate_test_each_epoch=False,
                repeat=repeat,
                repeats=self.repeats,
            )
            for repeat in range(1, self.repeats + 1)
            for opt in self.optimizers
            for bs in self.batch_sizes
            for seed in self.seeds
        ]


def _int(option: str, text: str, *, low: int, high: int | None = None, what: str) -> int:
    digits = str(text).strip()
    if not re.fullmatch(r"[+-]?\d+", digits):  # int() would also take '1_0' and ' 1 '
        raise BadOption(f"{option}: {text!r} is not an integer; {what}")
    value = int(digits)
    if value < low or (high is not None and value > high):
        raise BadOption(f"{option}: {value} is out of range; {what}")
    return value


def _items(option: str, text: str) -> list[str]:
    items = [s.strip() for s in str(text).split(",")]
    if not items or any(s == "" for s in items):
        raise BadOption(f"{option}: {text!r} has an empty item; give a comma-separated list")
    return items


def parse_profile(text: str | None) -> Profile:
    name = DEFAULT_PROFILE if text is None else text
    if name not in PROFILES:
        raise BadOption(f"--bench-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def parse_train_size(text: str) -> int:
    return _int("--train-size", text, low=1, high=MAX_TRAIN_SIZE,
                what=f"the train size is 1 to {MAX_TRAIN_SIZE:,} (MNIST's 60,000 training images less the last "
                     "10,000, the validation split)")


MAX_EPOCHS = 1_000  # the lecture trains 20; beyond this a typo, not a protocol (a CPU would take years)


def parse_epochs(text: str) -> int:
    return _int("--epochs", text, low=1, high=MAX_EPOCHS, what=f"epochs is an integer from 1 to {MAX_EPOCHS:,}")


def parse_machine_label(text: str | None) -> str | None:
    """--machine-label: a short name that fits a report's table cell (no newline, no '|')."""
    if text is None:
        return None
    label = str(text)
    if not label.strip() or len(label) > 64 or any(c in label for c in "|\n\r\t`") or not label.isprintable():
        raise BadOption(f"--machine-label: {label!r} is not a usable label; give 1 to 64 printable characters "
                        "without '|', '`' or line breaks (e.g. H100-80GB, EPYC-2c)")
    return label.strip()


def parse_batch_sizes(text: str, train_size: int) -> tuple:
    sizes = []
    for item in _items("--batch-sizes", text):
        if item.lower() == FULL:
            sizes.append(FULL)
            continue
        what = f"batch sizes are integers from 1 to the train size ({train_size:,}) or '{FULL}'"
        size = _int("--batch-sizes", item, low=1, what=what)
        if size > train_size:
            raise BadOption(f"--batch-sizes: {size} is larger than the train size ({train_size:,}); "
                            f"use '{FULL}' for the whole training set in one batch")
        if size == train_size:
            raise BadOption(f"--batch-sizes: {size} is the whole training set; give it as '{FULL}'")
        sizes.append(size)
    return tuple(dict.fromkeys(sizes))


MAX_SEEDS = 100


def parse_seeds(text: str) -> tuple:
    seeds = tuple(dict.fromkeys(
        _int("--seeds", s, low=0, high=2**31 - 1, what="seeds are integers from 0 to 2**31-1")
        for s in _items("--seeds", text)))
    if len(seeds) > MAX_SEEDS:
        raise BadOption(f"--seeds: {len(seeds)} seeds; at most {MAX_SEEDS} (each one is a whole sweep)")
    return seeds


def parse_activation(text: str) -> str:
    if text not in ACTIVATIONS:
        raise BadOption(f"--activation: unknown activation {text!r}; choose one of {', '.join(ACTIVATIONS)}")
    return text


# How Keras drives the training steps. default: what `model.fit` gives a user (one step per call,
# XLA only where Keras turns it on). fast: the per-step host overhead removed: XLA-compiled step and a
# whole epoch per call (steps_per_execution = steps per epoch).
DISPATCH_MODES = ("default", "fast")


def parse_dispatch(text: str) -> str:
    if text not in DISPATCH_MODES:
        raise BadOption(f"--dispatch: unknown mode {text!r}; choose one of {', '.join(DISPATCH_MODES)}")
    return text


def parse_reruns(text: str) -> int:
    if str(text).strip() == "":
        raise BadOption("--rerun-unstable: '' is not an integer; reruns are an integer from 0 to 100")
    return _int("--rerun-unstable", text, low=0, high=100, what="reruns are an integer from 0 to 100")


PRECISIONS = ("tf32", "fp32")  # --precision: TensorFloat-32 where the GPU has it (the default), or full float32


def parse_precision(text: str | None) -> str:
    if text is None:
        return PRECISIONS[0]
    if text not in PRECISIONS:
        raise BadOption(f"--precision: unknown precision {text!r}; choose tf32 (TensorFloat-32 matmuls where the "
                        "GPU has them, the frameworks' default) or fp32 (full float32 matmuls)")
    return text


def parse_threads(text: str) -> int:
    return _int("--threads", text, low=1, high=1024, what="threads is an integer from 1 to 1,024 (TensorFlow intra- "
                                                         "and inter-op threads; more than the cores is allowed: "
                                                         "oversubscription is a setting one may measure)")


def parse_optimizers(text: str | None, discover=None) -> tuple:
    """`lecture`, `all` or Keras names. `discover()` lists the installed Keras' optimizers (the caller passes
    bench.backends.optimizer_names); it is asked only for `all` or a name outside the lecture's seven, so the
    usual case imports no Keras. Without it only the lecture's seven are known."""
    if text is None or text == "lecture":
        return LECTURE_OPTIMIZERS
    discover = discover or (lambda: sorted(LECTURE_OPTIMIZERS))
    if text == "all":
        return LECTURE_OPTIMIZERS + tuple(sorted(set(discover()) - set(LECTURE_OPTIMIZERS)))
    names = [s.lower() for s in _items("--optimizers", text)]
    alone = [n for n in names if n in ("all", "lecture")]
    if alone:
        raise BadOption(f"--optimizers: {alone[0]!r} stands alone (--optimizers {alone[0]}); a list names Keras "
                        f"optimizers, e.g. sgd,adam")
    unknown = [n for n in names if n not in LECTURE_OPTIMIZERS]
    if unknown:
        known = discover()
        for name in unknown:
            if name not in known:
                raise BadOption(f"--optimizers: unknown optimizer {name!r}; known: lecture, all, {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def parse_sweep(profile=None, train_size=None, epochs=None, batch_sizes=None, optimizers=None,
                seeds=None, activation=None, dispatch=None, discover=None, probes: bool | None = None,
                repeats=None) -> Sweep:
    """Build the grid from command-line strings; None keeps the profile's value."""
    prof = parse_profile(profile)
    n = prof.train_size if train_size is None else parse_train_size(train_size)
    if batch_sizes is None:
        # A --train-size below some of the profile's batch sizes drops those that no longer fit.
        sizes = tuple(b for b in prof.batch_sizes if b == FULL or b <= n)
    else:
        sizes = parse_batch_sizes(batch_sizes, n)
    return Sweep(
        profile=prof.name,
        train_size=n,
        epochs=prof.epochs if epochs is None else parse_epochs(epochs),
        batch_sizes=sizes,
        optimizers=parse_optimizers(optimizers, discover),
        seeds=(0,) if seeds is None else parse_seeds(seeds),
        activation="sigmoid" if activation is None else parse_activation(activation),
        dispatch="default" if dispatch is None else parse_dispatch(dispatch),
        probes=prof.probes if probes is None else probes,
        target=prof.target,
        repeats=prof.repeats if repeats is None else parse_repeats(repeats),
    )


def parse_repeats(text: str) -> int:
    return _int("--repeats", text, low=1, high=100, what="repeats is an integer from 1 to 100 (at least 3 for an "
                                                            "interval)")


# The grid's options (`pytest bench --help`, group mnist-mlp-bench): flag -> (parse_sweep's argument, help). The
# experiments read some of them (bench.experiments: each says which).
COMMON_OPTIONS = {
    "--bench-profile": ("profile", "grid profile: " + ", ".join(
        f"{p.name} ({p.train_size:,} examples, {p.epochs} epochs; {p.purpose})" for p in PROFILES.values())
        + f" (default: {DEFAULT_PROFILE})"),
    "--batch-sizes": ("batch_sizes", "comma-separated batch sizes; 'full' = the whole training set (default: the "
                                     "profile's)"),
    "--optimizers": ("optimizers", "comma-separated Keras optimizer names, 'lecture' (the lecture's seven, default) "
                                   "or 'all'"),
    "--epochs": ("epochs", "epochs per run (default: the profile's)"),
    "--train-size": ("train_size", "first N MNIST training examples, 1 to 50000 (the last 10,000 are the validation "
                                   "split; default: the profile's)"),
    "--seeds": ("seeds", "comma-separated seeds (default: 0)"),
    "--activation": ("activation", "hidden activation: sigmoid (the lecture's, default) or relu"),
    "--dispatch": ("dispatch", "default (what model.fit gives a user) or fast (an epoch per compiled call: no "
                               "per-step host work)"),
    "--repeats": ("repeats", "independent repeats of every cell, run in rounds over the whole grid (default: the "
                             "profile's, 3)"),
    "--probes": ("probes", "take the curvature and noise probes between epochs (in each cell's first repeat) even "
                           "where the profile does not"),
    "--no-probes": ("probes", "skip the curvature and noise probes between epochs (pure speed runs)"),
}
