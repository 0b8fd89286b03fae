"""Instruments that tell a saddle point from a minimum, over the loss, gradient and Hessian-vector products a
backend's probe provides (bench/backends: `probe(model, x, y)`).

* The extreme eigenvalues of the probe set's Hessian, lambda_max and lambda_min, by ARPACK's Lanczos
  (scipy.sparse.linalg.eigsh over Hessian-vector products), with whether it converged.
* The probe set's loss and full-batch gradient norm (comparable across batch sizes, unlike a minibatch's).
* The gradient noise scale B_simple = tr(Sigma) / |G|^2 with McCandlish et al.'s unbiased estimates
  from a small-batch and a large-batch gradient (arXiv:1812.06162, appendix A.1).
* Plateaus of the probe set's loss at the probe points, and a classifier of the points on them.

The classifier reads the gradient, loss and Hessian extremes measured at the same weights: a point where a
gradient step of the largest stable size would still remove more than STEEP of the loss is on a slope; one
where it would remove less than FLAT is a critical point, a saddle when lambda_min < -SADDLE_TOL lambda_max and
a minimum otherwise; anything between, or an eigen-solve that did not converge, is undetermined.
"""

from __future__ import annotations

import math
import time

import numpy as np

SADDLE_TOL = 1e-3  # lambda_min below -SADDLE_TOL * lambda_max counts as negative curvature
# flatness (|g|^2 / (2 lambda_max L)) below FLAT: a critical point (a stable step removes < 0.1 % of the loss);
# above STEEP: a slope (> 1 %); between: undetermined
FLAT = 1e-3
STEEP = 1e-2
UNDETERMINED = "undetermined"
EIGEN_TOL = 1e-3  # ARPACK's relative tolerance on the extreme eigenvalues
EIGEN_NCV = 20  # Lanczos vectors ARPACK keeps
EIGEN_MAXITER = 10  # ARPACK restarts before it gives up (per solve; at most ~200 Hessian-vector products each)
PROBE_SIZE = 1000  # training examples the probes use (fixed: the first PROBE_SIZE of the training subset)
NOISE_SMALL_BATCH = 32
NOISE_SMALL_BATCHES = 8


def noise_scale(b_small: int, sq_small: float, b_big: int, sq_big: float) -> dict:
    """McCandlish et al.'s unbiased estimates from E|G_small|^2 and |G_big|^2 (batch sizes b_small < b_big):
    |G|^2 = (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small),
    tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big), and B_simple = tr(Sigma) / |G|^2
    (None when the |G|^2 estimate is not positive: the gradient is lost in the noise)."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small} and {b_big}")
    g2 = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace = (sq_small - sq_big) / (1 / b_small - 1 / b_big)
    return {"grad_sq": g2, "trace_sigma": trace, "b_simple": trace / g2 if g2 > 0 and trace > 0 else None,
            "b_small": b_small, "b_big": b_big}


def _top(op, dim: int, v0) -> tuple[float, bool]:
    """The largest eigenvalue of a symmetric operator by ARPACK's Lanczos, and whether it converged."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    lin = LinearOperator((dim, dim), matvec=op, dtype=np.float64)
    try:
        return float(eigsh(lin, k=1, which="LA", v0=v0, ncv=EIGEN_NCV, tol=EIGEN_TOL, maxiter=EIGEN_MAXITER,
                           return_eigenvectors=False)[0]), True
    except ArpackNoConvergence as exc:
        return (float(max(exc.eigenvalues)) if len(exc.eigenvalues) else math.nan), False


