"""The sweep's parameters, declared once: profiles, optimizers, learning rates, batch sizes and their parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass

MNIST_TRAIN_SIZE = 60_000
MAX_TRAIN_SIZE = 50_000  # the rest is the validation split (bench.data.VALIDATION_SIZE)
MNIST_TEST_SIZE = 10_000
FULL = "full"
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

# Named experiments beside the grid, run by name (`pytest bench --experiment saddle`): the module of each.
# Without --experiment only the grid (test_train.py) runs.
EXPERIMENTS = {"saddle": "test_saddle.py", "escape": "test_escape.py", "tuning": "test_tuning.py"}
GRID_MODULE = "test_train.py"


@dataclass(frozen=True)
class Profile:
    name: str
    train_size: int
    epochs: int
    batch_sizes: tuple
    purpose: str


# Every profile gives each cell at least 3 steady samples (epochs after the first, which compiles): the
# evidence rule of bench.record (MIN_SAMPLES). On a 2-core CPU `quick`'s time is its batch-1 steps (Keras' host
# work per step, 6-9 ms each on the VM this is developed on); 3,000 examples x 4 epochs keeps it near 20 minutes
# there, with every batch size from 1 to 1,000 and the full 3,000.
PROFILES = {
    "smoke": Profile("smoke", 500, 4, (1, 10, 100, FULL), "tests and CI, minutes on 2 CPU cores"),
    "quick": Profile("quick", 3_000, 4, (1, 10, 100, 1000, FULL), "a laptop or CI-size CPU, about 20 minutes"),
    "lecture": Profile("lecture", 50_000, 20, (1, 10, 100, 1000, 10000, FULL), "a GPU"),
}
DEFAULT_PROFILE = "quick"


@dataclass(frozen=True)
class SaddleProfile:
    """The saddle benchmark (bench/test_saddle.py): plain SGD from 1 to the full batch, once for the same
    number of epochs and once for the same number of updates, probed at `intervals` equal steps."""

    name: str
    train_size: int
    batch_sizes: tuple
    seeds: tuple
    epochs: int  # the "same epochs" budget
    updates: int  # the "same updates" budget
    intervals: int  # probe and evaluation points per run
    about: str


SADDLE_PROFILES = {
    "smoke": SaddleProfile("saddle-smoke", 200, (1, 10, FULL), (0,), 2, 100, 4, "the tests: seconds"),
    "cpu": SaddleProfile("saddle", 1_000, (1, 10, 100, FULL), (0, 1, 2), 10, 1_000, 10,
                         "3 seeds on 1,000 examples: about 10 minutes on 2 CPU cores"),
}


def saddle_cells(name: str = "cpu", train_size=None, seeds=None) -> list:
    """The saddle benchmark's grid; `train_size`/`seeds` (command-line strings) override the profile's."""
    if name not in SADDLE_PROFILES:
        raise BadOption(f"--saddle-profile: unknown profile {name!r}; choose one of {', '.join(SADDLE_PROFILES)}")
    p = SADDLE_PROFILES[name]
    n = p.train_size if train_size is None else parse_train_size(train_size)
    cells = []
    for bs in p.batch_sizes:
        size = n if bs == FULL else bs
        if size > n:
            continue
        epochs_updates = p.epochs * math.ceil(n / size)
        for budget, total in (("epochs", epochs_updates), ("updates", p.updates)):
            intervals = math.gcd(total, p.intervals)  # equal intervals of whole updates
            for seed in (p.seeds if seeds is None else parse_seeds(seeds)):
                cells.append(RunConfig(p.name, "sgd", size, bs == FULL, "sigmoid", seed, n, intervals,
                                       budget=budget, total_updates=total))
    return cells


@dataclass(frozen=True)
class EscapeProfile:
    """The escape experiment (bench/test_escape.py): plain SGD from one stuck point of the lecture network, every
    batch size, for the same number of examples and for the same number of updates, probed at `checks` equal
    steps until the probe set's loss falls `margin` below the stuck point's; and the full batch at other
    learning rates (the fairness arm)."""

    name: str
    train_size: int
    batch_sizes: tuple
    seeds: tuple  # the minibatch order's; the full batch is deterministic and runs once (seed 0)
    examples: int  # the same-examples budget
    updates: int  # the same-updates budget
    checks: int  # probe points per run: the escape's resolution is budget / checks updates
    learning_rate: float  # SGD's in both arms (the lecture's 0.1)
    fairness_rates: tuple  # the full batch's other learning rates
    margin: float  # escaped: probe-set loss below (1 - margin) x the stuck point's
    stuck_max_updates: int  # full-batch descent to a stuck point: at most this many updates
    about: str


ESCAPE_PROFILES = {
    "test": EscapeProfile("escape-test", 300, (1, 10, FULL), (0, 1), 300, 40, 4, 0.1, (1.0,), 0.05, 40,
                          "the tests: seconds"),
    "cpu": EscapeProfile("escape", 10_000, (1, 10, 100, 1000, FULL), (0, 1, 2, 3, 4), 10_000, 200, 20, 0.1,
                         (0.3, 1.0, 3.0), 0.1, 200, "10,000 examples, 5 seeds: about 15 minutes on 2 CPU cores"),
    "gpu": EscapeProfile("escape-lecture", 50_000, (1, 10, 100, 1000, 10000, FULL), tuple(range(10)), 100_000,
                         2_000, 50, 0.1, (0.3, 1.0, 3.0, 10.0), 0.1, 500, "the lecture's 50,000 examples, 10 seeds"),
}


def escape_profile(name: str) -> EscapeProfile:
    if name not in ESCAPE_PROFILES:
        raise BadOption(f"--escape-profile: unknown profile {name!r}; choose one of {', '.join(ESCAPE_PROFILES)}")
    return ESCAPE_PROFILES[name]


def escape_cells(name: str = "cpu", seeds=None) -> list:
    """The escape experiment's grid: each batch size for the same examples and for the same updates (the full
    batch once: it is deterministic), and the full batch at each fairness learning rate."""
    p = escape_profile(name)
    n = p.train_size
    seeds = p.seeds if seeds is None else parse_seeds(seeds)
    cells = []

    def cell(size, full, seed, budget, total, lr=None):
        checks = math.gcd(total, p.checks)  # equal steps of whole updates
        return RunConfig(p.name, "sgd", size, full, "sigmoid", seed, n, checks, dispatch="fast", budget=budget,
                         total_updates=total, learning_rate=lr)

    for bs in p.batch_sizes:
        size, full = (n, True) if bs == FULL else (bs, False)
        for seed in (seeds[:1] if full else seeds):
            cells.append(cell(size, full, seed, "examples", max(1, p.examples // size)))
            cells.append(cell(size, full, seed, "updates", p.updates))
    cells += [cell(n, True, seeds[0], "updates", p.updates, lr) for lr in p.fairness_rates]
    return cells


@dataclass(frozen=True)
class TuningProfile:
    """The tuning experiment (bench/test_tuning.py): per optimizer x batch size, trials at each rate of a
    log-spaced grid centred on the pinned rate, for a fixed number of updates checked at equal steps on the
    validation split; then final runs at the chosen rate and at the pinned rate, other seeds than the trials'."""

    name: str
    train_size: int
    batch_sizes: tuple
    optimizers: tuple
    updates: int  # every run's budget, whatever the batch size (steps to target are counted within it)
    checks: int  # validation checks per run: steps to target are resolved to updates / checks
    grid_points: int  # learning rates in the search, half a decade apart, centred on the pinned rate
    trial_seed: int
    final_seeds: tuple  # (the target of steps to target is analysis.metrics.TARGET_ACCURACY's, by profile name)
    about: str


