"""The saddle-point instruments (bench/curvature.py): Hessian-vector products against finite differences on
the real MLP and against the exact Hessian of a tiny network, Lanczos against numpy, the gradient-noise-scale
estimator on synthetic gradients with a known answer, plateau detection on constructed curves, and the
probes in a real run's record."""

import math

import numpy as np
import pytest

from bench import curvature, grid, train
from bench.experiments import saddle
from bench.backends import current

from .helpers import ROOT, cfg, plain_types, run, sweep_cmd

keras = current().keras
tf = pytest.importorskip("tensorflow")


def probe_of(model, x, y):
    return current().probe(model, x, y)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="sigmoid"),
                             keras.layers.Dense(2, activation="softmax")])


def tiny_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, n)]
    return x, y


def exact_hessian(model, x, y) -> np.ndarray:
    """The full Hessian by differentiating the gradient once more, parameter by parameter (tape.jacobian)."""
    loss_fn = keras.losses.CategoricalCrossentropy()
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn(y, model(x, training=False))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], axis=0)
    blocks = [tf.reshape(outer.jacobian(flat, v), [flat.shape[0], -1]) for v in variables]
    return np.concatenate([b.numpy() for b in blocks], axis=1).astype(np.float64)


def test_hvp_equals_the_exact_hessian_on_a_tiny_network():
    model, (x, y) = tiny_model(), tiny_data()
    probe = probe_of(model, x, y)
    assert probe.dim == 4 * 3 + 3 + 3 * 2 + 2
    h = exact_hessian(model, x, y)
    assert np.allclose(h, h.T, atol=1e-5)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(probe.dim)
        assert np.allclose(probe.hvp(v), h @ v, rtol=1e-4, atol=1e-5)


def test_hvp_matches_finite_differences_on_the_real_mlp(small_mnist):
    from bench.model import build_mlp

    keras.utils.set_random_seed(0)
    model = build_mlp(keras, "sigmoid")
    x, y, _, _ = small_mnist.prepared(1000)
    probe = probe_of(model, x[:256], y[:256])
    assert probe.dim == 784 * 500 + 500 + 500 * 500 + 500 + 500 * 10 + 10
    v = np.random.default_rng(0).standard_normal(probe.dim)
    v /= np.linalg.norm(v)
    w0 = [var.numpy() for var in probe.variables]
    eps = 1e-2

    def grad_at(sign):
        for var, w, dv in zip(probe.variables, w0, probe.split(sign * eps * v)):
            var.assign(w + dv.numpy())
        return probe.loss_and_grad()[1]

    fd = (grad_at(+1) - grad_at(-1)) / (2 * eps)
    for var, w in zip(probe.variables, w0):
        var.assign(w)
    hv = probe.hvp(v)
    cos = hv @ fd / (np.linalg.norm(hv) * np.linalg.norm(fd))
    assert cos > 0.999 and np.linalg.norm(fd) / np.linalg.norm(hv) == pytest.approx(1.0, rel=0.01)


def test_gradient_norm_reduced_on_the_device_matches_the_host_gradient(small_mnist):
    from bench.model import build_mlp

    keras.utils.set_random_seed(0)
    x, y, _, _ = small_mnist.prepared(300)
    probe = probe_of(build_mlp(keras, "relu"), x, y)
    _, g = probe.loss_and_grad()
    assert probe.grad_norm_sq() == pytest.approx(float(g @ g), rel=1e-5) and g @ g > 0
    _, g10 = probe.loss_and_grad(x[:10], y[:10])
    assert probe.grad_norm_sq(x[:10], y[:10]) == pytest.approx(float(g10 @ g10), rel=1e-5)


def test_numpy_blas_is_held_to_one_thread_so_probes_leave_the_cores_to_training():
    from threadpoolctl import threadpool_info

    current()  # the limit is set when the backend is first loaded

    # NumPy's own BLAS, the one the probes' vector algebra runs on (SciPy, loaded later by the analysis
    # libraries, brings another that bench never calls)
    blas = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_eigsh_finds_both_ends_of_an_explicit_spectrum():
    class Matrix:  # a probe whose Hessian is an explicit matrix with known extremes
        rng = np.random.default_rng(3)
        q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
        a = (q * np.concatenate([[-3.0], np.linspace(-1, 1, 58), [5.0]])) @ q.T
        dim, size = 60, 60

        def hvp(self, v):
            return self.a @ v

    h = curvature.hessian_extremes(Matrix())
    assert h["converged"] and h["lambda_max"] == pytest.approx(5.0, rel=1e-3)
    assert h["lambda_min"] == pytest.approx(-3.0, rel=1e-3) and 0 < h["matvecs"] <= 200


