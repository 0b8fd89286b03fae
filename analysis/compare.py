"""Several machines side by side: match runs by protocol and grid cell (bench.record's keys), speed ratios to a
baseline, each machine's saturation knee and time to target accuracy; the findings the figures are titled
with, and COMPARE.md.

Runs are compared only where they answer the same question: the same protocol and the same cell. Results
that differ in protocol are refused with the fields that differ, unless the caller allows the mismatch, in
which case those fields are ignored for matching and every table and figure says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import metrics, stats
from analysis.load import LoadError, machine_order
from bench import record

PROTOCOL = list(record.PROTOCOL)
PROTOCOL_NAMES = {"experiment": "experiment", "profile": "profile", "train_size": "train size", "epochs": "epochs",
                  "activation": "activation", "dtype": "dtype", "dispatch.mode": "dispatch mode",
                  "dispatch.backend": "backend"}
CELL = metrics.GRID_CELL


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


def _machines(runs, baseline):
    machines = machine_order(runs)
    if len(machines) < 2:
        raise LoadError(f"compare needs results from at least two machines; all runs are from {machines[0]!r} "
                        "(give runs of one host different --machine-label values to compare them)")
    if baseline is None:
        baseline = machines[0]
    elif baseline not in machines:
        raise LoadError(f"--baseline {baseline!r}: no such machine; the files hold {', '.join(machines)}")
    return baseline, [baseline] + [m for m in machines if m != baseline]


def _protocols(ok, baseline, machines, allow_mismatch) -> dict:
    """{field: {machine: values}} of the protocol fields that differ between the baseline and a machine that
    shares no cell with it; a one-line LoadError unless that is allowed."""
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
    return ignored


def compare(runs: pd.DataFrame, baseline: str | None = None, allow_mismatch: bool = False) -> Comparison:
    """Match `runs` (analysis.load.load_runs) across machines; raises LoadError/ProtocolMismatch in one line. Only
    the grid's runs are compared (the experiments' answer other questions)."""
    runs = metrics.add_run_metrics(runs[runs["experiment"] == record.GRID])
    if runs.empty:
        raise LoadError("no grid run in the files (only experiments' runs): nothing to compare")
    baseline, machines = _machines(runs, baseline)
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        raise LoadError("no run finished (status ok) in the files: nothing to compare")
    ignored = _protocols(ok, baseline, machines, allow_mismatch)
    keys = [f for f in PROTOCOL if f not in ignored]
    table = metrics.cell_summary(ok, ["machine", *keys, *CELL])
    table["machine"] = pd.Categorical(table["machine"].astype(str), categories=machines, ordered=True)
    base = table[table["machine"] == baseline].set_index(keys + CELL)
    table = table.join(base[["epoch_time_s", "time_per_update_s", "run_epoch_s"]].add_prefix("baseline_"),
                       on=keys + CELL)
    # the baseline's estimate over the machine's, Welch's t on the logs (two independent cells)
    speed = [stats.welch_ratio(b, m) if isinstance(b, list) else stats.NO_DATA
             for b, m in zip(table["baseline_run_epoch_s"], table["run_epoch_s"])]
    table["speedup"] = [i.value for i in speed]
    table["speedup_lo"], table["speedup_hi"] = [i.low for i in speed], [i.high for i in speed]
    present = table.groupby(keys + CELL, observed=True, dropna=False)["machine"].transform("nunique")
    matched = table["baseline_epoch_time_s"].notna() & (present >= 2)
    unmatched = {str(m): int(n) for m, n in table[~matched].groupby("machine", observed=True).size().items() if n}
    table = table[matched].sort_values(keys + ["optimizer", "batch_size", "machine"]).reset_index(drop=True)

    return Comparison(baseline, machines, table, metrics.knees(table, keys), ignored, unmatched)


def _label(table, b) -> str:
    return metrics.batch_text(b, dict(zip(table["batch_size"], table["batch_label"])).get(b))


def _median_by_bs(table, machine, column):
    return table[table["machine"] == machine].groupby("batch_size")[column].median()


def fastest_to_target(table: pd.DataFrame, by: list) -> pd.DataFrame:
    """The cell that reached the target accuracy first, per `by` group: rows with `s` (NaN: not reached) and
    `batch` (its batch label)."""
    rows = []
    for key, g in table.groupby(by, observed=True):
        r = g.dropna(subset=["time_to_target_s"])
        best = r.loc[r["time_to_target_s"].idxmin()] if len(r) else None
        rows.append({**dict(zip(by, key)), "s": best["time_to_target_s"] if best is not None else np.nan,
                     "lo": best.get("time_to_target_lo_s", np.nan) if best is not None else np.nan,
                     "hi": best.get("time_to_target_hi_s", np.nan) if best is not None else np.nan,
                     "batch": best["batch_label"] if best is not None else None,
                     "target_accuracy": g["target_accuracy"].iloc[0]})
    return pd.DataFrame(rows)


@dataclass
class CompareFindings:
    """What the comparison's figures are titled with, computed once."""

    baseline: str
    epoch_ratios: dict  # machine -> (first batch label, ratio, last batch label, ratio): baseline / machine
    knees: dict  # machine -> median knee over optimizers (None: no knee), when any knee was computed
    speed_ranges: dict  # machine -> (min, max, batch label of the highest median)
    fastest: pd.DataFrame  # per optimizer x machine: fastest time to target
    target_text: str  # "90% test accuracy" or "the profile's target accuracy"

    def epoch_title(self) -> str:
        parts = [f"{m}: {a:.2g}x the speed of {self.baseline} at batch {fb}, {b:.2g}x at {lb}"
                 for m, (fb, a, lb, b) in self.epoch_ratios.items()]
        return ("; ".join(parts[:2]) or "Epoch time vs batch size") + " (median over optimizers)"

    def knee_title(self) -> str:
        if not self.knees:
            return "Time per update vs batch size"
        return "Saturation knee (median over optimizers): " + ", ".join(
            f"{m} at {b:,}" if b is not None else f"{m}: none" for m, b in self.knees.items())

    def speedup_title(self) -> str:
        return f"Speed relative to {self.baseline}: " + "; ".join(
            f"{m}: {lo:.2g}x to {hi:.2g}x, most at batch {top}" for m, (lo, hi, top) in list(self.speed_ranges.items())[:2])

    def target_title(self) -> str:
        reached = self.fastest.dropna(subset=["s"])
        if not len(reached):
            return f"No machine reached {self.target_text}"
        best = reached.loc[reached["s"].idxmin()]
        return (f"Fastest to {self.target_text}: {best['machine']}, {best['optimizer']} at batch {best['batch']} "
                f"({best['s']:.3g} s)")


