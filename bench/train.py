"""One grid cell in, one run record out: prepare -> fit and classify the outcome -> derive -> build the record.

Backend-neutral: everything that differs between Keras' backends comes from bench.backends.current().
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

import numpy as np
from dataclasses import asdict, dataclass, field

from bench import backends, samples
from bench.experiments.base import Plan
from bench.gpu import GpuSampler
from bench.grid import MAX_CURVE_POINTS, RunConfig
from bench.machine import peak_host_memory_mib, reset_peak_host_memory
from bench.model import flops_per_example
from bench.record import SCHEMA, Dispatch, Gpu, Hessian, Plateau, Probes, Record, steady_timing

EVAL_BATCH_SIZE = 1000  # evaluation is untimed; a fixed batch keeps its cost independent of the grid
# --dispatch fast records the gradient norm at no more points per run than this (the loss at up to
# max_curve_points, as in default): at ~0.5 ms per norm in the XLA loop on a CPU, 50 points keep the
# recorder's share of a fast run's time within a few per cent at batch 100, the worst case
FAST_NORM_POINTS = 50


class _Sigint:
    """Ctrl-C (SIGINT) or SIGTERM (what a batch system's time limit sends) during a run, remembered. Python raises
    KeyboardInterrupt wherever the main thread happens to be, and a library's bare `except:` there swallows it
    (Keras' compile_utils has several, run while it traces a step at a run's start): the run went on and the sweep
    with it. The handler still raises at once, and also sets `seen`, which the epoch clock and fit_and_classify
    read, so a swallowed interrupt ends the run at its epoch's end. A signal the launch ignores stays ignored."""

    seen = False
    name = "SIGINT"

    def _handle(self, signum, frame):
        if self.seen:  # one interrupt is being handled (the run's record is being made): a second one waits for it
            return
        self.seen = True
        self.name = signal.Signals(signum).name
        raise KeyboardInterrupt

    def reason(self) -> str:
        """The interrupted run's error: 'interrupted (Ctrl-C / SIGINT) during training', or the signal's name."""
        how = "Ctrl-C / SIGINT" if self.name == "SIGINT" else self.name
        return f"interrupted ({how}) during training"

    @contextlib.contextmanager
    def watch(self):
        self.seen, self.name = False, "SIGINT"
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s, handler in previous.items():
            if handler not in (signal.SIG_IGN, None):  # the user's nohup-style launch ignores SIGINT: it stays so
                signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                if handler is not None:
                    signal.signal(s, handler)


SIGINT = _Sigint()


@dataclass
class Check:
    """What an experiment's stop rule sees at the end of each epoch (an interval of a fixed budget), after the
    validation split and the probes were taken."""

    epoch: int  # 1-based
    update: int  # updates done
    probe: dict | None  # the prober's entry at these weights (bench.curvature.Prober.measure); None without probes
    val_accuracy: float | None
    val_loss: float | None
    model: object  # the model, at these weights
    prober: object  # the run's bench.curvature.Prober, or None


def _epoch_clock_class(keras):
    class EpochClock(keras.callbacks.Callback):
        """Times each epoch's training steps, then (untimed) evaluates on the test set, checks for NaN and
        lets the prober look at the weights."""

        def __init__(self, x_test, y_test, sampler: GpuSampler, prober=None, on_epoch=None, stop=None,
                     validation=None, test_each_epoch=True):
            super().__init__()
            self.x_test, self.y_test, self.sampler, self.prober = x_test, y_test, sampler, prober
            self.on_epoch, self.stop = on_epoch, stop  # stop(Check) -> True ends training after this epoch
            self.validation, self.test_each_epoch = validation, test_each_epoch
            self.times, self.test_acc, self.test_loss, self.train_loss = [], [], [], []
            self.val_acc, self.val_loss = [], []
            self.causes = []  # per epoch: bench.samples.between (process CPU, GC, host steal, others' CPU)
            self.diverged = False
            self._start = self._reading = None

        def on_epoch_begin(self, epoch, logs=None):
            self.sampler.start_epoch(steady=epoch > 0)  # the first epoch compiles: not sampled
            self._reading = samples.read()
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            loss = float(logs["loss"])  # a host read: waits for the device to finish the epoch
            self.times.append(time.perf_counter() - self._start)
            self.causes.append(samples.between(self._reading, samples.read()))
            self.sampler.end_epoch()
            if SIGINT.seen:
                raise KeyboardInterrupt  # a Ctrl-C that a library swallowed during this epoch
            self.train_loss.append(loss)
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, self.times[-1])
            if not math.isfinite(loss):
                self.diverged = True
                self.model.stop_training = True
                return
            if self.validation is not None:
                loss_v, acc_v = evaluate_split(self.model, *self.validation)
                self.val_loss.append(loss_v)
                self.val_acc.append(acc_v)
            if self.test_each_epoch:
                self.evaluate_test()
            update = backends.current().to_int(self.model.optimizer.iterations)
            entry = self.prober.epoch_end(epoch, update) if self.prober is not None else None
            if self.stop is not None and self.stop(Check(epoch + 1, update, entry, self.val_acc[-1] if self.val_acc
                                                         else None, self.val_loss[-1] if self.val_loss else None,
                                                         self.model, self.prober)):
                self.model.stop_training = True

        def evaluate_test(self):
            result = self.model.evaluate(self.x_test, self.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0,
                                         return_dict=True)
            self.test_loss.append(float(result["loss"]))
            self.test_acc.append(float(result["accuracy"]))

    return EpochClock