def test_hessian_extremes_on_the_tiny_network_match_eigvalsh():
    model, (x, y) = tiny_model(2), tiny_data(seed=2)
    probe = probe_of(model, x, y)
    exact = np.linalg.eigvalsh(exact_hessian(model, x, y))
    h = curvature.hessian_extremes(probe)
    assert h["converged"] and h["lambda_max"] == pytest.approx(exact[-1], rel=1e-3)
    assert h["lambda_min"] == pytest.approx(exact[0], rel=1e-3, abs=1e-5)
    assert h["probe_size"] == 16
    assert exact[0] < 0 < exact[-1]  # a random sigmoid network is not at a minimum: indefinite Hessian


def test_noise_scale_estimator_recovers_known_values():
    g = np.array([3.0, 4.0])  # |G|^2 = 25
    trace = 50.0  # tr(Sigma)
    sq = lambda b: g @ g + trace / b  # noqa: E731  E|G_B|^2 for a batch of b examples
    est = curvature.noise_scale(10, sq(10), 1000, sq(1000))
    assert est["grad_sq"] == pytest.approx(25.0) and est["trace_sigma"] == pytest.approx(50.0)
    assert est["b_simple"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="b_small < b_big"):
        curvature.noise_scale(100, 1.0, 10, 1.0)


def test_noise_scale_on_sampled_gradients():
    rng = np.random.default_rng(0)
    dim, g = 20, np.full(20, 0.5)  # |G|^2 = 5
    sigma = rng.uniform(0.5, 1.5, dim)  # per-example std per coordinate: tr(Sigma) = sum(sigma^2)
    per_example = g + sigma * rng.standard_normal((200_000, dim))
    small = per_example[:100_000].reshape(-1, 10, dim).mean(axis=1)
    big = per_example[100_000:].reshape(-1, 1000, dim).mean(axis=1)
    est = curvature.noise_scale(10, float((small ** 2).sum(axis=1).mean()), 1000,
                                float((big ** 2).sum(axis=1).mean()))
    assert est["b_simple"] == pytest.approx((sigma ** 2).sum() / 5.0, rel=0.1)


def test_plateaus_are_found_on_the_probe_loss_with_known_answers():
    flat_then_drop = [(u, 2.30) for u in range(0, 50, 10)] + [(50 + 10 * i, 2.3 * 0.8 ** i) for i in range(1, 6)]
    assert curvature.probe_plateaus(flat_then_drop) == [(0, 40)]
    assert curvature.probe_plateaus([(u, 1.0 / (1 + u)) for u in range(10)]) == []  # steady descent: no stall
    assert curvature.probe_plateaus([(0, 1.0), (1, 1.0)]) == []  # two points are no stretch
    # a minibatch curve's noise never reaches this detector: it reads the probe set's loss at the probe points
    assert curvature.probe_plateaus([(0, 2.0), (1, 1.995), (2, 1.99), (3, 1.5), (4, 1.496), (5, 1.495)]) \
        == [(0, 2), (3, 5)]


def _set_flat(probe, vector):
    for var, part in zip(probe.variables, probe.split(vector)):
        var.assign(part)


def _label(probe) -> tuple:
    loss, sq = probe.loss_and_grad_norm_sq()
    h = curvature.hessian_extremes(probe)
    return curvature.classify(math.sqrt(sq), loss, h["lambda_min"], h["lambda_max"], h["converged"]), h


