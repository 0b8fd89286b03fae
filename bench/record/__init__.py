"""The run record, defined once: its fields with types and units, the schema version and the chain of upgrades of
older files, the protocol, cell and run keys, and the run store's one reader and writer. Imports no TensorFlow,
Keras or JAX: the measurement (bench/) and the analysis (analysis/) both import it, and nothing else crosses over.

Every production read of a record goes through `Record.from_dict` (the store's reader, the benchmark JSON's
reader in analysis/, resume, tuning and the estimate all get `Record` objects): a renamed or mistyped field is an
error naming it, never a silent None."""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import re
import statistics
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench.record import escape as _escape_part
from bench.record import tuning as _tuning_part
from bench.record.escape import Escape, Stuck
from bench.record.fields import doc as _f
from bench.record.tuning import Trial, Tuning

SCHEMA = "mnist-mlp-bench/4"
SCHEMAS = ("mnist-mlp-bench/1", "mnist-mlp-bench/2", "mnist-mlp-bench/3", SCHEMA)  # what the reader accepts (older ones are upgraded)

# What counts as evidence (DESIGN.md): a run's timing rests on at least MIN_SAMPLES steady samples; noise on a shared
# host only adds time, so its estimate is the fastest sample (ESTIMATOR); it is unstable when its samples spread more
# than UNSTABLE_SPREAD around their median (a robust spread: the scaled median absolute deviation, which one slow
# sample among five does not move), or when its estimate is slower than the compile epoch (beyond the same tolerance:
# where compilation is a second of a 30 s epoch, the two differ by noise alone). A sample more than SLOW above the
# estimate is slow, and is attributed to what its own measurements explain (sample_cause).
MIN_SAMPLES = 5
UNSTABLE_SPREAD = 0.10
SLOW = 0.10
MAD_SCALE = 1.4826  # makes the median absolute deviation estimate a normal distribution's standard deviation
ESTIMATOR = "minimum of the steady samples"
CAUSES = ("gc", "host", "process", "unexplained", "not measured")
DEFAULT_STORE = ".benchmarks/mnist-mlp-bench-runs.jsonl"

# Statuses that are results: --resume skips their cells. `error` and `interrupted` cells run again.
FINISHED = ("ok", "diverged", "oom")
STATUSES = ("ok", "diverged", "oom", "error", "interrupted")

FULL = "full"  # the batch label of the whole training set in one batch
GRID = "grid"  # the experiment name of the plain sweep
PLATEAU_KINDS = ("saddle", "minimum", "slope", "undetermined")  # bench.curvature.classify's labels


DIRTY = ".dirty"  # appended to a code version when the working tree had uncommitted changes (bench.machine)


def provenance(version: str | None) -> str | None:
    """Why results made by `version` cannot be rebuilt from a commit (None: they can): dirty or unknown."""
    if not version or "+" not in version:
        return f"no commit recorded ({version or 'no code version'})"
    if version.endswith(DIRTY) or "dirty" in version:
        return f"made from a dirty working tree ({version})"
    return None


def batch_label(full_batch: bool, batch_size: int) -> str:
    """'full' for the whole training set in one batch, else the batch size."""
    return FULL if full_batch else str(batch_size)


@dataclass(kw_only=True)
class Gpu:
    """NVML's view of the GPU during the timed epochs; on a machine without one, available=False and a reason."""

    available: bool = _f("an NVIDIA GPU was found by NVML and sampled")
    reason: str | None = _f("why there are no (or incomplete) GPU numbers", None)
    name: str | None = _f("the GPU's name as NVML reports it", None)
    samples: int = _f("NVML samples taken during the steady epochs (the compile epoch is not sampled)", 0)
    samples_per_epoch: list[int] = _f("NVML samples of each steady epoch (at least 10 where the epoch allows)",
                                      factory=list)
    util_mean_pct: float | None = _f("mean GPU utilisation over the samples (%)", None)
    util_max_pct: float | None = _f("highest GPU utilisation sampled (%)", None)
    memory_used_max_mib: float | None = _f("highest device memory in use (MiB)", None)
    power_mean_w: float | None = _f("mean board power over the samples (W)", None)
    energy_j: float | None = _f("energy of the steady epochs (J)", None)
    energy_per_epoch_j: float | None = _f("energy_j per steady epoch (J)", None)
    energy_source: str | None = _f("how energy_j was measured: counter (NVML's total-energy counter, its difference "
                                   "across each steady epoch) or integrated power (mean power x time)", None)


@dataclass(kw_only=True)
class Dispatch:
    """How Keras drove the steps, as actually used."""

    backend: str = _f("Keras backend: tensorflow or jax")
    device: str = _f("CPU or GPU: where the backend trained")
    mode: str = _f("--dispatch: default (model.fit as a user gets it) or fast (no per-step host work)")
    driver: str = _f("who ran the epochs: keras_fit (model.fit) or device_loop (one compiled call per epoch)")
    jit_compile: bool = _f("XLA compilation of the train step")
    steps_per_execution: int = _f("train steps per compiled call")
    op_determinism: bool = _f("TensorFlow op determinism (--deterministic)")
    threads: dict | None = _f("TensorFlow's {intra_op, inter_op} thread settings (0: one per core); None on JAX")
    precision: str = _f("--precision asked for: tf32 (TensorFloat-32 matmuls where the GPU has them, the "
                        "frameworks' default) or fp32 (full float32); part of the resume key", "tf32")
    matmul_precision: str | None = _f("the float32 matmul precision the run got: tf32 (allowed, on a GPU of compute "
                                      "capability 8.0 or later) or fp32; None: not recorded (a GPU run made "
                                      "before it was)", None)


