"""Derived metrics on the tidy runs table: steady time to target, speed-ups, the saturation knee, stability, and
one row per grid cell with its pooled steady samples and their intervals. The one owner of the setting and cell
keys, of cell aggregation, of time to target and of the protocol's label (compare.py and findings.py use these)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import stats
from bench import record

# The knee: the smallest batch size after which time per update grows at least as the square root
# of the batch (local log-log slope >= 0.5): halfway, on a log scale, from perfectly parallel
# (slope 0: a bigger batch costs nothing more per update) to saturated (slope 1: cost ~ batch).
KNEE_SLOPE = 0.5

# A repeat whose estimate (its fastest steady sample) is more than DISTURBED times its cell's fastest repeat was
# disturbed as a whole, not measured: on the shared 2-core VMs whole repeats ran up to 5x slower (the process's own
# CPU time inflated in step, no steal, no other process: a neighbour on the host), which no sample of the repeat
# escapes, while the repeats of an undisturbed cell agree within about 10 % (the unstable threshold). Noise only
# adds time, at the repeat level as within one: such a repeat is left out of the cell's estimate and of every
# statistic per replicate, and counted (`disturbed_runs`); the cell rests on the rest (n says how many).
DISTURBED = 1.5


def undisturbed(estimates: list) -> list:
    """The runs' estimates with each disturbed one (over DISTURBED x the fastest) replaced by None, in place."""
    good = [x for x in estimates if x is not None and x > 0 and math.isfinite(x)]
    if not good:
        return list(estimates)
    limit = DISTURBED * min(good)
    return [x if x is not None and x > 0 and math.isfinite(x) and x <= limit else None for x in estimates]

# The setting a timing belongs to: one machine running one protocol (experiment, profile, sizes, dispatch mode,
# backend). Claims, knees, machines, dispatch tables and the comparison all group by it.
SETTING = ["machine", *record.PROTOCOL]
# A grid cell within its setting (the grid's cells have no budget, the pinned rate and no role).
GRID_CELL = [c for c in record.CELL if c not in ("budget", "lr_setting", "role")]
CELL = [*SETTING, *GRID_CELL]
# Derived columns add_run_metrics adds to the runs table (with bench.record's fields and analysis.load's).
DERIVED = {
    "batch_label": "the batch size, or 'full'",
    "provenance": "why the run cannot be rebuilt from a commit: dirty tree, or not recorded (None: it can)",
    "target_accuracy": "the record's target.value",
    "target_on": "the split the target is read on (the record's target.split)",
    "epochs_to_target": "epochs until the target split's accuracy first reaches the target",
    "accuracy_by_epoch": "the target split's accuracy after each epoch (validation; test in older records)",
    "time_to_target_s": "epochs_to_target x the steady epoch time",
    "train_time_s": "epochs done x the steady epoch time",
    "update_samples_s": "the steady samples per update",
    "loss_noise": "the minibatch loss's noise around its running mean, relative to it",
    "epoch_speedup_vs_bs1": "the same setting, optimizer and seed's steady epoch time at batch 1 / this one's",
    "update_cost_vs_bs1": "this run's time per update / the same setting, optimizer and seed's at batch 1",
}


def batch_text(batch_size, label: str) -> str:
    """A batch size as a reader sees it: 'full' for the whole training set, else the size with separators."""
    return record.FULL if label == record.FULL else f"{int(batch_size):,}"


def protocol_label(row, keys=None) -> str:
    """'quick 3,000x4 sigmoid, tensorflow default' for a row with the protocol's columns (`keys`: those not
    ignored, e.g. by a comparison that allows a mismatch)."""
    keys = list(record.PROTOCOL) if keys is None else keys
    parts = []
    if "experiment" in keys and row["experiment"] != record.GRID and not str(row["profile"]).startswith(
            str(row["experiment"])):
        parts.append(str(row["experiment"]))
    if "profile" in keys:
        parts.append(str(row["profile"]))
    if "train_size" in keys and "epochs" in keys:
        parts.append(f"{int(row['train_size']):,}x{int(row['epochs'])}")
    if "activation" in keys:
        parts.append(str(row["activation"]))
    head = " ".join(parts)
    tail = " ".join(str(row[f]) for f in ("dispatch.backend", "dispatch.mode") if f in keys)
    return f"{head}, {tail}" if head and tail else head or tail