def findings(cmp: Comparison) -> CompareFindings:
    t = cmp.table
    base = _median_by_bs(t, cmp.baseline, "epoch_time_s")
    ratios = {}
    for m in cmp.machines[1:]:
        r = (base / _median_by_bs(t, m, "epoch_time_s")).dropna()
        if len(r):
            ratios[m] = (_label(t, r.index[0]), r.iloc[0], _label(t, r.index[-1]), r.iloc[-1])
    knees = {}
    if len(cmp.knees):
        for m in cmp.machines:
            k = cmp.knees.loc[cmp.knees["machine"] == m, "knee_batch_size"].dropna()
            knees[m] = int(k.median()) if len(k) else None
    ranges = {}
    for m in cmp.machines[1:]:
        g = t[t["machine"].astype(str) == m]
        if len(g):
            best = g.groupby("batch_size")["speedup"].median()
            ranges[m] = (g["speedup"].min(), g["speedup"].max(), _label(g, best.idxmax()))
    fastest = fastest_to_target(t, ["optimizer", "machine"]).assign(machine=lambda d: d["machine"].astype(str))
    target = t["target_accuracy"].dropna()
    split = t["target_on"].dropna()
    target = float(target.iloc[0]) if len(target) and target.nunique() == 1 and split.nunique() == 1 else None
    what = f"{target:.0%} {split.iloc[0]} accuracy" if target else "the profile's target accuracy"
    return CompareFindings(cmp.baseline, ratios, knees, ranges, fastest[["optimizer", "machine", "s", "batch"]], what)


def _fmt_time(s: float) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s:.3g}" if s < 100 else f"{s:,.0f}"


def _by_protocol(wide: pd.DataFrame) -> dict:
    """{protocol label: its table without the protocol column}: one protocol per table."""
    return {p: g.drop(columns="protocol").reset_index(drop=True) for p, g in wide.groupby("protocol", sort=False)}


def _wide(long: pd.DataFrame, cmp: Comparison, value: str) -> dict:
    """`value` per optimizer (rows) and machine (columns), one table per protocol."""
    wide = long.pivot_table(index=["protocol", "optimizer"], columns="machine", values=value, aggfunc="first",
                            observed=True)
    wide = wide.reindex(columns=[m for m in cmp.machines if m in wide.columns]).reset_index()
    wide.columns.name = None
    return _by_protocol(wide)


def _speed(x, lo, hi) -> str:
    if pd.isna(x):
        return "-"
    return f"{x:.2f}x" + (f" [{lo:.2f}, {hi:.2f}]" if not (pd.isna(lo) or pd.isna(hi)) else " (no interval)")