@dataclass(kw_only=True)
class Probes:
    """The curvature and noise probes taken between epochs (bench/curvature.py)."""

    enabled: bool = _f("the probes ran")
    reason: str | None = _f("why they did not run", None)
    requested: bool = _f("probes were asked for (not --no-probes); part of the resume key", True)
    probe_size: int | None = _f("training examples the probes use (the first of the training subset)", None)
    lanczos_iters: int | None = _f("Lanczos iterations per Hessian probe (schema 1's hand-written Lanczos)", None)
    eigen_solver: str | None = _f("how the Hessian's extremes were found (schema 2: ARPACK through scipy's eigsh)",
                                  None)
    seconds: float | None = _f("time the probes took, outside the timed epochs (s)", None)


@dataclass(kw_only=True)
class Hessian:
    """Extreme eigenvalues of the probe set's Hessian at one update."""

    update: int = _f("the update after which the weights were probed")
    lambda_max: float = _f("largest Hessian eigenvalue")
    lambda_min: float = _f("smallest Hessian eigenvalue (negative: a direction of negative curvature)")
    lanczos_iters: int | None = _f("Lanczos iterations done (schema 1)", None)
    matvecs: int | None = _f("Hessian-vector products the eigen-solver used", None)
    converged: bool | None = _f("the eigen-solver met its tolerance (None: schema 1, not checked)", None)
    probe_size: int = _f("probe-set examples")
    seconds: float = _f("time of this probe (s)")
    plateau_start: int | None = _f("the plateau it was taken on, by its first update; None at the run's end", None)
    grad_norm: float | None = _f("the probe set's gradient L2 norm at these same weights", None)
    loss: float | None = _f("the probe set's loss at these same weights", None)


@dataclass(kw_only=True)
class Plateau:
    """A stretch of the loss curve where the loss stalls, with its gradient and curvature."""

    start_update: int = _f("first update of the stall")
    end_update: int = _f("last update of the stall")
    loss: float | None = _f("median minibatch loss inside it")
    grad_norm: float | None = _f("median minibatch gradient L2 norm inside it")
    full_grad_norm: float | None = _f("full-batch (probe set) gradient L2 norm at the Hessian probe's weights")
    lambda_min: float | None = _f("smallest Hessian eigenvalue at a probe inside it")
    lambda_max: float | None = _f("largest Hessian eigenvalue at a probe inside it")
    probe_update: int | None = _f("update of that Hessian probe")
    flatness: float | None = _f("|g|^2 / (2 lambda_max L) at that probe: the share of the loss a stable gradient "
                                "step would remove (bench.curvature.classify)", None)
    kind: str | None = _f("saddle, minimum, slope or undetermined; None where no Hessian probe fell inside it")


@dataclass(kw_only=True, frozen=True)
class Target:
    """The accuracy a profile sets as its target (time and steps to target read it), declared with the profile."""

    value: float = _f("the accuracy to reach")
    split: str = _f("where it is read: validation (the last 10,000 training images) or test (records from before "
                    "the validation split)")
    metric: str = _f("what is read: accuracy", "accuracy")


