"""Instruments that tell a saddle point from a minimum, over the loss, gradient and Hessian-vector products a
backend's probe provides (bench/backends: `probe(model, x, y)`).

* The extreme eigenvalues of the probe set's Hessian, lambda_max and lambda_min, by Lanczos with full
  re-orthogonalisation (its Ritz values converge first at both ends of the spectrum).
* The full-batch gradient norm on the probe set (comparable across batch sizes, unlike the minibatch norm).
* The gradient noise scale B_simple = tr(Sigma) / |G|^2 with McCandlish et al.'s unbiased estimates
  from a small-batch and a large-batch gradient (arXiv:1812.06162, appendix A.1).
* Plateau detection on a recorded loss curve.

A plateau whose gradient is small and whose Hessian has a clearly negative eigenvalue
(lambda_min < -SADDLE_TOL * lambda_max) is a saddle; with lambda_min >= -SADDLE_TOL * lambda_max, a minimum
(up to the probe's resolution: Lanczos with a few dozen iterations finds the extreme eigenvalues of a
650k-dimensional Hessian well, not tiny ones near zero).
"""

from __future__ import annotations

import math
import time

import numpy as np

SADDLE_TOL = 1e-3  # lambda_min below -SADDLE_TOL * lambda_max counts as negative curvature
PROBE_SIZE = 1000  # training examples the probes use (fixed: the first PROBE_SIZE of the training subset)
LANCZOS_ITERS = 20
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


def lanczos(matvec, dim: int, iters: int = LANCZOS_ITERS, seed: int = 0) -> np.ndarray:
    """Ritz values (ascending) of a symmetric operator after `iters` Lanczos steps, fully re-orthogonalised."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(dim)
    q /= np.linalg.norm(q)
    basis = [q]
    alphas, betas = [], []
    for j in range(min(iters, dim)):
        w = matvec(basis[j])
        alpha = float(w @ basis[j])
        alphas.append(alpha)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0.0)
        for b in basis:  # full re-orthogonalisation: keeps the Ritz values from repeating
            w -= (w @ b) * b
        beta = float(np.linalg.norm(w))
        if j == min(iters, dim) - 1 or beta < 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    t = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    return np.linalg.eigvalsh(t)


def hessian_extremes(probe, iters: int = LANCZOS_ITERS, seed: int = 0) -> dict:
    """lambda_max, lambda_min of the probe-set Hessian, with the probe's size, iterations and cost."""
    started = time.perf_counter()
    ritz = lanczos(probe.hvp, probe.dim, iters, seed)
    return {"lambda_max": float(ritz[-1]), "lambda_min": float(ritz[0]), "lanczos_iters": int(len(ritz)),
            "probe_size": probe.size, "seconds": round(time.perf_counter() - started, 3)}


def classify(lambda_min: float | None, lambda_max: float | None, tol: float = SADDLE_TOL) -> str | None:
    """'saddle' (clearly negative curvature), 'minimum' (none beyond the tolerance), None without a probe."""
    if lambda_min is None or lambda_max is None or not (math.isfinite(lambda_min) and math.isfinite(lambda_max)):
        return None
    return "saddle" if lambda_min < -tol * abs(lambda_max) else "minimum"


def plateaus(curve, rel: float = 0.01, window: int | None = None, min_points: int = 5) -> list[tuple[int, int]]:
    """[(start_update, end_update)] where the loss stalls: the median loss of the `window` recorded points
    after a point differs from that of the `window` points before it by less than `rel` (relative) or by
    less than twice the standard error of that difference under the minibatch noise (estimated from the
    curve's point-to-point differences, robustly). `curve` is [[update, loss], ...]."""
    pts = [(u, v) for u, v in (curve or []) if v is not None and math.isfinite(v)]
    n = len(pts)
    if n < 2 * min_points:
        return []
    w = window or max(min_points, n // 20)
    if 2 * w > n:
        w = n // 2
    updates = [u for u, _ in pts]
    values = np.array([v for _, v in pts])
    flat = np.zeros(n, dtype=bool)
    for i in range(w, n - w + 1):
        before, after = values[i - w:i], values[i:i + w]
        a, b = np.median(before), np.median(after)
        diffs = np.diff(values[i - w:i + w])
        sigma = 1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2)  # per-point noise
        se = 1.2533 * sigma * math.sqrt(2 / w)  # standard error of a difference of two medians of w points
        if abs(b - a) < max(rel * abs(a), 2 * se):
            flat[i - w:i + w] = True
    out, start = [], None
    for i, f in enumerate(flat):
        if f and start is None:
            start = i
        if (not f or i == n - 1) and start is not None:
            end = i if f else i - 1
            if end - start + 1 >= min_points:
                out.append((updates[start], updates[end]))
            start = None
    return out

