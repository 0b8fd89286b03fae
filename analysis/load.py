"""Result files in, one tidy DataFrame out: one row per run, record fields as columns, plus the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SCHEMAS = ("mnist-mlp-bench/1",)


class LoadError(ValueError):
    """A result file that cannot be used; the message names the file and the problem in one line."""


def machine_label(info: dict) -> str:
    """GPU name when the machine had one, else the CPU model and core count; plus the host."""
    gpu = info.get("gpu") or {}
    if gpu.get("available") and gpu.get("name"):
        count = gpu.get("count") or 1
        device = gpu["name"] if count == 1 else f"{count}x {gpu['name']}"
    else:
        cpu = info.get("cpu") or {}
        cores = info.get("cpu_count") or cpu.get("count")
        device = f"{cpu.get('brand_raw') or info.get('processor') or 'CPU'}" + (f" {cores}c" if cores else "")
    host = info.get("node")
    return f"{device} ({host})" if host else device


def read_file(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
        raise LoadError(f"{path}: not a pytest-benchmark result file (no 'benchmarks' and 'machine_info')")
    runs = [b for b in doc["benchmarks"] if isinstance(b.get("extra_info"), dict) and "schema" in b["extra_info"]]
    if not runs:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs (no benchmark carries a run record)")
    schemas = sorted({r["extra_info"]["schema"] for r in runs} - set(SCHEMAS))
    if schemas:
        raise LoadError(f"{path}: unknown record schema {', '.join(map(str, schemas))}; "
                        f"this analysis reads {', '.join(SCHEMAS)}")
    df = pd.json_normalize(runs, sep=".")
    df.columns = [c.removeprefix("extra_info.") for c in df.columns]
    info = doc["machine_info"]
    df["machine"] = machine_label(info)
    df["host"] = info.get("node")
    df["file"] = str(path)
    df["datetime"] = doc.get("datetime")
    df["tensorflow"] = info.get("tensorflow")
    return df


def load_runs(paths) -> pd.DataFrame:
    """All runs of all files, one row each, in file order; machines keep the order they first appear in."""
    if not paths:
        raise LoadError("no result files given")
    df = pd.concat([read_file(p) for p in paths], ignore_index=True)
    df["machine"] = pd.Categorical(df["machine"], categories=list(dict.fromkeys(df["machine"])), ordered=True)
    df["batch_label"] = [("full" if full else str(bs)) for full, bs in zip(df["full_batch"], df["batch_size"])]
    return df