def hessian_extremes(probe, seed: int = 0) -> dict:
    """lambda_max and lambda_min of the probe-set Hessian H by ARPACK's Lanczos (scipy.sparse.linalg.eigsh) over
    the probe's Hessian-vector products: lambda_max as the top of H, then lambda_min as lambda_max - mu, mu the
    top of lambda_max I - H. The shift makes ARPACK's relative tolerance an absolute one of about
    EIGEN_TOL x (lambda_max - lambda_min) on lambda_min, the scale on which a negative eigenvalue counts
    (SADDLE_TOL); solving for the bottom of H directly would ask for relative accuracy on an eigenvalue near zero
    inside a dense cluster, which ARPACK rarely reaches. `converged` says whether both solves met the tolerance
    within their budget (if not, the values are ARPACK's best estimates and no verdict rests on them)."""
    started, calls = time.perf_counter(), [0]

    def hvp(v):
        calls[0] += 1
        return probe.hvp(np.asarray(v, dtype=np.float64).ravel())

    v0 = np.random.default_rng(seed).standard_normal(probe.dim)
    lam_max, ok_max = _top(hvp, probe.dim, v0)
    mu, ok_min = (_top(lambda v: lam_max * np.asarray(v).ravel() - hvp(v), probe.dim, v0)
                  if math.isfinite(lam_max) else (math.nan, False))
    return {"lambda_max": lam_max, "lambda_min": lam_max - mu, "converged": ok_max and ok_min, "matvecs": calls[0],
            "probe_size": probe.size, "seconds": round(time.perf_counter() - started, 3)}


def flatness(grad_norm: float, loss: float, lambda_max: float) -> float | None:
    """|g|^2 / (2 lambda_max L): the share of the loss a gradient step of the largest stable size (1/lambda_max)
    would remove, to first order. Scale-free: near a critical point it is tiny, on a slope it is not."""
    if None in (grad_norm, loss, lambda_max) or not lambda_max > 0 or not loss > 0:
        return None
    return grad_norm ** 2 / (2 * lambda_max * loss)


def classify(grad_norm, loss, lambda_min, lambda_max, converged: bool = True) -> str:
    """'slope' (a stable step would still remove more than STEEP of the loss), 'saddle' (flat: below FLAT, and
    lambda_min < -SADDLE_TOL lambda_max), 'minimum' (flat, no curvature below that), or 'undetermined' (between
    FLAT and STEEP, an eigen-solve that did not converge, or a missing number). Thresholds validated on points
    with known answers (tests/test_curvature.py: a strict saddle, a converged convex problem, a steep point)."""
    values = (grad_norm, loss, lambda_min, lambda_max)
    if not converged or any(v is None or not math.isfinite(v) for v in values):
        return UNDETERMINED
    r = flatness(grad_norm, loss, lambda_max)
    if r is None:
        return UNDETERMINED
    if r > STEEP:
        return "slope"
    if r > FLAT:
        return UNDETERMINED
    return "saddle" if lambda_min < -SADDLE_TOL * lambda_max else "minimum"


def probe_plateaus(points, rel: float = 0.01, min_points: int = 3) -> list[tuple[int, int]]:
    """[(start_update, end_update)] where the probe set's full-batch loss stalls: at least `min_points`
    consecutive probe points, each within `rel` (relative) of the one before. `points` is [(update, loss)] at
    the probe points: the real loss, not a minibatch's, so batch-1 noise is no plateau."""
    pts = [(u, v) for u, v in points if v is not None and math.isfinite(v)]
    out, start = [], None
    for i in range(1, len(pts) + 1):
        flat = i < len(pts) and abs(pts[i][1] - pts[i - 1][1]) <= rel * abs(pts[i - 1][1])
        if flat and start is None:
            start = i - 1
        if not flat and start is not None:
            if i - start >= min_points:
                out.append((pts[start][0], pts[i - 1][0]))
            start = None
    return out


def probe_noise_scale(probe, small: int = NOISE_SMALL_BATCH, batches: int = NOISE_SMALL_BATCHES, seed: int = 0) -> dict:
    """B_simple from `batches` small-batch gradients (size `small`, drawn from the probe set) and the probe
    set's full gradient."""
    rng = np.random.default_rng(seed)
    sq_big = probe.grad_norm_sq()
    sq_small = []
    for _ in range(batches):
        idx = rng.choice(probe.size, size=small, replace=False)
        sq_small.append(probe.grad_norm_sq(*probe.subset(idx)))
    return noise_scale(small, float(np.mean(sq_small)), probe.size, sq_big)