def ratio_tables(cmp: Comparison) -> dict:
    """Per protocol: per optimizer and batch size, each machine's steady epoch time and, for the others, its speed
    relative to the baseline (baseline epoch time / its epoch time) with the 95 % interval of that ratio."""
    t = cmp.table.copy()
    t["protocol"] = [metrics.protocol_label(r, cmp.keys) for _, r in t.iterrows()]
    t["speed"] = [_speed(x, lo, hi) for x, lo, hi in zip(t["speedup"], t["speedup_lo"], t["speedup_hi"])]
    t["epoch"] = [_fmt_time(v) + (" *" if u else "") for v, u in zip(t["epoch_time_s"], t["unstable"])]
    index = ["protocol", "optimizer", "batch_size", "batch_label"]
    wide = t.pivot_table(index=index, columns="machine", values=["epoch", "speed"], observed=True, aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for m in cmp.machines:
        if ("epoch", m) in wide:
            out[f"{m} s/epoch"] = wide[("epoch", m)]
    for m in cmp.machines[1:]:
        if ("speed", m) in wide:
            out[f"{m} speed vs {cmp.baseline}"] = wide[("speed", m)]
    out = out.reset_index().sort_values(["protocol", "optimizer", "batch_size"]).drop(columns="batch_size")
    return _by_protocol(out.rename(columns={"batch_label": "batch"}))


def knee_tables(cmp: Comparison) -> dict:
    k = cmp.knees.copy()

    def text(b, lo, hi):
        knee = "none in grid" if pd.isna(b) else f"{int(b):,}"
        if lo is None and hi is None or (pd.isna(lo) and pd.isna(hi) and pd.isna(b)):
            return knee
        name = lambda v: "none" if v is None or pd.isna(v) else f"{int(v):,}"  # noqa: E731
        return f"{knee} ({name(lo)} to {name(hi)})"

    k["knee"] = [text(b, lo, hi) for b, lo, hi in zip(k["knee_batch_size"], k["knee_low"], k["knee_high"])]
    k["protocol"] = [metrics.protocol_label(r, cmp.keys) for _, r in k.iterrows()]
    return _wide(k, cmp, "knee")


def target_tables(cmp: Comparison) -> dict:
    """Steady time to the profile's target accuracy per machine: the fastest cell of each optimizer."""
    t = cmp.table.assign(protocol=[metrics.protocol_label(r, cmp.keys) for _, r in cmp.table.iterrows()])
    best = fastest_to_target(t, ["protocol", "optimizer", "machine"])
    best["time to target"] = [f"not reached ({a:.2f})" if pd.isna(s) else
                              f"{_fmt_time(s)} s{_range(lo, hi)} at batch {b}"
                              for s, lo, hi, b, a in zip(best["s"], best["lo"], best["hi"], best["batch"],
                                                         best["target_accuracy"])]
    return _wide(best, cmp, "time to target")


def _range(lo, hi) -> str:
    return "" if pd.isna(lo) or pd.isna(hi) else f" [{_fmt_time(lo)}, {_fmt_time(hi)}]"


@dataclass
class CompareReport:
    """The comparison's tables (one per protocol), the line printed above them, and COMPARE.md."""

    head: str
    note: str
    ratios: dict
    knees: dict
    targets: dict
    unmatched: dict

    def _sections(self, level: str) -> list:
        out = []
        for title, tables in (("Speed per grid cell (* unstable timing)", self.ratios),
                              ("Saturation knee (batch size after which time per update grows >= sqrt(batch); "
                               "in brackets the range of the knees of the replicates, each round on its own)",
                               self.knees),
                              ("Steady time to the profile's target accuracy (fastest batch size per optimizer; 95% interval)",
                               self.targets)):
            out += [f"{level} {title}", ""]
            for protocol, table in tables.items():
                out += [f"{level}# {protocol}", "", table.to_markdown(index=False), ""]
        return out

    def terminal(self) -> list[str]:
        out = [self.head] + (["WARNING: " + self.note] if self.note else [])
        out += self._sections("#")
        if self.unmatched:
            out.append("not matched (cell on one machine only): "
                       + ", ".join(f"{m} {n} cell(s)" for m, n in self.unmatched.items()))
        return out

    def markdown(self, machines: list, files: str, figures: dict) -> str:
        md = [f"# Machines compared: {', '.join(machines)}", "",
              f"Generated by `python -m analysis compare` from {files}. {self.head}.", ""]
        if self.note:
            md += [f"**Warning: {self.note}.** Differences below include those, not only the hardware.", ""]
        md += self._sections("##") + ["## Figures", ""]
        md += [f"![{key}]({name})" for key, name in figures.items()]
        if self.unmatched:
            md += ["", "Not matched (a cell on one machine only): "
                   + ", ".join(f"{m}: {n}" for m, n in self.unmatched.items()) + "."]
        return "\n".join(md) + "\n"


def report(cmp: Comparison) -> CompareReport:
    head = (f"{len(cmp.machines)} machines, baseline {cmp.baseline}; speed = baseline steady epoch time / machine's "
            "(above 1x = faster) with its 95% bootstrap interval over the cells' steady samples, pooled over seeds")
    return CompareReport(head, cmp.mismatch_note(), ratio_tables(cmp), knee_tables(cmp), target_tables(cmp),
                         cmp.unmatched)
