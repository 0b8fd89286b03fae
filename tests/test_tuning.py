"""The validation split and the tuning experiment (bench/experiments/tuning.py, bench/test_tuning.py, analysis/tuning.py): the
split never overlaps training, the choice on constructed trials with a known winner, a diverged trial never
wins, the final runs use the chosen rate, --resume repeats no trial, and the figures plot the records' values."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import metrics
from analysis import tuning as A
from bench import data, grid, record
from bench.experiments import tuning
from bench.record import Trial

from .helpers import benchmarks, run, sweep_cmd


@pytest.mark.parametrize("train_size", [1, 500, 3_000, 49_999, 50_000])
def test_the_validation_split_never_overlaps_the_training_examples(real_mnist, train_size):
    x, _, _, _ = real_mnist.prepared(train_size)
    xv, yv = real_mnist.validation()
    assert len(xv) == len(yv) == data.VALIDATION_SIZE
    # the split is the last 10,000 training images, in file order; training takes the first N <= 50,000
    assert np.array_equal(xv[0], real_mnist.x_train[50_000].reshape(784).astype(np.float32) / 255)
    seen = {row.tobytes() for row in (x * 255).round().astype(np.uint8)}
    held = {row.tobytes() for row in (xv * 255).round().astype(np.uint8)}
    ids_train = set(range(train_size))
    ids_val = set(range(60_000 - data.VALIDATION_SIZE, 60_000))
    assert not ids_train & ids_val
    assert len(seen & held) <= 5  # MNIST repeats a handful of identical images across writers; no index overlaps


def test_a_train_size_reaching_into_the_validation_split_is_refused(real_mnist):
    with pytest.raises(data.DataError, match="train size 50001 is out of range: 1 to 50,000"):
        real_mnist.prepared(50_001)
    with pytest.raises(grid.BadOption, match="--train-size: 60000 is out of range; the train size is 1 to 50,000"):
        grid.parse_train_size("60000")


def _t(lr, acc, loss=0.5, status="ok"):
    return Trial(learning_rate=lr, status=status, val_accuracy=acc, val_loss=loss)


def test_the_best_validation_accuracy_wins_and_ties_go_to_the_lower_loss():
    assert tuning.choose([_t(0.01, 0.80), _t(0.1, 0.92), _t(1.0, 0.85)]) == 0.1
    assert tuning.choose([_t(0.01, 0.90, 0.40), _t(0.1, 0.90, 0.30), _t(1.0, 0.50)]) == 0.1
    assert tuning.choose([]) is None


def test_a_diverged_or_failed_trial_never_wins():
    trials = [_t(0.01, 0.60), _t(1.0, 0.99, status="diverged"), _t(3.0, None, None, "error")]
    assert tuning.choose(trials) == 0.01
    assert tuning.choose([_t(1.0, 0.99, status="diverged")]) is None


def test_the_lr_grid_is_half_a_decade_apart_around_the_pinned_rate():
    rates = tuning.lr_grid("sgd", 7)
    assert len(rates) == 7 and rates[3] == grid.LEARNING_RATES["sgd"]
    assert all(math.isclose(b / a, 10 ** 0.5, rel_tol=1e-3) for a, b in zip(rates, rates[1:]))
    assert tuning.lr_grid("adam", 5, "0.1, 0.001,0.01") == (0.001, 0.01, 0.1)
    with pytest.raises(grid.BadOption, match="--lr-grid: '-1' is not a positive learning rate"):
        tuning.lr_grid("adam", 5, "0.1,-1")


def test_tuning_cells_put_every_trial_before_the_final_runs():
    cells = tuning.cells("test")
    roles = [c.role for c in cells]
    assert roles == sorted(roles, key=lambda r: r != "trial")
    trials = [c for c in cells if c.role == "trial"]
    assert len(trials) == 2 * 2 * 3 and len({c.test_id for c in cells}) == len(cells)
    assert all(c.learning_rate is None and c.seed in (1, 2) for c in cells if c.role != "trial")
    assert all(c.experiment == "tuning" and c.target == tuning.PROFILES["test"].target for c in cells)
    keys = {c.run_key("tensorflow", None, "tf32", "m") for c in cells}
    assert len(keys) == len(cells)  # a tuned and a pinned final run of one seed are different cells


def _finals_frame():
    """Constructed final runs: adam reaches 0.8 validation accuracy after 20 updates at batch 10 and 10 at
    batch 100 (checks every 10 updates); sgd never does."""
    rows = []
    for opt, bs, curve in [("adam", 10, [0.5, 0.81, 0.9]), ("adam", 100, [0.82, 0.9, 0.95]),
                           ("sgd", 10, [0.1, 0.1, 0.2]), ("sgd", 100, [0.1, 0.2, 0.3])]:
        for seed in (1, 2):
            for role in ("tuned", "pinned"):
                rows.append({"status": "ok", "profile": "tuning-x", "train_size": 300, "optimizer": opt,
                             "batch_size": bs, "batch_label": str(bs), "seed": seed, "role": role,
                             "target_accuracy": 0.8, "epochs_to_target": metrics.epochs_to_target(
                                 curve if role == "tuned" else [0.1, 0.1, 0.1], 0.8),
                             "tuning.chosen": 0.01, "learning_rate": 0.01 if role == "tuned" else 0.001,
                             "val_accuracy_by_epoch": curve if role == "tuned" else [0.1, 0.1, 0.1],
                             "val_accuracy": curve[-1] if role == "tuned" else 0.1, "steps_per_epoch": 10,
                             "epochs": 3, "update_samples_s": [0.001, 0.0012], "lr_setting": None})
        for lr in (0.001, 0.01):
            rows.append({"status": "ok", "profile": "tuning-x", "train_size": 300, "optimizer": opt,
                         "batch_size": bs, "batch_label": str(bs), "seed": 0, "role": "trial",
                         "target_accuracy": 0.8, "epochs_to_target": None,
                         "tuning.chosen": None, "learning_rate": lr, "lr_setting": lr,
                         "val_accuracy_by_epoch": [0.1], "val_accuracy": 0.5 if lr == 0.01 else 0.2,
                         "steps_per_epoch": 10, "epochs": 3, "update_samples_s": [0.001]})
    return pd.DataFrame(rows)


def test_steps_to_target_and_the_ranking_on_constructed_runs():
    f = A.finding(_finals_frame())
    tuned = f.steps[f.steps["role"] == "tuned"].set_index(["optimizer", "batch_size"])
    assert tuned.loc[("adam", 10), "steps"].value == 20 and tuned.loc[("adam", 100), "steps"].value == 10
    assert tuned.loc[("sgd", 10), "reached"] == 0
    # 10 -> 100: steps halve once for a tenfold batch, a slope of log(0.5)/log(10) = -0.30, shallower than -0.5
    end, slopes, first = f.scaling_end["adam"]
    assert end is None and first == 10 and slopes[(10, 100)] == pytest.approx(math.log(0.5) / math.log(10))
    assert f.scaling_end["sgd"] == (None, {}, None)  # never reached: nothing to tell
    assert set(f.trials[f.trials["chosen"]]["learning_rate"]) == {0.01}
    assert list(f.ranking["winner changed by tuning"]) == ["no", "no"]


def test_the_figures_plot_the_values_of_the_records():
    from analysis.figures import tuning as F

    f = A.finding(_finals_frame())
    fig = F.steps_to_target(f.steps, f)
    left = fig.axes[0]
    plotted = {(float(x), float(y)) for line in left.lines for x, y in zip(line.get_xdata(), line.get_ydata())
               if not (isinstance(y, float) and math.isnan(y))}
    assert {(10.0, 20.0), (100.0, 10.0)} <= plotted  # adam's medians
    assert (10.0, 30.0) in plotted and (100.0, 30.0) in plotted  # sgd never reached: at the budget (3 x 10)
    assert "log" == left.get_xscale() == left.get_yscale() and "updates to 80%" in left.get_ylabel()
    maps = F.sensitivity(f.trials, f)
    texts = {t.get_text() for ax in maps.axes for t in ax.texts}
    assert {"0.50", "0.20"} <= texts


@pytest.mark.slow
def test_a_tiny_tuning_sweep_uses_its_choice_and_resumes_without_repeating(tmp_path, real_mnist):
    store, out = tmp_path / "runs.jsonl", tmp_path / "tuning.json"
    options = ["-q", "--experiment", "tuning", "--tuning-profile", "test", "--optimizers", "adam",
               "--benchmark-json", str(out)]
    proc = run(sweep_cmd(*options, store=store, mnist=real_mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    timed, untimed = benchmarks(out)
    recs = [record.Record.from_dict(b["extra_info"]) for b in timed + untimed]
    cells = tuning.cells("test", "adam")
    assert len(recs) == len(cells)
    trials = [r for r in recs if r.role == "trial"]
    for r in recs:
        assert r.val_size == data.VALIDATION_SIZE and len(r.val_accuracy_by_epoch) == r.epochs
        assert r.test_accuracy is not None and r.test_accuracy_by_epoch == []
    for r in (r for r in recs if r.role != "trial"):
        mine = [t for t in trials if t.batch_size == r.batch_size]
        best = tuning.choose([Trial(learning_rate=t.lr_setting, status=t.status, val_accuracy=t.val_accuracy,
                                    val_loss=t.val_loss) for t in mine])
        assert r.tuning.chosen == best and len(r.tuning.trials) == len(mine)
        expected = best if r.role == "tuned" else grid.LEARNING_RATES["adam"]
        assert r.learning_rate == pytest.approx(expected) and r.lr_setting is None and r.seed in (1, 2)

    again = run(sweep_cmd("--collect-only", *options, "--resume", store=store, mnist=real_mnist))
    assert f"resume: {len(cells)} of {len(cells)} cells already in" in again.stdout

    rep = run([__import__("sys").executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## The tuning experiment" in text and "winner changed by tuning" in text
    assert (tmp_path / "rep" / "fig11_steps_to_target.png").exists() and (tmp_path / "rep" / "fig12_sensitivity.png").exists()
