"""The run record, defined once: its fields with types and units, the schema version and the upgrade of older
files, the protocol and cell keys, and the run store's one reader and writer. Imports no TensorFlow, Keras or
JAX: the measurement (bench/) and the analysis (analysis/) both import it, and nothing else crosses over."""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import statistics
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = "mnist-mlp-bench/2"
SCHEMAS = ("mnist-mlp-bench/1", "mnist-mlp-bench/2")  # what the reader accepts (older ones are upgraded)

# What counts as evidence (DESIGN.md): a timing rests on at least MIN_SAMPLES steady samples; a cell whose samples
# spread more than UNSTABLE_SPREAD around their median, or whose median is slower than the compile epoch (beyond
# the same tolerance: where compilation is a second of a 30 s epoch, the two differ by noise alone), is unstable.
MIN_SAMPLES = 3
UNSTABLE_SPREAD = 0.10
DEFAULT_STORE = ".benchmarks/mnist-mlp-bench-runs.jsonl"

# Statuses that are results: --resume skips their cells. `error` and `interrupted` cells run again.
FINISHED = ("ok", "diverged", "oom")
STATUSES = ("ok", "diverged", "oom", "error", "interrupted")

# What makes two runs the same experiment, as dotted paths into a record (also the tidy DataFrame's column
# names). The backend is part of it: Keras on TensorFlow and on JAX dispatch differently, so their times
# measure the framework as well as the machine.
PROTOCOL = ("profile", "train_size", "epochs", "activation", "dtype", "dispatch.mode", "dispatch.backend")
# Settings that change what a run measures on one machine but that machines are still compared across
# (a thread count is how `reports/compare/cpu-2-vs-1-threads` was made): part of the resume key only.
SETTINGS = ("threads", "probes", "precision")
# The grid cell within a protocol.
# `tuning.role` tells the tuning experiment's trials (one per rate) from its final runs at the tuned or the pinned rate.
CELL = ("optimizer", "batch_size", "full_batch", "budget", "lr_setting", "tuning.role")