@dataclass(kw_only=True)
class Record:
    """One training run: what ran, what it cost, what it reached (DESIGN.md's contract). Units are in the names."""

    schema: str = _f("record format version (a record read from an older file is upgraded to this one)")
    status: str = _f("ok, diverged, oom, error or interrupted")
    error: str | None = _f("the reason when status is not ok")
    experiment: str = _f("what the run belongs to: grid (the sweep of optimizers x batch sizes) or the named "
                         "experiment (saddle, escape, tuning, ...), as declared in bench/experiments/")
    profile: str = _f("the profile of the grid or of the experiment the run belongs to")
    target: Target = _f("the accuracy the profile sets as its target, and the split it is read on")
    role: str | None = _f("the cell's role within its experiment (tuning: trial, tuned or pinned); None in the grid; "
                          "part of the cell key", None)
    optimizer: str = _f("the Keras optimizer's lower-case name")
    batch_size: int = _f("examples per update (the train size for the full batch)")
    full_batch: bool = _f("the batch is the whole training set")
    budget: str | None = _f("the saddle benchmark's equal quantity: epochs or updates; None in the grid")
    activation: str = _f("hidden activation: sigmoid or relu")
    dtype: str = _f("training dtype")
    seed: int = _f("seed of initialisation and shuffling")
    train_size: int = _f("training examples (the first N of MNIST's training set; at most 50,000)")
    test_size: int = _f("test examples evaluated")
    epochs: int = _f("epochs (or equal update intervals) asked for")
    epochs_done: int = _f("epochs that finished")
    learning_rate: float = _f("the optimizer's learning rate as built")
    lr_setting: float | None = _f("the learning rate the cell asked for (None: the suite's pinned rate or Keras' "
                                  "default); part of the cell key", None)
    updates: int = _f("parameter updates, read from the optimizer")
    steps_per_epoch: int = _f("updates per epoch: ceil(train_size / batch_size), or the interval of a budget")
    epoch_times_s: list[float] = _f("wall time of each epoch's training steps, evaluation excluded")
    fit_wall_s: float = _f("the whole training call, evaluations and probes included")
    first_epoch_s: float | None = _f("the first epoch, which includes tracing and compilation")
    steady_samples_s: list[float] = _f("the timing's samples: the steady epochs (every epoch after the first)",
                                       factory=list)
    sample_unit: str = _f("what one sample is: epoch (a whole epoch's training steps)", "epoch")
    epoch_cpu_s: list[float | None] = _f("the process's CPU time (all threads) in each epoch (s)", factory=list)
    epoch_gc_s: list[float | None] = _f("time Python's garbage collector ran in each epoch (gc.callbacks; s)",
                                        factory=list)
    epoch_steal_s: list[float | None] = _f("the host's steal time in each epoch, all CPUs (/proc/stat; None where "
                                           "there is none; s)", factory=list)
    epoch_others_s: list[float | None] = _f("CPU time other processes of this machine used in each epoch, all CPUs "
                                            "(/proc/stat less this process's; s)", factory=list)
    sample_causes: list[str | None] = _f("per steady sample: None, or why it is slow (more than SLOW above the "
                                         "estimate): gc, host (steal or other processes), process (this process did "
                                         "more CPU work), unexplained, or not measured (older records)", factory=list)
    epoch_time_s: float | None = _f("the run's steady estimate: the fastest steady sample (noise on a shared host only "
                                    "adds time)")
    epoch_time_median_s: float | None = _f("the median of steady_samples_s", None)
    epoch_time_iqr_s: float | None = _f("interquartile range of steady_samples_s", None)
    spread: float | None = _f("robust spread of the steady samples: 1.4826 x median absolute deviation / median", None)
    compile_s: float | None = _f("first_epoch_s - epoch_time_s: tracing and compilation, never part of steady time",
                                 None)
    unstable: bool = _f("fewer than MIN_SAMPLES steady samples, a spread above UNSTABLE_SPREAD, or an estimate slower "
                        "than the compile epoch", False)
    unstable_reason: str | None = _f("why the timing is unstable", None)
    attempt: int = _f("1 for the first run of the cell in a sweep; reruns of an unstable cell count up", 1)
    repeat: int = _f("which independent repeat of the cell this run is, 1 to repeats (a fresh model instance, run in "
                     "its own round of the sweep); part of the run key", 1)
    repeats: int = _f("repeats of the cell the sweep asked for (--repeats)", 1)
    sweep: str | None = _f("the sweep (pytest session) the run belongs to: its start time, host and process id; two "
                           "sweeps of one protocol are independent measurements (None: not recorded)", None)
    process: str | None = _f("which process trained the run: round (a fresh process for the run's round of the sweep, "
                             "so a cell's repeats never share one: bench.worker) or sweep (the sweep's own process: "
                             "--in-process, and experiments whose results are not timings); None: not recorded (before "
                             "2026-11-30 every run trained in the sweep's process)", None)
    time_per_update_s: float | None = _f("epoch_time_s / steps_per_epoch")
    examples_per_s: float | None = _f("training examples per second in the steady state")
    train_loss: float | None = _f("loss on the training subset after the last epoch")
    train_accuracy: float | None = _f("accuracy on the training subset after the last epoch")
    test_loss: float | None = _f("loss on the test set after the last epoch")
    test_accuracy: float | None = _f("accuracy on the test set after the last epoch")
    test_accuracy_by_epoch: list[float] = _f("test accuracy after each epoch (the tuning experiment: none, only the "
                                             "final test_accuracy)")
    val_size: int | None = _f("validation examples: the last 10,000 of MNIST's training images, never trained on "
                              "(None: a record from before the split)", None)
    val_loss: float | None = _f("loss on the validation split after the last epoch", None)
    val_accuracy: float | None = _f("accuracy on the validation split after the last epoch", None)
    val_accuracy_by_epoch: list[float] = _f("validation accuracy after each epoch (what targets and tuning read)",
                                            factory=list)
    train_loss_by_epoch: list[float | None] = _f("Keras' running mean of the training loss over each epoch")
    loss_curve: list[list] = _f("[[update, minibatch loss], ...] every curve_stride-th update")
    grad_norm_curve: list[list] = _f("[[update, minibatch gradient L2 norm], ...] every grad_norm_stride-th update")
    curve_stride: int | None = _f("updates between loss-curve points; None where no curve was recorded")
    grad_norm_stride: int | None = _f("updates between gradient-norm points; None where none was recorded")
    probes: Probes = _f("the probes' settings and cost")
    full_grad_norm_by_epoch: list[float] = _f("probe-set gradient L2 norm at each epoch end")
    full_loss_by_epoch: list[float] = _f("probe-set loss at each epoch end (where plateaus are found)", factory=list)
    noise_scale_by_epoch: list[float | None] = _f("gradient noise scale B_simple at each epoch end")
    hessian: Hessian | None = _f("the Hessian's extremes at the end of the run")
    plateaus: list[Plateau] | None = _f("stalls of the loss curve; None in records from before the probes")
    flops_per_epoch: int | None = _f("model FLOPs of one epoch's training (forward and backward matmuls)")
    achieved_gflops: float | None = _f("flops_per_epoch / epoch_time_s (GFLOP/s)")
    peak_fraction: float | None = _f("achieved_gflops / the session's measured matmul peak")
    host_memory_peak_mib: float | None = _f("the process's peak resident memory during the run, earlier runs' "
                                            "memory included (MiB)")
    host_memory_run_mib: float | None = _f("the run's own peak: the process's peak during the run minus its "
                                           "resident memory when the run started (MiB)", None)
    host_memory_source: str | None = _f("how it was measured")
    diverged: bool = _f("the loss became NaN/inf")
    gpu: Gpu = _f("NVML's samples of the timed epochs")
    dispatch: Dispatch = _f("how the steps were driven")
    escape: Escape | None = _f("the escape experiment's measurement; None elsewhere", None)
    tuning: Tuning | None = _f("the tuning experiment's search; None elsewhere", None)
    code_version: str | None = _f("the suite's version and git commit that made the run, +dirty when the working tree "
                                  "had uncommitted changes (None: not recorded)", None)

    def to_dict(self) -> dict:
        """Plain JSON types, keys in declaration order (the form stored and written to extra_info)."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> "Record":
        """A record read back, upgraded from an older schema, every field's type checked (RecordError)."""
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
        rec = _build(cls, upgrade(data), where)
        _check_values(rec, where)
        return rec

    @property
    def label(self) -> str:
        return batch_label(self.full_batch, self.batch_size)


