"""Shards of a sweep (`pytest bench --shard K/N`): a deterministic split of the cells into N parts of about equal
estimated cost, so that N processes (a Slurm job array, one device each) cover every cell exactly once.

The cost of a cell is its updates times the time per update of its batch size in one committed reference
(bench.estimate.REFERENCES[REFERENCE]), plus the per-run overhead. Never this machine's own store: every task of
an array must compute the same split without seeing the others. Cells are dealt out longest first, each to the
shard with the least cost so far (the LPT rule): no shard is more than the largest cell above the mean.

Why not pytest-split: it balances by durations recorded in an earlier run (.test_durations), which a first sweep
on a new cluster does not have, and it splits after pytest's own deselection, whereas the shard must be fixed
before --resume removes finished cells (else a resubmitted task would take another task's cells).

Each shard writes its plan (test ids and resume keys of its cells) beside its store, `<store stem>.plan`, so that
`python -m bench.slurm status` can count its finished cells.
"""

from __future__ import annotations

import heapq
import json
import re
from pathlib import Path

from bench import estimate
from bench.grid import BadOption

REFERENCE = "EPYC-2c"  # the cost model every task of an array uses


def parse(text: str | None) -> tuple[int, int] | None:
    """'K/N' (1 <= K <= N) -> (K, N); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= MAX_SHARDS:
        raise BadOption(f"--shard: {text!r} is not K/N with 1 <= K <= N <= {MAX_SHARDS:,} (e.g. 2/4: the second of "
                        "four shards)")
    return int(m.group(1)), int(m.group(2))


MAX_SHARDS = 1_000  # Slurm's default MaxArraySize allows array indices up to 1,000


def cost(cell, table: dict, per_run_s: float) -> float:
    """Estimated seconds of one cell: its updates at the table's time per update for its batch size, plus a run's
    fixed cost."""
    return cell.expected_updates * estimate.per_update(table, cell.batch_size) + per_run_s


def split(cells: list, n: int, table: dict | None = None, per_run_s: float | None = None) -> list[list]:
    """`cells` in `n` shards of about equal estimated cost; each shard keeps the grid's order. Deterministic: the
    same cells and costs give the same shards on every machine of an array."""
    table, per_run_s = _table(table, per_run_s)
    costs = [cost(c, table, per_run_s) for c in cells]
    order = sorted(range(len(cells)), key=lambda i: (-costs[i], i))
    heap = [(0.0, k) for k in range(n)]
    members: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        load, k = heapq.heappop(heap)
        members[k].append(i)
        heapq.heappush(heap, (load + costs[i], k))
    return [[cells[i] for i in sorted(m)] for m in members]


def _table(table, per_run_s) -> tuple:
    if table is None:
        ref = estimate.REFERENCES[REFERENCE]
        return ref["per_update_s"], ref["per_run_s"]
    return table, per_run_s


def loads(shards: list, table: dict | None = None, per_run_s: float | None = None) -> list[float]:
    """Estimated seconds of each shard."""
    table, per_run_s = _table(table, per_run_s)
    return [sum(cost(c, table, per_run_s) for c in shard) for shard in shards]


def plan_path(store) -> Path:
    return Path(store).with_suffix(".plan")


def _frozen(x):
    return tuple(map(_frozen, x)) if isinstance(x, (list, tuple)) else x


def write_plan(store, k: int, n: int, test_ids: list, keys: list) -> Path:
    from bench.record import write_atomic

    path = plan_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"shard": [k, n], "cells": test_ids, "keys": keys}).encode())
    return path


def read_plan(store) -> dict | None:
    """{'shard': (k, n), 'cells': [test id], 'keys': {resume key}} or None before the shard started."""
    path = plan_path(store)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {"shard": tuple(data["shard"]), "cells": data["cells"], "keys": {_frozen(k) for k in data["keys"]}}
