"""Result files in (benchmark JSON or *.jsonl run stores), one tidy DataFrame out: one row per run, plus the machine."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

SCHEMAS = ("mnist-mlp-bench/1",)


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


def _check_schemas(path, schemas):
    unknown = sorted(set(map(str, schemas)) - set(SCHEMAS))
    if unknown:
        raise LoadError(f"{path}: unknown record schema {', '.join(unknown)}; this analysis reads {', '.join(SCHEMAS)}")


def read_store(path: Path, text: str) -> pd.DataFrame:
    """A run store (one JSON object per line, as `pytest bench --bench-store` writes); a torn last line is skipped.

    bench/store.py reads the same format; analysis keeps its own reader because the result file is
    the only door between the two halves (analysis never imports bench, nor through it TensorFlow).
    """
    lines = text.splitlines()
    last = max((i for i, s in enumerate(lines) if s.strip()), default=-1)
    entries = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if i == last:
                warnings.warn(f"{path}:{i + 1}: torn last line skipped", stacklevel=2)
                continue
            raise LoadError(f"{path}:{i + 1}: not a JSON line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
            raise LoadError(f"{path}:{i + 1}: not a run-store line (no 'record')")
        entries.append(entry)
    if not entries:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs")
    _check_schemas(path, {e["record"].get("schema") for e in entries})
    df = pd.json_normalize([e["record"] for e in entries], sep=".")
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
        return read_store(path, text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path}: not JSON ({exc}); a run store must be named *.jsonl") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
        raise LoadError(f"{path}: not a pytest-benchmark result file (no 'benchmarks' and 'machine_info')")
    runs = [b for b in doc["benchmarks"] if isinstance(b.get("extra_info"), dict) and "schema" in b["extra_info"]]
    if not runs:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs (no benchmark carries a run record)")
    _check_schemas(path, {r["extra_info"]["schema"] for r in runs})
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
    # fields newer than some result files: what those runs used, or unknown
    for col, value in (("dispatch.mode", "default"), ("dtype", "float32"), ("dispatch.backend", "tensorflow")):
        df[col] = df[col].fillna(value) if col in df else value
    if "budget" not in df:
        df["budget"] = None
    for col in ("hessian.lambda_min", "hessian.lambda_max"):  # the run-end Hessian probe, flattened
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")
    for col in ("plateaus", "full_grad_norm_by_epoch", "noise_scale_by_epoch"):
        # absent in older files: None there (concat fills NaN), lists and dicts as recorded elsewhere
        df[col] = [v if isinstance(v, (list, dict)) else None for v in df[col]] if col in df else None
    for col in ("achieved_gflops", "peak_fraction", "host_memory_peak_mib"):
        if col not in df:
            df[col] = float("nan")
    return df
