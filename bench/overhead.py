"""Instrumentation overhead: the suite's recorded run against a plain `model.fit` of the same cell.

    python -m bench.overhead --batch-sizes 1,100,10000 --train-size 10000 --epochs 4 --repeats 4

Runs the two interleaved, `repeats` times each, alternating which goes first (machines drift), and
prints the median steady-state epoch time of each and their ratio. Both use the same model, optimizer, seed and data; the plain run has only an
epoch timer (no curve recorder, no evaluation between epochs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench import grid


def plain_epoch_times(cfg: grid.RunConfig, data) -> list:
    from bench.backend import keras
    from bench.model import build_mlp, make_optimizer

    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(cfg.seed)
    x, y, _, _ = data.prepared(cfg.train_size)
    model = build_mlp(cfg.activation, cls=keras.Sequential)
    model.compile(optimizer=make_optimizer(cfg.optimizer), loss="categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0, callbacks=[Clock()])
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,100,10000")
    p.add_argument("--train-size", default="10000")
    p.add_argument("--epochs", default="3")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--mnist", default=None)
    args = p.parse_args(argv)
    try:
        sweep = grid.parse_sweep("quick", train_size=args.train_size, epochs=args.epochs,
                                 batch_sizes=args.batch_sizes, optimizers=args.optimizer)
        if sweep.epochs < 2:
            raise grid.BadOption("--epochs: needs at least 2 (the first epoch includes tracing and is not compared)")
        from bench.data import DataError, load_mnist

        data = load_mnist(args.mnist)
    except (grid.BadOption, DataError) as exc:
        p.error(str(exc))
    from bench.train import run

    print(f"{'batch':>6} {'plain s/epoch':>14} {'recorded s/epoch':>17} {'ratio':>7}")
    for cfg in sweep.cells():
        plain, recorded = [], []
        for i in range(args.repeats):
            pair = [lambda: plain.extend(plain_epoch_times(cfg, data)[1:]),
                    lambda: recorded.extend(run(cfg, data)["epoch_times_s"][1:])]
            for measure in pair if i % 2 == 0 else pair[::-1]:
                measure()
        a, b = statistics.median(plain), statistics.median(recorded)
        print(f"{cfg.batch_size:>6} {a:>14.4f} {b:>17.4f} {b / a:>7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