def evaluate_split(model, x, y, batch: int = 10_000) -> tuple[float, float]:
    """(categorical cross-entropy, accuracy) of the model on (x, y), from its predictions in a few large batches
    (a tenth of model.evaluate's fixed cost; the loss clipped as Keras clips it)."""
    losses, hits = 0.0, 0
    for i in range(0, len(x), batch):
        p = np.asarray(model.predict_on_batch(x[i:i + batch]), dtype=np.float64)
        t = np.argmax(y[i:i + batch], axis=1)
        losses += float(-np.log(np.clip(p[np.arange(len(t)), t], 1e-7, 1.0)).sum())
        hits += int((np.argmax(p, axis=1) == t).sum())
    return losses / len(x), hits / len(x)


def compile_args(cfg: RunConfig) -> dict:
    """model.compile's dispatch arguments for the cell's mode (grid.DISPATCH_MODES)."""
    if cfg.dispatch == "fast":
        return {"jit_compile": True, "steps_per_execution": cfg.steps_per_epoch}
    return {}  # Keras' defaults: jit_compile="auto", steps_per_execution=1


def driver(cfg: RunConfig) -> str:
    """Who runs the epochs: Keras' `model.fit`, or (fast mode, where the backend has one) its device loop."""
    if cfg.dispatch == "fast" and backends.current().DEVICE_LOOP and cfg.total_updates is None:
        return "device_loop"
    return "keras_fit"


def fit_epochs(model, x, y, cfg: RunConfig, callbacks=(), use: str | None = None) -> None:
    """Train `model` (compiled with compile_args(cfg)) on the cell's epochs with the cell's driver, or the
    driver named by `use` (bench.overhead times Keras' own fast flags with use="keras_fit")."""
    backend = backends.current()
    if (use or driver(cfg)) == "device_loop":
        backend.fit_device_loop(model, x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed,
                                callbacks=callbacks)
    elif cfg.total_updates is None:
        model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0, callbacks=list(callbacks))
    else:  # a fixed update budget in equal intervals (the saddle benchmark)
        model.fit(backend.repeated(x, y, cfg.batch_size, cfg.seed), epochs=cfg.epochs,
                  steps_per_epoch=cfg.steps_per_epoch, shuffle=False, verbose=0,  # the dataset reshuffles itself
                  callbacks=list(callbacks))


@dataclass
class Setup:
    """Everything a run trains with, built before the clock starts."""

    model: object
    optimizer: object
    x_train: object
    y_train: object
    learning_rate: float
    test_size: int
    recorder: object
    prober: object
    clock: object
    sampler: GpuSampler
    memory_start_mib: float | None
    start_weights: list | None = None  # the weights the run started from (its experiment's plan), as the model has them


@dataclass
class Outcome:
    """How training ended."""

    status: str
    error: str | None
    fit_wall_s: float
    train_eval: dict = field(default_factory=lambda: {"loss": None, "accuracy": None})