def _f(doc: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    """A record field with its meaning (and unit, where the name does not carry it)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})


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


@dataclass(kw_only=True)
class Stuck:
    """How the escape experiment's stuck point was reached (bench/escape.py)."""

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


@dataclass(kw_only=True)
class Trial:
    """One trial of a learning-rate search, as the final run that used the search saw it."""

    learning_rate: float = _f("the trial's learning rate")
    status: str = _f("the trial's status (a diverged trial never wins)")
    val_accuracy: float | None = _f("its validation accuracy at the end of the budget")
    val_loss: float | None = _f("its validation loss there (breaks ties)")


@dataclass(kw_only=True)
class Tuning:
    """The tuning experiment's part of a record (bench/tuning.py)."""

    role: str = _f("trial (one rate of the search), tuned (a final run at the chosen rate) or pinned (a final run "
                   "at the suite's pinned rate, the comparison)")
    grid: list[float] = _f("the search's learning rates")
    rule: str = _f("how the rate is chosen")
    trials: list[Trial] = _f("the trials the choice was made from (final runs; empty for a trial)", factory=list)
    chosen: float | None = _f("the chosen rate (final runs; None for a trial or when no trial finished)", None)
    pinned: float = _f("the suite's pinned rate for this optimizer (the grid's centre)")


@dataclass(kw_only=True)
class Record:
    """One training run: what ran, what it cost, what it reached (DESIGN.md's contract). Units are in the names."""

    schema: str = _f("record format version")
    status: str = _f("ok, diverged, oom, error or interrupted")
    error: str | None = _f("the reason when status is not ok")
    profile: str = _f("the profile (or experiment) the run belongs to")
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
    epoch_time_s: float | None = _f("steady state: the median of steady_samples_s")
    epoch_time_iqr_s: float | None = _f("interquartile range of steady_samples_s", None)
    spread: float | None = _f("epoch_time_iqr_s / epoch_time_s: how much the samples spread around their median", None)
    compile_s: float | None = _f("first_epoch_s - epoch_time_s: tracing and compilation, never part of steady time",
                                 None)
    unstable: bool = _f("the samples spread more than UNSTABLE_SPREAD, or their median is slower than the compile "
                        "epoch", False)
    unstable_reason: str | None = _f("why the timing is unstable", None)
    attempt: int = _f("1 for the first run of the cell in a sweep; reruns of an unstable cell count up", 1)
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
    tuning: Tuning | None = _f("the tuning experiment's role and search; None elsewhere", None)

    def to_dict(self) -> dict:
        """Plain JSON types, keys in declaration order (the form stored and written to extra_info)."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> "Record":
        """A record read back, upgraded from an older schema, every field's type checked (RecordError)."""
        return _build(cls, upgrade(data), where)


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

def steady_timing(epoch_times: list) -> dict:
    """The record's timing fields from a run's epoch times: the steady samples (every epoch after the first,
    whose first steps trace and compile), their median and spread, the compile time, and whether the timing is
    unstable (fewer than MIN_SAMPLES samples, a spread above UNSTABLE_SPREAD, or a sample slower than the
    compile epoch: its median more than UNSTABLE_SPREAD above the first epoch, which also compiled)."""
    times = [float(t) for t in epoch_times]
    samples = times[1:]
    out = {"steady_samples_s": samples, "epoch_time_s": None, "epoch_time_iqr_s": None, "spread": None,
           "compile_s": None}
    reasons = []
    if len(samples) < MIN_SAMPLES:
        reasons.append(f"{len(samples)} steady sample(s), fewer than {MIN_SAMPLES}")
    if samples:
        median = statistics.median(samples)
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else (median,) * 3
        out.update(epoch_time_s=median, epoch_time_iqr_s=q3 - q1, spread=(q3 - q1) / median if median else None,
                   compile_s=times[0] - median)
        if out["spread"] is not None and out["spread"] > UNSTABLE_SPREAD:
            reasons.append(f"samples spread {out['spread']:.0%} of their median (IQR), above {UNSTABLE_SPREAD:.0%}")
        if median > times[0] * (1 + UNSTABLE_SPREAD):  # within the tolerance when compilation is negligible
            reasons.append(f"the steady epochs ({median:.3g} s, median) are slower than the compile epoch "
                           f"({times[0]:.3g} s)")
    out["unstable"] = bool(reasons)
    out["unstable_reason"] = "; ".join(reasons) or None
    return out


def stability_key(status: str, unstable: bool, spread: float | None) -> tuple:
    """Of several attempts at one cell, the smallest key is kept: finished, then stable, then the least spread."""
    return status not in FINISHED, bool(unstable), spread if spread is not None else float("inf")


# --- older files ------------------------------------------------------------------------------------------

def upgrade(data: dict) -> dict:
    """A record of any accepted schema in today's shape: fields added since it was written get the value those
    runs used (or None where it was not measured). The input is not changed."""
    schema = data.get("schema")
    if schema not in SCHEMAS:
        raise RecordError(f"unknown schema {schema!r}; this suite reads {', '.join(SCHEMAS)}")
    r = json.loads(json.dumps(data))  # a deep copy in plain types
    if not isinstance(r.get("dispatch"), dict):
        raise RecordError("record: missing field 'dispatch'")
    for key, value in (("budget", None), ("dtype", "float32"), ("flops_per_epoch", None), ("achieved_gflops", None),
                       ("peak_fraction", None), ("host_memory_peak_mib", None), ("host_memory_source", None),
                       ("full_grad_norm_by_epoch", []), ("noise_scale_by_epoch", []), ("hessian", None),
                       ("plateaus", None)):
        r.setdefault(key, value)
    r.setdefault("grad_norm_stride", r.get("curve_stride"))  # before it existed, the norm went with the loss
    probes = r.setdefault("probes", {"enabled": False, "reason": "not recorded (made before the probes existed)",
                                     "requested": False})
    probes.setdefault("requested", probes["enabled"] or probes.get("reason") != "off (--no-probes)")
    if isinstance(r["hessian"], dict):
        r["hessian"].setdefault("plateau_start", None)
    d = r["dispatch"]
    d.setdefault("mode", "default")
    d.setdefault("driver", "keras_fit")
    d.setdefault("threads", None)
    d.setdefault("precision", "tf32")  # both frameworks' default, the only setting before --precision
    d.setdefault("matmul_precision", "fp32" if d.get("device") == "CPU" else None)  # a CPU has no TensorFloat-32
    if "steady_samples_s" not in r:  # schema 1: the samples, spread and compile time from its epoch times
        timing = steady_timing(r.get("epoch_times_s") or [])
        timing["epoch_time_s"] = r.get("epoch_time_s")  # as recorded (1-epoch runs timed their only epoch)
        for key, v in timing.items():
            r.setdefault(key, v)
        gpu = r.get("gpu") or {}
        if gpu.get("energy_j") is not None:
            gpu.setdefault("energy_source", "counter, every epoch (compile included: schema 1)")
    _fill_defaults(Record, r)
    return r


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

def value(record: dict, path: str):
    """A record's value at a dotted path ('dispatch.mode'); None where it is absent."""
    for part in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def threads_setting(record: dict) -> int | None:
    """The thread count asked for (--threads), None for the backend's default (TensorFlow's 0, or JAX)."""
    threads = value(record, "dispatch.threads")
    return (threads.get("intra_op") or None) if isinstance(threads, dict) else None


def protocol_key(record: dict) -> tuple:
    return tuple(value(record, f) for f in PROTOCOL)


def cell_key(record: dict) -> tuple:
    return tuple(value(record, f) for f in CELL)


def resume_key(record: dict, machine: str) -> tuple:
    """Two runs are the same measurement when protocol, settings, cell, seed and machine agree."""
    settings = (threads_setting(record), bool(value(record, "probes.requested")),
                value(record, "dispatch.precision") or "tf32")
    return protocol_key(record) + settings + cell_key(record) + (record["seed"], machine)


def machine_id(machine: dict) -> str:
    """A store line's machine as one string: host, CPU and GPU (what --resume and estimates match on)."""
    gpu = machine.get("gpu_name") or "no-gpu"
    return f"{machine.get('node')}|{machine.get('cpu')}|{gpu}"


# --- the run store ------------------------------------------------------------------------------------------

class StoreError(ValueError):
    """A store that cannot be read or written; the message names the file (and line) in one line."""


class TornLineWarning(UserWarning):
    """A line cut mid-write (kill -9, full disk): skipped, every other line is read."""


def check_writable(path: str | os.PathLike) -> None:
    """StoreError unless `path` can be appended to (or created), without creating anything."""
    path = Path(path)
    if path.exists():
        if not path.is_file() or not os.access(path, os.W_OK):
            raise StoreError(f"--bench-store: cannot write {str(path)!r} (not a writable file)")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"--bench-store: cannot create {str(path)!r} ({parent} is not a writable folder)")


