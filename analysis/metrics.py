"""Derived metrics on the tidy runs table: speed-up, saturation knee, time to target, stability."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench import record

# Test accuracy a run must reach for `time_to_target_s`, per profile: reachable by the better cells
# of each protocol on a CPU, so the metric separates them (chance is 0.10).
TARGET_ACCURACY = {"smoke": 0.75, "quick": 0.90, "lecture": 0.97}
DEFAULT_TARGET = 0.90

# The knee: the smallest batch size after which time per update grows at least as the square root
# of the batch (local log-log slope >= 0.5): halfway, on a log scale, from perfectly parallel
# (slope 0: a bigger batch costs nothing more per update) to saturated (slope 1: cost ~ batch).
KNEE_SLOPE = 0.5

# One grid cell of one protocol on one machine (bench.record's keys; the saddle benchmark's runs, the only ones
# with a budget, are summarised apart).
CELL = ["machine", *record.PROTOCOL, *(c for c in record.CELL if c != "budget")]


def target_for(profile: str) -> float:
    return TARGET_ACCURACY.get(profile, DEFAULT_TARGET)


def time_to_target(epoch_times, accuracies, target: float) -> float:
    """Cumulative training time up to the end of the first epoch whose test accuracy reaches `target`."""
    elapsed = 0.0
    for t, acc in zip(epoch_times or [], accuracies or []):
        elapsed += t
        if acc is not None and acc >= target:
            return elapsed
    return math.nan


def loss_noise(loss_curve, window: int = 25) -> float:
    """Noise of the minibatch loss: std of its deviation from a centred running mean, relative to that mean."""
    values = np.array([v for _, v in (loss_curve or []) if v is not None], dtype=float)
    if len(values) < window:
        return math.nan
    mean = pd.Series(values).rolling(window, center=True).mean().to_numpy()
    ok = ~np.isnan(mean) & (mean > 0)
    return float(np.std((values[ok] - mean[ok]) / mean[ok]))


def add_run_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Per-run columns: target, time to target, training time, loss noise, speed-ups over batch size 1."""
    df = df.copy()
    df["target_accuracy"] = df["profile"].map(target_for)
    df["time_to_target_s"] = [time_to_target(t, a, g) for t, a, g in
                              zip(df["epoch_times_s"], df["test_accuracy_by_epoch"], df["target_accuracy"])]
    df["train_time_s"] = [float(sum(t)) if t else math.nan for t in df["epoch_times_s"]]
    df["loss_noise"] = [loss_noise(c) for c in df["loss_curve"]]
    # the same protocol, optimizer and seed at batch 1 (and the saddle benchmark's same budget)
    keys = ["machine", *record.PROTOCOL, "optimizer", "seed", "_budget"]
    df["_budget"] = df["budget"].fillna("")
    base = (df[df["batch_size"] == 1].set_index(keys)[["epoch_time_s", "time_per_update_s"]]
            .rename(columns=lambda c: c + "_bs1"))
    df = df.join(base, on=keys).drop(columns="_budget")
    df["epoch_speedup_vs_bs1"] = df["epoch_time_s_bs1"] / df["epoch_time_s"]
    df["update_cost_vs_bs1"] = df["time_per_update_s"] / df["time_per_update_s_bs1"]
    return df.drop(columns=["epoch_time_s_bs1", "time_per_update_s_bs1"])


def median_at(summary: pd.DataFrame, column: str, batch_size: int) -> float:
    """Median of `column` over the summary rows at `batch_size` (all optimizers and machines); NaN if none."""
    vals = summary.loc[summary["batch_size"] == batch_size, column].dropna()
    return float(vals.median()) if len(vals) else math.nan


def cell_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per machine x protocol x optimizer x batch size, medians over seeds."""
    cell = CELL
    ok = df[df["status"] == "ok"]
    g = ok.groupby(cell, observed=True)
    out = g.agg(
        batch_label=("batch_label", "first"),
        seeds=("seed", "nunique"),
        epoch_time_s=("epoch_time_s", "median"),
        time_per_update_s=("time_per_update_s", "median"),
        examples_per_s=("examples_per_s", "median"),
        train_time_s=("train_time_s", "median"),
        time_to_target_s=("time_to_target_s", "median"),
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        test_accuracy_min=("test_accuracy", "min"),
        test_accuracy_max=("test_accuracy", "max"),
        loss_noise=("loss_noise", "median"),
        epoch_speedup_vs_bs1=("epoch_speedup_vs_bs1", "median"),
        update_cost_vs_bs1=("update_cost_vs_bs1", "median"),
        gpu_util_mean_pct=("gpu.util_mean_pct", "median"),
        gpu_power_mean_w=("gpu.power_mean_w", "median"),
        gpu_energy_j=("gpu.energy_j", "median"),
        achieved_gflops=("achieved_gflops", "median"),
        peak_fraction=("peak_fraction", "median"),
        host_memory_peak_mib=("host_memory_peak_mib", "max"),
    ).reset_index()
    failed = df[df["status"] != "ok"].groupby(cell, observed=True).size().rename("failed_runs")
    out = out.join(failed, on=cell)
    out["failed_runs"] = out["failed_runs"].fillna(0).astype(int)
    return out


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
    """The knee of each machine x protocol x optimizer (`protocol`: the protocol fields to tell apart)."""
    keys = ["machine", *protocol, "optimizer"]
    rows = []
    for key, g in summary.groupby(keys, observed=True, dropna=False):
        rows.append({**dict(zip(keys, key)), "knee_batch_size": knee(g["batch_size"], g["time_per_update_s"])})
    return pd.DataFrame(rows, columns=[*keys, "knee_batch_size"])
