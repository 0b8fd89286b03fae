"""Certified start points for the escape experiment: the lecture network's loss, gradient and Hessian-vector
products in float64 (numpy, no framework), and the certificate that a point is a strict saddle of the training
loss on a given set of examples.

Why float64 and no framework: a point is certified critical when its gradient is at rounding level, and float32
rounding (1e-7 relative) is itself what the experiment must separate from minibatch noise; and the same code
certifies on every backend (a JAX-only GPU machine has no TensorFlow).

The certificate (thresholds stated once, here): on the whole training subset, in float64,
* flatness |g|^2 / (2 lambda_max L) below FLATNESS (1e-6: a stable gradient step would remove under a millionth of
  the loss; the classifier's `saddle` needs only 1e-3);
* both ends of the Hessian's spectrum converged: ARPACK (Lanczos, relative tolerance EIGEN_TOL) met its tolerance,
  and the Ritz vectors' float64 residuals |H v - rho v| are within RESIDUAL_TOL x lambda_max (an eigenvalue lies
  within the residual of each Rayleigh quotient rho);
* strict negative curvature: lambda_min + its residual < -SADDLE_TOL x lambda_max (SADDLE_TOL = 1e-3, the
  classifier's), so some eigenvalue is surely below the tolerance.
The Lanczos iterations may run on a backend's float32 Hessian-vector products (fast); the numbers certified are the
float64 gradient, loss, Rayleigh quotients and residuals at the Ritz vectors they produced.

Start points:
* `construct`: a strict saddle of the lecture network by construction. W2 = 0 and W3 = 0 make every layer-2 unit
  output the constant sigmoid(b2_j), so the logits are b3 for every input; b3 = the log class frequencies makes the
  softmax output the frequencies, so the output delta p - y averages to zero, W3's gradient (constant inputs times
  that average) vanishes, and every gradient below W3 carries W3 = 0: the gradient is exactly zero. The W2-W3
  coupling, sigmoid'(b2_j) times the covariance of the layer-1 features with p - y, gives eigenvalues of both signs.
  b2 is what decides whether anything can reach them: with b2 = 0 (the issue's construction) every layer-2 unit is
  identical, every gradient of every batch keeps them identical (a permutation symmetry of the parameters that
  gradient descent preserves), and the negative-curvature eigenspace, antisymmetric across the units, is reachable
  by rounding alone (tests/test_saddle_certified.py shows it). Here one unit is live (b2 = 0) and the others are off
  (b2 = OFF_BIAS, sigmoid' 0.105 instead of 0.25): the most negative eigenvalue belongs to the live unit alone, no
  symmetry ties it, and it stands apart from the rest of the spectrum.
* `search`: a critical point found from any point (a plateau of a real run) by Newton-MR (Roosta et al.): each
  step solves H p = -g by MINRES, which handles an indefinite, singular H, and is kept where it lowers |g|. Such
  searches can stall where g lies in H's near-kernel (gradient-flat regions, Frye et al., Neural Computation 2021);
  the certificate, not the search, decides what the point is.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from bench.curvature import SADDLE_TOL
from bench.record.escape import Certificate

FLATNESS = 1e-6
RESIDUAL_TOL = 1e-3
EIGEN_TOL = 1e-5
EIGEN_NCV = 40
EIGEN_MAXITER = 60
NEGATIVE = 3  # Ritz vectors at the bottom of the spectrum: they span the escape subspace
OFF_BIAS = -2.0  # layer-2 units other than the live one: sigmoid(-2) = 0.12, sigmoid'(-2) = 0.105

# weights in model.get_weights() order: W1 (784x500), b1, W2 (500x500), b2, W3 (500x10), b3
SHAPES = ((784, 500), (500,), (500, 500), (500,), (500, 10), (10,))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|, exact at 0 (0.5)


def flatten(weights) -> np.ndarray:
    """The weights (model.get_weights() order) as one float64 vector."""
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten(vector, shapes=SHAPES) -> list:
    """One float64 array per weight of `shapes` from a flat vector."""
    out, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(np.asarray(vector[start:start + n], dtype=np.float64).reshape(shape))
        start += n
    return out


class Mlp64:
    """The lecture MLP (sigmoid, sigmoid, softmax; mean categorical cross-entropy) at fixed weights on fixed
    examples, in float64: loss, gradient, and Hessian-vector products by the R-operator (Pearlmutter 1994), the
    forward pass cached so that each product costs two passes of matrix products."""

    def __init__(self, weights, x, y):
        self.w = [np.asarray(w, dtype=np.float64) for w in weights]
        if [tuple(w.shape) for w in self.w] != list(SHAPES):
            raise ValueError(f"weights of shapes {[tuple(w.shape) for w in self.w]}; the lecture MLP has {SHAPES}")
        self.x, self.y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.n = len(self.x)
        self.dim = sum(int(np.prod(s)) for s in SHAPES)
        w1, b1, w2, b2, w3, b3 = self.w
        self.a1 = _sigmoid(self.x @ w1 + b1)
        self.a2 = _sigmoid(self.a1 @ w2 + b2)
        z3 = self.a2 @ w3 + b3
        z3 = z3 - z3.max(axis=1, keepdims=True)
        e = np.exp(z3)
        self.p = e / e.sum(axis=1, keepdims=True)
        self.logp = z3 - np.log(e.sum(axis=1, keepdims=True))
        self.d3 = (self.p - self.y) / self.n
        self.da2 = self.d3 @ w3.T
        self.s2 = self.a2 * (1 - self.a2)
        self.d2 = self.da2 * self.s2
        self.da1 = self.d2 @ w2.T
        self.s1 = self.a1 * (1 - self.a1)
        self.d1 = self.da1 * self.s1

    @property
    def loss(self) -> float:
        return float(-(self.y * self.logp).sum() / self.n)

    def grad(self) -> np.ndarray:
        """The gradient of the mean loss, flat (model.get_weights() order)."""
        return np.concatenate([(self.x.T @ self.d1).ravel(), self.d1.sum(0), (self.a1.T @ self.d2).ravel(),
                               self.d2.sum(0), (self.a2.T @ self.d3).ravel(), self.d3.sum(0)])

    def hvp(self, vector) -> np.ndarray:
        """H v, H the Hessian of the mean loss w.r.t. all weights (the R-operator applied to the backward pass)."""
        v1, c1, v2, c2, v3, c3 = unflatten(np.asarray(vector, dtype=np.float64).ravel())
        _, _, w2, _, w3, _ = self.w
        ra1 = self.s1 * (self.x @ v1 + c1)
        ra2 = self.s2 * (ra1 @ w2 + self.a1 @ v2 + c2)
        rz3 = ra2 @ w3 + self.a2 @ v3 + c3
        rd3 = self.p * (rz3 - (self.p * rz3).sum(axis=1, keepdims=True)) / self.n
        rd2 = (rd3 @ w3.T + self.d3 @ v3.T) * self.s2 + self.da2 * (1 - 2 * self.a2) * ra2
        rd1 = (rd2 @ w2.T + self.d2 @ v2.T) * self.s1 + self.da1 * (1 - 2 * self.a1) * ra1
        return np.concatenate([(self.x.T @ rd1).ravel(), rd1.sum(0), (ra1.T @ self.d2 + self.a1.T @ rd2).ravel(),
                               rd2.sum(0), (ra2.T @ self.d3 + self.a2.T @ rd3).ravel(), rd3.sum(0)])

    def example_grad_sq(self) -> np.ndarray:
        """|g_i|^2 of every example's own loss gradient, without forming them: a dense layer's per-example
        gradient is the outer product of its input and its delta, so its squared norm is |a_i|^2 |d_i|^2
        (plus |d_i|^2 for the bias)."""
        n = self.n
        out = np.zeros(n)
        for inputs, delta in ((self.x, self.d1), (self.a1, self.d2), (self.a2, self.d3)):
            d = (n * delta) ** 2
            out += (inputs ** 2).sum(1) * d.sum(1) + d.sum(1)
        return out

    def noise_sq(self, batch: int) -> float:
        """E|g_B - g|^2 for a batch of `batch` examples drawn without replacement: tr(Sigma) / B (N - B) / (N - 1),
        tr(Sigma) the per-example gradients' variance about their mean g."""
        g = self.grad()
        trace = float(self.example_grad_sq().mean() - g @ g)
        return max(trace, 0.0) / batch * (self.n - batch) / max(self.n - 1, 1)


