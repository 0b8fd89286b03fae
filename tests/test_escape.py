"""The escape experiment (bench/experiments/escape.py, analysis/escape.py): Kaplan-Meier and log-rank against
hand-computed values, claim 3's verdict at start points of known kind for every outcome it can give (a minimum and
a slope: not tested; a certified saddle where a synthetic full batch stays: supported, contradicted or not
determined; a full batch that escaped, a horizon too short, a rate above 2 / lambda_max: not tested), the committed
schema-2 result read as an uncertified point, its test profile end to end, and the same escape time on TensorFlow
and JAX."""

import json
import math
import os
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from analysis import escape, stats
from bench import record
from bench.experiments import escape as experiment
from bench.record.escape import Certificate

from .helpers import ROOT, benchmarks, run, sweep_cmd


def survival(times, escaped, budget=10, label="10"):
    s = escape.Survival("minibatch", label, 10, 0.1, np.asarray(times, float), np.asarray(escaped, bool),
                        np.full(len(times), float(budget)))
    return escape.kaplan_meier(s)


def loglog_band(surv, greenwood, z=1.959963984540054):
    """The log-log pointwise band of a survival estimate from Greenwood's sum, by its formula."""
    sd = math.sqrt(greenwood) / abs(math.log(surv))
    return surv ** math.exp(z * sd), surv ** math.exp(-z * sd)


def test_kaplan_meier_median_and_its_interval_against_hand_computed_values():
    """Escapes at 2, 3, 5, runs censored at 3 and 7: S = 4/5, then 4/5 x 3/4 (at 3 the censored run is still at
    risk), then x 1/2 = 0.3, so the median is 5. Greenwood's sums 1/20, + 1/12, + 1/2 give the log-log band: the lower
    band is below one half from 2 on, the upper stays above it (0.719 at 5): the interval is [2, inf)."""
    s = survival([2, 3, 5, 3, 7], [1, 1, 1, 0, 0])
    assert (s.median, s.low, s.high) == (5.0, 2.0, math.inf)
    fit = __import__("scipy.stats", fromlist=["ecdf"]).ecdf(s.data())
    band = fit.sf.confidence_interval(0.95, method="log-log")
    assert np.allclose(fit.sf.probabilities, [0.8, 0.6, 0.3, 0.3])
    for i, (surv, greenwood) in enumerate([(0.8, 1 / 20), (0.6, 1 / 20 + 1 / 12), (0.3, 1 / 20 + 1 / 12 + 1 / 2)]):
        low, high = loglog_band(surv, greenwood)
        assert (band.low.probabilities[i], band.high.probabilities[i]) == pytest.approx((low, high), rel=1e-9)
    assert loglog_band(0.8, 1 / 20)[0] < 0.5 < loglog_band(0.3, 1 / 20 + 1 / 12 + 1 / 2)[1]
    # every run watched to its budget: the share escaping within it is binomial, 3 of 5 -> Clopper-Pearson 0.9473
    assert survival([2, 3, 5, 10, 10], [1, 1, 1, 0, 0]).escape_high == pytest.approx(0.9473, abs=1e-4)
    none = survival([10] * 20, [0] * 20)
    assert math.isnan(none.median) and none.escape_high == pytest.approx(1 - 0.025 ** (1 / 20), abs=1e-9)


