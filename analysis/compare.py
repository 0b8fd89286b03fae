"""Several machines side by side: match runs by protocol and grid cell, speed ratios to a baseline,
each machine's saturation knee and time to target accuracy.

Runs are compared only where they answer the same question: the same protocol (PROTOCOL's fields)
and the same cell (optimizer, batch size). Results that differ in protocol are refused with the
fields that differ, unless the caller allows the mismatch, in which case those fields are ignored
for matching and every table and figure says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import metrics
from analysis.load import LoadError

# The fields that make two runs the same experiment (besides the cell). Backend is one: Keras on
# TensorFlow and on JAX dispatch differently, so their times measure the framework as well as the machine.
PROTOCOL = ["profile", "train_size", "epochs", "activation", "dtype", "dispatch.mode", "dispatch.backend"]
PROTOCOL_NAMES = {"profile": "profile", "train_size": "train size", "epochs": "epochs",
                  "activation": "activation", "dtype": "dtype", "dispatch.mode": "dispatch mode",
                  "dispatch.backend": "backend"}
# Records written before a field existed: what those runs used.
PROTOCOL_DEFAULTS = {"dtype": "float32", "dispatch.mode": "default", "dispatch.backend": "tensorflow"}
CELL = ["optimizer", "batch_size"]


class ProtocolMismatch(LoadError):
    """The machines' runs share no protocol; the message says which fields differ."""


@dataclass
class Comparison:
    baseline: str
    machines: list
    table: pd.DataFrame  # one row per machine x protocol x cell present on the baseline and >= 1 other machine
    knees: pd.DataFrame  # machine x protocol x optimizer -> knee batch size
    ignored: dict = field(default_factory=dict)  # field -> {machine: values} where protocols differed
    unmatched: dict = field(default_factory=dict)  # machine -> number of its cells with no partner

    @property
    def keys(self) -> list:
        return [f for f in PROTOCOL if f not in self.ignored]

    def mismatch_note(self) -> str:
        """'' or one line naming the protocol fields that differ (compared anyway)."""
        if not self.ignored:
            return ""
        parts = [f"{PROTOCOL_NAMES[f]} ({' vs '.join(f'{m}: {v}' for m, v in per.items())})"
                 for f, per in self.ignored.items()]
        return "protocols differ in " + "; ".join(parts) + " (compared anyway: --allow-mismatch)"


def _values(runs: pd.DataFrame, machine: str, f: str) -> str:
    return ", ".join(sorted(map(str, runs.loc[runs["machine"] == machine, f].dropna().unique())))


def with_protocol(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    for f in PROTOCOL:
        if f not in runs:
            runs[f] = PROTOCOL_DEFAULTS.get(f)
        runs[f] = runs[f].where(runs[f].notna(), PROTOCOL_DEFAULTS.get(f))
    return runs


def compare(runs: pd.DataFrame, baseline: str | None = None, allow_mismatch: bool = False) -> Comparison:
    """Match `runs` (analysis.load.load_runs) across machines; raises LoadError/ProtocolMismatch in one line."""
    runs = metrics.add_run_metrics(with_protocol(runs[runs["budget"].isna()]))  # not the saddle benchmark's
    machines = [m for m in (runs["machine"].cat.categories if hasattr(runs["machine"], "cat")
                            else dict.fromkeys(runs["machine"])) if m in set(runs["machine"])]
    if len(machines) < 2:
        raise LoadError(f"compare needs results from at least two machines; all runs are from {machines[0]!r} "
                        "(give runs of one host different --machine-label values to compare them)")
    if baseline is None:
        baseline = machines[0]
    elif baseline not in machines:
        raise LoadError(f"--baseline {baseline!r}: no such machine; the files hold {', '.join(machines)}")
    machines = [baseline] + [m for m in machines if m != baseline]
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        raise LoadError("no run finished (status ok) in the files: nothing to compare")

    def cells(machine, keys):
        sub = ok[ok["machine"] == machine]
        return set(map(tuple, sub[keys + CELL].astype(str).to_numpy()))

    ignored: dict = {}
    differ, disjoint = [], []
    for m in machines[1:]:
        if cells(baseline, PROTOCOL) & cells(m, PROTOCOL):
            continue
        diff = [f for f in PROTOCOL if _values(ok, baseline, f) != _values(ok, m, f)]
        if not diff:
            disjoint.append(m)
            continue
        for f in diff:
            ignored.setdefault(f, {baseline: _values(ok, baseline, f)})[m] = _values(ok, m, f)
        differ.append(f"{m} vs {baseline}: " + ", ".join(
            f"{PROTOCOL_NAMES[f]} {_values(ok, m, f)} vs {_values(ok, baseline, f)}" for f in diff))
    if disjoint:
        raise LoadError(f"no grid cell in common: {', '.join(disjoint)} and {baseline} ran the same protocol "
                        "on different optimizers or batch sizes")
    if differ and not allow_mismatch:
        raise ProtocolMismatch("protocols differ, not compared: " + "; ".join(differ)
                               + "; pass --allow-mismatch to compare anyway")

    keys = [f for f in PROTOCOL if f not in ignored]
    group = ["machine"] + keys + CELL
    table = ok.groupby(group, observed=True, dropna=False).agg(
        batch_label=("batch_label", "first"),
        seeds=("seed", "nunique"),
        epoch_time_s=("epoch_time_s", "median"),
        time_per_update_s=("time_per_update_s", "median"),
        time_to_target_s=("time_to_target_s", "median"),
        target_accuracy=("target_accuracy", "first"),
        test_accuracy=("test_accuracy", "mean"),
        gpu_util_mean_pct=("gpu.util_mean_pct", "median"),
    ).reset_index()
    table["machine"] = pd.Categorical(table["machine"].astype(str), categories=machines, ordered=True)
    base = table[table["machine"] == baseline].set_index(keys + CELL)
    table = table.join(base[["epoch_time_s", "time_per_update_s"]].add_prefix("baseline_"), on=keys + CELL)
    table["speedup"] = table["baseline_epoch_time_s"] / table["epoch_time_s"]
    present = table.groupby(keys + CELL, observed=True, dropna=False)["machine"].transform("nunique")
    matched = table["baseline_epoch_time_s"].notna() & (present >= 2)
    unmatched = {str(m): int(n) for m, n in table[~matched].groupby("machine", observed=True).size().items() if n}
    table = table[matched].sort_values(keys + ["optimizer", "batch_size", "machine"]).reset_index(drop=True)

    knee_rows = []
    for key, g in table.groupby(["machine"] + keys + ["optimizer"], observed=True, dropna=False):
        row = dict(zip(["machine"] + keys + ["optimizer"], key))
        row["knee_batch_size"] = metrics.knee(g["batch_size"], g["time_per_update_s"])
        knee_rows.append(row)
    knees = pd.DataFrame(knee_rows)
    return Comparison(baseline, machines, table, knees, ignored, unmatched)


def _fmt_time(s: float) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s:.3g}" if s < 100 else f"{s:,.0f}"