def prepare(cfg: RunConfig, data, max_curve_points: int, sampler: GpuSampler | None, on_epoch=None,
            plan: Plan | None = None) -> Setup:
    """A fresh seeded model (or one at the plan's start weights), optimizer, recorder, prober and epoch clock."""
    from bench.curvature import PROBE_SIZE, Prober

    backend = backends.current()
    plan = plan or Plan(cfg)
    memory = []
    model, optimizer = backends.fresh_model(
        cfg.activation, cfg.optimizer, cfg.learning_rate, seed=cfg.seed, compile_args=compile_args(cfg),
        recorder=lambda: backend.curve_recorder(cfg.expected_updates, max_curve_points,
                                                FAST_NORM_POINTS if cfg.dispatch == "fast" else None),
        on_cleared=lambda: memory.append(reset_peak_host_memory()))
    recorder = model.recorder
    x_train, y_train, x_test, y_test = data.prepared(cfg.train_size)
    start_weights = None
    if plan.weights is not None:
        model.set_weights(plan.weights)
        start_weights = model.get_weights()
    # read before training: after an interrupted fit, Keras' JAX trainer leaves variables unsynchronised
    learning_rate = float(f"{float(backend.keras.ops.convert_to_numpy(optimizer.learning_rate)):.7g}")
    prober = None
    if cfg.probes:
        n = min(PROBE_SIZE, len(x_train))
        probe = backend.probe(model, x_train[:n], y_train[:n])
        prober = Prober(probe, seed=cfg.seed, noise=plan.probe_noise) if probe is not None else None
    sampler = sampler or GpuSampler()
    clock = _epoch_clock_class(backend.keras)(x_test, y_test, sampler, prober, on_epoch, plan.stop,
                                              validation=data.validation() if plan.validate else None,
                                              test_each_epoch=cfg.evaluate_test_each_epoch)
    return Setup(model, optimizer, x_train, y_train, learning_rate, len(x_test), recorder, prober, clock, sampler,
                 memory[0] if memory else None, start_weights)


def fit_and_classify(cfg: RunConfig, s: Setup) -> Outcome:
    """Train, and say how it ended: ok, diverged, oom, error (the sweep goes on) or interrupted (Ctrl-C:
    recorded, then re-raised by the caller to stop the sweep)."""
    status, error = "ok", None
    started = time.perf_counter()
    with s.sampler, SIGINT.watch() as sigint:
        try:
            fit_epochs(s.model, s.x_train, s.y_train, cfg, [s.clock])
            if sigint.seen:
                raise KeyboardInterrupt  # swallowed in the last epoch's end, after the clock looked
        except MemoryError as exc:
            status, error = "oom", f"out of host memory: {exc}"
        except KeyboardInterrupt:
            status, error = "interrupted", sigint.reason()
        except Exception as exc:  # a framework failure of this cell: a result, the sweep goes on
            text = str(getattr(exc, "message", None) or exc).strip()
            message = text.splitlines()[0][:300] if text else ""
            if sigint.seen:  # the interrupt, raised inside the framework's own code, came back as its error
                status, error = "interrupted", sigint.reason()
            elif backends.current().is_oom(exc):
                status, error = "oom", f"out of memory: {message}"
            else:
                status, error = "error", f"{type(exc).__name__}: {message}"
    outcome = Outcome(status, error, time.perf_counter() - started)
    if s.clock.diverged:
        outcome.status = "diverged"
        outcome.error = f"training loss became {s.clock.train_loss[-1]} in epoch {len(s.clock.train_loss)}"
    if outcome.status == "ok" and not s.clock.test_each_epoch:
        s.clock.evaluate_test()
    if outcome.status == "ok":
        outcome.train_eval = s.model.evaluate(s.x_train, s.y_train, batch_size=EVAL_BATCH_SIZE, verbose=0,
                                              return_dict=True)
    return outcome


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def timing(cfg: RunConfig, times: list, peak: dict | None, causes: list | None = None) -> dict:
    """The record's timing and efficiency fields from the epoch times and what each epoch's measurements say
    (bench.samples; steady state: bench.record.steady_timing)."""
    causes = causes or []
    lists = {k: [c[k] for c in causes] for k in ("cpu_s", "gc_s", "steal_s", "others_s")}
    steady = steady_timing(times, lists["cpu_s"], lists["gc_s"], lists["steal_s"], lists["others_s"])
    epoch_time = steady["epoch_time_s"]
    # examples per timed epoch: the training subset, or one interval of a fixed update budget
    examples = cfg.steps_per_epoch * cfg.batch_size if cfg.total_updates else cfg.train_size
    flops = examples * flops_per_example()
    achieved = flops / epoch_time / 1e9 if epoch_time else None
    peak_gflops = (peak or {}).get("matmul_gflops")
    return {
        "epoch_times_s": [float(t) for t in times],
        "epoch_cpu_s": lists["cpu_s"], "epoch_gc_s": lists["gc_s"], "epoch_steal_s": lists["steal_s"],
        "epoch_others_s": lists["others_s"],
        "first_epoch_s": float(times[0]) if times else None,
        **steady,
        "time_per_update_s": epoch_time / cfg.steps_per_epoch if epoch_time else None,
        "examples_per_s": examples / epoch_time if epoch_time else None,
        "flops_per_epoch": flops,
        "achieved_gflops": round(achieved, 3) if achieved else None,
        "peak_fraction": round(achieved / peak_gflops, 5) if achieved and peak_gflops else None,
    }


