"""Shared helpers of the checks (no test module imports another): cells, record checks, stored records, and
sweeps run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import grid, record

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
REPORTS = ROOT / "reports"


def cfg(optimizer="sgd", batch_size=100, train_size=1000, epochs=2, seed=0, activation="sigmoid", **kw):
    """A grid cell of the smoke profile."""
    return grid.RunConfig("smoke", optimizer, batch_size, batch_size == train_size, activation, seed, train_size,
                          epochs, **kw)


def plain_types(value) -> bool:
    """True if `value` holds only what json produces: no numpy scalars anywhere."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_types(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def follows_contract(data: dict) -> record.Record:
    """The record type reads `data` back (every field, its type) and writes it out unchanged, in plain JSON."""
    rec = record.Record.from_dict(data)
    assert rec.to_dict() == data
    assert plain_types(data)
    json.dumps(data, allow_nan=False)
    return rec


def stored(i=0, **over) -> dict:
    """A valid record as the store holds it: a real run's (tests/fixtures/adam-fast.json, upgraded to today's
    schema) with the key fields of a smoke cell at batch 10 + i, and `over` on top."""
    doc = json.loads((FIXTURES / "adam-fast.json").read_text())
    rec = record.upgrade(doc["benchmarks"][0]["extra_info"])
    rec.update({"status": "ok", "profile": "smoke", "train_size": 500, "epochs": 2, "activation": "sigmoid",
                "optimizer": "sgd", "batch_size": 10 + i, "full_batch": False, "budget": None, "seed": 0,
                "dispatch": {**rec["dispatch"], "mode": "default", "backend": "tensorflow", "threads": None},
                "probes": {**rec["probes"], "requested": True}})
    rec.update(over)
    return rec


def benchmarks(path) -> tuple[list, list]:
    """(timed runs, runs that are not timings) of a benchmark JSON."""
    doc = json.loads(Path(path).read_text())
    return doc["benchmarks"], doc.get("untimed_runs", [])


def sweep_cmd(*args, store=None, mnist=None, plugins=()) -> list[str]:
    """`python -m pytest bench ARGS` as a user types it (no cache), with extra -p plugins."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "bench", *args]
    for p in plugins:
        cmd += ["-p", p]
    if store is not None:
        cmd += ["--bench-store", str(store)]
    if mnist is not None:
        cmd += ["--mnist", mnist.source]
    return cmd


def run(cmd, timeout=900, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env}, **kw)


def wait_for(condition, proc=None, timeout=300.0, what="the event"):
    """Poll `condition()` until true; fail if `proc` ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc is None or proc.poll() is None, f"the process ended before {what}"
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s")


def lines_in(path) -> int:
    path = Path(path)
    return len([s for s in path.read_text().splitlines() if s.strip()]) if path.exists() else 0