TUNING_PROFILES = {
    "test": TuningProfile("tuning-test", 300, (10, 100), ("sgd", "adam"), 40, 4, 3, 0, (1, 2),
                          "the tests: about a minute"),
    "cpu": TuningProfile("tuning-cpu", 5_000, (10, 100, 1000), ("sgd", "adam"), 400, 16, 5, 0, (1, 2, 3),
                         "sgd and adam, batch 10/100/1,000, 5 rates, 5,000 examples, 400 updates: about 22 minutes "
                         "on 2 CPU cores in fast dispatch"),
    "cpu-full": TuningProfile("tuning", 5_000, (10, 30, 100, 300, 1000), ("sgd", "adam"), 400, 16, 5, 0, (1, 2, 3),
                              "cpu with batch 30 and 300 too (reports/tuning): 41 minutes on 2 CPU cores"),
    "gpu": TuningProfile("tuning-lecture", 50_000, (10, 100, 1000, 10000, 50000),
                         ("sgd", "rmsprop", "adam", "adamax", "nadam", "adagrad", "adadelta"), 5_000, 50, 7, 0,
                         (1, 2, 3), "the lecture's 50,000 examples, 7 rates, 5,000 updates"),
}
TUNING_SPACING = 10 ** 0.5  # half a decade between neighbouring rates


def tuning_profile(name: str) -> TuningProfile:
    if name not in TUNING_PROFILES:
        raise BadOption(f"--tuning-profile: unknown profile {name!r}; choose one of {', '.join(TUNING_PROFILES)}")
    return TUNING_PROFILES[name]


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
    return tuple(float(f"{centre * TUNING_SPACING ** (i - (points - 1) / 2):.4g}") for i in range(points))


