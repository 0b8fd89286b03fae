"""Test-only faults for real sweeps, loaded into `pytest bench` with `-p tests.faults` (never by the suite):

    BENCH_FAULT=error:TEST_ID                 that cell's training raises (a framework failure of one cell; TEST_ID
                                              `*`: every cell's)
    BENCH_FAULT=slow:TEST_ID:EPOCH:SECONDS    that cell's epoch EPOCH (1-based) takes SECONDS longer, in its first
                                              attempt only (a rerun of the cell is undisturbed)
    BENCH_FAULT=gc:TEST_ID:EPOCH:SECONDS      the same, the time spent in Python's garbage collector (full
                                              collections over a large live heap, built before training)
    BENCH_FAULT=die:TEST_ID                   the process training that cell is killed (SIGKILL) as training starts

and, no fault, BENCH_PIDS=PATH: the sweep's process and each process that trains for it append their pid to PATH.
"""

import gc
import os
import time


def pytest_configure(config):
    """In the sweep's process, and in each process that trains its rounds (bench.worker calls `install` there)."""
    if not (os.environ.get("BENCH_FAULT") or os.environ.get("BENCH_PIDS")):
        return
    from bench import worker

    os.environ[worker.SETUP_ENV] = f"{__name__}:install"
    install()


def install():
    if os.environ.get("BENCH_PIDS"):
        with open(os.environ["BENCH_PIDS"], "a") as f:
            f.write(f"{os.getpid()}\n")
    spec = os.environ.get("BENCH_FAULT")
    if not spec:
        return
    from bench import train

    kind, test_id, *rest = spec.split(":")
    original = train.fit_epochs
    seen = []

    def fit_epochs(model, x, y, cfg, callbacks=(), use=None):
        if test_id not in ("*", cfg.test_id) or (kind in ("slow", "gc") and seen):
            return original(model, x, y, cfg, callbacks, use)
        seen.append(cfg.test_id)
        if kind == "error":
            raise RuntimeError("injected failure (tests/faults.py)")
        if kind == "die":  # the process that trains is killed, as the kernel's out-of-memory killer does
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        from bench.backends import current

        epoch, seconds = int(rest[0]), float(rest[1])
        heap = [[i] for i in range(300_000)] if kind == "gc" else None  # tracked containers: each full gc walks them

        class Slow(current().keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                if e + 1 != epoch:
                    return
                if kind == "gc":  # after the clock started: inside the timed epoch
                    until = time.perf_counter() + seconds
                    while time.perf_counter() < until:
                        gc.collect()
                else:
                    time.sleep(seconds)

        try:
            return original(model, x, y, cfg, [*callbacks, Slow()], use)
        finally:
            del heap

    train.fit_epochs = fit_epochs
