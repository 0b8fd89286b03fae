"""How long a sweep will take, printed before it starts: updates per cell times a measured time per update.

Two sources of per-update times: this machine's earlier runs in the run store (same backend and
dispatch mode), and REFERENCES, measured per-update medians (over optimizers) from result files
committed under reports/ (tests/test_estimate.py checks the numbers against those files).
"""

from __future__ import annotations

import math
import statistics

# seconds per update by batch size (median over optimizers of each run's estimate, its fastest steady epoch, as the
# record type reads it) and seconds per run outside the timed epochs (tracing, evaluations), from the named files
REFERENCES = {
    "H200-140GB": {
        "what": "NVIDIA H200, Keras on JAX, default dispatch",
        "source": "reports/machines/H200-jax-lecture-2ep.json",
        "per_update_s": {1: 0.001118, 10: 0.001142, 100: 0.001311, 1000: 0.00181, 10000: 0.01374, 50000: 0.09977},
        "per_run_s": 3.9,
    },
    "EPYC-2c": {
        "what": "AMD EPYC, 2 cores, TensorFlow, default dispatch",
        "source": "reports/machines/EPYC-tf-quick.json",
        "per_update_s": {1: 0.004776, 10: 0.005053, 100: 0.00821, 1000: 0.028005, 10000: 0.237626},
        "per_run_s": 2.13,
    },
    "Xeon-2c": {
        "what": "Intel Xeon, 2 cores, TensorFlow, default dispatch, probes on",
        "source": "reports/machines/Xeon-tf-quick.json",
        "per_update_s": {1: 0.00811, 10: 0.008976, 100: 0.013524, 1000: 0.062423, 3000: 0.154076},
        "per_run_s": 8.58,
    },
}


def _interpolated(table: dict, batch_size: int) -> float:
    """log-log interpolation in `table` {batch size: s}; flat below its smallest size, proportional to the batch
    beyond its largest (saturated)."""
    sizes = sorted(table)
    if batch_size in table:
        return table[batch_size]
    if batch_size <= sizes[0]:
        return table[sizes[0]]
    if batch_size >= sizes[-1]:
        return table[sizes[-1]] * batch_size / sizes[-1]
    for lo, hi in zip(sizes, sizes[1:]):
        if lo <= batch_size <= hi:
            f = math.log(batch_size / lo) / math.log(hi / lo)
            return math.exp(math.log(table[lo]) + f * math.log(table[hi] / table[lo]))
    raise AssertionError("unreachable")


# beyond the largest batch size measured, time per update grows as on this reference (flat while the hardware has
# parallelism left, then in proportion to the batch): a sweep that has measured only batch 1 and 10 would otherwise
# predict a full-batch update 100 times a batch-10 one (measured on the EPYC: 5.5 times at batch 1,000)
SHAPE = "EPYC-2c"


def per_update(table: dict, batch_size: int) -> float:
    """Time per update at `batch_size`, log-log interpolated in `table` {batch size: s}; below the smallest measured
    size it stays flat, beyond the largest it grows as on the SHAPE reference from there (in proportion to the batch
    beyond the reference's own largest size)."""
    largest = max(table)
    if batch_size <= largest:
        return _interpolated(table, batch_size)
    shape = REFERENCES[SHAPE]["per_update_s"]
    return table[largest] * _interpolated(shape, batch_size) / _interpolated(shape, largest)


def seconds(cells, table: dict, per_run_s: float) -> float:
    return sum(c.expected_updates * per_update(table, c.batch_size) + per_run_s for c in cells)


def from_store(entries, machine_id: str, backend: str, mode: str):
    """(table, per_run_s, runs used) from this machine's finished runs in the store (bench.record.Entry), or None if
    too few."""
    per_bs, overhead = {}, []
    for e in entries:
        r = e.record
        if (r.status != "ok" or e.machine.id != machine_id or r.dispatch.backend != backend
                or r.dispatch.mode != mode or not r.time_per_update_s or r.epoch_time_s is None):
            continue
        per_bs.setdefault(r.batch_size, []).append(r.time_per_update_s)
        overhead.append(max(0.0, r.fit_wall_s - r.epochs * r.epoch_time_s))
    if len(per_bs) < 2:
        return None
    return ({b: statistics.median(v) for b, v in per_bs.items()}, statistics.median(overhead), len(overhead))


def remaining(cells, finished) -> float | None:
    """Seconds the `cells` left should take, from this sweep's `finished` records (bench.record.Record): their
    per-update times by batch size (log-log interpolated between, as per_update) and their median time outside
    the timed epochs; None before two batch sizes have finished."""
    per_bs, overhead = {}, []
    for r in finished:
        per_bs.setdefault(r.batch_size, []).append(r.time_per_update_s)
        overhead.append(max(0.0, r.fit_wall_s - sum(r.epoch_times_s)) + _OUTSIDE_FIT_S)
    if len(per_bs) < 2:
        return None
    table = {b: statistics.median(v) for b, v in per_bs.items()}
    return seconds(cells, table, statistics.median(overhead))


_OUTSIDE_FIT_S = 1.5  # a run's model build and final evaluations, outside fit_wall_s (measured on a 2-core CPU)


def duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s // 3600:.0f} h {s % 3600 / 60:02.0f} min"


def lines(cells, store_entries=(), machine_id=None, backend="tensorflow", mode="default") -> list[str]:
    """What to print before the sweep: the amount of work, and its duration by each source of times."""
    if not cells:
        return []
    updates = sum(c.expected_updates for c in cells)
    c0 = cells[0]
    out = [f"estimate: {len(cells)} runs, {updates:,} updates ({c0.profile}: {c0.train_size:,} examples x "
           f"{c0.epochs} epochs per run); training time, +-30 %:"]
    mine = from_store(store_entries, machine_id, backend, mode) if machine_id else None
    if mine:
        table, per_run, n = mine
        out.append(f"  this machine ({n} earlier {backend}/{mode} runs in the store): "
                   f"~{duration(seconds(cells, table, per_run))}")
    for label, ref in REFERENCES.items():
        out.append(f"  like {label} ({ref['what']}; {ref['source']}): "
                   f"~{duration(seconds(cells, ref['per_update_s'], ref['per_run_s']))}")
    return out
