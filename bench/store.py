"""Line-per-run store: each finished run is appended and flushed at once, so a crash loses at most the run in progress."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

DEFAULT_PATH = ".benchmarks/mnist-mlp-bench-runs.jsonl"


def append(path: str | os.PathLike, nodeid: str, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({
        "nodeid": nodeid,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "record": record,
    }, allow_nan=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