def tuning_cells(name: str = "cpu", optimizers=None, lr_text: str | None = None, seeds=None) -> list:
    """Trials first (every optimizer x batch size x rate, the trial seed), then the final runs (the tuned and the
    pinned rate, each final seed): pytest runs them in this order, so every final run finds its trials."""
    p = tuning_profile(name)
    opts = p.optimizers if optimizers is None else tuple(_items("--optimizers", optimizers))
    unknown = [o for o in opts if o not in LEARNING_RATES]
    if unknown:
        raise BadOption(f"--optimizers: {unknown[0]!r} has no pinned rate to centre a search on; choose among "
                        f"{', '.join(LEARNING_RATES)}")
    final_seeds = p.final_seeds if seeds is None else parse_seeds(seeds)

    def cell(opt, bs, seed, role, lr=None):
        full = bs >= p.train_size
        return RunConfig(p.name, opt, min(bs, p.train_size), full, "sigmoid", seed, p.train_size, p.checks,
                         dispatch="fast", probes=False, budget="updates", total_updates=p.updates, learning_rate=lr,
                         tuning_role=role)

    trials = [cell(o, b, p.trial_seed, "trial", lr) for o in opts for b in p.batch_sizes
              for lr in lr_grid(o, p.grid_points, lr_text)]
    finals = [cell(o, b, s, role) for o in opts for b in p.batch_sizes for role in ("tuned", "pinned")
              for s in final_seeds]
    return trials + finals


class BadOption(ValueError):
    """A command-line value that is not allowed; the message is one line for the user."""


@dataclass(frozen=True)
class RunConfig:
    """One grid cell: everything that fixes a training run."""

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
    # The saddle benchmark's fixed budget: `total_updates` updates in `epochs` equal intervals, drawn
    # from the training set reshuffled at each pass (None: ordinary epochs over the training set).
    budget: str | None = None  # "epochs", "examples" or "updates": which quantity is held equal across batch sizes
    total_updates: int | None = None
    learning_rate: float | None = None  # None: the suite's pinned rate (LEARNING_RATES) or Keras' default
    # the tuning experiment: "trial" (one rate of the search), "tuned" (a final run at the rate the trials chose,
    # known only when it runs) or "pinned" (a final run at the pinned rate); None elsewhere
    tuning_role: str | None = None

    @property
    def steps_per_epoch(self) -> int:
        if self.total_updates is not None:
            return self.total_updates // self.epochs
        return math.ceil(self.train_size / self.batch_size)

    @property
    def expected_updates(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def test_id(self) -> str:
        label = FULL if self.full_batch else str(self.batch_size)
        budget = f"-same{self.budget}" if self.budget else ""
        lr = f"-lr{self.learning_rate:g}" if self.learning_rate is not None else ""
        if self.tuning_role in ("tuned", "pinned"):
            lr = f"-{self.tuning_role}"
        budget = "" if self.tuning_role else budget
        return f"{self.optimizer}-bs{label}{budget}{lr}-seed{self.seed}"

    @property
    def params(self) -> dict:
        """pytest-benchmark's `params` of the cell's benchmark (what `--group-by=param:...` reads)."""
        return {"optimizer": self.optimizer, "batch_size": FULL if self.full_batch else self.batch_size,
                "seed": self.seed}

    def planned(self, backend: str, threads: int | None, precision: str = "tf32") -> dict:
        """The cell's record as far as it is known before it runs: what --resume matches the store against
        (bench.record.resume_key reads both)."""
        return {"profile": self.profile, "train_size": self.train_size, "epochs": self.epochs,
                "activation": self.activation, "dtype": DTYPE, "optimizer": self.optimizer,
                "batch_size": self.batch_size, "full_batch": self.full_batch, "budget": self.budget,
                "lr_setting": self.learning_rate, "seed": self.seed, "probes": {"requested": self.probes},
                "tuning": {"role": self.tuning_role} if self.tuning_role else None,
                "dispatch": {"mode": self.dispatch, "backend": backend, "precision": precision,
                             "threads": {"intra_op": threads, "inter_op": threads} if threads else None}}


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

    def cells(self) -> list[RunConfig]:
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
                probes=self.probes,
            )
            for opt in self.optimizers
            for bs in self.batch_sizes
            for seed in self.seeds
        ]


def _int(option: str, text: str, *, low: int, high: int | None = None, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadOption(f"{option}: {text!r} is not an integer; {what}") from None
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


def parse_epochs(text: str) -> int:
    return _int("--epochs", text, low=1, what="epochs is a positive integer")


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
        sizes.append(size)
    return tuple(dict.fromkeys(sizes))


def parse_seeds(text: str) -> tuple:
    return tuple(dict.fromkeys(
        _int("--seeds", s, low=0, high=2**31 - 1, what="seeds are integers from 0 to 2**31-1")
        for s in _items("--seeds", text)))


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
    return _int("--threads", text, low=1, high=1024, what="threads is a positive integer (TensorFlow intra- and inter-op threads)")


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
    unknown = [n for n in names if n not in LECTURE_OPTIMIZERS]
    if unknown:
        known = discover()
        for name in unknown:
            if name not in known:
                raise BadOption(f"--optimizers: unknown optimizer {name!r}; known: lecture, all, {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def parse_sweep(profile=None, train_size=None, epochs=None, batch_sizes=None, optimizers=None,
                seeds=None, activation=None, dispatch=None, discover=None) -> Sweep:
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
    )