def setting_label(row, several: dict, mode: bool = True) -> str:
    """A setting's label in a verdict or a legend: the machine and the backend where they vary among the settings
    shown (`several`: {column: more than one value}), then the dispatch mode (`mode`), e.g. 'EPYC-2c, jax, fast'."""
    parts = [str(row["machine"])] if several.get("machine") else []
    parts += [str(row["dispatch.backend"])] if several.get("dispatch.backend") else []
    parts += [str(row["dispatch.mode"])] if mode else []
    return ", ".join(parts) or str(row["machine"])


def varies(df: pd.DataFrame) -> dict:
    """{column of the setting key: it takes more than one value in df}."""
    return {c: df[c].astype(str).nunique() > 1 for c in SETTING}


def epochs_to_target(accuracies, target: float) -> int | None:
    """The number of epochs until the first whose accuracy (validation, or test in older files) reaches `target`;
    None if none does."""
    for k, acc in enumerate(accuracies or [], start=1):
        if acc is not None and acc >= target:
            return k
    return None


def time_to_target(epoch_time_s, accuracies, target: float) -> float:
    """Steady training time to the target: epochs to the target x the steady epoch time (the compile epoch is
    counted at the steady epoch's time: compilation is compile_s, never part of time to target)."""
    k = epochs_to_target(accuracies, target)
    return k * epoch_time_s if k is not None and epoch_time_s is not None and not pd.isna(epoch_time_s) else math.nan


def loss_noise(loss_curve, window: int = 25) -> float:
    """Noise of the minibatch loss: std of its deviation from a centred running mean, relative to that mean."""
    values = np.array([v for _, v in (loss_curve or []) if v is not None], dtype=float)
    if len(values) < window:
        return math.nan
    mean = pd.Series(values).rolling(window, center=True).mean().to_numpy()
    ok = ~np.isnan(mean) & (mean > 0)
    return float(np.std((values[ok] - mean[ok]) / mean[ok]))


