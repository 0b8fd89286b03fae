"""The escape experiment (bench/experiments/escape.py, bench/test_escape.py): its verdict on constructed results with known
answers, and its test profile end to end: one stuck point, identical start weights for every run, each run's
escape recorded, the report's verdict, and --resume."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import escape, stats
from bench import record
from bench.experiments import escape as experiment

from .helpers import benchmarks, run, sweep_cmd


def _runs(minibatch_updates, full_updates, budget=100):
    """Constructed escape runs: batch 10 over five seeds escapes after `minibatch_updates`; the full batch (one
    deterministic run per learning rate) after `full_updates` (None: never, within `budget`)."""
    rows = []

    def row(bs, full, seed, updates, lr=0.1, arm="updates"):
        done = updates is not None
        rows.append({"status": "ok", "profile": "escape", "train_size": 1000, "batch_size": bs, "full_batch": full,
                     "batch_label": "full" if full else str(bs), "seed": seed, "learning_rate": lr,
                     "escape.arm": arm, "escape.escaped": done, "escape.updates_to_escape": updates if done else None,
                     "escape.budget_updates": budget, "escape.margin": 0.1, "escape.stuck.kind": "saddle"})

    for seed, u in enumerate(minibatch_updates):
        row(10, False, seed, u)
    row(1000, True, 0, full_updates[0])
    for lr, u in zip((1.0, 3.0), full_updates[1:]):
        row(1000, True, 0, u, lr, "fairness")
    return pd.DataFrame(rows)


@pytest.mark.parametrize("minibatch,full,outcome", [
    ([10, 12, 9, 11, 10], [None, None, None], stats.SUPPORTED),  # noise escapes, the exact gradient never does
    ([40, 50, 45, 42, 48], [None, 20, None], stats.CONTRADICTED),  # the full batch escapes first at its best rate
    ([10, 12, 9, 11, 10], [None, 11, None], stats.NOT_DETERMINED),  # as fast as each other within the seeds
])
def test_the_escape_verdict_on_constructed_results(minibatch, full, outcome):
    found = escape.finding(_runs(minibatch, full))
    assert found.verdict.outcome == outcome, found.verdict.text()
    assert found.ratio_batch == "10" and found.best_full_lr == (1.0 if full[1] else 0.1)
    assert found.arms["updates"].escaped["10"] == (len(minibatch), len(minibatch))


@pytest.mark.slow
def test_the_escape_experiment_end_to_end(tmp_path, real_mnist):
    store, out = tmp_path / "runs.jsonl", tmp_path / "escape.json"
    options = ["--experiment", "escape", "--escape-profile", "test", "--benchmark-json", str(out)]
    proc = run(sweep_cmd("-q", *options, store=store, mnist=real_mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "escape: every run starts from the stuck point" in proc.stdout
    cells = experiment.cells("test")
    timed, untimed = benchmarks(out)
    recs = {b["name"]: record.Record.from_dict(b["extra_info"]) for b in timed + untimed}
    assert set(recs) == {f"test_escape[{c.test_id}]" for c in cells}
    with np.load(tmp_path / "escape-test-stuck-point.npz") as saved:
        stuck = json.loads(str(saved["stuck"]))
    for c in cells:
        r = recs[f"test_escape[{c.test_id}]"]
        e = r.escape
        assert r.status == "ok" and e.start_digest == e.stuck.digest == stuck["digest"]  # one start for every run
        assert e.arm == ("fairness" if c.learning_rate else c.budget) and e.budget_updates == c.expected_updates
        assert e.escaped == (e.updates_to_escape is not None)
        if e.escaped:
            assert e.updates_to_escape % e.check_every == 0 and e.updates_to_escape == r.updates <= c.expected_updates
            assert e.examples_to_escape == e.updates_to_escape * c.batch_size
        else:
            assert r.updates == c.expected_updates
        assert r.learning_rate == pytest.approx(c.learning_rate or 0.1)

    again = run(sweep_cmd("--collect-only", "-q", *options, "--resume", store=store, mnist=real_mnist))
    assert f"resume: {len(cells)} of {len(cells)} cells already in" in again.stdout

    rep = run([sys.executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## The escape experiment" in text and "3: the full batch stays stuck" in text
    assert (tmp_path / "rep" / "fig10_escape.png").exists()
