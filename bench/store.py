"""Line-per-run store: each finished run is appended, locked and synced at once, so a crash loses at most
the run in progress; `--resume` reads it back to skip the cells already done."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import subprocess
import warnings
from pathlib import Path

from bench.grid import SCHEMA

DEFAULT_PATH = ".benchmarks/mnist-mlp-bench-runs.jsonl"
# Statuses that are results: resume skips their cells. `error` and `interrupted` cells are run again.
FINISHED = ("ok", "diverged", "oom")


class StoreError(ValueError):
    """A store file that cannot be read; the message names the file and line."""


class TornLineWarning(UserWarning):
    """The store's last line was cut mid-write (kill -9, power loss): it is skipped."""


def cell_key(record: dict, machine_id: str) -> tuple:
    """What makes two runs the same measurement: protocol, grid cell, seed and machine."""
    dispatch = record.get("dispatch", "default")
    dispatch = dispatch.get("mode", "default") if isinstance(dispatch, dict) else dispatch
    return (record["profile"], record["train_size"], record["epochs"], record["activation"], record["optimizer"],
            record["batch_size"], record["full_batch"], record["seed"], dispatch, machine_id)


def machine_id(machine: dict) -> str:
    gpu = machine.get("gpu_name") or "no-gpu"
    return f"{machine.get('node')}|{machine.get('cpu')}|{gpu}"


def code_version() -> str:
    """The installed package version, plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("mnist-mlp-bench")
    except PackageNotFoundError:
        v = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+{commit}" if commit else v


def append(path: str | os.PathLike, nodeid: str, record: dict, machine: dict | None = None,
           version: str | None = None) -> None:
    """Append one run as one line, under an exclusive lock (two sweeps may share a store), then fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({
        "schema": SCHEMA,
        "nodeid": nodeid,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or {"node": platform.node()},
        "code_version": version,
        "record": record,
    }, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read(path: str | os.PathLike) -> list[dict]:
    """Every stored run. A torn last line is skipped with a warning; any other bad line is a StoreError."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot be read as a JSON-lines store ({exc})") from None
    entries = []
    last = max((i for i, s in enumerate(lines) if s.strip()), default=-1)
    for i, text in enumerate(lines):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            if i == last:
                warnings.warn(f"{path}:{i + 1}: torn last line skipped (a write was cut off)", TornLineWarning,
                              stacklevel=2)
                continue
            raise StoreError(f"{path}:{i + 1}: not a JSON line; a run store holds one JSON object per line") from None
        if not isinstance(entry, dict) or "record" not in entry:
            raise StoreError(f"{path}:{i + 1}: not a run-store line (no 'record')")
        if entry.get("schema") != SCHEMA or entry["record"].get("schema") != SCHEMA:
            raise StoreError(f"{path}:{i + 1}: unknown schema {entry.get('schema')!r}; this suite reads {SCHEMA!r}")
        entries.append(entry)
    return entries


def finished_keys(path: str | os.PathLike) -> set:
    return {cell_key(e["record"], machine_id(e.get("machine") or {})) for e in read(path)
            if e["record"].get("status") in FINISHED}