def test_a_strict_saddle_is_labelled_saddle(small_mnist):
    """A two-layer linear softmax network without biases, at zero: the gradient vanishes (each layer's gradient
    carries the other layer's zero weights) and the Hessian is [[0, C], [C^T, 0]], eigenvalues +-sigma(C)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(8, use_bias=False, kernel_initializer="zeros"),
                              keras.layers.Dense(10, use_bias=False, activation="softmax", kernel_initializer="zeros")])
    x, y, _, _ = small_mnist.prepared(300)
    kind, h = _label(probe_of(model, x, y))
    assert kind == "saddle", h
    assert h["lambda_min"] == pytest.approx(-h["lambda_max"], rel=1e-3)


@pytest.fixture(scope="module")
def convex(small_mnist):
    """Softmax regression with an L2 penalty, converged by L-BFGS on its probe: strictly convex in the weights."""
    import scipy.optimize

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(
        10, activation="softmax", use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-3))])
    x, y, _, _ = small_mnist.prepared(500)
    probe = probe_of(model, x, y)

    def fg(v):
        _set_flat(probe, v)
        return probe.loss_and_grad()

    res = scipy.optimize.minimize(fg, np.zeros(probe.dim), jac=True, method="L-BFGS-B", options={"maxiter": 2000,
                                                                                                  "gtol": 1e-10})
    _set_flat(probe, res.x)
    return probe, res.x


def test_the_end_of_a_converged_convex_problem_is_labelled_minimum(convex):
    probe, _ = convex
    kind, h = _label(probe)
    assert kind == "minimum", h
    assert h["lambda_min"] > 0  # the penalty makes it strictly convex


def test_a_point_with_a_large_gradient_is_labelled_slope(convex):
    probe, optimum = convex
    _set_flat(probe, optimum + 0.05 * np.random.default_rng(1).standard_normal(probe.dim))
    kind, h = _label(probe)
    assert kind == "slope", h
    _set_flat(probe, optimum)


def test_a_point_between_the_thresholds_is_undetermined():
    lam, loss = 2.0, 1.0  # flatness |g|^2 / (2 lam L) = g^2 / 4
    assert curvature.classify(math.sqrt(4 * 0.5 * curvature.FLAT), loss, -1.0, lam) == "saddle"
    assert curvature.classify(math.sqrt(4 * 3 * curvature.FLAT), loss, -1.0, lam) == "undetermined"
    assert curvature.classify(math.sqrt(4 * 2 * curvature.STEEP), loss, -1.0, lam) == "slope"
    assert curvature.classify(0.0, loss, -1.0, lam, converged=False) == "undetermined"
    assert curvature.classify(0.0, loss, -1e-5, lam) == "minimum"  # within the tolerance: numerically zero


class _ScriptedProbe:
    """A probe whose loss and gradient norm follow a script, one entry per call, and whose Hessian is diagonal."""

    def __init__(self, points, diagonal):
        self.points, self.diagonal, self.size, self.dim, self.calls = list(points), np.asarray(diagonal), 1, 3, 0

    def loss_and_grad_norm_sq(self):
        loss, grad = self.points[min(self.calls, len(self.points) - 1)]
        self.calls += 1
        return loss, grad ** 2

    def hvp(self, v):
        return self.diagonal * v


def test_a_plateau_is_classified_from_the_gradient_at_the_hessians_own_weights():
    # the loss stalls from the 2nd probe point on; the gradient is large at the plateau's first point and tiny
    # where the Hessian is probed (the 4th point, the first at which three points have stalled)
    points = [(2.5, 3.0), (2.30, 2.0), (2.30, 1.0), (2.30, 1e-4), (2.30, 1e-4)]
    prober = curvature.Prober(_ScriptedProbe(points, [4.0, 1.0, -0.5]), noise=False)
    for epoch in range(len(points)):
        prober.epoch_end(epoch, 10 * (epoch + 1))
    (h,) = prober.hessians
    assert h["update"] == 40 and h["grad_norm"] == pytest.approx(1e-4)
    (plateau,) = prober.plateau_records([])
    assert (plateau["start_update"], plateau["probe_update"]) == (20, 40)
    assert plateau["full_grad_norm"] == pytest.approx(1e-4) and plateau["kind"] == "saddle"


@pytest.fixture(scope="module")
def probed(small_mnist):
    return train.run(cfg("sgd", 100, 1000, 2), small_mnist)


def test_run_records_carry_the_probes(probed):
    r = probed
    assert r.probes.enabled is True and r.probes.probe_size == 1000
    assert "eigsh" in r.probes.eigen_solver and r.probes.seconds > 0
    assert len(r.full_grad_norm_by_epoch) == 2 and all(g > 0 for g in r.full_grad_norm_by_epoch)
    assert len(r.noise_scale_by_epoch) == 2
    h = r.hessian
    assert h.update == r.updates and h.lambda_max > 0 and h.lambda_min <= h.lambda_max and h.matvecs > 0
    assert h.grad_norm == r.full_grad_norm_by_epoch[-1] and h.loss == r.full_loss_by_epoch[-1]  # the same weights
    assert isinstance(r.plateaus, list) and plain_types(r.to_dict())


@pytest.mark.slow
def test_full_batch_sgd_on_the_initial_plateau_is_probed_and_classified(small_mnist):
    """The lecture's setting in miniature: plain SGD, the full batch, sigmoid units, stuck near ln 10."""
    r = train.run(grid.RunConfig("smoke", "sgd", 1000, True, "sigmoid", 0, 1000, 30), small_mnist)
    assert r.status == "ok" and r.updates == 30
    assert r.train_loss == pytest.approx(math.log(10), rel=0.05)
    assert r.plateaus, "a 30-update full-batch run at the initial loss is one long plateau"
    p = r.plateaus[0]
    assert p.lambda_max > 0 and p.kind in ("saddle", "minimum", "slope", "undetermined")
    assert p.start_update <= p.probe_update <= p.end_update