# Times a run cannot have negative or infinite (compile_s can be negative: a first epoch faster than the estimate).
_TIMES = ("epoch_times_s", "steady_samples_s", "epoch_time_s", "epoch_time_median_s", "first_epoch_s", "fit_wall_s",
          "time_per_update_s")


def _check_values(rec: "Record", where: str) -> None:
    """RecordError for values a run cannot have, beyond their types: an unknown status, a time that is not a
    finite non-negative number."""
    import math

    if rec.status not in STATUSES:
        raise RecordError(f"{where}.status: {rec.status!r} is none of {', '.join(STATUSES)}")
    for name in _TIMES:
        value = getattr(rec, name)
        for x in value if isinstance(value, list) else [value]:
            if x is not None and not (math.isfinite(x) and x >= 0):
                raise RecordError(f"{where}.{name}: {x!r} is no time (a finite number of seconds, 0 or more)")


def _plain(value):
    """dataclasses.asdict without its deep copies of every curve point (a record holds thousands)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def fields_doc(cls=Record, prefix: str = "") -> dict:
    """{dotted field name: its meaning}, nested dataclasses flattened: the record's documentation."""
    out = {}
    for f in dataclasses.fields(cls):
        out[prefix + f.name] = f.metadata.get("doc", "")
        inner = _dataclass_in(typing.get_type_hints(cls)[f.name])
        if inner is not None:
            out.update(fields_doc(inner, prefix + f.name + "."))
    return out