def digest64(weights) -> str:
    """sha256 of the weights' float64 bytes, in order."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype=np.float64).tobytes())
    return h.hexdigest()


def construct(initial, y, off_bias: float = OFF_BIAS, live: int = 1) -> list:
    """The constructed strict saddle (module docstring): the first layer as `initial` has it (model.get_weights()
    order), W2 = 0, W3 = 0, b2 = 0 on the first `live` units and `off_bias` on the others, b3 = the log class
    frequencies of the one-hot labels `y` (float64)."""
    freq = np.asarray(y, dtype=np.float64).mean(axis=0)
    if not (freq > 0).all():
        missing = [int(k) for k in np.flatnonzero(freq == 0)]
        raise ValueError(f"the training subset lacks class(es) {missing}: log frequencies need every class")
    b2 = np.full(SHAPES[3], float(off_bias))
    b2[:live] = 0.0
    return [np.asarray(initial[0], dtype=np.float64), np.asarray(initial[1], dtype=np.float64),
            np.zeros(SHAPES[2]), b2, np.zeros(SHAPES[4]), np.log(freq)]


def _ritz(hvp, dim: int, k: int, seed: int, shift: float | None = None) -> tuple:
    """The top `k` eigenpairs of H (or of shift I - H) by ARPACK, and whether it converged."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def op(v):
        hv = hvp(np.asarray(v, dtype=np.float64).ravel())
        return hv if shift is None else shift * np.asarray(v).ravel() - hv

    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        values, vectors = eigsh(LinearOperator((dim, dim), matvec=op, dtype=np.float64), k=k, which="LA", v0=v0,
                                ncv=EIGEN_NCV, tol=EIGEN_TOL, maxiter=EIGEN_MAXITER)
        ok = True
    except ArpackNoConvergence as exc:
        values, vectors, ok = exc.eigenvalues, exc.eigenvectors, False
        if not len(values):
            return np.full(1, math.nan), np.full((dim, 1), math.nan), False
    order = np.argsort(-values)
    return values[order], vectors[:, order], ok