def test_probes_can_be_turned_off(small_mnist):
    r = train.run(grid.RunConfig("smoke", "sgd", 500, False, "sigmoid", 0, 1000, 2, probes=False), small_mnist)
    assert (r.probes.enabled, r.probes.requested, r.probes.reason) == (False, False, "off (--no-probes)")
    assert r.hessian is None and r.plateaus == [] and r.full_grad_norm_by_epoch == []


@pytest.mark.slow
def test_saddle_benchmark_smoke_end_to_end(real_mnist, tmp_path):
    """`pytest bench --experiment saddle --saddle-profile smoke`: every cell runs and is probed, and the report
    draws the saddle figure and states the finding from its records."""
    import json
    import sys

    out = tmp_path / "saddle.json"
    proc = run(sweep_cmd("-q", "--experiment", "saddle", "--saddle-profile", "smoke", "--benchmark-json", str(out),
                         store=tmp_path / "runs.jsonl", mnist=real_mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    cells = saddle.cells("smoke")
    recs = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    assert set(recs) == {f"test_saddle[{c.test_id}]" for c in cells}
    for c in cells:
        r = recs[f"test_saddle[{c.test_id}]"]
        assert r["status"] == "ok" and r["probes"]["enabled"] and r["hessian"]["lambda_max"] > 0
        assert r["updates"] == c.expected_updates and r["budget"] == c.budget
        assert len(r["full_grad_norm_by_epoch"]) == r["epochs"]

    rep = run([sys.executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "Same epochs:" in text and "Same updates:" in text and "batch full" in text
    assert (tmp_path / "rep" / "fig4_saddle.png").exists()


def test_report_states_the_committed_saddle_benchmark_from_its_records():
    """reports/saddle/saddle.json (the real saddle benchmark on this CPU): figure 4 and its text come from it."""
    import json
    import statistics

    import matplotlib.pyplot as plt

    from analysis import report
    from analysis.cli import build
    from analysis.load import load_runs

    path = ROOT / "reports" / "saddle" / "saddle.json"
    recs = [b["extra_info"] for b in json.loads(path.read_text())["benchmarks"]]
    found, figs = build(load_runs([path]))
    assert found.summary is None and len(found.runs) == len(recs)
    fig = figs["saddle"]
    try:
        kinds = [p["kind"] for r in recs for p in r["plateaus"] if p["kind"]]
        assert f"{len(kinds)} probed plateaus" in fig._suptitle.get_text()
        ends = fig.axes[3]
        plotted = [y for line in ends.get_lines() for y in line.get_ydata()]
        full = [r["hessian"]["lambda_min"] for r in recs if r["full_batch"] and r["budget"] == "updates"]
        assert any(math.isclose(statistics.median(full), y, rel_tol=1e-9) for y in plotted)
    finally:
        plt.close(fig)
    text = report.render(found, {"saddle": "fig4_saddle.png"})
    full_loss = statistics.median(r["train_loss"] for r in recs if r["full_batch"] and r["budget"] == "updates")
    assert f"the full batch ends at training loss {full_loss:.3f}" in text