def _protocol_label(row, keys) -> str:
    parts = [str(row["profile"])] if "profile" in keys else []
    if "train_size" in keys and "epochs" in keys:
        parts.append(f"{int(row['train_size']):,}x{int(row['epochs'])}")
    parts += [str(row[f]) for f in ("dispatch.backend", "dispatch.mode") if f in keys]
    return " ".join(parts)


def ratio_table(cmp: Comparison) -> pd.DataFrame:
    """The terminal/markdown table: per protocol, optimizer and batch size, each machine's epoch time
    and, for the others, its speed relative to the baseline (baseline epoch time / its epoch time)."""
    t = cmp.table.copy()
    keys = cmp.keys
    t["protocol"] = [_protocol_label(r, keys) for _, r in t.iterrows()]
    index = ["protocol", "optimizer", "batch_size", "batch_label"]
    wide = t.pivot_table(index=index, columns="machine", values=["epoch_time_s", "speedup"], observed=True,
                         aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for m in cmp.machines:
        if ("epoch_time_s", m) in wide:
            out[f"{m} s/epoch"] = wide[("epoch_time_s", m)].map(_fmt_time)
    for m in cmp.machines[1:]:
        if ("speedup", m) in wide:
            out[f"{m} speed vs {cmp.baseline}"] = wide[("speedup", m)].map(
                lambda x: "-" if pd.isna(x) else f"{x:.2f}x")
    out = out.reset_index().sort_values(["protocol", "optimizer", "batch_size"]).drop(columns="batch_size")
    out = out.rename(columns={"batch_label": "batch", "optimizer": "optimizer"})
    if out["protocol"].nunique() == 1:
        out = out.drop(columns="protocol")
    return out.reset_index(drop=True)


def knee_table(cmp: Comparison) -> pd.DataFrame:
    k = cmp.knees.copy()
    k["knee"] = k["knee_batch_size"].map(lambda b: "none in grid" if pd.isna(b) else f"{int(b):,}")
    keys = cmp.keys
    k["protocol"] = [_protocol_label(r, keys) for _, r in k.iterrows()]
    wide = k.pivot_table(index=["protocol", "optimizer"], columns="machine", values="knee", aggfunc="first",
                         observed=True)
    wide = wide.reindex(columns=[m for m in cmp.machines if m in wide.columns]).reset_index()
    wide.columns.name = None
    if wide["protocol"].nunique() == 1:
        wide = wide.drop(columns="protocol")
    return wide


def target_table(cmp: Comparison) -> pd.DataFrame:
    """Time to the profile's target accuracy per machine: the fastest cell of each optimizer."""
    rows = []
    keys = cmp.keys
    t = cmp.table.assign(protocol=[_protocol_label(r, keys) for _, r in cmp.table.iterrows()])
    for (proto, opt, m), g in t.groupby(["protocol", "optimizer", "machine"], observed=True):
        reached = g.dropna(subset=["time_to_target_s"])
        if reached.empty:
            text = f"not reached ({g['target_accuracy'].iloc[0]:.2f})"
        else:
            best = reached.loc[reached["time_to_target_s"].idxmin()]
            text = f"{_fmt_time(best['time_to_target_s'])} s at batch {best['batch_label']}"
        rows.append({"protocol": proto, "optimizer": opt, "machine": m, "time to target": text})
    wide = pd.DataFrame(rows).pivot_table(index=["protocol", "optimizer"], columns="machine",
                                          values="time to target", aggfunc="first", observed=True)
    wide = wide.reindex(columns=[m for m in cmp.machines if m in wide.columns]).reset_index()
    wide.columns.name = None
    if wide["protocol"].nunique() == 1:
        wide = wide.drop(columns="protocol")
    return wide