def test_log_rank_against_hand_computed_values():
    """x escapes at 1 and 2, y at 3 and is censored at 4: at 1, E_x = 2/4, V = 1/4; at 2, E_x = 1/3, V = 2/9; at 3,
    E_x = 0. O_x - E_x = 7/6, V = 17/36: z = 1.698, one-sided p = 0.0448 (x sooner)."""
    x, y = survival([1, 2], [1, 1], label="x"), survival([3, 4], [1, 0], label="y")
    t = escape.log_rank(x, y)
    assert t.statistic == pytest.approx((7 / 6) / math.sqrt(17 / 36), rel=1e-9)
    assert t.pvalue == pytest.approx(0.0448, abs=1e-4) and t.sided == "one-sided"
    assert escape.log_rank(x, y, "two-sided").pvalue == pytest.approx(2 * t.pvalue, rel=1e-9)
    # compared over the updates both watched. x escapes at 1 and is censored at 5, y escapes at 3 and 4: at 1,
    # E_x = 1/2, V = 1/4; at 3, E_x = 1/3, V = 2/9; at 4, E_x = 1/2, V = 1/4: z = (1 - 4/3) / sqrt(13/18). With y
    # watched for 2 updates only, its escapes are unseen and only the first time counts: z = (1/2) / (1/2) = 1
    x = survival([1, 5], [1, 0], label="x")
    assert escape.log_rank(x, survival([3, 4], [1, 1], label="y")).statistic == pytest.approx(-(1 / 3) / math.sqrt(13 / 18), rel=1e-9)
    assert escape.log_rank(x, survival([3, 4], [1, 1], budget=2, label="y")).statistic == pytest.approx(1.0)
    nothing = escape.log_rank(survival([10, 10], [0, 0]), survival([10], [0]))
    assert (nothing.statistic, nothing.pvalue) == (0.0, 1.0)


def certificate(kind="saddle", lambda_max=1.0) -> dict:
    failed = {"saddle": [], "minimum": ["no strict negative curvature: lambda_min 0.002 (+ residual 1e-06) is not "
                                        "below -0.001 x lambda_max"],
              "slope": ["flatness 0.04 is not below 1e-06"]}[kind]
    c = Certificate(point=kind, how="constructed for the test", examples=1000, loss=2.3,
                    grad_norm=0.0 if kind != "slope" else 1.0, grad_norm_rounded=1e-8, flatness=0.0,
                    lambda_max=lambda_max, lambda_max_residual=1e-6,
                    lambda_min=-0.03 if kind != "minimum" else 0.002, lambda_min_residual=1e-6,
                    negative=[-0.03, -0.02, -0.01], converged=True,
                    thresholds={"flatness": 1e-6, "saddle_tol": 1e-3, "residual_tol": 1e-3}, certified=not failed,
                    failed=failed, digest64="0" * 64, noise_norm_by_batch={"10": 1.0, "100": 0.3}, matvecs=100,
                    seconds=1.0)
    return {f"escape.certificate.{k}": v for k, v in asdict(c).items()}


def runs(point="saddle", rates=(0.5,), mini=None, full=None, iso=None, full_budget=4000, budget=500, seeds=12,
         lambda_max=1.0):
    """Constructed escape records of one start point: per rate, batch 10 and 100 over `seeds` seeds escaping after
    `mini(rate, batch, seed)` updates (None: censored at `budget`), the full batch (3 runs) after `full(rate, seed)`,
    the isotropic arm after `iso(rate, seed)`."""
    mini = mini or (lambda rate, b, s: 100 + 10 * s)
    full = full or (lambda rate, s: None)
    iso = iso or (lambda rate, s: 200 + 10 * s)
    rows = []

    def row(bs, full_batch, seed, rate, t, arm, limit, noise=None):
        rows.append({"status": "ok", "profile": "escape", "train_size": 1000, "batch_size": bs,
                     "full_batch": full_batch, "batch_label": "full" if full_batch else str(bs), "seed": seed,
                     "learning_rate": rate, "updates": t if t is not None else limit, "escape.arm": arm,
                     "escape.escaped": t is not None, "escape.updates_to_escape": t, "escape.budget_updates": limit,
                     "escape.margin": 0.01, "escape.delta": 0.1, "escape.point": point, "escape.noise_batch": noise,
                     **certificate(point if point in ("minimum", "slope") else "saddle", lambda_max)})

    for rate in rates:
        for s in range(seeds):
            for b in (10, 100):
                row(b, False, s, rate, mini(rate, b, s), "minibatch", budget)
        for s in range(3):
            row(1000, True, s, rate, full(rate, s), "full", full_budget)
            row(1000, True, s, rate, iso(rate, s), "isotropic", full_budget, noise=10)
    return pd.DataFrame(rows)


