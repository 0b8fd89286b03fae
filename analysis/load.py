"""Result files in (benchmark JSON or *.jsonl run stores), one tidy DataFrame out: one row per run, every record read
through the record type (bench.record.Record.from_dict), its columns exactly the record's documented fields
(bench.record.columns) plus what the file says of the run (machine, file, code version)."""

from __future__ import annotations

import json
import typing
import warnings
from pathlib import Path

import pandas as pd

from bench import record

# Columns beside the record's: what the file says of each run.
FILE_COLUMNS = {
    "machine": "the machine's label (--machine-label, or the suite's short label of its GPU or CPU)",
    "host": "the host name",
    "file": "the result file the run was read from",
    "datetime": "when the file (benchmark JSON) or the run (store) was written",
    "tensorflow": "TensorFlow's version (benchmark JSON's machine_info; None in a store)",
    "file_code_version": "the code version the file itself names (commit_info or the store line), for records that "
                         "carry none",
    "file_provenance": "why the file's own code version cannot be trusted to rebuild the run (None: it can)",
}
STATS_PREFIX = "stats."  # pytest-benchmark's stats of a benchmark JSON's timed runs (stats.median, ...)


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


def store_machine_label(machine: record.Machine) -> str:
    """The same label for a run-store line's machine entry."""
    if machine.label:
        return str(machine.label)
    return machine_label({"gpu": {"available": bool(machine.gpu_name), "name": machine.gpu_name,
                                  "count": machine.gpu_count},
                          "cpu": {"brand_raw": machine.cpu}, "cpu_count": machine.cpu_count, "node": machine.node})


def _row(rec: record.Record, machine_id: str, **meta) -> dict:
    # one measurement: its run key within its sweep (a run in both a benchmark JSON and its store, or the reruns of an
    # unstable cell, are one; two sweeps of one protocol are two)
    return {**record.flat(rec), **meta, "_key": repr((record.run_key(rec, machine_id), rec.sweep))}


def read_store(path: Path) -> tuple[list[dict], list[record.BadLine]]:
    """A run store (one JSON object per line, as `pytest bench --bench-store` writes), read by bench.record, the
    one reader of the format: a line that is no valid record is skipped with a warning naming file:line."""
    try:
        store = record.read_store(path)
    except record.StoreError as exc:
        raise LoadError(str(exc)) from None
    rows = [_row(e.record, e.machine.id, machine=store_machine_label(e.machine), host=e.machine.node, file=str(path),
                 datetime=e.finished, tensorflow=None, file_code_version=e.code_version,
                 file_provenance=record.provenance(e.code_version) or (
                     f"whether its tree was clean was not recorded ({e.code_version})")) for e in store.entries]
    return rows, store.bad


