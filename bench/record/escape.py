"""The escape experiment's part of a record (bench/experiments/escape.py): the certified start point every run of
an arm starts from, and what each run measured from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.record.fields import doc as _f


@dataclass(kw_only=True)
class Stuck:
    """How the escape experiment's stuck point was reached (records of schema 2 and 3; today's start points carry a
    Certificate instead)."""

    how: str = _f("full-batch descent to a flat point with negative curvature, and where it stopped")
    updates: int = _f("full-batch SGD updates from the seed-0 initialisation to the stuck point")
    loss: float = _f("the probe set's loss there")
    grad_norm: float = _f("the probe set's gradient L2 norm there")
    lambda_min: float | None = _f("smallest Hessian eigenvalue there")
    lambda_max: float | None = _f("largest Hessian eigenvalue there")
    flatness: float | None = _f("|g|^2 / (2 lambda_max L) there")
    kind: str = _f("the classifier's label of the point (bench.curvature.classify)")
    digest: str = _f("sha256 of its weights: every run of the experiment starts from them")


@dataclass(kw_only=True)
class Certificate:
    """That a start point is a strict saddle of the training loss, checked in float64 on the whole training subset
    (bench/certify.py): gradient, flatness, both ends of the Hessian's spectrum with their residuals."""

    point: str = _f("the start point's name (constructed, found)")
    how: str = _f("how the point was made or found")
    examples: int = _f("training examples the certificate (and every run from the point) uses: the whole subset")
    loss: float = _f("the mean loss there (float64)")
    grad_norm: float = _f("the gradient's L2 norm there (float64)")
    grad_norm_rounded: float = _f("the gradient's L2 norm, in float64, at the point rounded to float32 (what the "
                                  "runs load): rounding's own push")
    flatness: float = _f("|g|^2 / (2 lambda_max L)")
    lambda_max: float = _f("the Hessian's largest eigenvalue: the Rayleigh quotient of ARPACK's Ritz vector, float64")
    lambda_max_residual: float = _f("|H v - lambda v| of that Ritz vector (float64): an eigenvalue lies within it")
    lambda_min: float = _f("the Hessian's smallest eigenvalue, likewise")
    lambda_min_residual: float = _f("|H v - lambda v| of the smallest Ritz vector (float64)")
    negative: list[float] = _f("the smallest Ritz values: their vectors span the escape subspace", factory=list)
    converged: bool = _f("ARPACK converged at both ends and both residuals are within residual_tol x lambda_max")
    thresholds: dict = _f("{flatness, saddle_tol, residual_tol}: certified when flatness < flatness, converged, and "
                          "lambda_min + its residual < -saddle_tol x lambda_max")
    certified: bool = _f("every condition holds: a strict saddle")
    failed: list[str] = _f("the conditions that failed (empty when certified)", factory=list)
    digest64: str = _f("sha256 of the float64 weights certified")
    noise_trace: float | None = _f("tr(Sigma): the per-example gradients' variance about their mean there", None)
    noise_norm_by_batch: dict = _f("{batch size: sqrt(E|g_B - g|^2)}: the minibatch gradient noise there, sampling "
                                   "without replacement", factory=dict)
    search: list[float] = _f("a found point: the float64 gradient norm after each step of the critical-point search "
                             "(empty for a constructed point)", factory=list)
    matvecs: int = _f("Hessian-vector products the eigen-solves used")
    seconds: float = _f("seconds the certificate (and any search) took")

    def stay_updates(self, learning_rate: float, delta: float, rounded: bool = True) -> float | None:
        """Full-batch updates that provably stay within `delta` of the point under its quadratic model: the
        deviation e_t of gradient descent from a point with gradient g obeys |e_t| <= |g| ((1 + eta |lmin|)^t - 1)
        / |lmin| while eta lambda_max < 2, so it stays below delta for t < ln(1 + delta |lmin| / |g|) /
        ln(1 + eta |lmin|). `rounded`: from the float32 rounding of the point (what the runs load)."""
        g = self.grad_norm_rounded if rounded else self.grad_norm
        k = abs(self.lambda_min)
        if not (k > 0 and learning_rate > 0) or not 0 < learning_rate * self.lambda_max < 2:
            return None
        if g <= 0:
            return math.inf
        return math.log1p(delta * k / g) / math.log1p(learning_rate * k)


@dataclass(kw_only=True)
class Escape:
    """One run of the escape experiment: from the start point, when did it leave along the negative-curvature
    subspace and when did the loss fall by the margin?"""

    arm: str = _f("minibatch, full (the full batch: float32 rounding its only perturbation) or isotropic (the full "
                  "batch plus isotropic noise of the minibatch noise's norm); schema 2: examples, updates, fairness")
    start_digest: str = _f("sha256 of the start point's float32 weights (the isotropic arm adds its first noise to "
                           "them)")
    start_loss: float = _f("the training subset's loss at the start point (float64)")
    target_loss: float = _f("the loss criterion: below start_loss x (1 - margin)")
    margin: float = _f("the escape margin on the loss")
    escaped: bool = _f("both criteria held at one check within the budget")
    updates_to_escape: int | None = _f("updates to the first check where both held (None: censored at "
                                       "budget_updates); resolution: check_every")
    examples_to_escape: int | None = _f("examples to that check")
    budget_updates: int = _f("the run's update budget: an escape time is censored there")
    check_every: int = _f("updates between checks")
    exit_loss: float | None = _f("the loss where the run stopped")
    exit_lambda_min: float | None = _f("smallest Hessian eigenvalue where the run stopped (schema 2)", None)
    exit_lambda_max: float | None = _f("largest Hessian eigenvalue where the run stopped (schema 2)", None)
    deterministic: bool = _f("no minibatch order: the full batch (its seed orders the examples inside the batch, "
                             "which only changes float32 rounding)")
    stuck: Stuck | None = _f("schema 2: how the (uncertified) stuck point was reached", None)
    point: str | None = _f("the start point's name (None: schema 2, one uncertified stuck point)", None)
    certificate: Certificate | None = _f("the start point's certificate (None: schema 2)", None)
    delta: float | None = _f("the geometric criterion: |P (w - w*)| above delta, P the projection on the span of "
                             "the certificate's negative Ritz vectors", None)
    geometric_update: int | None = _f("updates to the first check past delta (None: not within the budget)", None)
    loss_update: int | None = _f("updates to the first check below target_loss (None: not within the budget)", None)
    trajectory: list[list[float]] = _f("[[update, loss, |P (w - w*)|], ...] at every check", factory=list)
    noise_batch: int | None = _f("isotropic arm: the batch size whose gradient noise norm the perturbation matches",
                                 None)
    noise_norm: float | None = _f("isotropic arm: that noise norm (gradient units); each check adds N(0, s^2 I) "
                                  "with d s^2 = check_every x (learning rate x noise_norm)^2", None)


def upgrade_v3_to_v4(escape: dict) -> None:
    """The part as schema 4 has it, from a schema-3 (or upgraded schema-2) record's `escape` (changed in place): one
    uncertified stuck point, escape by the loss alone."""
    escape.setdefault("point", None)
    escape.setdefault("certificate", None)
    escape.setdefault("delta", None)
    escape.setdefault("geometric_update", None)
    escape.setdefault("loss_update", escape.get("updates_to_escape"))
    escape.setdefault("trajectory", [])
    escape.setdefault("noise_batch", None)
    escape.setdefault("noise_norm", None)
