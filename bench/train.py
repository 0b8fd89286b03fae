"""The training harness: one grid cell in, one flat run record (DESIGN.md's contract) out."""

from __future__ import annotations

import math
import statistics
import time

from bench.backend import BACKEND, determinism, gpu_devices, is_oom, keras, tf, threads, to_int
from bench.gpu import GpuSampler
from bench.grid import MAX_CURVE_POINTS, MNIST_TEST_SIZE, SCHEMA, RunConfig
from bench.machine import peak_host_memory_mib, reset_peak_host_memory
from bench.model import CurveRecorder, build_mlp, flops_per_example, make_optimizer

EVAL_BATCH_SIZE = 1000  # evaluation is untimed; a fixed batch keeps its cost independent of the grid
# --dispatch fast records the gradient norm at no more points per run than this (the loss at up to
# max_curve_points, as in default): at ~0.5 ms per norm in the XLA loop on a CPU, 50 points keep the
# recorder's share of a fast run's time within a few per cent at batch 100, the worst case (bench.model)
FAST_NORM_POINTS = 50


class EpochClock(keras.callbacks.Callback):
    """Times each epoch's training steps, then (untimed) evaluates on the test set and checks for NaN."""

    def __init__(self, x_test, y_test, sampler: GpuSampler, prober=None):
        super().__init__()
        self.x_test, self.y_test, self.sampler, self.prober = x_test, y_test, sampler, prober
        self.times, self.test_acc, self.test_loss, self.train_loss = [], [], [], []
        self.diverged = False
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.sampler.start_epoch()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs["loss"])  # a host read: waits for the device to finish the epoch
        self.times.append(time.perf_counter() - self._start)
        self.sampler.end_epoch()
        self.train_loss.append(loss)
        if not math.isfinite(loss):
            self.diverged = True
            self.model.stop_training = True
            return
        result = self.model.evaluate(self.x_test, self.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0,
                                     return_dict=True)
        self.test_loss.append(float(result["loss"]))
        self.test_acc.append(float(result["accuracy"]))
        if self.prober is not None:
            self.prober.epoch_end(epoch, to_int(self.model.optimizer.iterations))


def _median_steady(times: list) -> float | None:
    """Median epoch time without the first epoch (tracing/compilation); the first if it is all there is."""
    if not times:
        return None
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def _updates(optimizer, cfg: RunConfig, epochs_done: int) -> int:
    """The optimizer's update count; where the backend cannot give it back (Keras' JAX trainer after an
    interrupted fit), the updates of the epochs that finished."""
    try:
        return to_int(optimizer.iterations)
    except Exception:
        return epochs_done * cfg.steps_per_epoch


def _probes(prober, status, cfg, optimizer, loss_curve, grad_curve) -> dict:
    """The record's probe fields (bench.curvature); nulls with the reason when there are none."""
    if prober is None:
        reason = ("off (--no-probes)" if not cfg.probes else f"the probes need the tensorflow backend, not {BACKEND}")
        return {"probes": {"enabled": False, "reason": reason}, "full_grad_norm_by_epoch": [],
                "noise_scale_by_epoch": [], "hessian": None, "plateaus": []}
    hessian = None
    if status == "ok":
        hessian = prober.finish(to_int(optimizer.iterations))
    return {
        "probes": {"enabled": True, "reason": None, "probe_size": prober.probe.size, "lanczos_iters": prober.iters,
                   "seconds": round(prober.seconds, 3)},
        "full_grad_norm_by_epoch": [e["full_grad_norm"] for e in prober.epochs],
        "noise_scale_by_epoch": [e["b_simple"] for e in prober.epochs],
        "hessian": hessian,
        "plateaus": prober.plateau_records(loss_curve, grad_curve) if status == "ok" else [],
    }


def _repeated(x, y, cfg: RunConfig):
    """Minibatches of exactly `batch_size` examples, the training set reshuffled at every pass, endlessly."""
    if BACKEND != "tensorflow":
        raise RuntimeError("a fixed update budget (the saddle benchmark) needs the tensorflow backend")
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
            .batch(cfg.batch_size, drop_remainder=True).repeat())


def compile_args(cfg: RunConfig) -> dict:
    """model.compile's dispatch arguments for the cell's mode (grid.DISPATCH_MODES)."""
    if cfg.dispatch == "fast":
        return {"jit_compile": True, "steps_per_execution": cfg.steps_per_epoch}
    return {}  # Keras' defaults: jit_compile="auto", steps_per_execution=1