def columns(cls=Record, prefix: str = "") -> dict:
    """{dotted name: the field's type hint} of every leaf of the record as a table column: a nested record is
    flattened into its fields (gpu.util_mean_pct), a list of records (plateaus) stays one column."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        inner = _dataclass_in(hint)
        if inner is not None and typing.get_origin(hint) is not list and list not in map(typing.get_origin,
                                                                                          typing.get_args(hint)):
            out.update(columns(inner, prefix + f.name + "."))
        else:
            out[prefix + f.name] = hint
    return out


def flat(rec: Record) -> dict:
    """The record as one table row: {column (see columns()): value in plain JSON types}, None under a nested record
    that is None."""
    return {path: _plain(value(rec, path)) for path in columns()}


class RecordError(ValueError):
    """A record that does not follow the contract; the message names the field."""


def _dataclass_in(hint):
    """The dataclass a hint refers to (Gpu, Hessian | None, list[Plateau] | None), or None."""
    for arg in (hint, *typing.get_args(hint), *(a for x in typing.get_args(hint) for a in typing.get_args(x))):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


_PLAIN = {float: (float, int), int: (int,), bool: (bool,), str: (str,), dict: (dict,), list: (list,)}


def _check(value, hint, where: str):
    """`value` converted to `hint` (dataclasses built from dicts); RecordError when it does not fit."""
    if hint in _PLAIN:
        if not isinstance(value, _PLAIN[hint]) or (hint is not bool and isinstance(value, bool)):
            raise RecordError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r:.40}")
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        for arg in candidates[:-1]:
            try:
                return _check(value, arg, where)
            except RecordError:
                continue
        return _check(value, candidates[-1], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    raise RecordError(f"{where}: no check for {hint!r}")


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}: missing field {f.name!r}")
            continue
        values[f.name] = _check(data[f.name], hints[f.name], f"{where}.{f.name}")
    return cls(**values)


# --- timing -----------------------------------------------------------------------------------------------

def _at(values, i):
    return values[i] if values is not None and i < len(values) else None


def sample_cause(excess: float, i: int, fastest: int, cpu=None, gc=None, steal=None, others=None,
                 cpus: int | None = None) -> str:
    """Why epoch `i` took `excess` seconds more than the fastest, epoch `fastest`, by its own measurements: `gc`
    when the garbage collector ran at least half the excess; `host` when the host's steal time or other processes'
    CPU time, spread over the machine's `cpus`, covers at least half of it; `process` when this process spent that
    much more CPU time than in the fastest epoch (its own or the framework's extra work); else `unexplained`."""
    if all(x is None for x in (cpu, gc, steal, others)):
        return "not measured"  # a record from before the samples' measurements
    cpus = max(1, cpus or os.cpu_count() or 1)
    half = excess / 2
    if (_at(gc, i) or 0.0) >= half:
        return "gc"
    if ((_at(steal, i) or 0.0) + (_at(others, i) or 0.0)) / cpus >= half:
        return "host"
    mine, base = _at(cpu, i), _at(cpu, fastest)
    if mine is not None and base is not None and (mine - base) / cpus >= half:
        return "process"
    return "unexplained"


def slow_text(causes: list, listed: int = 6) -> str:
    """The slow samples of an unstable timing, for its reason: each epoch with its cause, or past `listed` of them
    the count per cause."""
    slow = [(i + 2, c) for i, c in enumerate(causes) if c]
    if not slow:
        return ""
    if len(slow) <= listed:
        return "; slow epoch(s) " + ", ".join(f"{epoch} ({cause})" for epoch, cause in slow)
    counts = {}
    for _, cause in slow:
        counts[cause] = counts.get(cause, 0) + 1
    return (f"; {len(slow)} of {len(causes)} epochs slow (" + ", ".join(f"{c} {n}" for c, n in counts.items())
            + ")")


def steady_timing(epoch_times: list, cpu=None, gc=None, steal=None, others=None, cpus: int | None = None) -> dict:
    """The record's timing fields from a run's epoch times (and, where measured, each epoch's process CPU, GC, host
    steal and other processes' CPU time): the steady samples (every epoch after the first, whose first steps trace
    and compile), the estimate (ESTIMATOR), median, robust spread, compile time, each slow sample's cause, and
    whether the timing is unstable (fewer than MIN_SAMPLES samples, a spread above UNSTABLE_SPREAD, or an estimate
    slower than the compile epoch beyond the same tolerance)."""
    times = [float(t) for t in epoch_times]
    samples = times[1:]
    out = {"steady_samples_s": samples, "epoch_time_s": None, "epoch_time_median_s": None, "epoch_time_iqr_s": None,
           "spread": None, "compile_s": None, "sample_causes": []}
    reasons = []
    if len(samples) < MIN_SAMPLES:
        reasons.append(f"{len(samples)} steady sample(s), fewer than {MIN_SAMPLES}")
    if samples:
        best, median = min(samples), statistics.median(samples)
        fastest = samples.index(best) + 1  # as an epoch index
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else (median,) * 3
        mad = statistics.median(abs(x - median) for x in samples)
        out.update(epoch_time_s=best, epoch_time_median_s=median, epoch_time_iqr_s=q3 - q1,
                   spread=MAD_SCALE * mad / median if median else None, compile_s=times[0] - best,
                   sample_causes=[sample_cause(x - best, i + 1, fastest, cpu, gc, steal, others, cpus)
                                  if x > best * (1 + SLOW) else None for i, x in enumerate(samples)])
        if out["spread"] is not None and out["spread"] > UNSTABLE_SPREAD:
            reasons.append(f"samples spread {out['spread']:.0%} of their median (MAD), above {UNSTABLE_SPREAD:.0%}"
                           + slow_text(out["sample_causes"]))
        if best > times[0] * (1 + UNSTABLE_SPREAD):  # within the tolerance when compilation is negligible
            reasons.append(f"the steady estimate ({best:.3g} s) is slower than the compile epoch ({times[0]:.3g} s)")
    out["unstable"] = bool(reasons)
    out["unstable_reason"] = "; ".join(reasons) or None
    return out


CONFIDENCE = 0.95


def repeats_interval(estimates, confidence: float = CONFIDENCE, another: int | None = None) -> tuple:
    """(estimate, low, high, n) of a cell from its independent repeats' estimates (each repeat's fastest sample):
    their geometric mean with Student's t interval on the logarithms, n - 1 degrees of freedom. The repeats are
    the unit of replication; each one's estimate carries the spread of its own samples, so the interval holds both
    levels of variation (tests/test_evidence.py checks its coverage by simulation). Fewer than two: no interval.

    With `another` = m, the replication interval instead: where the estimate of another sweep of m repeats will
    fall (Student's t prediction interval, half-width t * s * sqrt(1/n + 1/m)). A confidence interval is about this
    sweep's mean; another sweep's estimate carries its own error too, and falls inside this sweep's 95 % confidence
    interval only about 88 % of the time with 5 repeats a side (2 F_t(t_0.975 / sqrt 2) - 1 with n - 1 degrees of
    freedom; Cumming & Maloney's capture percentage), inside the replication interval 95 % of the time."""
    import math

    logs = [math.log(x) for x in estimates if x is not None and x > 0 and math.isfinite(x)]
    n = len(logs)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = statistics.fmean(logs)
    if n < 2:
        return math.exp(mean), math.nan, math.nan, n
    from scipy.stats import t

    scale = math.sqrt(1 / n + 1 / another) if another else 1 / math.sqrt(n)
    half = t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(logs) * scale
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), n


def stability_key(status: str, unstable: bool, spread: float | None) -> tuple:
    """Of several attempts at one cell, the smallest key is kept: finished, then stable, then the least spread."""
    return status not in FINISHED, bool(unstable), spread if spread is not None else float("inf")


# --- older files: a chain of upgrades, one per schema version (as asv upgrades its results per version) ------