def append(path: str | os.PathLike, nodeid: str, record: dict, machine: dict | None = None,
           version: str | None = None) -> None:
    """Append one run as one line, under an exclusive lock (two sweeps may share a store), then fsync. The line
    starts on a fresh line whatever the file ends with: after a torn write the new run is still whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({
        "schema": SCHEMA,
        "nodeid": nodeid,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or {"node": os.uname().nodename},
        "code_version": version,
        "record": record,
    }, allow_nan=False) + "\n"
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if f.seek(0, os.SEEK_END) > 0:
                with open(path, "rb") as tail:
                    tail.seek(-1, os.SEEK_END)
                    if tail.read(1) != b"\n":
                        line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_store(path: str | os.PathLike) -> list[dict]:
    """Every stored run, records upgraded. A torn line (a JSON object cut short) is skipped with a warning naming
    file:line; any other bad line is a StoreError. A missing file is an empty store."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot be read as a JSON-lines store ({exc})") from None
    entries = []
    for i, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            if text.lstrip().startswith("{"):
                warnings.warn(f"{path}:{i}: torn line skipped (a write was cut off)", TornLineWarning, stacklevel=2)
                continue
            raise StoreError(f"{path}:{i}: not a JSON line; a run store holds one JSON object per line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
            raise StoreError(f"{path}:{i}: not a run-store line (no 'record')")
        if entry.get("schema") not in SCHEMAS:
            raise StoreError(f"{path}:{i}: unknown schema {entry.get('schema')!r}; this suite reads "
                             f"{', '.join(SCHEMAS)}")
        try:
            entry["record"] = upgrade(entry["record"])
        except RecordError as exc:
            raise StoreError(f"{path}:{i}: {exc}") from None
        entries.append(entry)
    return entries


def finished_keys(entries) -> set:
    """The resume keys of the store's finished runs."""
    return {resume_key(e["record"], machine_id(e.get("machine") or {})) for e in entries
            if e["record"].get("status") in FINISHED}