def probes(cfg: RunConfig, s: Setup, status: str, grad_curve: list, plan: Plan | None = None) -> dict:
    """The record's probe fields (bench.curvature); empty, with the reason, where there are none."""
    backend = backends.current()
    if s.prober is None:
        own = plan.no_probes_reason if plan is not None else None
        reason = own or ("off (--no-probes)" if not cfg.probes else backend.NO_PROBES)
        return {"probes": Probes(enabled=False, reason=reason, requested=cfg.probes), "full_grad_norm_by_epoch": [],
                "full_loss_by_epoch": [], "noise_scale_by_epoch": [], "hessian": None, "plateaus": []}
    p = s.prober
    ok = status == "ok"
    hessian = Hessian(**p.finish(backend.to_int(s.optimizer.iterations))) if ok else None
    epochs = [e for e in p.epochs if e["epoch"] > 0]  # the epoch ends (not an extra probe at the run's end)
    return {
        "probes": Probes(enabled=True, reason=None, requested=True, probe_size=p.probe.size,
                         eigen_solver="scipy eigsh (ARPACK Lanczos), both ends", seconds=round(p.seconds, 3)),
        "full_grad_norm_by_epoch": [e["full_grad_norm"] for e in epochs],
        "full_loss_by_epoch": [e["full_loss"] for e in epochs],
        "noise_scale_by_epoch": [e["b_simple"] for e in epochs],
        "hessian": hessian,
        "plateaus": [Plateau(**x) for x in p.plateau_records(grad_curve)] if ok else [],
    }


def _updates(cfg: RunConfig, s: Setup) -> int:
    """The optimizer's update count; where the backend cannot give it back (Keras' JAX trainer after an
    interrupted fit), the updates of the epochs that finished."""
    try:
        return backends.current().to_int(s.optimizer.iterations)
    except Exception:
        return len(s.clock.times) * cfg.steps_per_epoch


def dispatch(cfg: RunConfig, model) -> Dispatch:
    backend = backends.current()
    asked, used = backend.precision()
    return Dispatch(backend=backend.NAME, device="GPU" if backend.gpu_devices() else "CPU", mode=cfg.dispatch,
                    driver=driver(cfg), jit_compile=bool(model.jit_compile),
                    steps_per_execution=int(model.steps_per_execution), op_determinism=backend.determinism(),
                    threads=backend.threads(), precision=asked, matmul_precision=used)