def _v1_to_v2(r: dict) -> None:
    """Schema 1 had no steady samples, spread or compile time (they come from its epoch times), no dispatch mode,
    budget, probes or efficiency fields."""
    if not isinstance(r.get("dispatch"), dict):
        raise RecordError("record: missing field 'dispatch'")
    for key, default in (("budget", None), ("dtype", "float32"), ("flops_per_epoch", None), ("achieved_gflops", None),
                         ("peak_fraction", None), ("host_memory_peak_mib", None), ("host_memory_source", None),
                         ("full_grad_norm_by_epoch", []), ("noise_scale_by_epoch", []), ("hessian", None),
                         ("plateaus", None)):
        r.setdefault(key, default)
    r.setdefault("grad_norm_stride", r.get("curve_stride"))  # before it existed, the norm went with the loss
    r.setdefault("probes", {"enabled": False, "reason": "not recorded (made before the probes existed)",
                            "requested": False})
    r["dispatch"].setdefault("mode", "default")
    r["dispatch"].setdefault("driver", "keras_fit")
    if "steady_samples_s" not in r:  # the samples, spread and compile time from its epoch times
        timing = steady_timing(r.get("epoch_times_s") or [])
        timing["epoch_time_s"] = r.get("epoch_time_s")  # as recorded (1-epoch runs timed their only epoch)
        for key, v in timing.items():
            r.setdefault(key, v)
        gpu = r.get("gpu") or {}
        if gpu.get("energy_j") is not None:
            gpu.setdefault("energy_source", "counter, every epoch (compile included: schema 1)")


# Targets by profile name before schema 3, when analysis/ held them (the profile now declares its own target).
_TARGETS_BEFORE_V3 = {"smoke": 0.75, "quick": 0.90, "lecture": 0.97, "tuning-test": 0.5, "tuning": 0.85,
                      "tuning-cpu": 0.85, "tuning-lecture": 0.97}


def _v2_to_v3(r: dict) -> None:
    """Schema 3 names the run's experiment, its target and its role, and carries the code version; fields added
    while schema 2 was current (probes.requested, --precision) get the values those runs used."""
    if not isinstance(r.get("dispatch"), dict):
        raise RecordError("record: missing field 'dispatch'")
    probes = r.get("probes") if isinstance(r.get("probes"), dict) else {}
    probes.setdefault("requested", probes.get("enabled") or probes.get("reason") != "off (--no-probes)")
    if isinstance(r.get("hessian"), dict):
        r["hessian"].setdefault("plateau_start", None)
    d = r["dispatch"]
    d.setdefault("threads", None)
    d.setdefault("precision", "tf32")  # both frameworks' default, the only setting before --precision
    d.setdefault("matmul_precision", "fp32" if d.get("device") == "CPU" else None)  # a CPU has no TensorFloat-32
    tuning = r.get("tuning") if isinstance(r.get("tuning"), dict) else None
    # which experiment: the one fact schema 2 left to inference, decided here once, from its record parts
    r.setdefault("experiment", "escape" if r.get("escape") else "tuning" if tuning else "saddle" if r.get("budget")
                 else GRID)
    r.setdefault("role", tuning.pop("role", None) if tuning else None)
    r.setdefault("target", {"value": _TARGETS_BEFORE_V3.get(r.get("profile"), 0.90),
                            "split": "validation" if r.get("val_accuracy_by_epoch") else "test",
                            "metric": "accuracy"})
    r.setdefault("code_version", None)


def _v3_to_v4(r: dict) -> None:
    """Schema 4 estimates a run's timing by its fastest steady sample and its spread by the median absolute
    deviation (recomputed here from the recorded epoch times: an older run's epoch_time_s was the median, its spread
    the IQR), needs MIN_SAMPLES = 5 samples, and records what each sample's slowness is due to (not measured before:
    unexplained). Each experiment's part is upgraded by its own module (bench/record/escape.py, tuning.py)."""
    times = r.get("epoch_times_s") or []
    if len(times) > 1:
        r.update(steady_timing(times))
        steps, epoch = r.get("steps_per_epoch"), r["epoch_time_s"]
        r["time_per_update_s"] = epoch / steps if steps and epoch else None
        examples = steps * r["batch_size"] if r.get("budget") and steps else r.get("train_size")
        r["examples_per_s"] = examples / epoch if examples and epoch else None
        flops = r.get("flops_per_epoch")
        if flops and epoch and r.get("achieved_gflops"):
            ratio = (r["peak_fraction"] / r["achieved_gflops"]) if r.get("peak_fraction") else None
            r["achieved_gflops"] = round(flops / epoch / 1e9, 3)
            r["peak_fraction"] = round(r["achieved_gflops"] * ratio, 5) if ratio else r.get("peak_fraction")
    if isinstance(r.get("escape"), dict):
        _escape_part.upgrade_v3_to_v4(r["escape"])
    if isinstance(r.get("tuning"), dict):
        _tuning_part.upgrade_v3_to_v4(r["tuning"])


# the fields schema 4 redefines (the estimate, the spread, what follows from them), recomputed from the recorded
# epoch times when an older record is read
RECOMPUTED_IN_V4 = ("epoch_time_s", "epoch_time_iqr_s", "spread", "compile_s", "unstable", "unstable_reason",
                    "time_per_update_s", "examples_per_s", "achieved_gflops", "peak_fraction")

