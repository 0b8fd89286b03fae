"""Certified start points (bench/certify.py): the float64 loss, gradient and Hessian-vector products against finite
differences and the backend's float32 probe, the minibatch-noise formula against enumeration, the constructed
point's certificate, the certificate's verdict on points of known kind (a strict saddle, a minimum, a slope, an
unconverged solve), why the issue's symmetric construction is unreachable by gradient steps, and the one minibatch
order both backends share (bench/backends/order.py)."""

import itertools
import math

import numpy as np
import pytest

from bench import certify
from bench.backends import order


@pytest.fixture(scope="module")
def examples(small_mnist):
    x, y, _, _ = small_mnist.prepared(200)
    return x, y


def generic(seed=0):
    """Weights of a generic lecture MLP (no critical point), float64."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.05, (784, 500)), rng.normal(0, 0.1, 500), rng.normal(0, 0.05, (500, 500)),
            rng.normal(0, 0.1, 500), rng.normal(0, 0.1, (500, 10)), rng.normal(0, 0.1, 10)]


def glorot_first_layer(seed=0):
    lim = math.sqrt(6 / (784 + 500))
    return [np.random.default_rng(seed).uniform(-lim, lim, (784, 500)), np.zeros(500)]


def test_float64_gradient_and_hessian_vector_products_match_finite_differences(examples):
    x, y = examples
    w = generic()
    f = certify.Mlp64(w, x[:50], y[:50])
    v = np.random.default_rng(1).standard_normal(f.dim)
    v /= np.linalg.norm(v)
    w0, eps = certify.flatten(w), 1e-5

    def at(sign):
        return certify.Mlp64(certify.unflatten(w0 + sign * eps * v), x[:50], y[:50])

    assert (at(1).loss - at(-1).loss) / (2 * eps) == pytest.approx(f.grad() @ v, rel=1e-6)
    fd = (at(1).grad() - at(-1).grad()) / (2 * eps)
    assert np.linalg.norm(fd - f.hvp(v)) < 1e-6 * np.linalg.norm(fd)


def test_float64_derivatives_match_the_backends_float32_probe(examples):
    from bench import backends

    x, y = examples
    w = generic(2)
    model, _ = backends.fresh_model("sigmoid", "sgd", 0.1, seed=0, metrics=())
    model.set_weights([a.astype(np.float32) for a in w])
    probe = backends.current().probe(model, x, y)
    f = certify.Mlp64([a.astype(np.float32) for a in w], x, y)
    loss, g = probe.loss_and_grad()
    assert loss == pytest.approx(f.loss, rel=1e-5)
    assert np.linalg.norm(g - f.grad()) < 1e-4 * np.linalg.norm(g)
    v = np.random.default_rng(3).standard_normal(f.dim)
    assert np.linalg.norm(probe.hvp(v) - f.hvp(v)) < 1e-3 * np.linalg.norm(f.hvp(v))


def test_per_example_gradients_and_the_minibatch_noise_formula_against_enumeration(examples):
    x, y = examples
    w = generic(4)
    f = certify.Mlp64(w, x[:7], y[:7])
    each = [certify.Mlp64(w, x[i:i + 1], y[i:i + 1]).grad() for i in range(7)]
    assert np.allclose(f.example_grad_sq(), [g @ g for g in each])
    g = f.grad()
    for b in (1, 3, 7):  # E|g_B - g|^2 over every batch of b of the 7 examples, drawn without replacement
        exact = np.mean([np.sum((np.mean([each[i] for i in c], axis=0) - g) ** 2)
                         for c in itertools.combinations(range(7), b)])
        assert f.noise_sq(b) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_the_constructed_point_is_a_certified_strict_saddle(examples):
    """W2 = W3 = 0 and b3 = log class frequencies: the gradient vanishes to rounding in float64 (on 200 examples),
    and the live unit's W2-W3 coupling gives negative curvature; every condition of the certificate holds."""
    x, y = examples
    w = certify.construct(glorot_first_layer(), y)
    f = certify.Mlp64(w, x, y)
    assert np.linalg.norm(f.grad()) < 1e-10
    freq = y.astype(np.float64).mean(axis=0)
    assert f.loss == pytest.approx(-(freq * np.log(freq)).sum(), rel=1e-12)  # the label entropy
    cert, vectors = certify.certify(w, x, y, "constructed", "test", batches=(1, 10, 100))
    assert cert.certified and not cert.failed, cert.failed
    assert cert.grad_norm < 1e-10 and cert.flatness < certify.FLATNESS and cert.converged
    assert cert.lambda_min < -1e-3 * cert.lambda_max < 0 and cert.lambda_max > 0
    assert cert.negative[0] == cert.lambda_min and sorted(cert.negative) == cert.negative
    assert vectors.shape == (certify.NEGATIVE, f.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0].astype(np.float64) @ f.hvp(vectors[0])) == pytest.approx(cert.lambda_min, rel=1e-4)
    assert cert.grad_norm_rounded > 1e3 * cert.grad_norm  # float32 rounding pushes, float64 barely
    noise = cert.noise_norm_by_batch
    assert noise["1"] > noise["10"] > noise["100"] > 0  # minibatch noise where the full gradient is zero
    assert cert.digest64 == certify.digest64(w)