def _rayleigh(f: "Mlp64", v) -> tuple[float, float]:
    """(v^T H v, |H v - rho v|) for a unit vector v, in float64."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    hv = f.hvp(v)
    rho = float(v @ hv)
    return rho, float(np.linalg.norm(hv - rho * v))


def eigen_ends(f: "Mlp64", hvp=None, seed: int = 0) -> dict:
    """lambda_max and the NEGATIVE smallest eigenpairs by ARPACK over `hvp` (default: float64), each Ritz pair
    checked in float64 (Rayleigh quotient and residual); the vectors as rows of `negative_vectors`."""
    calls = [0]
    base = hvp or f.hvp

    def counted(v):
        calls[0] += 1
        return base(v)

    top, top_vec, ok_top = _ritz(counted, f.dim, 1, seed)
    shift = float(top[0]) if math.isfinite(top[0]) else 0.0
    mu, vecs, ok_low = _ritz(counted, f.dim, NEGATIVE, seed, shift=shift)
    lmax, rmax = _rayleigh(f, top_vec[:, 0]) if ok_top or math.isfinite(top[0]) else (math.nan, math.nan)
    low = [_rayleigh(f, vecs[:, i]) for i in range(vecs.shape[1])]
    order = np.argsort([rho for rho, _ in low])
    return {"lambda_max": lmax, "lambda_max_residual": rmax, "lambda_min": low[order[0]][0],
            "lambda_min_residual": low[order[0]][1], "negative": [low[i][0] for i in order],
            "negative_vectors": np.stack([vecs[:, i] / np.linalg.norm(vecs[:, i]) for i in order]),
            "arpack_converged": bool(ok_top and ok_low), "matvecs": calls[0]}


def verdict(loss: float, grad_norm: float, e: dict) -> tuple[bool, float, list[str]]:
    """(converged, flatness, the conditions that failed) of a point's measurements (module docstring)."""
    lmax, lmin = e["lambda_max"], e["lambda_min"]
    converged = bool(e["arpack_converged"] and math.isfinite(lmax) and lmax > 0
                     and e["lambda_max_residual"] <= RESIDUAL_TOL * lmax
                     and e["lambda_min_residual"] <= RESIDUAL_TOL * lmax)
    flat = grad_norm ** 2 / (2 * lmax * loss) if lmax > 0 and loss > 0 else math.inf
    failed = []
    if not flat < FLATNESS:
        failed.append(f"flatness {flat:.3g} is not below {FLATNESS:g}")
    if not converged:
        failed.append(f"the eigen-solves did not converge (ARPACK {'met' if e['arpack_converged'] else 'missed'} "
                      f"its tolerance; residuals {e['lambda_max_residual']:.2g}, {e['lambda_min_residual']:.2g} "
                      f"against {RESIDUAL_TOL:g} x lambda_max)")
    if not (lmin + e["lambda_min_residual"] < -SADDLE_TOL * lmax):
        failed.append(f"no strict negative curvature: lambda_min {lmin:.3g} (+ residual "
                      f"{e['lambda_min_residual']:.2g}) is not below -{SADDLE_TOL:g} x lambda_max")
    return converged, flat, failed