UPGRADES = {"mnist-mlp-bench/1": ("mnist-mlp-bench/2", _v1_to_v2),
            "mnist-mlp-bench/2": ("mnist-mlp-bench/3", _v2_to_v3),
            "mnist-mlp-bench/3": (SCHEMA, _v3_to_v4)}


def upgrade(data: dict) -> dict:
    """A record of any accepted schema in today's shape, through the chain of upgrades (1 -> 2 -> 3 -> 4): fields added
    since it was written get the value those runs used (or None where it was not measured), and its `schema`
    becomes today's. The input is not changed."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema not in SCHEMAS:
        raise RecordError(f"unknown schema {schema!r}; this suite reads {', '.join(SCHEMAS)}"
                          + ("; it was written by a newer mnist-mlp-bench" if _newer(schema) else ""))
    r = json.loads(json.dumps(data))  # a deep copy in plain types
    while r["schema"] != SCHEMA:
        nxt, step = UPGRADES[r["schema"]]
        step(r)
        r["schema"] = nxt
    _fill_defaults(Record, r)
    return r


def _newer(schema) -> bool:
    m = re.fullmatch(r"mnist-mlp-bench/(\d+)", str(schema))
    return bool(m) and int(m.group(1)) > int(SCHEMA.rsplit("/", 1)[1])


def _fill_defaults(cls, data) -> None:
    """Optional fields an older writer left out, at their declared default (nested records too)."""
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data and f.default is not dataclasses.MISSING:
            data[f.name] = f.default
        elif f.name not in data and f.default_factory is not dataclasses.MISSING:
            data[f.name] = f.default_factory()
        inner = _dataclass_in(hints[f.name])
        if inner is not None and f.name in data:
            for item in data[f.name] if isinstance(data[f.name], list) else [data[f.name]]:
                _fill_defaults(inner, item)


# --- keys ---------------------------------------------------------------------------------------------------

def value(rec, path: str):
    """A record's value at a dotted path ('dispatch.mode'), for a Record or its dict; None where it is absent."""
    for part in path.split("."):
        if rec is None:
            return None
        rec = rec.get(part) if isinstance(rec, dict) else getattr(rec, part, None)
    return rec


@dataclass(frozen=True)
class Protocol:
    """What makes two runs the same experiment. The backend is part of it: Keras on TensorFlow and on JAX dispatch
    differently, so their times measure the framework as well as the machine."""

    experiment: str
    profile: str
    train_size: int
    epochs: int
    activation: str
    dtype: str
    mode: str
    backend: str

    PATHS: typing.ClassVar[dict] = {"experiment": "experiment", "profile": "profile", "train_size": "train_size",
                                    "epochs": "epochs", "activation": "activation", "dtype": "dtype",
                                    "mode": "dispatch.mode", "backend": "dispatch.backend"}


@dataclass(frozen=True)
class Cell:
    """The grid cell within a protocol (`role`: an experiment's kind of run, e.g. the tuning's trials)."""

    optimizer: str
    batch_size: int
    full_batch: bool
    budget: str | None
    lr_setting: float | None
    role: str | None

    PATHS: typing.ClassVar[dict] = {"optimizer": "optimizer", "batch_size": "batch_size", "full_batch": "full_batch",
                                    "budget": "budget", "lr_setting": "lr_setting", "role": "role"}


@dataclass(frozen=True)
class Settings:
    """Settings that change what a run measures on one machine but that machines are still compared across (a
    thread count is how `reports/compare/cpu-2-vs-1-threads` was made): part of the run key only."""

    threads: int | None  # --threads, None for the backend's default
    probes: bool  # probes asked for
    precision: str  # --precision asked for


@dataclass(frozen=True)
class RunKey:
    """Two runs are the same measurement when protocol, settings, cell, seed, repeat and machine agree."""

    protocol: Protocol
    settings: Settings
    cell: Cell
    seed: int
    repeat: int
    machine: str

    def flat(self) -> tuple:
        """The key as one tuple of plain values (a shard's plan stores it as a JSON list)."""
        return dataclasses.astuple(self)


# The same keys as dotted column names of the analysis' table.
PROTOCOL = tuple(Protocol.PATHS.values())
CELL = tuple(Cell.PATHS.values())


def _of(cls, rec):
    return cls(**{name: value(rec, path) for name, path in cls.PATHS.items()})


def protocol_of(rec) -> Protocol:
    return _of(Protocol, rec)


def cell_of(rec) -> Cell:
    return _of(Cell, rec)


def settings_of(rec: Record) -> Settings:
    threads = rec.dispatch.threads
    return Settings((threads.get("intra_op") or None) if isinstance(threads, dict) else None,
                    bool(rec.probes.requested), rec.dispatch.precision or "tf32")


def run_key(rec: Record, machine: str) -> RunKey:
    return RunKey(protocol_of(rec), settings_of(rec), cell_of(rec), rec.seed, rec.repeat, machine)


@dataclass(kw_only=True)
class Machine:
    """A store line's machine: enough to label it and to match it on --resume."""

    node: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    label: str | None = None

    @property
    def id(self) -> str:
        """Host, CPU and GPU as one string (what --resume and estimates match on)."""
        return f"{self.node}|{self.cpu}|{self.gpu_name or 'no-gpu'}"

    @classmethod
    def from_dict(cls, data) -> "Machine":
        if not isinstance(data, dict):
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# --- the run store ------------------------------------------------------------------------------------------

