"""How far the measurement is from the hardware: the suite's own overhead, and the framework's dispatch cost.

    python -m bench.overhead                    # both tables below, Adam, 10,000 examples
    python -m bench.overhead --what overhead --batch-sizes 1,100,full --repeats 6
    python -m bench.overhead --what dispatch --json reports/overhead.json

* overhead: the suite's instrumented run (`bench.train.run`: curve recorder, NVML sampler, per-epoch
  test evaluation) against a plain `model.fit` of the same model, data, optimizer, seed and settings
  with only an epoch timer. Target: ratio <= 1.03 at each batch size.
  `--dispatch fast` measures the same against the fast driver.
* dispatch: time per update of `model.fit` as a user gets it (`default`); of `--dispatch fast` (on
  TensorFlow the suite's device loop, bench.train.fit_device_loop: an epoch per XLA-compiled call, the
  model's own train_step, batches gathered on the device); of Keras' own fast flags (`keras_fast`:
  `model.fit` with jit_compile and steps_per_execution = an epoch, which still reads its data iterator
  and launches a compiled step per update); and of the floor: bare update steps as one XLA-compiled
  loop over batches already cut and in device memory, no Keras train_step, no metrics, no shuffling
  (TensorFlow backend). default / floor at batch 1 is the framework's per-step dispatch cost.

Each configuration runs `repeats` times, in an order rotated every repeat (this shared machine drifts:
back-to-back identical runs differ by tens of per cent), in one process; the table gives medians of
the steady-state epochs (every epoch after the first) and their ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

from bench import grid


def _epoch_clock(keras, times):
    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # waits for the device
            times.append(time.perf_counter() - self.start)

    return Clock()


def plain_epoch_times(cfg: grid.RunConfig, data, use: str | None = None) -> list:
    """The cell's training with nothing but an epoch timer: `model.fit` with Keras' defaults, or in fast
    mode the suite's fast driver (bench.train.fit_epochs), or Keras' own fast flags with use="keras_fit"."""
    from bench.backends import current, fresh_model
    from bench.train import compile_args, fit_epochs

    model, _ = fresh_model(cfg.activation, cfg.optimizer, seed=cfg.seed, compile_args=compile_args(cfg), plain=True)
    x, y, _, _ = data.prepared(cfg.train_size)
    times = []
    fit_epochs(model, x, y, cfg, [_epoch_clock(current().keras, times)], use=use)
    return times


def keras_fit_epoch_times(cfg: grid.RunConfig, data) -> list:
    """Always Keras' `model.fit`, with the mode's compile arguments (fast: XLA and steps_per_execution)."""
    return plain_epoch_times(cfg, data, use="keras_fit")


def floor_epoch_times(cfg: grid.RunConfig, data) -> list:
    """The same updates as one compiled loop per epoch over batches already on the device (the backend's
    `floor_epoch`: no Keras train_step, no metrics, no shuffling).

    The floor of what any driver of this model can reach: no per-step host work at all. Batches are
    cut from a shuffled copy made once (shuffling is not timed); a last partial batch is dropped so the
    loop has one shape (the update count differs from fit's by at most one per epoch).
    """
    import numpy as np

    from bench.backends import Unsupported, current, fresh_model

    backend = current()
    model, optimizer = fresh_model(cfg.activation, cfg.optimizer, seed=cfg.seed, plain=True)
    x, y, _, _ = data.prepared(cfg.train_size)
    steps = cfg.train_size // cfg.batch_size
    order = np.random.default_rng(cfg.seed).permutation(len(x))[: steps * cfg.batch_size]
    try:
        epoch = backend.floor_epoch(model, optimizer, x[order].reshape(steps, cfg.batch_size, -1),
                                    y[order].reshape(steps, cfg.batch_size, -1))
    except Unsupported as exc:
        raise SystemExit(f"python -m bench.overhead: {exc}") from None
    times = []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return times


def _instrumented(cfg, data):
    from bench.train import run

    return run(cfg, data).epoch_times_s


def measure(cfgs: dict, data, repeats: int) -> dict:
    """{name: [steady epoch times]} for each name -> (function, cfg), in rotated order."""
    names = list(cfgs)
    out = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            fn, cfg = cfgs[n]
            out[n].extend(fn(cfg, data)[1:])
    return out


def overhead_table(sweep: grid.Sweep, data, repeats: int, mode: str) -> list[dict]:
    """The suite's instrumented run against a plain fit of the same cells: rows printed and returned."""
    print(f"overhead, --dispatch {mode}")
    print(f"{'batch':>6} {'plain s/epoch':>14} {'suite s/epoch':>14} {'ratio':>7} {'ratio of minima':>16}"
          "   (target <= 1.03)")
    rows = []
    for cfg in sweep.cells():
        t = measure({"plain": (plain_epoch_times, cfg), "suite": (_instrumented, cfg)}, data, repeats)
        a, b = statistics.median(t["plain"]), statistics.median(t["suite"])
        # the minima: on a shared machine slow epochs come from the host (bursts that hit either side),
        # so the fastest epoch of each is the least disturbed estimate of its cost
        ratio_min = min(t["suite"]) / min(t["plain"])
        rows.append({"batch_size": cfg.batch_size, "plain_s": a, "suite_s": b, "ratio": b / a,
                     "plain_min_s": min(t["plain"]), "suite_min_s": min(t["suite"]), "ratio_of_minima": ratio_min,
                     "epochs_measured": len(t["plain"])})
        print(f"{cfg.batch_size:>6} {a:>14.4f} {b:>14.4f} {b / a:>7.3f} {ratio_min:>16.3f}", flush=True)
    return rows


def dispatch_table(sweep: grid.Sweep, data, repeats: int) -> list[dict]:
    """Time per update of each driver against the hand-written floor: rows printed and returned."""
    print(f"{'batch':>6} {'default ms/upd':>15} {'fast ms/upd':>12} {'keras_fast':>11} {'floor ms/upd':>13} "
          f"{'default/floor':>14} {'fast/floor':>11}   (fast target <= 1.2x floor)")
    rows = []
    for cfg in sweep.cells():
        fast = dataclasses.replace(cfg, dispatch="fast")
        t = measure({"default": (plain_epoch_times, cfg), "fast": (plain_epoch_times, fast),
                     "keras_fast": (keras_fit_epoch_times, fast), "floor": (floor_epoch_times, cfg)}, data, repeats)
        full_steps = cfg.train_size // cfg.batch_size
        ms = {k: statistics.median(v) * 1000 / (full_steps if k == "floor" else cfg.steps_per_epoch)
              for k, v in t.items()}
        rows.append({"batch_size": cfg.batch_size, **{f"{k}_ms_per_update": v for k, v in ms.items()},
                     "default_over_floor": ms["default"] / ms["floor"], "fast_over_floor": ms["fast"] / ms["floor"],
                     "keras_fast_over_floor": ms["keras_fast"] / ms["floor"]})
        print(f"{cfg.batch_size:>6} {ms['default']:>15.3f} {ms['fast']:>12.3f} {ms['keras_fast']:>11.3f} "
              f"{ms['floor']:>13.3f} {ms['default'] / ms['floor']:>14.2f} {ms['fast'] / ms['floor']:>11.2f}",
              flush=True)
    return rows


def _arguments(argv):
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("overhead", "dispatch", "both"), default="both")
    p.add_argument("--batch-sizes", default=None,
                   help="default: 1,100,full for overhead, 1,10,100 for dispatch")
    p.add_argument("--train-size", default="10000")
    p.add_argument("--epochs", default="3")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--dispatch", default="default", choices=("default", "fast"), help="the overhead table's mode: default (as a user "
                   "gets model.fit) or fast")
    p.add_argument("--mnist", default=None)
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p, p.parse_args(argv)


