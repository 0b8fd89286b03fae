"""The validation split and the tuning experiment (bench/experiments/tuning.py, bench/test_tuning.py,
analysis/tuning.py): the split never overlaps training; steps to target read from a constructed check sequence; the
choice for speed on trials with a known winner; the widening loop on synthetic accuracy curves whose best rate lies
beyond the start grid; the fit of S = S_min (1 + B_crit/B) on step counts made by the model with noise; the noise
scale on gradients with a known covariance; the finding, report and figures on constructed records; and a real tiny
sweep that resumes."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from analysis import tuning as A
from bench import data, grid, record
from bench.experiments import tuning
from bench.record import Trial
from bench.record.tuning import steps_to_target

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


# --- steps to target --------------------------------------------------------------------------------------------

def test_steps_to_target_from_a_constructed_check_sequence_match_the_hand_values():
    # checks every 10 updates; 0.90 is crossed between update 30 (0.80) and 40 (0.95): 30 + 10 x 0.10/0.15
    c = steps_to_target([0.20, 0.50, 0.80, 0.95, 0.97], 10, 0.90)
    assert c.steps == pytest.approx(36.6667, abs=1e-4) and (c.before, c.at) == (30, 40) and not c.first_check
    assert c.at - c.before == 10 and c.slope == pytest.approx(0.015)  # the resolution is the interval
    assert steps_to_target([0.2, 0.9], 10, 0.90).steps == 20.0  # exactly at a check: that check
    # the first crossing counts, not a later one after a dip
    assert steps_to_target([0.2, 0.91, 0.85, 0.95], 5, 0.90).steps == pytest.approx(5 + 5 * 0.7 / 0.71)
    first = steps_to_target([0.93, 0.95], 25, 0.90)
    assert first.first_check and first.steps == 25.0 and first.before == 0  # no check before it to interpolate
    assert steps_to_target([0.2, 0.5, 0.8], 10, 0.90) is None  # never reached
    assert steps_to_target([0.2, float("nan")], 10, 0.90) is None  # diverged before reaching it
    assert steps_to_target([], 10, 0.9) is None


# --- the choice ---------------------------------------------------------------------------------------------------

def _t(lr, steps, seed=0, loss=0.5, status="ok"):
    return Trial(learning_rate=lr, status=status, val_accuracy=0.9 if steps else 0.5, val_loss=loss, seed=seed,
                 steps_to_target=steps)


def test_the_fewest_median_steps_win_and_ties_go_to_the_lower_loss():
    seeds = (0, 1, 2)
    # the faster rate ends with the higher validation loss: chosen for speed, as Shallue et al. choose, not for the
    # final accuracy (the old rule's pick)
    trials = [_t(0.1, s, k, loss=0.3) for k, s in enumerate([300, 310, 900])] + [
        _t(1.0, s, k, loss=0.6) for k, s in enumerate([200, 250, 240])]
    assert tuning.choose(trials, seeds) == 1.0  # median 240 < 310
    # one of three seeds never reached it: the median is the other two's larger
    trials += [_t(3.0, s, k) for k, s in enumerate([100, None, 150])]
    assert tuning.choose(trials, seeds) == 3.0  # median 150
    # two of three never: the median is "never", it loses to any rate that reaches it
    slow = [_t(10.0, s, k) for k, s in enumerate([50, None, None])]
    assert tuning.choose(trials + slow, seeds) == 3.0
    # no rate reaches it: the lower median final validation loss wins
    nowhere = [_t(lr, None, k, loss) for lr, loss in ((0.1, 0.6), (1.0, 0.4)) for k in seeds]
    assert tuning.choose(nowhere, seeds) == 1.0
    assert tuning.choose([], seeds) is None


def test_a_rate_with_a_diverged_or_missing_seed_never_wins():
    seeds = (0, 1, 2)
    good = [_t(0.1, 400, k) for k in seeds]
    bad = [_t(1.0, 100, 0), _t(1.0, 100, 1), _t(1.0, None, 2, None, "diverged")]
    assert tuning.choose(good + bad, seeds) == 0.1
    assert tuning.choose(good + [_t(1.0, 100, 0), _t(1.0, 100, 1)], seeds) == 0.1  # seed 2 not run yet
    assert tuning.choose(bad, seeds) is None
    results = {r.rate: r for r in tuning.summarise(good + bad, seeds)}
    assert results[1.0].complete and not results[1.0].eligible and results[0.1].eligible


# --- the widening loop --------------------------------------------------------------------------------------------

def _curve(lr, best, seed, checks=60, interval=10):
    """A synthetic validation-accuracy curve at rate `lr`: it rises fastest at `best` and slower the further the rate
    is from it (a decade away: 3x slower), with a little seed noise; rates 30x above the best diverge."""
    if lr > 30 * best:
        return None
    speed = 0.02 / (1 + 2 * math.log10(lr / best) ** 2) * (1 + 0.05 * np.random.default_rng(seed).standard_normal())
    return [1 - 0.9 * math.exp(-speed * interval * k) for k in range(1, checks + 1)]


def _trial(lr, best, seed, target=0.9, interval=10):
    curve = _curve(lr, best, seed, interval=interval)
    if curve is None:
        return Trial(learning_rate=lr, status="diverged", val_accuracy=None, val_loss=None, seed=seed)
    c = steps_to_target(curve, interval, target)
    return Trial(learning_rate=lr, status="ok", val_accuracy=curve[-1], val_loss=1 - curve[-1], seed=seed,
                 steps_to_target=c.steps if c else None)


def _search(best, centre=1.0, limit=2, seeds=(0, 1, 2)):
    """The loop as the cells run it: the base grid, then the widening rounds while the search asks for them."""
    g = tuning.search_grid(centre, 3, limit)
    trials = [_trial(lr, best, s) for lr in g.base for s in seeds]
    while True:
        index, why = tuning.next_index(trials, seeds, g)
        if index is None:
            return g, trials, why
        trials += [_trial(g.rates[index], best, s) for s in seeds]


@pytest.mark.parametrize("best, chosen", [(10.0, 10.0), (0.1, 0.1), (1.0, 1.0)])
def test_the_widening_loop_brings_an_optimum_outside_the_start_grid_inside(best, chosen):
    g, trials, why = _search(best)
    rates = sorted({t.learning_rate for t in trials})
    assert tuning.choose(trials, (0, 1, 2)) == chosen
    assert rates[0] < chosen < rates[-1] and "interior" in why  # a worse neighbour on both sides
    assert record.tuning.edge_of(chosen, rates) == "interior"
    assert (len(rates) == 3) == (best == 1.0)  # an optimum inside the start grid needs no widening


def test_the_widening_loop_stops_at_its_limit_and_says_the_rate_is_on_an_edge():
    g, trials, why = _search(1000.0, limit=2)  # the best rate is three decades above the centre
    rates = sorted({t.learning_rate for t in trials})
    assert rates[-1] == g.rates[4] == 31.62 and tuning.choose(trials, (0, 1, 2)) == 31.62
    assert "high edge at the widening limit" in why and record.tuning.edge_of(31.62, rates) == "high"


def test_the_cells_run_the_widening_only_where_the_search_needs_it():
    """The cells in pytest's order: a widening cell trains only when the search's next step is its rate, so sgd,
    whose synthetic best lies half a decade above the base grid, adds exactly that rate and the next as the worse
    neighbour; the low side never trains."""
    p = tuning.PROFILES["cpu"]
    cells = [c for c in tuning.cells("cpu", "sgd") if c.batch_size == 100]
    g = tuning.grid_of(p, "sgd", None)
    trials, trained = [], []
    for c in (c for c in cells if c.role == "trial"):
        if tuning.widening_decision(c, trials, p.trial_seeds, g) is None:
            trials.append(_trial(c.learning_rate, 10.0, c.seed))
            trained.append(c.learning_rate)
    assert sorted(set(trained)) == [0.3162, 1.0, 3.162, 10.0, 31.62]
    assert all(trained.count(r) == len(p.trial_seeds) for r in set(trained))
    assert tuning.choose(trials, p.trial_seeds) == 10.0


# --- cells --------------------------------------------------------------------------------------------------------

def test_tuning_cells_put_the_base_grid_then_the_widening_then_the_final_runs():
    p = tuning.PROFILES["test"]
    cells = tuning.cells("test")
    order = [0 if c.role == "trial" and tuning.grid_of(p, c.optimizer, None).index(c.learning_rate) in range(2)
             else 1 if c.role == "trial" else 2 for c in cells]
    assert order == sorted(order)
    assert len([c for c in cells if order[cells.index(c)] == 0]) == 2 * 2 * 2 * 3  # opts x batches x rates x seeds
    assert tuning.grid_of(p, "adam", None).base == (0.003162, 0.01) and tuning.grid_of(p, "sgd", None).base == (1.0,
                                                                                                            3.162)
    assert len({c.test_id for c in cells}) == len(cells)
    assert all(c.learning_rate is None and c.seed not in p.trial_seeds for c in cells if c.role != "trial")
    assert all(c.total_updates == p.checks * p.interval(c.optimizer, c.batch_size) and c.epochs == p.checks
               for c in cells)
    keys = {c.run_key("tensorflow", None, "tf32", "m") for c in cells}
    assert len(keys) == len(cells)  # a tuned and a pinned final run of one seed are different cells


def test_bad_tuning_options_are_one_line_usage_errors():
    with pytest.raises(grid.BadOption, match="--seeds: 1 is a trial seed .* the final runs need seeds the choice "
                                             "never saw"):
        tuning.cells("test", seeds="1,5")
    with pytest.raises(grid.BadOption, match="--lr-grid: '-1' is not a positive learning rate"):
        tuning.cells("test", lr_text="0.1,-1")
    with pytest.raises(grid.BadOption, match="--lr-grid: 5e3 is outside 1e-8 to 1e3"):
        tuning.cells("test", lr_text="0.1,5e3")
    with pytest.raises(grid.BadOption, match="sets no check interval for rmsprop at batch 10; choose among sgd, adam"):
        tuning.cells("cpu", "rmsprop")
    with pytest.raises(grid.BadOption, match="--tuning-profile: unknown profile 'x'; choose one of test, cpu, gpu"):
        tuning.cells("x")


def test_the_grid_is_half_a_decade_apart_and_widens_from_its_edges():
    g = tuning.search_grid(10 ** -2.5, 3, 2)
    assert g.base == (0.001, 0.003162, 0.01) and g.rates[-2] == 0.0001 and g.rates[4] == 0.1
    rates = [g.rates[i] for i in sorted(g.rates)]
    assert all(math.isclose(b / a, 10 ** 0.5, rel_tol=1e-3) for a, b in zip(rates, rates[1:]))
    given = tuning.search_grid(1.0, 3, 1, "0.1, 0.001,0.01")
    assert given.base == (0.001, 0.01, 0.1) and given.rates[-1] == 0.0003162 and given.rates[3] == 0.3162


# --- the fit ------------------------------------------------------------------------------------------------------

BATCHES = np.repeat([10, 30, 100, 300, 1000], 5)  # five seeds per batch size, as the cpu profile's final runs


def _synthetic_steps(s_min, b_crit, noise, seed):
    return A.model_steps(BATCHES, s_min, b_crit) * np.exp(np.random.default_rng(seed).normal(0, noise, len(BATCHES)))


def test_the_fit_recovers_b_crit_and_s_min_from_steps_made_by_the_model_with_noise():
    steps = _synthetic_steps(250.0, 60.0, 0.08, seed=3)
    found = A.bootstrap_fit(BATCHES, steps)
    assert found["b_crit"].value == pytest.approx(60.0, rel=0.10)
    assert found["s_min"].value == pytest.approx(250.0, rel=0.10)
    assert found["b_crit"].low <= 60.0 <= found["b_crit"].high and found["s_min"].low <= 250.0 <= found["s_min"].high
    assert not found["open_low"] and not found["open_high"]


def test_the_fits_interval_covers_the_true_b_crit_at_about_its_stated_rate():
    """Coverage by simulation: 20 data sets from the model; the 95 % interval covers the true B_crit in at least 16
    (a percentile bootstrap over five seeds per batch size covers a little less than 95 %)."""
    covered = sum(found["b_crit"].low <= 60.0 <= found["b_crit"].high for found in
                  (A.bootstrap_fit(BATCHES, _synthetic_steps(250.0, 60.0, 0.08, seed=s), resamples=300, seed=s)
                   for s in range(100, 120)))
    assert covered >= 16


def test_the_fit_says_when_the_batch_sizes_do_not_bound_b_crit():
    perfect = A.model_steps(BATCHES, 1.0, 1e6)  # perfect scaling at every batch measured: B_crit far above them
    assert A.bootstrap_fit(BATCHES, perfect * np.exp(np.random.default_rng(0).normal(0, 0.02, len(BATCHES))),
                           resamples=300)["open_high"]
    flat = np.full(len(BATCHES), 50.0)  # no scaling at all: B_crit below every batch measured
    assert A.bootstrap_fit(BATCHES, flat, resamples=300)["open_low"]


def test_the_noise_scale_ratio_shares_the_fits_bootstrap():
    steps = _synthetic_steps(250.0, 60.0, 0.05, seed=1)
    noise = list(np.random.default_rng(2).lognormal(math.log(120.0), 0.2, len(BATCHES)))
    found = A.bootstrap_fit(BATCHES, steps, noise)
    assert found["b_simple"].value == pytest.approx(np.median(noise))
    assert found["ratio"].value == pytest.approx(found["b_simple"].value / found["b_crit"].value)
    assert found["ratio"].low > 1  # B_simple twice B_crit: the interval says it is larger
    fit = A.ScalingFit("x", found["s_min"], found["b_crit"], len(steps), [10], 0, b_simple=found["b_simple"],
                       ratio=found["ratio"])
    assert A.agreement(fit) == "B_simple larger"
    same = A.bootstrap_fit(BATCHES, steps, list(np.random.default_rng(2).lognormal(math.log(60.0), 0.2,
                                                                                     len(BATCHES))))
    assert A.agreement(A.ScalingFit("x", same["s_min"], same["b_crit"], 25, [10], 0, ratio=same["ratio"])) == "agree"
    assert fit.perfect_until.value == pytest.approx(found["b_crit"].value / 10)
    assert fit.parallel_from.value == pytest.approx(found["b_crit"].value * 10)


# --- the noise scale at the target ---------------------------------------------------------------------------------

class _GradientsProbe:
    """A probe over per-example gradients with a known mean and covariance (rows of `g`): its 'loss and gradient' of a
    subset are the mean gradient's squared norm, as a backend's probe computes them on examples."""

    def __init__(self, g):
        self.g, self.size = g, len(g)

    def subset(self, idx):
        return (idx,)

    def loss_and_grad_norm_sq(self):
        return 1.0, float(np.sum(self.g.mean(axis=0) ** 2))

    def grad_norm_sq(self, idx=None):
        return float(np.sum(self.g[idx].mean(axis=0) ** 2))


def test_the_noise_scale_estimate_matches_the_known_b_simple_of_a_gradient_population():
    rng = np.random.default_rng(0)
    n, d = 5000, 40
    g = rng.normal(0.0, 1.0, (n, d)) * np.linspace(0.2, 2.0, d) + 0.25  # per-example gradients
    exact = float(np.sum(g.var(axis=0)) / np.sum(g.mean(axis=0) ** 2))  # tr(Sigma) / |G|^2, divisor N
    found = tuning.noise_scale_at(_GradientsProbe(g), small=32, batches=2000, seed=1)
    assert found["b_simple"] == pytest.approx(exact, rel=0.05) and found["examples"] == n
    few = tuning.noise_scale_at(_GradientsProbe(g), small=32, batches=64, seed=2)
    assert few["b_simple_low"] <= exact <= few["b_simple_high"]  # the within-run interval covers it
    # minibatches of half the population: without the finite-population correction the estimate would be half the
    # known value; with it, the mean over a few probes is within 10 %
    g = rng.normal(0.0, 1.0, (n, d)) * np.linspace(0.2, 2.0, d) + 0.05
    exact = float(np.sum(g.var(axis=0)) / np.sum(g.mean(axis=0) ** 2))
    half = [tuning.noise_scale_at(_GradientsProbe(g), small=2500, batches=400, seed=s)["b_simple"] for s in range(5)]
    assert np.mean(half) == pytest.approx(exact, rel=0.10)


def test_the_final_runs_probe_the_noise_scale_once_at_the_first_check_that_reaches_the_target(monkeypatch):
    from bench import backends
    from bench.train import Check

    made = []

    class Backend:
        @staticmethod
        def probe(model, x, y):
            made.append(model)
            return _GradientsProbe(np.random.default_rng(0).normal(0.1, 1.0, (500, 10)))

    monkeypatch.setattr(backends, "current", lambda: Backend)
    part = record.Tuning(grid=[0.1], rule=tuning.RULE, pinned=0.1)
    probe = tuning.TargetProbe(None, None, target=0.9, seed=0, tuning=part)
    for k, acc in enumerate([0.5, 0.85, 0.91, 0.95], start=1):
        assert probe.stop(Check(k, 10 * k, None, acc, 0.3, f"model at {10 * k}", None)) is False  # trains on
    assert made == ["model at 30"] and probe.found.update == 30 and probe.found.val_accuracy == 0.91
    out = probe.part(None, None, None)["tuning"]
    assert out.noise == probe.found and out.grid == [0.1] and out.noise.b_simple > 0


# --- the finding, report and figures on constructed records ----------------------------------------------------

TRUE = {"adam": (40.0, 30.0), "sgd": (200.0, 60.0)}  # S_min, B_crit of the constructed final runs
INTERVAL = {"adam": {10: 10, 100: 2, 1000: 2}, "sgd": {10: 50, 100: 10, 1000: 10}}
CHECKS = 60


def _ramp(steps: float, interval: int, target=0.9) -> list:
    """A validation-accuracy curve rising linearly to the target at `steps` updates (the interpolation is exact)."""
    return [min(0.99, target * k * interval / steps) for k in range(1, CHECKS + 1)]


def _rec(opt, bs, seed, role, steps, lr, status="ok", chosen=None, edge=None, noise=None, grid_rates=(0.1, 1.0)):
    from .helpers import stored

    interval = INTERVAL[opt][bs]
    curve = _ramp(steps, interval) if steps else [0.5] * CHECKS
    part = {"grid": list(grid_rates), "rule": tuning.RULE, "pinned": 0.1, "trials": [], "chosen": chosen,
            "trial_seeds": [0, 1, 2], "widen_limit": 1, "widened": [], "edge": edge,
            "noise": None if noise is None else {"update": int(steps), "val_accuracy": 0.9, "train_loss": 0.3,
                                                 "grad_sq": 1.0, "trace_sigma": noise, "b_simple": noise,
                                                 "small_batch": 32, "batches": 64, "examples": 5000, "seconds": 1.0}}
    return stored(experiment="tuning", profile="tuning-x", role=role, optimizer=opt, batch_size=bs, seed=seed,
                  train_size=5000, epochs=CHECKS, epochs_done=CHECKS if status == "ok" else 3,
                  steps_per_epoch=interval, updates=CHECKS * interval, budget="updates",
                  lr_setting=lr if role == "trial" else None, learning_rate=lr, status=status,
                  error=None if status == "ok" else "training loss became nan",
                  diverged=status == "diverged", target={"value": 0.9, "split": "validation", "metric": "accuracy"},
                  val_size=10_000, val_accuracy_by_epoch=curve if status == "ok" else curve[:3],
                  val_accuracy=curve[-1] if status == "ok" else None,
                  val_loss=1 - curve[-1] if status == "ok" else None,
                  steady_samples_s=[interval * 0.001 * (1 + bs / 100)] * 5,
                  epoch_time_s=interval * 0.001 * (1 + bs / 100),
                  tuning=part)


def _records() -> list:
    """Trials (rates 0.1 and 1.0, three seeds) and five tuned final runs per optimizer and batch size, their steps
    made by S = S_min (1 + B_crit/B) times a seed factor; sgd's seed 7 at batch 1,000 diverges; adam's chosen rate at
    batch 1,000 sits on the high edge."""
    recs = []
    for opt, (s_min, b_crit) in TRUE.items():
        for bs in (10, 100, 1000):
            model = s_min * (1 + b_crit / bs)
            for lr, factor in ((0.1, 1.5), (1.0, 1.0)):
                recs += [_rec(opt, bs, s, "trial", model * factor, lr) for s in (0, 1, 2)]
            for k, seed in enumerate((3, 4, 5, 6, 7)):
                status = "diverged" if (opt, bs, seed) == ("sgd", 1000, 7) else "ok"
                edge = "high" if (opt, bs) == ("adam", 1000) else "interior"
                recs.append(_rec(opt, bs, seed, "tuned", model * (0.96, 0.98, 1.0, 1.02, 1.04)[k], 1.0, status,
                                 chosen=1.0, edge=edge, noise=2 * b_crit * (0.9 + 0.05 * k)))
    return recs


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    from analysis import load, metrics

    path = tmp_path_factory.mktemp("tuning") / "runs.jsonl"
    for r in _records():
        record.append(path, "bench/test_tuning.py::test_tuning", r, machine={"node": "m"})
    runs = metrics.add_run_metrics(load.load_runs([path]))
    return path, A.finding(runs[runs["experiment"] == "tuning"], resamples=300)


def test_the_finding_reads_steps_fit_noise_and_stability_from_the_records(constructed):
    _, f = constructed
    tuned = f.steps[f.steps["role"] == "tuned"].set_index(["optimizer", "batch_size"])
    assert tuned.loc[("adam", 10), "steps"].value == pytest.approx(40 * 4)  # S_min (1 + 30/10), the median seed
    assert tuned.loc[("sgd", 1000), "reached"] == 4 and tuned.loc[("sgd", 1000), "runs"] == 5
    assert tuned.loc[("adam", 100), "resolution"] == pytest.approx(2 / (40 * 1.3))
    for opt, (s_min, b_crit) in TRUE.items():
        fit = f.fits[opt]
        assert fit.b_crit.value == pytest.approx(b_crit, rel=0.05) and fit.s_min.value == pytest.approx(s_min, rel=0.05)
        assert fit.b_simple.value == pytest.approx(2 * b_crit, rel=0.06) and A.agreement(fit) == "B_simple larger"
    assert f.fits["sgd"].left_out == 1
    s = f.stability.set_index(["optimizer", "batch_size"])
    assert s.loc[("sgd", 1000), "reached"].value == pytest.approx(0.8)
    assert s.loc[("sgd", 1000), "diverged"].value == pytest.approx(0.2) and s.loc[("sgd", 1000), "diverged"].low < 0.2
    assert s.loc[("adam", 10), "diverged"].value == 0 and s.loc[("adam", 10), "diverged"].high > 0.4  # 0 of 5
    rates = f.trials.set_index(["optimizer", "batch_size", "learning_rate"])
    assert rates.loc[("sgd", 100, 1.0), "chosen"] and not rates.loc[("sgd", 100, 0.1), "chosen"]
    assert rates.loc[("sgd", 100, 0.1), "steps"] == pytest.approx(1.5 * 200 * 1.6)
    edges = f.edges()
    assert list(zip(edges["optimizer"], edges["batch_size"])) == [("adam", 1000)]
    assert f.trial_seeds == [0, 1, 2] and f.final_seeds == [3, 4, 5, 6, 7] and f.checks == CHECKS


def test_the_report_marks_edges_and_states_b_crit_b_simple_and_the_resolution(constructed):
    from analysis.report import tuning as R

    _, f = constructed
    text = R.tuning_text(f)
    assert "**Chosen rates still on an edge**" in text and "adam at batch 1000 (high edge)" in text
    assert f"B_crit = {f.fits['sgd'].b_crit_text('.3g')}" in text and "B_simple larger" in text
    assert "Perfect scaling" in text and "maximal data parallelism" in text
    assert f"at most {f.resolution:.1%} of the steps reported" in text
    stab = R.speed_vs_stability_text(f)
    assert "| sgd         |    1000 |" in stab and "80% [" in stab


def test_the_figures_plot_the_values_of_the_finding(constructed):
    from analysis.figures import tuning as F

    _, f = constructed
    fig = F.steps_to_target(f.steps, f)
    left = fig.axes[0]
    points = {(round(float(x)), round(float(y), 3)) for line in left.lines for x, y in zip(line.get_xdata(),
                                                                                            line.get_ydata())}
    assert (10, 160.0) in points and (1000, 40 * 1.03) in points  # adam's medians
    fit = f.fits["adam"]
    fitted = [line for line in left.lines if line.get_label().startswith("adam fit")][0]
    x, y = fitted.get_xdata(), fitted.get_ydata()
    assert np.allclose(y, A.model_steps(x, fit.s_min.value, fit.b_crit.value))
    assert left.get_xscale() == left.get_yscale() == "log" and "updates to 90%" in left.get_ylabel()
    assert "B_crit" in fig._suptitle.get_text()
    maps = F.sensitivity(f.trials, f)
    assert {"320", "480"} <= {t.get_text() for ax in maps.axes for t in ax.texts}  # adam batch 10's two rates
    three = F.speed_vs_stability(f.stability, f)
    reached, diverged = three.axes[2], three.axes[3]
    assert {0.8, 1.0} <= {round(float(y), 2) for line in reached.lines for y in line.get_ydata()}
    assert {0.2, 0.0} <= {round(float(y), 2) for line in diverged.lines for y in line.get_ydata()}
    title = three._suptitle.get_text()
    assert "1 run(s) diverged" in title and "seeds missed it at sgd 1000" in title


# --- a real sweep -------------------------------------------------------------------------------------------------

def _check_search(recs, p):
    """Every widening trial that ran was the search's next step, and the final runs use the choice and its edge."""
    trials = [r for r in recs if r.role == "trial"]
    for bs in {r.batch_size for r in recs}:
        mine = [r for r in trials if r.batch_size == bs]
        as_trials = [Trial(learning_rate=r.lr_setting, status=r.status, val_accuracy=r.val_accuracy,
                           val_loss=r.val_loss, seed=r.seed, steps_to_target=getattr(steps_to_target(
                               r.val_accuracy_by_epoch, r.steps_per_epoch, r.target.value), "steps", None)
                           if r.status == "ok" else None) for r in mine]
        g = tuning.grid_of(p, "adam", None)
        assert {r.lr_setting for r in mine} >= set(g.base)
        for rate in {r.lr_setting for r in mine} - set(g.base):  # a widening rate: the loop asked for it
            j = g.index(rate)
            closer = range(g.points, j) if j >= g.points else range(j + 1, 0)  # tried before it on its side
            before = [t for t in as_trials if 0 <= g.index(t.learning_rate) < g.points
                      or g.index(t.learning_rate) in closer]
            assert tuning.next_index(before, p.trial_seeds, g)[0] == j
        chosen = tuning.choose(as_trials, p.trial_seeds)
        complete = [x.rate for x in tuning.summarise(as_trials, p.trial_seeds) if x.complete]
        for r in (r for r in recs if r.role == "tuned" and r.batch_size == bs):
            assert r.tuning.chosen == chosen and r.learning_rate == pytest.approx(chosen) and r.lr_setting is None
            assert r.tuning.edge == record.tuning.edge_of(chosen, complete) and len(r.tuning.trials) == len(mine)
            crossing = steps_to_target(r.val_accuracy_by_epoch, r.steps_per_epoch, r.target.value)
            assert (r.tuning.noise is not None) == (crossing is not None)  # probed exactly where it reached it
            if crossing is not None:
                assert r.tuning.noise.update == crossing.at and r.tuning.noise.examples == r.train_size
                assert r.tuning.noise.b_simple is None or r.tuning.noise.b_simple > 0