def driver(cfg: RunConfig) -> str:
    """Who runs the epochs: Keras' `model.fit`, or (fast mode, TensorFlow) `fit_device_loop`."""
    if cfg.dispatch == "fast" and BACKEND == "tensorflow" and cfg.total_updates is None:
        return "device_loop"
    return "keras_fit"


def fit_device_loop(model, x, y, *, batch_size: int, epochs: int, seed: int, callbacks=()) -> None:
    """`model.fit(x, y, batch_size, epochs, shuffle=True)` with each epoch one XLA-compiled call (TensorFlow).

    The training set is copied to the device once; each epoch draws a fresh permutation on the device
    and runs the model's own `train_step` (Keras' loss, optimizer and metrics, and the curve recorder)
    on every batch inside one compiled loop, the last batch partial as in fit. No per-step host work
    at all: this is `--dispatch fast` on TensorFlow, where Keras' own `steps_per_execution` still pays
    a data-iterator read and a compiled-function launch per step. Callbacks get fit's epoch hooks
    (logs with the epoch's loss and metrics); `model.stop_training` ends the run after an epoch.
    """
    n = len(x)
    steps, rest = divmod(n, batch_size)
    xd, yd = tf.constant(x), tf.constant(y)

    # the data are arguments, not captured constants: a traced function keeps what it captures alive in
    # TensorFlow's function library, and a sweep's runs would pile up a copy of the training set each
    @tf.function(jit_compile=True, reduce_retracing=True)
    def epoch(key, xd, yd):
        def step(index):
            model.train_step((tf.gather(xd, index), tf.gather(yd, index)))

        order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        for i in tf.range(steps):
            # tf.slice keeps the batch's static shape; a Python slice here would be dynamic, and XLA
            # would pad every step to the whole training set
            step(tf.slice(order, [i * batch_size], [batch_size]))
        if rest:
            step(order[steps * batch_size:])
        return model.get_metrics_result()

    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for e in range(epochs):
        model.reset_metrics()
        hooks.on_epoch_begin(e)
        logs = epoch(tf.constant([seed, e], tf.int32), xd, yd)
        hooks.on_epoch_end(e, {k: float(v) for k, v in logs.items()})
        if model.stop_training:
            break
    hooks.on_train_end()


def fit_epochs(model, x, y, cfg: RunConfig, callbacks=(), use: str | None = None) -> None:
    """Train `model` (compiled with compile_args(cfg)) on the cell's epochs with the cell's driver, or the
    driver named by `use` (bench.overhead times Keras' own fast flags with use="keras_fit")."""
    if (use or driver(cfg)) == "device_loop":
        fit_device_loop(model, x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed, callbacks=callbacks)
    elif cfg.total_updates is None:
        model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0, callbacks=list(callbacks))
    else:  # a fixed update budget in equal intervals (the saddle benchmark)
        model.fit(_repeated(x, y, cfg), epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, verbose=0,
                  callbacks=list(callbacks))