def certify(weights, x, y, point: str, how: str, hvp=None, batches=(), search=(), seed: int = 0,
            started: float | None = None) -> tuple[Certificate, np.ndarray]:
    """The point's Certificate on (x, y), and its negative Ritz vectors (rows, unit length, float32). `hvp`: the
    Hessian-vector product the Lanczos iterations use (default: float64); `batches`: the minibatch sizes whose
    noise norm to record; `search`: a found point's search history (gradient norms)."""
    started = time.perf_counter() if started is None else started
    f = Mlp64(weights, x, y)
    g = f.grad()
    rounded = Mlp64([np.asarray(w, dtype=np.float32) for w in weights], x, y).grad()
    e = eigen_ends(f, hvp, seed)
    converged, flat, failed = verdict(f.loss, float(np.linalg.norm(g)), e)
    trace = float(f.example_grad_sq().mean() - g @ g)
    cert = Certificate(
        point=point, how=how, examples=f.n, loss=f.loss, grad_norm=float(np.linalg.norm(g)),
        grad_norm_rounded=float(np.linalg.norm(rounded)), flatness=float(flat), lambda_max=e["lambda_max"],
        lambda_max_residual=e["lambda_max_residual"], lambda_min=e["lambda_min"],
        lambda_min_residual=e["lambda_min_residual"], negative=[float(v) for v in e["negative"]],
        converged=converged, thresholds={"flatness": FLATNESS, "saddle_tol": SADDLE_TOL, "residual_tol": RESIDUAL_TOL},
        certified=not failed, failed=failed, digest64=digest64(weights), noise_trace=trace,
        noise_norm_by_batch={str(b): math.sqrt(f.noise_sq(b)) for b in batches if b < f.n},
        search=[float(v) for v in search], matvecs=e["matvecs"] + len(e["negative"]) + 1,
        seconds=round(time.perf_counter() - started, 3))
    return cert, e["negative_vectors"].astype(np.float32)


def search(weights, x, y, hvp_at, steps: int, minres_iters: int, floor: float = 1e-12) -> tuple[list, list[float]]:
    """Newton-MR from `weights` (module docstring): at most `steps` steps, each MINRES on H p = -g (`minres_iters`
    products of `hvp_at(flat weights)`, the Hessian-vector product there) and the first of p, p/2, p/4, p/10 that
    lowers the float64 gradient norm; stops early when none does or |g| < `floor`. Returns (weights, the gradient
    norm before each step and after the last)."""
    from scipy.sparse.linalg import LinearOperator, minres

    w = flatten(weights)
    g = Mlp64(unflatten(w), x, y).grad()
    history = [float(np.linalg.norm(g))]
    for _ in range(steps):
        if history[-1] < floor:
            break
        hvp = hvp_at(w)
        op = LinearOperator((len(w), len(w)), matvec=lambda v: hvp(np.asarray(v, dtype=np.float64).ravel()),
                            dtype=np.float64)
        p, _ = minres(op, -g, maxiter=minres_iters)
        for a in (1.0, 0.5, 0.25, 0.1):
            trial = Mlp64(unflatten(w + a * p), x, y).grad()
            if np.linalg.norm(trial) < history[-1]:
                w, g = w + a * p, trial
                history.append(float(np.linalg.norm(g)))
                break
        else:
            break
    return unflatten(w), history
