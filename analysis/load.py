"""Result files in (benchmark JSON or *.jsonl run stores), one tidy DataFrame out: one row per run, plus the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench import record


class LoadError(ValueError):
    """A result file that cannot be used; the message names the file and the problem in one line."""


def machine_label(info: dict) -> str:
    """The label recorded with the results (`--machine-label` or the suite's short label, e.g. EPYC-2c);
    for files without one: GPU name when the machine had one, else the CPU model and core count; plus the host."""
    if info.get("machine_label"):
        return str(info["machine_label"])
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


def store_machine_label(machine: dict) -> str:
    """The same label for a run-store line's machine entry."""
    if machine.get("label"):
        return str(machine["label"])
    return machine_label({"gpu": {"available": bool(machine.get("gpu_name")), "name": machine.get("gpu_name"),
                                  "count": machine.get("gpu_count")},
                          "cpu": {"brand_raw": machine.get("cpu")}, "cpu_count": machine.get("cpu_count"),
                          "node": machine.get("node")})


def _records(path, records) -> list[dict]:
    """Records in today's shape (bench.record.upgrade); an unknown schema is a one-line LoadError."""
    try:
        return [record.upgrade(r) for r in records]
    except record.RecordError as exc:
        raise LoadError(f"{path}: {exc}".replace("unknown schema", "unknown record schema")) from None


def read_store(path: Path) -> pd.DataFrame:
    """A run store (one JSON object per line, as `pytest bench --bench-store` writes), read by bench.record, the
    one reader of the format: torn lines are skipped with a warning naming file:line."""
    try:
        entries = record.read_store(path)
    except record.StoreError as exc:
        raise LoadError(str(exc)) from None
    if not entries:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs")
    df = pd.json_normalize([e["record"] for e in entries], sep=".")
    df["_key"] = [repr(record.resume_key(e["record"], record.machine_id(e.get("machine") or {}))) for e in entries]
    df["machine"] = [store_machine_label(e.get("machine") or {}) for e in entries]
    df["host"] = [(e.get("machine") or {}).get("node") for e in entries]
    df["file"] = str(path)
    df["datetime"] = [e.get("finished") for e in entries]
    df["tensorflow"] = None
    return df


def read_file(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path}: not JSON ({exc})") from None
    if path.suffix == ".jsonl":
        return read_store(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path}: not JSON ({exc}); a run store must be named *.jsonl") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
        raise LoadError(f"{path}: not a pytest-benchmark result file (no 'benchmarks' and 'machine_info')")
    # the timed runs, then the cells whose runs are not timings (failed, interrupted: no pytest-benchmark stats)
    runs = [b for b in doc["benchmarks"] + doc.get("untimed_runs", [])
            if isinstance(b.get("extra_info"), dict) and "schema" in b["extra_info"]]
    if not runs:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs (no benchmark carries a run record)")
    for run, rec in zip(runs, _records(path, [r["extra_info"] for r in runs])):
        run["extra_info"] = rec
    info = doc["machine_info"]
    me = record.machine_id({"node": info.get("node"), "cpu": (info.get("cpu") or {}).get("brand_raw"),
                            "gpu_name": (info.get("gpu") or {}).get("name") if (info.get("gpu") or {}).get("available")
                            else None})
    keys = [repr(record.resume_key(r["extra_info"], me)) for r in runs]
    df = pd.json_normalize(runs, sep=".")
    df.columns = [c.removeprefix("extra_info.") for c in df.columns]
    df["_key"] = keys
    df["machine"] = machine_label(info)
    df["host"] = info.get("node")
    df["file"] = str(path)
    df["datetime"] = doc.get("datetime")
    df["tensorflow"] = info.get("tensorflow")
    return df


def _once(df: pd.DataFrame) -> pd.DataFrame:
    """Each measurement once: runs with the same protocol, settings, cell, seed and machine (a run in both a
    benchmark JSON and its store, reruns of an unstable cell, a shard run twice) are one cell, represented by
    its most stable attempt (bench.record.stability_key). How many were set aside is in df.attrs["duplicates"]."""
    rank = [record.stability_key(s, u, None if pd.isna(sp) else sp)
            for s, u, sp in zip(df["status"], df["unstable"], df["spread"])]
    order = sorted(range(len(df)), key=lambda i: rank[i])
    kept = df.iloc[order].drop_duplicates("_key").sort_index()
    kept.attrs["duplicates"] = len(df) - len(kept)
    return kept.drop(columns="_key").reset_index(drop=True)


def load_runs(paths) -> pd.DataFrame:
    """All runs of all files, one row each, in file order; machines keep the order they first appear in."""
    if not paths:
        raise LoadError("no result files given")
    df = _once(pd.concat([read_file(p) for p in paths], ignore_index=True))
    df["machine"] = pd.Categorical(df["machine"], categories=list(dict.fromkeys(df["machine"])), ordered=True)
    df["batch_label"] = [("full" if full else str(bs)) for full, bs in zip(df["full_batch"], df["batch_size"])]
    for col in ("hessian.lambda_min", "hessian.lambda_max"):  # the run-end Hessian probe, flattened
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")
    for col in ("plateaus", "full_grad_norm_by_epoch", "noise_scale_by_epoch"):
        # absent in older files: None there (concat fills NaN), lists and dicts as recorded elsewhere
        df[col] = [v if isinstance(v, (list, dict)) else None for v in df[col]] if col in df else None
    for col in ("achieved_gflops", "peak_fraction", "host_memory_peak_mib"):
        if col not in df:
            df[col] = float("nan")
    for col in (*record.PROTOCOL, *record.CELL, "escape.arm", "val_accuracy", "val_loss"):
        if col not in df:  # a nested field no run of these files has (json_normalize leaves a None parent)
            df[col] = None
    for col in ("val_accuracy_by_epoch", "test_accuracy_by_epoch"):
        df[col] = [v if isinstance(v, list) else [] for v in df[col]] if col in df else [[]] * len(df)
    return df