@pytest.mark.slow
def test_a_tiny_tuning_sweep_widens_chooses_probes_and_resumes_without_repeating(tmp_path, real_mnist):
    from .helpers import lines_in

    store, out = tmp_path / "runs.jsonl", tmp_path / "tuning.json"
    options = ["-q", "-ra", "--experiment", "tuning", "--tuning-profile", "test", "--optimizers", "adam",
               "--no-calibration", "--benchmark-json", str(out)]
    proc = run(sweep_cmd(*options, store=store, mnist=real_mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    timed, untimed = benchmarks(out)
    recs = [record.Record.from_dict(b["extra_info"]) for b in timed + untimed]
    p = tuning.PROFILES["test"]
    cells = tuning.cells("test", "adam")
    skipped = sum(int(k) for k in re.findall(r"SKIPPED \[(\d+)\] [^\n]* is not needed: the best rate", proc.stdout))
    assert len(recs) + skipped == len(cells) and lines_in(store) == len(recs)
    for r in recs:
        assert r.val_size == data.VALIDATION_SIZE and len(r.val_accuracy_by_epoch) == r.epochs == p.checks
        assert r.test_accuracy is not None and r.test_accuracy_by_epoch == []
        assert r.updates == p.checks * p.interval("adam", r.batch_size) or r.status != "ok"
    _check_search(recs, p)

    again = run(sweep_cmd(*options[:-2], "--resume", store=store, mnist=real_mnist))
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"resume: {len(recs)} of {len(cells)} cells already in" in again.stdout
    assert lines_in(store) == len(recs) and f"{skipped} skipped" in again.stdout  # decided again: nothing trained

    rep = run([__import__("sys").executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## The tuning experiment" in text and "Updates to target" in text and "B_simple" in text
    assert all((tmp_path / "rep" / f"{name}.png").exists() for name in ("fig11_steps_to_target", "fig12_sensitivity"))


def test_the_spread_interval_covers_the_true_standard_deviation_at_its_stated_rate():
    """Five seeds from a normal distribution of known spread, 400 times: the 95 % interval covers it 93-97 % of the
    time (a percentile bootstrap over five values would cover it far less often)."""
    rng = np.random.default_rng(0)
    covered = [A.std_interval(list(rng.normal(0.9, 0.01, 5))) for _ in range(400)]
    assert 0.93 <= np.mean([i.low <= 0.01 <= i.high for i in covered]) <= 0.97
    assert not A.std_interval([0.9]).defined