def build_record(cfg: RunConfig, s: Setup, out: Outcome, peak: dict | None, attempt: int = 1,
                 plan: Plan | None = None, code_version: str | None = None) -> Record:
    """The run's record; `cfg` is the cell as planned (its keys), the plan's cell what trained."""
    plan = plan or Plan(cfg)
    trained = plan.cell
    ok, clock = out.status == "ok", s.clock
    loss_curve, grad_curve = s.recorder.curves() if s.recorder else ([], [])
    memory = peak_host_memory_mib(s.memory_start_mib)
    probe_fields = probes(cfg, s, out.status, grad_curve, plan)
    rec = Record(
        schema=SCHEMA, status=out.status, error=out.error, experiment=cfg.experiment, profile=cfg.profile,
        target=cfg.target, role=cfg.role, optimizer=cfg.optimizer,
        batch_size=cfg.batch_size, full_batch=cfg.full_batch, budget=cfg.budget, activation=cfg.activation,
        dtype=backends.current().keras.config.floatx(), seed=cfg.seed, train_size=cfg.train_size,
        test_size=s.test_size, epochs=cfg.epochs, epochs_done=len(clock.times),
        learning_rate=s.learning_rate, updates=_updates(cfg, s), steps_per_epoch=cfg.steps_per_epoch,
        fit_wall_s=out.fit_wall_s, **timing(trained, clock.times, peak, clock.causes),
        train_loss=_finite(out.train_eval["loss"] and float(out.train_eval["loss"])),
        train_accuracy=out.train_eval["accuracy"] and float(out.train_eval["accuracy"]),
        test_loss=clock.test_loss[-1] if clock.test_loss and ok else None,
        test_accuracy=clock.test_acc[-1] if clock.test_acc and ok else None,
        test_accuracy_by_epoch=clock.test_acc if clock.test_each_epoch else [],
        val_size=len(clock.validation[0]) if clock.validation is not None else None,
        val_loss=clock.val_loss[-1] if clock.val_loss and ok else None,
        val_accuracy=clock.val_acc[-1] if clock.val_acc and ok else None, val_accuracy_by_epoch=clock.val_acc,
        train_loss_by_epoch=[_finite(v) for v in clock.train_loss],
        loss_curve=[[u, _finite(v)] for u, v in loss_curve], grad_norm_curve=[[u, _finite(v)] for u, v in grad_curve],
        curve_stride=s.recorder.stride if s.recorder else None,
        grad_norm_stride=s.recorder.norm_stride if s.recorder else None,
        **probe_fields,
        host_memory_peak_mib=memory["peak_mib"], host_memory_run_mib=memory["run_mib"],
        host_memory_source=memory["source"],
        diverged=out.status == "diverged", gpu=Gpu(**s.sampler.summary()), dispatch=dispatch(cfg, s.model),
        attempt=attempt, repeat=cfg.repeat, repeats=cfg.repeats, lr_setting=cfg.learning_rate,
        code_version=code_version, **(plan.fields or {}),
    )
    if plan.part is not None:
        hessian = probe_fields["hessian"]
        for key, value in plan.part(trained, s, asdict(hessian) if hessian else None).items():
            setattr(rec, key, value)
    return rec


# the error of a run whose process ended while it trained (bench.worker completes it with how the process ended)
LOST = "the process training the run ended before the run finished"


def run(cfg: RunConfig, data, *, max_curve_points: int = MAX_CURVE_POINTS, sampler: GpuSampler | None = None,
        peak: dict | None = None, on_epoch=None, attempt: int = 1, plan: Plan | None = None,
        code_version: str | None = None, on_start=None) -> Record:
    """Train one cell on `data` (a bench.data.Mnist) and return its run record.

    `peak`: the session's calibration (bench.calibrate), to score the run against the machine's matmul rate;
    `on_epoch(epoch, seconds)`: called after each timed epoch (the plugin's progress lines); `attempt`: which
    run of the cell this is in the sweep (reruns of an unstable timing count up); `plan`: what the cell's
    experiment hands the run (bench.experiments.Plan: the cell to train, e.g. at a chosen rate; start weights; a
    stop rule; its part of the record); `on_start(record)`: called once the model is built, before training, with
    the record the run leaves if its process dies while it trains (status error: bench.worker keeps it).
    """
    plan = plan or Plan(cfg)
    setup = prepare(plan.cell, data, max_curve_points, sampler, on_epoch, plan)
    if on_start is not None:
        on_start(build_record(cfg, setup, Outcome("error", LOST, 0.0), peak, attempt, plan, code_version))
    outcome = fit_and_classify(plan.cell, setup)
    return build_record(cfg, setup, outcome, peak, attempt, plan, code_version)