def verdict(frame):
    found = escape.finding(frame)
    (point,) = found.points.values()
    return point


def test_a_certified_saddle_where_the_full_batch_stays_and_minibatches_escape_supports_the_claim():
    p = verdict(runs(rates=(0.5, 1.0)))
    assert p.verdict.outcome == stats.SUPPORTED, p.verdict.reason
    assert p.verdict.deciding.pvalue < escape.ALPHA / 2 and p.verdict.interval.median == pytest.approx(150)
    assert {t.arm for t in p.controls} == {"isotropic (batch 10 noise)", "10"}  # vs the full batch, vs batch 10
    iso_vs_full = next(t for t in p.controls if t.against == "full")
    assert iso_vs_full.statistic > 0 and iso_vs_full.pvalue < 0.05  # any noise of that size escapes here


def test_a_certified_saddle_that_holds_every_batch_contradicts_the_claim():
    p = verdict(runs(rates=(0.5, 1.0), mini=lambda rate, b, s: 400 if s == 0 else None))
    assert p.verdict.outcome == stats.CONTRADICTED, p.verdict.reason
    assert all(s.escape_high < 0.5 for s in p.at(0.5, "minibatch"))


def test_rates_that_disagree_determine_nothing():
    p = verdict(runs(rates=(0.5, 1.0), mini=lambda rate, b, s: (100 + s) if rate == 1.0 else None))
    assert p.verdict.outcome == stats.NOT_DETERMINED and "do not agree" in p.verdict.reason
    few = verdict(runs(seeds=3, mini=lambda rate, b, s: 300 if s == 0 else None))  # 1 of 3: neither way
    assert few.verdict.outcome == stats.NOT_DETERMINED


@pytest.mark.parametrize("kind,words", [("minimum", "no strict negative curvature"), ("slope", "flatness")])
def test_a_minimum_or_a_slope_is_not_tested(kind, words):
    p = verdict(runs(point=kind))
    assert p.verdict.outcome == stats.NOT_TESTED and "not a certified strict saddle" in p.verdict.reason
    assert words in p.verdict.reason


def test_a_full_batch_that_escaped_leaves_the_claim_not_tested_and_says_so():
    p = verdict(runs(full=lambda rate, s: 300 + s))
    assert p.verdict.outcome == stats.NOT_TESTED
    assert "the full batch escaped at rate 0.5 (3 of 3 runs, the first after 300 updates)" in p.verdict.reason


def test_a_horizon_shorter_than_ten_medians_or_a_rate_above_the_stability_limit_is_not_tested():
    short = verdict(runs(full_budget=1000, mini=lambda rate, b, s: 200 + 10 * s))
    assert short.verdict.outcome == stats.NOT_TESTED and "shorter than 10x" in short.verdict.reason
    steep = verdict(runs(lambda_max=5.0))  # 0.5 x 5 = 2.5: above 2
    assert steep.verdict.outcome == stats.NOT_TESTED and "not below 2 / lambda_max" in steep.verdict.reason


def test_the_committed_uncertified_stuck_point_is_read_and_not_tested():
    from analysis.load import load_runs

    frame = load_runs([ROOT / "tests" / "fixtures" / "escape-schema2.json"])  # reports/saddle/escape.json until 684aa51
    found = escape.finding(frame[frame["experiment"] == "escape"])
    (point,) = found.points.values()
    assert point.point == escape.LEGACY and point.certificate is None
    assert point.verdict.outcome == stats.NOT_TESTED and "no certificate" in point.verdict.reason
    assert point.at(0.1, "full") and point.at(0.1, "full")[0].events == 1  # the full batch left it after 110


