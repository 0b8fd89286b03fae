"""Each round of a timed sweep in a fresh process, so that a cell's repeats are independent of the process too.

A process carries state that a fresh model instance does not reset: where its allocator placed the arrays, which
cores its thread pools settled on, what its interpreter and framework cached. Such state can move every run of the
process alike (a measurement's environment changing its result: Mytkowicz et al., "Producing wrong data without
doing anything obviously wrong!", ASPLOS 2009), so repeats that share one process can agree with each other more
closely than with another sweep. Measured on the 2-core EPYC, 2026-11-30: the committed evidence's two sweeps (each
one process) put fast-dispatch full-batch cells 0.91-1.14 times apart where one sweep's interval was as narrow as
+-2 %, and the default-dispatch cells 3.7 % slower in the second (median); the same cells run in 3 processes of 4
repeats gave a between-process standard deviation of 1.4 % (fast, full batch) and 2.5 % (default, batch 100) beside
the within-process spread. A sweep of a timed experiment (bench.experiments: `fresh_process_rounds`) therefore trains
each round of its repeats in a process of its own, started with multiprocessing's spawn (a new interpreter: nothing
inherited but the environment): the repeats of a cell then sample that state as independent sweeps do, and the
interval over repeats covers it, at the cost of one process start per round (about 5 s here), not per run. The
sweep's own process keeps the store, the benchmark JSON and the progress, and never touches the device (the
calibration runs in the first round's process).

A worker that dies (killed by the kernel's out-of-memory killer, a crash in the framework) loses only the run it
was training: the sweep records that run as an error with the worker's exit status and goes on in a fresh worker.
Ctrl-C and SIGTERM reach the sweep's process, which relays them to the worker: its run is recorded as interrupted
and the sweep stops, as without workers. The worker lives in its own session, so a terminal's Ctrl-C reaches it
once, through the sweep; it ends when the sweep's process ends, however that ends.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import traceback

# `module:function` called in each worker before its first run (tests/faults.py sets it: the faults a test injects
# into the sweep's process must reach the process that trains)
SETUP_ENV = "BENCH_WORKER_SETUP"


class WorkerDied(RuntimeError):
    """The worker process ended before it answered; the message says how (its exit status or signal). `record`:
    the run's record as it stood when training began (bench.train.run's on_start), None if it died before."""

    def __init__(self, message: str, record=None):
        super().__init__(message)
        self.record = record


class WorkerFailed(RuntimeError):
    """The worker raised instead of answering (its setup: MNIST, the backend; or a bug outside what bench.train.run
    records as a result); the message is its traceback's last line."""


class Worker:
    """One fresh process that trains runs for the sweep until closed."""

    def __init__(self, settings: dict):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, settings), name="bench-round", daemon=True)
        self.process.start()
        child.close()
        self.provisional = None  # the record of the run in progress as it stood when training began

    def call(self, kind: str, *args, on_epoch=None):
        """Ask the worker to do `kind` (run, calibrate) and return its answer; WorkerDied when it ends first.
        Meanwhile this process relays Ctrl-C and SIGTERM to the worker, whose run ends as interrupted; its record is
        the answer (a second signal kills the worker; the run is then recorded as it stood when training began)."""
        self.provisional, self.forwarded = None, None
        self._conn.send((kind, args))
        with self._relaying():
            try:
                return self._answer(on_epoch)
            except WorkerDied as exc:
                if self.forwarded is None:
                    raise
                if exc.record is None:
                    raise KeyboardInterrupt from None
                exc.record.status = "interrupted"
                exc.record.error = f"interrupted ({self.forwarded}) during training; its process ended"
                return exc.record

    @contextlib.contextmanager
    def _relaying(self):
        """SIGINT and SIGTERM to this process go to the worker instead (where the launch does not ignore them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def relay(signum, frame):
            if self.forwarded is not None:  # asked twice: the worker goes now
                self.process.kill()
                return
            self.forwarded = signal.Signals(signum).name
            self.interrupt(signum)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s, handler in previous.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(s, relay)
        try:
            yield
        finally:
            for s, handler in previous.items():
                if handler is not None:
                    signal.signal(s, handler)

    def _answer(self, on_epoch):
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self.process.join(timeout=10)
                raise WorkerDied(f"the worker process (pid {self.process.pid}) ended "
                                 f"{_how(self.process.exitcode)} before its run finished", self.provisional) from None
            kind, payload = message
            if kind == "started":
                self.provisional = payload
                continue
            if kind == "epoch":
                if on_epoch is not None:
                    on_epoch(*payload)
                continue
            if kind == "failed":
                raise WorkerFailed(payload)
            if kind == "interrupted":
                raise KeyboardInterrupt
            return payload

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        if self.process.is_alive():
            try:
                os.kill(self.process.pid, signum)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop the worker: it finishes nothing more; killed if it does not end within 10 s."""
        try:
            self._conn.send(("stop", ()))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        self._conn.close()


def _how(code) -> str:
    if code is None:
        return "(still running)"
    if code < 0:
        try:
            return f"by signal {signal.Signals(-code).name}" + (" (the kernel's out-of-memory killer sends it)"
                                                                 if -code == signal.SIGKILL else "")
        except ValueError:
            return f"by signal {-code}"
    return f"with exit status {code}"


def _die_with_parent() -> None:
    """SIGKILL this process when the sweep's process dies (Linux: prctl PR_SET_PDEATHSIG), even by kill -9."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pipe's end still stops an idle worker


def serve(conn, settings: dict) -> None:
    """The worker's loop: set the backend up as the sweep asks, read MNIST, then answer requests until told to
    stop. Each run's epochs are reported as they end (the plugin's verbose progress)."""
    try:
        os.setsid()  # a terminal's Ctrl-C goes to the sweep's process, which relays it once
    except OSError:
        pass
    _die_with_parent()
    if os.getppid() == 1:  # the sweep's process is already gone
        return
    # TensorFlow's start-up notices (oneDNN, no CUDA driver) once per round are noise; its warnings and errors stay
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        mnist = setup(settings)
    except BaseException as exc:  # noqa: BLE001 - told to the sweep, which reports it
        conn.send(("failed", _last_line(exc)))
        return
    while True:
        try:
            kind, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if kind == "stop":
            return
        try:
            if kind == "calibrate":
                from bench.calibrate import calibrate

                answer = calibrate()
            else:
                answer = _run(conn, mnist, *args)
        except KeyboardInterrupt:
            conn.send(("interrupted", None))
            return
        except BaseException as exc:  # noqa: BLE001 - told to the sweep, which reports it
            conn.send(("failed", _last_line(exc)))
            continue
        conn.send(("done", answer))


def setup(settings: dict):
    """The backend's settings (threads, precision, determinism) and MNIST, as the sweep's process checked them."""
    from bench import backends, data

    backends.apply_settings(settings.get("threads"), settings.get("precision"), settings.get("deterministic"))
    hook = os.environ.get(SETUP_ENV)
    if hook:
        module, _, function = hook.partition(":")
        getattr(importlib.import_module(module), function)()
    source = settings.get("mnist")
    return data.read_npz(source) if source else data.load_mnist()


def _run(conn, mnist, cell, peak, attempt, plan, code_version):
    from bench.train import run

    return run(cell, mnist, peak=peak, on_epoch=lambda e, s: conn.send(("epoch", (e, s))), attempt=attempt,
               plan=plan, code_version=code_version, on_start=lambda rec: conn.send(("started", rec)))


def _last_line(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__