GRAD_SMALL = 0.1  # a plateau's full-gradient norm counts as small below this share of the run's largest


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
    """The run's probes, taken outside the timed epochs: at each epoch end the full-batch gradient norm and
    B_simple; the Hessian's extremes when the loss curve is on a plateau at that moment (once per plateau),
    and at the end of the run."""

    def __init__(self, probe, recorder=None, iters: int = LANCZOS_ITERS, seed: int = 0):
        self.probe = probe
        self.recorder, self.iters, self.seed = recorder, iters, seed
        # the curve keeps every stride-th update: a probe at update u belongs to a plateau that ends within
        # one stride before u
        self.stride = recorder.stride if recorder is not None else 1
        self.epochs: list[dict] = []  # {epoch, update, full_grad_norm, b_simple}
        self.hessians: list[dict] = []  # {update, lambda_max, lambda_min, ...}
        self.seconds = 0.0

    def _hessian(self, update: int) -> dict:
        h = {"update": update, **hessian_extremes(self.probe, self.iters, self.seed), "plateau_start": None}
        self.hessians.append(h)
        return h

    def epoch_end(self, epoch: int, update: int):
        started = time.perf_counter()
        full_norm = math.sqrt(self.probe.grad_norm_sq())
        ns = probe_noise_scale(self.probe, seed=self.seed + epoch) if self.probe.size > NOISE_SMALL_BATCH else None
        self.epochs.append({"epoch": epoch + 1, "update": update, "full_grad_norm": full_norm,
                            "b_simple": ns["b_simple"] if ns else None})
        if self.recorder is not None:
            loss_curve, _ = self.recorder.curves()
            segs = plateaus(loss_curve)
            on_plateau = segs and segs[-1][1] == loss_curve[-1][0]
            if on_plateau and not any(segs[-1][0] <= h["update"] for h in self.hessians):
                self._hessian(update)["plateau_start"] = segs[-1][0]
        self.seconds += time.perf_counter() - started

    def finish(self, update: int) -> dict:
        """The end-of-run Hessian probe (reused if the last epoch end already probed these weights)."""
        started = time.perf_counter()
        last = self.hessians[-1] if self.hessians and self.hessians[-1]["update"] == update else self._hessian(update)
        self.seconds += time.perf_counter() - started
        return last

    def plateau_records(self, loss_curve, grad_curve) -> list[dict]:
        """The record's `plateaus`: each stall of the loss curve with its loss, gradient and curvature."""
        out = []
        max_grad = max((e["full_grad_norm"] for e in self.epochs), default=None)
        for start, end in plateaus(loss_curve):
            inside = [v for u, v in loss_curve if start <= u <= end and v is not None]
            grads = [v for u, v in grad_curve if start <= u <= end and v is not None]
            h = next((h for h in self.hessians if start <= h["update"] <= end + self.stride), None)
            full = next((e["full_grad_norm"] for e in self.epochs if start <= e["update"] <= end + self.stride), None)
            small = full is not None and max_grad and full <= GRAD_SMALL * max_grad
            kind = classify(h["lambda_min"], h["lambda_max"]) if h else None
            if kind and full is not None and not small:
                kind = "slope"  # flat loss but a sizeable gradient: slow descent, not a critical point
            out.append({"start_update": int(start), "end_update": int(end),
                        "loss": float(np.median(inside)) if inside else None,
                        "grad_norm": float(np.median(grads)) if grads else None,
                        "full_grad_norm": full,
                        "lambda_min": h["lambda_min"] if h else None,
                        "lambda_max": h["lambda_max"] if h else None,
                        "probe_update": h["update"] if h else None,
                        "kind": kind})
        return out