def main(argv=None) -> int:
    from bench.backends import Unsupported, name, optimizer_names
    from bench.data import DataError, load_mnist
    from bench.record import StoreError, check_writable, write_atomic

    p, args = _arguments(argv)
    try:
        name()  # an unknown KERAS_BACKEND, before anything
        if not 1 <= args.repeats <= 100:
            raise grid.BadOption(f"--repeats: {args.repeats} is not a whole number from 1 to 100")
        if "," in args.optimizer:
            raise grid.BadOption(f"--optimizer {args.optimizer}: one optimizer (the tables compare modes, not "
                                 "optimizers)")
        if args.json is not None:
            check_writable(args.json, "--json")  # by writing, before minutes of measurement
        sweeps = {}
        for what, sizes in (("overhead", "1,100,full"), ("dispatch", "1,10,100")):
            if args.what in (what, "both"):
                try:
                    sweeps[what] = grid.parse_sweep(
                        "quick", train_size=args.train_size, epochs=args.epochs,
                        batch_sizes=sizes if args.batch_sizes is None else args.batch_sizes,
                        optimizers=args.optimizer, dispatch=args.dispatch if what == "overhead" else None,
                        discover=optimizer_names, repeats="1", probes=False)
                except grid.BadOption as exc:  # this command's option is --optimizer, the grid's --optimizers
                    raise grid.BadOption(str(exc).replace("--optimizers", "--optimizer")) from None
        if any(s.epochs < 2 for s in sweeps.values()):
            raise grid.BadOption("--epochs: needs at least 2 (the first epoch includes tracing and is not compared)")
        data = load_mnist(args.mnist)
    except (grid.BadOption, DataError, StoreError, Unsupported) as exc:
        p.error(str(exc))

    results = {"optimizer": args.optimizer, "train_size": int(args.train_size), "epochs": int(args.epochs),
               "repeats": args.repeats, "backend": name()}
    if "overhead" in sweeps:
        results["overhead_dispatch"] = args.dispatch
        results["overhead"] = overhead_table(sweeps["overhead"], data, args.repeats, args.dispatch)
    if "dispatch" in sweeps:
        results["dispatch"] = dispatch_table(sweeps["dispatch"], data, args.repeats)
    if args.json is not None:
        write_atomic(args.json, json.dumps(results, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