def read_json(path: Path, text: str) -> tuple[list[dict], list[record.BadLine]]:
    """A `pytest bench --benchmark-json` file: its timed runs and its untimed ones (no pytest-benchmark stats), each
    record read through the record type; a record that is not valid is skipped with a warning naming it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path}: not JSON ({exc}); a run store must be named *.jsonl") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
        raise LoadError(f"{path}: not a pytest-benchmark result file (no 'benchmarks' and 'machine_info')")
    info = doc["machine_info"]
    gpu = info.get("gpu") or {}
    me = record.Machine(node=info.get("node"), cpu=(info.get("cpu") or {}).get("brand_raw"),
                        gpu_name=gpu.get("name") if gpu.get("available") else None).id
    commit = doc.get("commit_info") or {}
    version = info.get("code_version") or (f"+{commit['id'][:7]}" + (record.DIRTY if commit.get("dirty") else "")
                                           if commit.get("id") else None)
    meta = {"machine": machine_label(info), "host": info.get("node"), "file": str(path),
            "datetime": doc.get("datetime"), "tensorflow": info.get("tensorflow"), "file_code_version": version,
            "file_provenance": record.provenance(version)}
    rows, bad = [], []
    entries = [("benchmarks", i, b) for i, b in enumerate(doc["benchmarks"])]
    entries += [("untimed_runs", i, b) for i, b in enumerate(doc.get("untimed_runs") or [])]
    for part, i, bench in entries:
        where = f"{path}:{part}[{i}]"
        data = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(data, dict) or "schema" not in data:
            continue  # another benchmark of the same session, not a run of this suite
        try:
            rec = record.Record.from_dict(data, where="record")
        except record.RecordError as exc:
            if "unknown schema" in str(exc):
                raise LoadError(f"{path}: {exc}".replace("unknown schema", "unknown record schema")) from None
            bad.append(record.BadLine(where, str(exc)))
            continue
        stats = {STATS_PREFIX + k: v for k, v in (bench.get("stats") or {}).items() if not isinstance(v, list)}
        rows.append(_row(rec, me, **meta, **stats))
    for b in bad:
        warnings.warn(f"{b.text()}: skipped", record.BadLineWarning, stacklevel=2)
    if not rows and not bad:
        raise LoadError(f"{path}: holds no mnist-mlp-bench runs (no benchmark carries a run record)")
    return rows, bad


def read_file(path: str | Path) -> tuple[list[dict], list[record.BadLine]]:
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return read_store(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path}: not JSON ({exc})") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return read_json(path, text)


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


def _numeric(hint) -> bool:
    """A scalar number column (float, int, their optional forms): stored as a numeric dtype (None -> NaN)."""
    if typing.get_origin(hint) is list:
        return False
    args = set(typing.get_args(hint)) - {type(None)} or {hint}
    return args <= {float, int} and bool(args)


def frame(rows: list[dict]) -> pd.DataFrame:
    """The runs as one table: every record column (bench.record.columns) present whatever the files held, numbers
    as numeric dtypes; a column outside the record's documented fields, FILE_COLUMNS and pytest-benchmark's stats
    is a bug (AssertionError)."""
    cols = record.columns()
    df = pd.DataFrame(rows)
    unknown = [c for c in df.columns if c not in cols and c not in FILE_COLUMNS and c != "_key"
               and not c.startswith(STATS_PREFIX)]
    missing = [c for c in cols if c not in df.columns]
    assert not unknown and not missing, f"the runs table departs from the record: {unknown or missing}"
    numeric = {name: pd.to_numeric(df[name], errors="coerce") for name, hint in cols.items() if _numeric(hint)}
    return df.assign(**numeric).copy()


def machine_order(df: pd.DataFrame) -> list:
    """The machines in the order they first appear (the order of the files given)."""
    machines = df["machine"]
    order = machines.cat.categories if hasattr(machines, "cat") else dict.fromkeys(machines.astype(str))
    present = set(machines.astype(str))
    return [str(m) for m in order if str(m) in present]


def load_runs(paths) -> pd.DataFrame:
    """All runs of all files, one row each, in file order; machines keep the order they first appear in. Lines or
    records that are not valid are skipped, named in a warning and listed in df.attrs["bad_lines"]."""
    if not paths:
        raise LoadError("no result files given")
    rows, bad = [], []
    for p in paths:
        r, b = read_file(p)
        rows += r
        bad += b
    if not rows:
        raise LoadError(f"{', '.join(map(str, paths))}: no valid mnist-mlp-bench run ({len(bad)} bad line(s))")
    df = _once(frame(rows))
    df["machine"] = pd.Categorical(df["machine"], categories=list(dict.fromkeys(df["machine"])), ordered=True)
    df["batch_label"] = [record.batch_label(f, b) for f, b in zip(df["full_batch"], df["batch_size"])]
    # the record's own code version (schema 3) is authoritative; older records fall back on what their file says
    df["provenance"] = [record.provenance(v) if isinstance(v, str) else p
                        for v, p in zip(df["code_version"], df["file_provenance"])]
    df["code_version"] = [v if isinstance(v, str) else f for v, f in zip(df["code_version"], df["file_code_version"])]
    df.attrs["bad_lines"] = [b.text() for b in bad]
    return df
