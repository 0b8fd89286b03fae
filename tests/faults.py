"""Test-only faults for real sweeps, loaded into `pytest bench` with `-p tests.faults` (never by the suite):

    BENCH_FAULT=error:TEST_ID                 that cell's training raises (a framework failure of one cell; TEST_ID
                                              `*`: every cell's)
    BENCH_FAULT=slow:TEST_ID:EPOCH:SECONDS    that cell's epoch EPOCH (1-based) takes SECONDS longer, in its first
                                              attempt only (a rerun of the cell is undisturbed)
    BENCH_FAULT=gc:TEST_ID:EPOCH:SECONDS      the same, the time spent in Python's garbage collector (full
                                              collections over a large live heap, built before training)
"""

import gc
import os
import time


def pytest_configure(config):
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