def add_run_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Per-run columns (DERIVED): target, epochs and steady time to it, steady training time, per-update samples,
    loss noise, speed-ups over batch size 1. The target and its split are the record's own (its profile's)."""
    df = df.copy()
    df["target_accuracy"] = df["target.value"]
    df["target_on"] = df["target.split"]
    curves = [v if on == "validation" else t for v, t, on in zip(df["val_accuracy_by_epoch"],
                                                                 df["test_accuracy_by_epoch"], df["target_on"])]
    df["accuracy_by_epoch"] = curves
    df["epochs_to_target"] = [epochs_to_target(a, g) for a, g in zip(curves, df["target_accuracy"])]
    df["time_to_target_s"] = [time_to_target(t, a, g) for t, a, g in
                              zip(df["epoch_time_s"], curves, df["target_accuracy"])]
    # steady time only: every epoch done at the steady epoch's time (compilation is compile_s)
    df["train_time_s"] = df["epochs_done"] * df["epoch_time_s"]
    df["update_samples_s"] = [[t / steps for t in s] for s, steps in zip(df["steady_samples_s"], df["steps_per_epoch"])]
    df["loss_noise"] = [loss_noise(c) for c in df["loss_curve"]]
    # the same run at batch 1: setting, optimizer, seed, repeat and sweep (and an experiment's budget, rate and role)
    keys = [*SETTING, "optimizer", "seed", "repeat", "_sweep", "_budget", "_lr", "_role"]
    df = df.assign(_sweep=df["sweep"].fillna(""), _budget=df["budget"].fillna(""), _lr=df["lr_setting"].fillna(-1.0),
                   _role=df["role"].fillna(""))
    base = (df[df["batch_size"] == 1].drop_duplicates(keys).set_index(keys)[["epoch_time_s", "time_per_update_s"]]
            .rename(columns=lambda c: c + "_bs1"))
    df = df.join(base, on=keys).drop(columns=["_sweep", "_budget", "_lr", "_role"])
    df["epoch_speedup_vs_bs1"] = df["epoch_time_s_bs1"] / df["epoch_time_s"]
    df["update_cost_vs_bs1"] = df["time_per_update_s"] / df["time_per_update_s_bs1"]
    return df.drop(columns=["epoch_time_s_bs1", "time_per_update_s_bs1"])


def median_at(summary: pd.DataFrame, column: str, batch_size: int) -> float:
    """Median of `column` over the summary rows at `batch_size` (all optimizers and machines); NaN if none."""
    vals = summary.loc[summary["batch_size"] == batch_size, column].dropna()
    return float(vals.median()) if len(vals) else math.nan


def pooled(series) -> list:
    return [x for lst in series for x in (lst or [])]




def cell_summary(df: pd.DataFrame, keys: list | None = None) -> pd.DataFrame:
    """One row per cell (`keys`, default CELL: machine x protocol x optimizer x batch size) from its finished runs:
    each run (a repeat of one seed) is one independent estimate, its fastest steady sample; the cell's estimate is
    their geometric mean with its t interval (stats.repeats; timings barely depend on the seed, so seeds are
    repeats too) over the undisturbed runs (DISTURBED), `run_epoch_s` and `replicates` keep each run's estimate
    (None where disturbed; `all_epoch_s` keeps them all) and its (seed, repeat) for statistics per replicate; the
    rest are medians over its runs, and whether any of its timings was unstable and why."""
    keys = CELL if keys is None else keys
    ok = df[df["status"] == "ok"].assign(_replicate=lambda d: list(zip(d["sweep"].fillna(""), d["seed"], d["repeat"])))
    g = ok.groupby(keys, observed=True, dropna=False)
    out = g.agg(**AGGREGATES).reset_index()
    failed = df[df["status"] != "ok"].groupby(keys, observed=True, dropna=False).size().rename("failed_runs")
    out = out.join(failed, on=keys)
    out["failed_runs"] = out["failed_runs"].fillna(0).astype(int)
    out["all_epoch_s"] = out["run_epoch_s"]
    out["run_epoch_s"] = [undisturbed(runs) for runs in out["all_epoch_s"]]
    out["disturbed_runs"] = [sum(k is None and r is not None and r > 0 for k, r in zip(kept, runs))
                             for kept, runs in zip(out["run_epoch_s"], out["all_epoch_s"])]
    cells = [stats.repeats(runs) for runs in out["run_epoch_s"]]
    out["samples"] = [len(s) for s in out["epoch_samples_s"]]
    out["epoch_time_s"] = [i.value for i in cells]
    out["epoch_time_lo_s"], out["epoch_time_hi_s"] = [i.low for i in cells], [i.high for i in cells]
    # where another sweep of the protocol (as many repeats as this one asked for) will put the cell's estimate
    again = [stats.replication(runs, int(asked) if pd.notna(asked) and asked else len(runs))
             for runs, asked in zip(out["run_epoch_s"], out["repeats_asked"])]
    out["epoch_time_again_lo_s"], out["epoch_time_again_hi_s"] = [i.low for i in again], [i.high for i in again]
    for end in ("", "_lo", "_hi"):
        out[f"time_per_update{end}_s"] = out[f"epoch_time{end}_s"] / out["steps_per_epoch"]
    out["energy_to_target_j"] = out["gpu_energy_per_epoch_j"] * out["epochs_to_target"]
    # steady time to the target: the epochs to it (median over seeds) at the cell's estimate, and its interval
    for end in ("", "_lo", "_hi"):
        out[f"time_to_target{end}_s"] = out["epochs_to_target"] * out[f"epoch_time{end}_s"]
    return out


def _reasons(reasons) -> str | None:
    """'2 of 3 repeats: <the first unstable repeat's reason>'; None when no repeat was unstable."""
    found = [r for r in reasons if isinstance(r, str)]
    return f"{len(found)} of {len(reasons)} repeats: {found[0]}" if found else None


def _causes(lists) -> str | None:
    """'3 host, 1 gc' for the slow samples of a cell's runs (bench.record.sample_cause); None when none was slow."""
    found = [c for causes in lists for c in (causes or []) if c]
    return ", ".join(f"{found.count(c)} {c}" for c in record.CAUSES if c in found) or None


