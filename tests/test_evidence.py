"""What counts as evidence (DESIGN.md): steady samples and their spread, unstable timings flagged and rerun,
compile time kept out of steady time, bootstrap intervals and the three-valued verdicts they decide, checked on
cases with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import claims, metrics, stats
from bench import grid, record

from .helpers import benchmarks, run, sweep_cmd

SETTING = {"machine": "m", **{k: "x" for k in record.PROTOCOL if k != "dispatch.mode"}, "dispatch.mode": "default"}


def test_steady_timing_known_answers():
    calm = record.steady_timing([3.0, 1.0, 1.02, 0.99, 1.01])
    assert calm["steady_samples_s"] == [1.0, 1.02, 0.99, 1.01] and calm["epoch_time_s"] == pytest.approx(1.005)
    assert calm["compile_s"] == pytest.approx(1.995) and calm["unstable"] is False and calm["unstable_reason"] is None
    slow = record.steady_timing([3.0, 1.0, 1.0, 2.0])  # one disturbed epoch among three
    assert slow["unstable"] and "spread 50%" in slow["unstable_reason"]
    stuck = record.steady_timing([1.0, 1.3, 1.31, 1.29])  # steady slower than the epoch that compiled
    assert stuck["unstable"] and "slower than the compile epoch" in stuck["unstable_reason"]
    noise = record.steady_timing([28.0, 28.9, 28.4, 28.6])  # compilation lost in a long epoch's noise: stable
    assert not noise["unstable"]
    few = record.steady_timing([2.0, 1.0])
    assert few["unstable"] and "1 steady sample(s), fewer than 3" in few["unstable_reason"]
    assert record.steady_timing([2.0])["epoch_time_s"] is None  # the only epoch compiled: no steady time


def test_time_to_target_counts_steady_time_only():
    # the first epoch (5 s) compiled; the target is reached after the second: 2 epochs at the steady 1 s
    steady = record.steady_timing([5.0, 1.0, 1.0, 1.0])["epoch_time_s"]
    assert metrics.time_to_target(steady, [0.5, 0.95, 0.96, 0.97], 0.9) == pytest.approx(2.0)
    assert math.isnan(metrics.time_to_target(steady, [0.5, 0.6, 0.7, 0.8], 0.9))
    assert metrics.epochs_to_target([0.5, 0.95], 0.9) == 2 and metrics.epochs_to_target([0.5], 0.9) is None


def test_a_bootstrap_interval_covers_its_value_and_needs_two_samples():
    rng = np.random.default_rng(1)
    x = 2.0 + 0.1 * rng.standard_normal(30)
    i = stats.median_of([x])
    assert i.low < i.value < i.high and i.n == 30 and i.relative_width < 0.1
    one = stats.median_of([[2.0]])
    assert one.value == 2.0 and not one.defined and "n=1: no interval" in one.text()
    same = stats.median_ratio([([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])])
    assert (same.value, same.low, same.high) == (2.0, 2.0, 2.0)


def _cells(cost10: float, noise: float, seed: int = 0) -> pd.DataFrame:
    """Two optimizers' cells at batch 1, 10 and 100 with 6 samples each: time per update 1 ms at batch 1,
    `cost10` ms at batch 10 and 10 x `cost10` at batch 100, multiplicative noise `noise`."""
    rng = np.random.default_rng(seed)
    rows = []
    for opt in ("sgd", "adam"):
        for bs, t in ((1, 1e-3), (10, cost10 * 1e-3), (100, 10 * cost10 * 1e-3)):
            samples = list(t * (1 + noise * rng.standard_normal(6)).clip(0.05))
            rows.append({"optimizer": opt, "batch_size": bs, "batch_label": str(bs), "update_samples_s": samples,
                         "epoch_samples_s": [s * 1000 / bs for s in samples], "time_per_update_s": np.median(samples)})
    return pd.DataFrame(rows).assign(machine="m", **{"dispatch.mode": "default"})


@pytest.mark.parametrize("cost10,noise,claim1,claim2", [
    (1.02, 0.01, stats.SUPPORTED, stats.SUPPORTED),  # the lecture's GPU: batch 10 as cheap as 1, then saturated
    (4.0, 0.01, stats.CONTRADICTED, stats.SUPPORTED),  # saturated from the start
    (1.5, 0.5, stats.NOT_DETERMINED, stats.SUPPORTED),  # the cost straddles the threshold within its noise
])
def test_the_three_verdicts_on_constructed_results(cost10, noise, claim1, claim2):
    cells = _cells(cost10, noise)
    knee_table = metrics.knees(cells.assign(**{k: "x" for k in record.PROTOCOL if k != "dispatch.mode"}))
    c = claims.judge(cells, knee_table, SETTING)
    assert c.claim1.outcome == claim1, c.claim1.text()
    assert c.claim2.outcome == claim2, c.claim2.text()
    assert c.cost_bs10.n == 24 and c.claim1.interval is c.cost_bs10
    assert ("lies below" in c.claim1.text()) == (claim1 == stats.SUPPORTED)


def test_no_saturation_contradicts_claim_2():
    cells = _cells(1.0, 0.01)
    cells["update_samples_s"] = [[s * (1 if b < 100 else 0.1) for s in x]  # batch 100 no dearer than 10
                                 for x, b in zip(cells["update_samples_s"], cells["batch_size"])]
    c = claims.judge(cells, metrics.knees(cells.assign(**{k: "x" for k in record.PROTOCOL if k != "dispatch.mode"})),
                     SETTING)
    assert c.claim2.outcome == stats.CONTRADICTED


@pytest.mark.slow
def test_a_disturbed_epoch_marks_its_cell_unstable_and_a_rerun_keeps_a_stable_attempt(tmp_path, real_mnist):
    """One epoch slowed on purpose (tests/faults.py sleeps inside the first attempt's third epoch)."""
    options = ["--bench-profile", "smoke", "--optimizers", "sgd", "--batch-sizes", "100,full", "--no-probes",
               "--train-size", "500", "--epochs", "4"]
    env = {"BENCH_FAULT": "slow:sgd-bs100-seed0:3:1.5"}
    first = run(sweep_cmd(*options, "--benchmark-json", str(tmp_path / "a.json"), store=tmp_path / "a.jsonl",
                          mnist=real_mnist, plugins=["tests.faults"]), env=env)
    assert first.returncode == 0, first.stdout[-2000:]
    summary = first.stdout[first.stdout.index("unstable timing"):]
    assert "test_train[sgd-bs100-seed0]: samples spread" in summary and "--rerun-unstable" in summary
    slowed = next(b for b in benchmarks(tmp_path / "a.json")[0] if "bs100" in b["name"])
    rec = slowed["extra_info"]
    assert rec["unstable"] and rec["spread"] > record.UNSTABLE_SPREAD and max(rec["steady_samples_s"]) > 1.5
    assert slowed["stats"]["rounds"] == len(rec["steady_samples_s"]) == 3  # pytest-benchmark's rounds: the samples

    again = run(sweep_cmd(*options, "--rerun-unstable", "2", "--benchmark-json", str(tmp_path / "b.json"),
                          store=tmp_path / "b.jsonl", mnist=real_mnist, plugins=["tests.faults"]), env=env)
    assert again.returncode == 0, again.stdout[-2000:]
    stored = [e.record for e in record.read_store(tmp_path / "b.jsonl").entries if e.record.batch_size == 100]
    assert [r.attempt for r in stored][:2] == [1, 2] and stored[0].unstable  # every attempt stored
    kept = next(b for b in benchmarks(tmp_path / "b.json")[0] if "bs100" in b["name"])["extra_info"]
    assert kept["attempt"] >= 2 and max(kept["steady_samples_s"]) < 1.5  # the undisturbed attempt was kept
    expected = grid.parse_sweep("smoke", optimizers="sgd", batch_sizes="100,full", train_size="500").cells()
    assert len(benchmarks(tmp_path / "b.json")[0]) == len(expected)