class Prober:
    """The run's probes, taken outside the timed epochs: at each epoch end the probe set's loss and gradient norm
    (and B_simple, unless `noise` is off); when that loss has stalled (probe_plateaus) the Hessian's extremes at
    those same weights, once per plateau; and at the end of the run."""

    def __init__(self, probe, seed: int = 0, noise: bool = True):
        self.probe, self.seed, self.noise = probe, seed, noise
        self.epochs: list[dict] = []  # {epoch, update, full_loss, full_grad_norm, b_simple}
        self.hessians: list[dict] = []  # {update, lambda_max, lambda_min, grad_norm, loss, ...}
        self.seconds = 0.0

    def hessian(self, entry: dict) -> dict:
        """The Hessian's extremes at the weights of `entry`, with the gradient and loss measured at them."""
        h = {"update": entry["update"], **hessian_extremes(self.probe, self.seed), "plateau_start": None,
             "grad_norm": entry["full_grad_norm"], "loss": entry["full_loss"]}
        self.hessians.append(h)
        return h

    def measure(self, epoch: int, update: int, noise: bool = True) -> dict:
        """The probe set's loss and gradient norm at the current weights (and B_simple), kept as a probe point
        (`epoch` 0: not an epoch end)."""
        loss, sq = self.probe.loss_and_grad_norm_sq()
        noise = noise and self.noise and self.probe.size > NOISE_SMALL_BATCH
        ns = probe_noise_scale(self.probe, seed=self.seed + epoch) if noise else None
        entry = {"epoch": epoch + 1, "update": update, "full_loss": loss, "full_grad_norm": math.sqrt(sq),
                 "b_simple": ns["b_simple"] if ns else None}
        self.epochs.append(entry)
        return entry

    def epoch_end(self, epoch: int, update: int) -> dict:
        started = time.perf_counter()
        entry = self.measure(epoch, update)
        segs = probe_plateaus([(e["update"], e["full_loss"]) for e in self.epochs])
        if segs and segs[-1][1] == update and not any(segs[-1][0] <= h["update"] for h in self.hessians):
            self.hessian(entry)["plateau_start"] = segs[-1][0]
        self.seconds += time.perf_counter() - started
        return entry

    def finish(self, update: int) -> dict:
        """The end-of-run Hessian probe at the last probe point's weights (reused if already probed there)."""
        started = time.perf_counter()
        entry = (self.epochs[-1] if self.epochs and self.epochs[-1]["update"] == update
                 else self.measure(-1, update, noise=False))
        last = self.hessians[-1] if self.hessians and self.hessians[-1]["update"] == update else self.hessian(entry)
        self.seconds += time.perf_counter() - started
        return last

    def plateau_records(self, grad_curve) -> list[dict]:
        """The record's `plateaus`: each stall of the probe-set loss, classified from the Hessian probe taken on it
        and the gradient and loss at that probe's own weights (no Hessian probe on it: kind None)."""
        out = []
        points = [(e["update"], e["full_loss"]) for e in self.epochs]
        for start, end in probe_plateaus(points):
            losses = [v for u, v in points if start <= u <= end]
            grads = [v for u, v in grad_curve if start <= u <= end and v is not None]
            h = next((h for h in self.hessians if start <= h["update"] <= end), None)
            kind = (classify(h["grad_norm"], h["loss"], h["lambda_min"], h["lambda_max"], h["converged"])
                    if h else None)
            out.append({"start_update": int(start), "end_update": int(end), "loss": float(np.median(losses)),
                        "grad_norm": float(np.median(grads)) if grads else None,
                        "full_grad_norm": h["grad_norm"] if h else None,
                        "lambda_min": h["lambda_min"] if h else None, "lambda_max": h["lambda_max"] if h else None,
                        "probe_update": h["update"] if h else None,
                        "flatness": flatness(h["grad_norm"], h["loss"], h["lambda_max"]) if h else None,
                        "kind": kind})
        return out