# cell_summary's columns: (the runs' column, how a cell aggregates it)
AGGREGATES = {
    "batch_label": ("batch_label", "first"),
    "device": ("dispatch.device", "first"),
    "seeds": ("seed", "nunique"),
    "repeats": ("repeat", "size"),
    "repeats_asked": ("repeats", "max"),
    "run_epoch_s": ("epoch_time_s", list),
    "replicates": ("_replicate", list),
    "epoch_samples_s": ("steady_samples_s", pooled),
    "update_samples_s": ("update_samples_s", pooled),
    "epoch_time_s": ("epoch_time_s", "median"),
    "time_per_update_s": ("time_per_update_s", "median"),
    "slow_causes": ("sample_causes", _causes),
    "compile_s": ("compile_s", "median"),
    "unstable": ("unstable", "any"),
    "unstable_reason": ("unstable_reason", _reasons),
    "steps_per_epoch": ("steps_per_epoch", "first"),
    "examples_per_s": ("examples_per_s", "median"),
    "train_time_s": ("train_time_s", "median"),
    "time_to_target_s": ("time_to_target_s", "median"),
    "epochs_to_target": ("epochs_to_target", "median"),
    "target_accuracy": ("target_accuracy", "first"),
    "target_on": ("target_on", "first"),
    "test_accuracy": ("test_accuracy", "mean"),
    "test_accuracy_std": ("test_accuracy", "std"),
    "test_accuracy_min": ("test_accuracy", "min"),
    "test_accuracy_max": ("test_accuracy", "max"),
    "loss_noise": ("loss_noise", "median"),
    "epoch_speedup_vs_bs1": ("epoch_speedup_vs_bs1", "median"),
    "update_cost_vs_bs1": ("update_cost_vs_bs1", "median"),
    "gpu_util_mean_pct": ("gpu.util_mean_pct", "median"),
    "gpu_power_mean_w": ("gpu.power_mean_w", "median"),
    "gpu_energy_j": ("gpu.energy_j", "median"),
    "gpu_energy_per_epoch_j": ("gpu.energy_per_epoch_j", "median"),
    "achieved_gflops": ("achieved_gflops", "median"),
    "peak_fraction": ("peak_fraction", "median"),
    "host_memory_peak_mib": ("host_memory_peak_mib", "max"),
    "host_memory_run_mib": ("host_memory_run_mib", "max"),
}


def knee(batch_sizes, times, slope: float = KNEE_SLOPE):
    """Smallest batch size after which time per update grows with local log-log slope >= `slope`.

    None when it never does within the measured batch sizes (no saturation seen).
    """
    pts = sorted((b, t) for b, t in zip(batch_sizes, times) if t is not None and t > 0 and not math.isnan(t))
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if b1 > b0 and math.log(t1 / t0) / math.log(b1 / b0) >= slope:
            return b0
    return None


def knees(summary: pd.DataFrame, protocol=record.PROTOCOL) -> pd.DataFrame:
    """The knee of each setting (machine x `protocol`: the protocol fields to tell apart) and optimizer, from the
    cells' estimates, with the range of the knees of its replicates (each round of the sweep on its own) and how
    many replicates that range rests on."""
    keys = ["machine", *protocol, "optimizer"]
    rows = []
    for key, g in summary.groupby(keys, observed=True, dropna=False):
        g = g.sort_values("batch_size")
        low, high, n = knee_range(list(g["batch_size"]), by_replicate(g, "run_epoch_s", "steps_per_epoch"))
        rows.append({**dict(zip(keys, key)), "knee_batch_size": knee(g["batch_size"], g["time_per_update_s"]),
                     "knee_low": low, "knee_high": high, "knee_replicates": n})
    return pd.DataFrame(rows, columns=[*keys, "knee_batch_size", "knee_low", "knee_high", "knee_replicates"])


def by_replicate(cells: pd.DataFrame, column: str = "run_epoch_s", per: str | None = None) -> dict:
    """{replicate (seed, repeat): [each cell's run value, in the rows' order]} for the replicates every cell has:
    `column` holds each cell's runs' values (divided by the cell's `per` column, e.g. steps per epoch)."""
    tables = []
    for values, replicates, divisor in zip(cells[column], cells["replicates"],
                                           cells[per] if per else [1] * len(cells)):
        tables.append({rep: v / divisor for rep, v in zip(replicates, values) if v is not None and v > 0})
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return {rep: [t[rep] for t in tables] for rep in sorted(common)}


def knee_range(sizes: list, replicates: dict) -> tuple:
    """(lowest, highest) knee over the replicates' curves as batch sizes (None: no knee within the grid), and the
    number of replicates; (None, None, n) with fewer than two."""
    found = [knee(sizes, times) for times in replicates.values()]
    if len(found) < 2:
        return None, None, len(found)
    order = {b: i for i, b in enumerate(sizes)}
    rank = sorted(found, key=lambda b: order[b] if b is not None else len(sizes))
    return rank[0], rank[-1], len(found)