@pytest.mark.slow
def test_the_escape_experiment_end_to_end(tmp_path, real_mnist):
    store, out = tmp_path / "runs.jsonl", tmp_path / "escape.json"
    options = ["--experiment", "escape", "--escape-profile", "test", "--benchmark-json", str(out)]
    proc = run(sweep_cmd("-q", *options, store=store, mnist=real_mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "escape: constructed point" in proc.stdout and "certified strict saddle" in proc.stdout
    cells = experiment.cells("test")
    timed, untimed = benchmarks(out)
    recs = {b["name"]: record.Record.from_dict(b["extra_info"]) for b in timed + untimed}
    assert set(recs) == {f"test_escape[{c.test_id}]" for c in cells}
    digests = {}
    for c in cells:
        r = recs[f"test_escape[{c.test_id}]"]
        e = r.escape
        point, iso = experiment.parse_label(c.budget)
        assert r.status == "ok" and e.point == point and e.certificate.point == point
        assert digests.setdefault(point, e.start_digest) == e.start_digest  # one start per point
        assert e.arm == ("isotropic" if iso else "full" if c.full_batch else "minibatch")
        assert e.budget_updates == c.expected_updates and r.learning_rate == pytest.approx(c.learning_rate)
        assert r.learning_rate * e.certificate.lambda_max < 2  # the grid is below 2 / lambda_max
        assert [t[0] for t in e.trajectory] == list(range(c.steps_per_epoch, r.updates + 1, c.steps_per_epoch))
        if e.escaped:
            assert e.updates_to_escape == r.updates == max(e.geometric_update, e.loss_update)
            assert e.trajectory[-1][1] < e.target_loss and e.trajectory[-1][2] > e.delta
        else:
            assert r.updates == c.expected_updates and e.updates_to_escape is None
    with np.load(tmp_path / "escape-test-constructed-start.npz") as saved:
        assert json.loads(str(saved["certificate"]))["certified"]

    again = run(sweep_cmd("--collect-only", "-q", *options, "--resume", store=store, mnist=real_mnist))
    assert f"resume: {len(cells)} of {len(cells)} cells already in" in again.stdout

    rep = run([sys.executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## The escape experiment" in text and "3: the full batch stays stuck" in text
    assert "The decision rule" in text and "What the data say at the constructed point" in text
    assert (tmp_path / "rep" / "fig10_escape.png").exists()


BACKEND_RUN = """
import json, sys
from bench.experiments import escape
from bench.data import read_npz
from bench import train
p = escape.profile("test")
exp = escape.EscapeExperiment()
class Ctx:
    mnist = read_npz(sys.argv[1]); store = sys.argv[2] + "/runs.jsonl"
    def option(self, flag): return "test" if flag == "--escape-profile" else None
exp.begin(Ctx())
cell = next(c for c in escape.cells("test") if c.test_id == sys.argv[3])
rec = train.run(cell, Ctx.mnist, plan=exp.plan(cell, Ctx()))
print(json.dumps({"escaped": rec.escape.escaped, "updates": rec.escape.updates_to_escape,
                  "check": rec.escape.check_every, "trajectory": rec.escape.trajectory}))
"""


@pytest.mark.slow
def test_tensorflow_and_jax_escape_at_the_same_check(tmp_path, real_mnist):
    """The same start point (one certified file), seed and arm on both backends: the same minibatches
    (bench/backends/order.py) and the same escape time, within one check."""
    pytest.importorskip("jax")
    cell = next(c for c in experiment.cells("test") if c.batch_size == 100 and c.seed == 0
                and experiment.parse_label(c.budget)[0] == "constructed")
    got = {}
    for backend in ("tensorflow", "jax"):
        proc = run([sys.executable, "-c", BACKEND_RUN, real_mnist.source, str(tmp_path), cell.test_id],
                   env={"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        got[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    tf, jx = got["tensorflow"], got["jax"]
    assert tf["escaped"], tf  # the arm escapes within its budget, so the comparison is of escape times
    assert jx["escaped"] and abs(jx["updates"] - tf["updates"]) <= tf["check"], (tf, jx)
    first = [np.array(t) for t in (tf["trajectory"][0], jx["trajectory"][0])]
    assert first[0][0] == first[1][0] and first[0][1] == pytest.approx(first[1][1], rel=1e-3)
    assert os.path.exists(tmp_path / "escape-test-constructed-start.npz")