def test_the_issues_symmetric_construction_keeps_every_batch_on_its_symmetric_manifold(examples):
    """With every layer-2 unit alike (b2 = 0), any minibatch's gradient moves the units alike, so no batch size can
    reach the antisymmetric negative-curvature directions: the reason the constructed point has one live unit."""
    x, y = examples
    w = certify.construct(glorot_first_layer(), y, off_bias=0.0)
    rng = np.random.default_rng(0)
    flat = certify.flatten(w)
    for _ in range(3):  # three SGD steps at batch 10 from the symmetric point, each on its own batch
        i = rng.choice(len(x), 10, replace=False)
        flat = flat - 0.5 * certify.Mlp64(certify.unflatten(flat), x[i], y[i]).grad()
    _, _, w2, b2, w3, _ = certify.unflatten(flat)
    assert np.abs(w3).max() > 1e-3 and np.abs(w2).max() > 1e-6  # it moved
    assert np.abs(w2 - w2[:, :1]).max() < 1e-12 and np.abs(w3 - w3[:1]).max() < 1e-12  # every unit alike
    assert np.abs(b2 - b2[0]).max() < 1e-12


class Quadratic:
    """A problem with an explicit Hessian: what the certificate's eigen-solves see."""

    def __init__(self, spectrum, seed=0):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum), len(spectrum))))
        self.a, self.dim = (q * np.asarray(spectrum, dtype=float)) @ q.T, len(spectrum)

    def hvp(self, v):
        return self.a @ v


@pytest.mark.parametrize("spectrum,loss,grad,outcome", [
    (np.r_[-0.05, np.linspace(0.01, 1, 58), 2.0], 2.3, 0.0, []),  # a strict saddle
    (np.r_[1e-3, np.linspace(0.01, 1, 58), 2.0], 2.3, 0.0, ["no strict negative curvature"]),  # a minimum
    (np.r_[-1e-4, np.linspace(0.01, 1, 58), 2.0], 2.3, 0.0, ["no strict negative curvature"]),  # flat, not strict
    (np.r_[-0.05, np.linspace(0.01, 1, 58), 2.0], 2.3, 0.5, ["flatness"]),  # a slope with negative curvature
])
def test_the_certificate_says_what_a_point_is(spectrum, loss, grad, outcome):
    e = certify.eigen_ends(Quadratic(spectrum))
    assert e["lambda_max"] == pytest.approx(spectrum.max(), rel=1e-6)
    assert e["lambda_min"] == pytest.approx(spectrum.min(), abs=1e-6)
    converged, flat, failed = certify.verdict(loss, grad, e)
    assert converged and flat == pytest.approx(grad ** 2 / (2 * spectrum.max() * loss))
    assert len(failed) == len(outcome) and all(o in f for o, f in zip(outcome, failed)), failed


def test_an_eigen_solve_that_did_not_converge_is_no_certificate():
    e = certify.eigen_ends(Quadratic(np.r_[-0.05, np.linspace(0.01, 1, 58), 2.0]))
    converged, _, failed = certify.verdict(2.3, 0.0, {**e, "arpack_converged": False})
    assert not converged and any("did not converge" in f for f in failed)
    converged, _, failed = certify.verdict(2.3, 0.0, {**e, "lambda_min_residual": 0.01})
    assert not converged and any("did not converge" in f for f in failed)


def test_the_stay_bound_follows_the_linearised_full_batch_descent():
    """The certificate's bound on full-batch updates within delta: exact for the linear model along lambda_min."""
    from bench.record.escape import Certificate

    c = Certificate(point="p", how="", examples=1, loss=2.3, grad_norm=1e-15, grad_norm_rounded=1e-8, flatness=0.0,
                    lambda_max=1.0, lambda_max_residual=0.0, lambda_min=-0.03, lambda_min_residual=0.0,
                    converged=True, thresholds={}, certified=True, digest64="", matvecs=0, seconds=0.0)
    eta, delta, g, k = 0.5, 0.1, 1e-8, 0.03
    t = c.stay_updates(eta, delta)
    e, steps = 0.0, 0
    while e <= delta:  # e_{t+1} = (1 + eta k) e_t + eta g along the negative direction, from e_0 = 0
        e, steps = (1 + eta * k) * e + eta * g, steps + 1
    assert steps - 1 <= t < steps
    assert c.stay_updates(eta, delta, rounded=False) > t
    assert c.stay_updates(2.5, delta) is None  # eta lambda_max >= 2: unstable, no bound


def test_one_minibatch_order_for_every_backend():
    first = order.pass_batches(10, 3, seed=5, index=0)
    assert first.shape == (3, 3) and len(set(first.ravel())) == 9  # 10 // 3 batches, the remainder dropped
    again = order.pass_batches(10, 3, seed=5, index=0)
    assert (first == again).all() and not (order.pass_batches(10, 3, seed=5, index=1) == first).all()
    stream = order.batches(10, 3, seed=5)
    got = [next(stream) for _ in range(6)]
    assert (np.stack(got[:3]) == first).all() and (np.stack(got[3:]) == order.pass_batches(10, 3, 5, 1)).all()
    with pytest.raises(ValueError, match="batch size 11 is not between 1 and the 10 examples"):
        order.pass_batches(10, 11, 0, 0)