class StoreError(ValueError):
    """A store that cannot be read or written; the message names the file (and line) in one line."""


class BadLineWarning(UserWarning):
    """A store line that is not a valid record of a known schema: skipped, every other line is read."""


@dataclass
class Entry:
    """One stored run: its record and what the store line says about it."""

    record: Record
    nodeid: str | None
    finished: str | None
    machine: Machine
    code_version: str | None
    written_schema: str  # the record's schema as written (before any upgrade)
    where: str  # file:line


@dataclass(frozen=True)
class BadLine:
    where: str  # file:line
    reason: str

    def text(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Store:
    """A store as read: its valid runs, and the lines that were skipped, with why."""

    path: Path
    entries: list[Entry]
    bad: list[BadLine]

    def finished_keys(self) -> set:
        """The run keys of the store's finished runs."""
        return {run_key(e.record, e.machine.id) for e in self.entries if e.record.status in FINISHED}


def check_writable(path: str | os.PathLike, option: str = "--bench-store", folder: bool = False) -> None:
    """StoreError (one line naming `option` and the path) unless `path` can really be written: a file is opened for
    appending (created and removed again when it did not exist), a `folder` gets a file written in it and removed,
    and missing parent folders are made and removed again. Permission bits are not trusted: as root they allow
    writing under /proc, where every write fails."""
    if str(path).strip() == "":
        raise StoreError(f"{option}: '' is no path")
    path = Path(path)
    if path.is_symlink():  # check (and create) the link's target; the link itself is the user's and stays
        path = path.resolve()
    made = []
    try:
        target = path if folder else path.parent
        missing = [p for p in [target, *target.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            made.append(p)
        if folder:
            if not path.is_dir():
                raise NotADirectoryError(20, "not a folder")
            probe = path / f".write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        else:
            if path.exists() and not path.is_file():
                raise IsADirectoryError(21, "not a file")
            existed = path.exists()
            with open(path, "ab") as f:
                f.write(b"")
                f.flush()
                os.fsync(f.fileno())
            if not existed:
                path.unlink()
    except OSError as exc:
        what = "folder" if folder else "file"
        raise StoreError(f"{option}: cannot write the {what} {str(path)!r} ({exc.strerror or exc})") from None
    finally:
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:
                pass


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file beside it, fsync'ed, then renamed over it (a reader never
    sees a partial file; a failure leaves the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append(path: str | os.PathLike, nodeid: str, rec: Record | dict, machine: Machine | dict | None = None,
           version: str | None = None) -> None:
    """Append one run as one line, under an exclusive lock (two sweeps may share a store), then fsync. The line
    starts on a fresh line whatever the file ends with: after a torn write the new run is still whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(machine, Machine):
        machine = dataclasses.asdict(machine)
    line = json.dumps({
        "schema": SCHEMA,
        "nodeid": nodeid,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or {"node": os.uname().nodename},
        "code_version": version,
        "record": rec.to_dict() if isinstance(rec, Record) else rec,
    }, allow_nan=False) + "\n"
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        size = f.seek(0, os.SEEK_END)
        try:
            if size > 0:
                with open(path, "rb") as tail:
                    tail.seek(-1, os.SEEK_END)
                    if tail.read(1) != b"\n":
                        line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            try:  # a write that failed part-way (a full disk) leaves no cut-off line behind
                f.truncate(size)
            except OSError:
                pass
            raise
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _entry(raw: bytes, where: str) -> Entry | BadLine:
    """One store line read through the record type, or why it is no valid record."""
    if not raw.strip(b"\x00 \t\r"):
        return BadLine(where, "NUL bytes (the tail of a write a crash cut off)")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # an editor's byte-order mark
    except UnicodeDecodeError as exc:
        return BadLine(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        line = json.loads(text)
    except json.JSONDecodeError:
        return BadLine(where, "torn line (a write was cut off)" if text.lstrip().startswith("{")
                       else "not a JSON line; a run store holds one JSON object per line")
    except RecursionError:
        return BadLine(where, "JSON nested too deep to be a record")
    if not isinstance(line, dict) or not isinstance(line.get("record"), dict):
        return BadLine(where, "not a run-store line (no 'record')")
    try:
        rec = Record.from_dict(line["record"], where="record")
    except RecordError as exc:
        return BadLine(where, str(exc))
    return Entry(rec, line.get("nodeid"), line.get("finished"), Machine.from_dict(line.get("machine")),
                 line.get("code_version"), str(line["record"].get("schema")), where)


def read_store(path: str | os.PathLike, warn: bool = True) -> Store:
    """Every valid stored run, read through the record type. A line that is not a valid record of a known schema
    (cut off by a crash, NUL-filled, not UTF-8, not JSON, another schema, a field of the wrong type) is skipped
    with a BadLineWarning naming file:line and why, and listed in `Store.bad`. A missing file is an empty store;
    a file that cannot be read at all is a StoreError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Store(path, [], [])
    except OSError as exc:
        raise StoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    entries, bad = [], []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        found = _entry(raw, f"{path}:{i}")
        (entries if isinstance(found, Entry) else bad).append(found)
    if warn:
        for b in bad:
            warnings.warn(f"{b.text()}: skipped", BadLineWarning, stacklevel=2)
    return Store(path, entries, bad)