def run(cfg: RunConfig, data, *, max_curve_points: int = MAX_CURVE_POINTS, sampler: GpuSampler | None = None,
        peak: dict | None = None) -> dict:
    """Train one cell on `data` (a bench.data.Mnist) and return its run record (plain JSON types).

    `peak`: the session's calibration (bench.calibrate), to score the run against the machine's matmul rate.
    """
    keras.backend.clear_session(free_memory=True)
    measured_memory = reset_peak_host_memory()
    keras.utils.set_random_seed(cfg.seed)
    x_train, y_train, x_test, y_test = data.prepared(cfg.train_size)

    # The curve recorder lives in the TensorFlow train step; on JAX the run records no curves.
    recorder = None
    if BACKEND == "tensorflow":
        recorder = CurveRecorder(cfg.expected_updates, max_curve_points,
                                 norm_points=FAST_NORM_POINTS if cfg.dispatch == "fast" else None)
    model = build_mlp(cfg.activation, recorder)
    optimizer = make_optimizer(cfg.optimizer)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"], **compile_args(cfg))
    # read before training: after an interrupted fit, Keras' JAX trainer leaves variables unsynchronised
    learning_rate = float(f"{float(keras.ops.convert_to_numpy(optimizer.learning_rate)):.7g}")
    sampler = sampler or GpuSampler()
    prober = None
    if cfg.probes and BACKEND == "tensorflow":
        from bench.curvature import Prober

        prober = Prober(model, x_train, y_train, recorder, seed=cfg.seed)
    clock = EpochClock(x_test, y_test, sampler, prober)

    status, error = "ok", None
    started = time.perf_counter()
    with sampler:
        try:
            fit_epochs(model, x_train, y_train, cfg, [clock])
        except MemoryError as exc:
            status, error = "oom", f"out of host memory: {exc}"
        except KeyboardInterrupt:  # recorded, then re-raised by the caller to stop the sweep
            status, error = "interrupted", "interrupted (Ctrl-C / SIGINT) during training"
        except Exception as exc:  # a TensorFlow/Keras failure of this cell: a result, the sweep goes on
            text = str(getattr(exc, "message", None) or exc).strip()
            message = text.splitlines()[0][:300] if text else ""
            if is_oom(exc):
                status, error = "oom", f"out of memory: {message}"
            else:
                status, error = "error", f"{type(exc).__name__}: {message}"
    fit_wall = time.perf_counter() - started
    if clock.diverged:
        status, error = "diverged", f"training loss became {clock.train_loss[-1]} in epoch {len(clock.train_loss)}"

    train_eval = {"loss": None, "accuracy": None}
    if status == "ok":
        train_eval = model.evaluate(x_train, y_train, batch_size=EVAL_BATCH_SIZE, verbose=0, return_dict=True)
    loss_curve, grad_norm_curve = recorder.curves() if recorder else ([], [])
    probes = _probes(prober, status, cfg, optimizer, loss_curve, grad_norm_curve)
    times = clock.times
    epoch_time = _median_steady(times)
    memory = peak_host_memory_mib(since_reset=measured_memory)
    # examples per timed epoch: the training subset, or one interval of a fixed update budget
    examples = cfg.steps_per_epoch * cfg.batch_size if cfg.total_updates else cfg.train_size
    flops_per_epoch = examples * flops_per_example()
    achieved = flops_per_epoch / epoch_time / 1e9 if epoch_time else None
    peak_gflops = (peak or {}).get("matmul_gflops")
    return {
        "schema": SCHEMA,
        "status": status,
        "error": error,
        "profile": cfg.profile,
        "optimizer": cfg.optimizer,
        "batch_size": cfg.batch_size,
        "full_batch": cfg.full_batch,
        "budget": cfg.budget,
        "activation": cfg.activation,
        "dtype": keras.config.floatx(),
        "seed": cfg.seed,
        "train_size": cfg.train_size,
        "test_size": MNIST_TEST_SIZE,
        "epochs": cfg.epochs,
        "epochs_done": len(times),
        "learning_rate": learning_rate,
        "updates": _updates(optimizer, cfg, len(times)),
        "steps_per_epoch": cfg.steps_per_epoch,
        "epoch_times_s": [float(t) for t in times],
        "fit_wall_s": fit_wall,
        "first_epoch_s": float(times[0]) if times else None,
        "epoch_time_s": epoch_time,
        "time_per_update_s": epoch_time / cfg.steps_per_epoch if epoch_time else None,
        "examples_per_s": examples / epoch_time if epoch_time else None,
        "train_loss": train_eval["loss"] and _finite(float(train_eval["loss"])),
        "train_accuracy": train_eval["accuracy"] and float(train_eval["accuracy"]),
        "test_loss": clock.test_loss[-1] if clock.test_loss and status == "ok" else None,
        "test_accuracy": clock.test_acc[-1] if clock.test_acc and status == "ok" else None,
        "test_accuracy_by_epoch": clock.test_acc,
        "train_loss_by_epoch": [_finite(v) for v in clock.train_loss],
        "loss_curve": [[u, _finite(v)] for u, v in loss_curve],
        "grad_norm_curve": [[u, _finite(v)] for u, v in grad_norm_curve],
        "curve_stride": recorder.stride if recorder else None,
        "grad_norm_stride": recorder.norm_stride if recorder else None,
        **probes,
        "flops_per_epoch": flops_per_epoch,
        "achieved_gflops": round(achieved, 3) if achieved else None,
        "peak_fraction": round(achieved / peak_gflops, 5) if achieved and peak_gflops else None,
        "host_memory_peak_mib": memory["peak_mib"],
        "host_memory_source": memory["source"],
        "diverged": status == "diverged",
        "gpu": sampler.summary(),
        "dispatch": {
            "backend": keras.backend.backend(),
            "device": "GPU" if gpu_devices() else "CPU",
            "mode": cfg.dispatch,
            "driver": driver(cfg),
            "jit_compile": bool(model.jit_compile),
            "steps_per_execution": int(model.steps_per_execution),
            "op_determinism": determinism(),
            "threads": threads(),
        },
    }
