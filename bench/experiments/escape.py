"""The escape experiment (`pytest bench --experiment escape`, bench/test_escape.py): claim 3 tested at certified
strict saddles of the lecture network (sigmoid, plain SGD), every arm at the same learning rates for the same
number of updates.

Start points (bench/certify.py), each certified in float64 on the whole training subset (flatness below 1e-6,
both spectrum ends converged, lambda_min + its residual < -1e-3 lambda_max):
* `constructed`: W2 = W3 = 0, b3 = log class frequencies, one live layer-2 unit (b2 = 0) and the others off
  (b2 = -2), the first layer at the seed-0 initialisation: the gradient is exactly zero;
* `found`: full-batch SGD (the lecture's rate, 0.1) from the seed-0 initialisation until the training subset's
  loss stalls (bench.curvature.probe_plateaus on checks every 5 updates), then a Newton-MR critical-point search.
A point that fails its certificate is still run and reported, and no verdict is drawn from it.

Arms from each point, at every rate of the point's grid (each below 2 / lambda_max there: full-batch descent is
stable at every rate, so a loss spike is never mistaken for an escape), the same number of updates for every
minibatch arm (the same number of examples is read from the same runs: each record keeps its examples to escape, and
a common examples budget would give the full batch budget / N updates, a budget effect, not noise):
* `minibatch`: batch sizes 1 to 1,000, seeds for the minibatch order;
* `full`: the full batch from the exact point in float32: rounding (of the point and of every step) is its only
  perturbation; its seed orders the examples inside the batch, which changes only that rounding. Its horizon is
  the profile's, chosen to be at least 10x the slowest minibatch arm's median escape (the analysis checks it);
* `isotropic`: the full batch plus isotropic Gaussian noise whose norm matches the batch-B minibatch gradient
  noise there (sqrt(E|g_B - g|^2), sampling without replacement): does any noise escape, or minibatch noise in
  particular? The noise of K updates is added at once at every check (and at the start): N(0, s^2 I) with
  d s^2 = K (eta |noise|)^2, the variance K steps of such noise would add.

Escape, checked every K updates on the whole training subset: the projection of w - w* on the span of the
certificate's NEGATIVE lowest Ritz vectors exceeds DELTA (0.1) and the loss is MARGIN (1 %) below the point's. The
loss is the binding criterion: at a critical point the loss rises along every direction of positive curvature, so
near it the loss falls a margin below only by moving along negative curvature; the geometric criterion guards
against a loss decrease that bypasses the point's lowest directions. DELTA is small because the negative eigenspace
is larger than the few Ritz vectors computed (each of the constructed point's 499 off units couples W2 and W3 too,
with sigmoid'(-2) in place of 1/4, and minibatch noise excites those directions: measured runs fell 10 % below the
point's loss while their projection on the three lowest vectors was 0.35); it is still five orders of magnitude
above where float32 rounding starts the full batch (about 1e-6). A run stops at the first check where both hold;
the record keeps the first check of each (the geometric and the loss time) and every check's (update, loss,
projection). A run that never escapes is censored at its budget: the analysis reads survival data
(analysis/escape.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import backends, certify, curvature
from bench.experiments.base import Context, Experiment, Option, Plan
from bench.grid import BadOption, RunConfig, parse_seeds
from bench.record import Escape, Target
from bench.record.escape import Certificate

NAME = "escape"
POINTS = ("constructed", "found")
DELTA = 0.1
MARGIN = 0.01
LECTURE_RATE = 0.1  # the descent to the found point's plateau


@dataclass(frozen=True)
class Rate:
    """One rate of a point's grid: checks every `check_every` updates, `checks` of them for the minibatch arms
    (their budget: check_every x checks updates) and `full_checks` for the full batch and the isotropic arm."""

    rate: float
    check_every: int
    checks: int
    full_checks: int

    @property
    def budget(self) -> int:
        return self.check_every * self.checks

    @property
    def horizon(self) -> int:
        return self.check_every * self.full_checks


@dataclass(frozen=True)
class EscapeProfile:
    """Plain SGD from each certified point, every arm at every rate of the point's grid."""

    name: str
    train_size: int
    batch_sizes: tuple  # the minibatch arms
    seeds: tuple  # the minibatch arms' (the order of the minibatches)
    full_seeds: tuple  # the full batch's (the order of the examples inside the batch: rounding only)
    iso_batch: int  # the isotropic arm matches this batch size's gradient noise
    iso_seeds: tuple
    grids: dict  # point -> tuple of Rate
    search_steps: int  # Newton-MR steps of the found point's search
    search_minres: int  # MINRES iterations per step
    plateau_max_updates: int  # the found point's descent: at most this many full-batch updates
    about: str
    target: Target = Target(value=0.90, split="validation")

    @property
    def points(self) -> tuple:
        return tuple(self.grids)


PROFILES = {
    "test": EscapeProfile(
        "escape-test", 300, (10, 100), (0, 1), (0,), 10, (0,),
        {"constructed": (Rate(1.5, 20, 20, 24),), "found": (Rate(0.05, 25, 4, 4),)},
        search_steps=3, search_minres=20, plateau_max_updates=30, about="the tests: a few minutes"),
    "cpu": EscapeProfile(
        "escape", 1000, (1, 10, 100), tuple(range(12)), (0, 1, 2), 10, (0, 1, 2),
        {"constructed": (Rate(0.75, 40, 25, 250), Rate(1.5, 20, 25, 200)),
         "found": (Rate(0.06, 100, 30, 200), Rate(0.09, 70, 30, 200))},
        search_steps=12, search_minres=60, plateau_max_updates=100,
        about="1,000 examples (the full batch), batch 1 to 100, 12 seeds per minibatch arm, 3 per full-batch arm, 2 "
              "rates per point: about 45 minutes on 2 CPU cores"),
    "gpu": EscapeProfile(
        "escape-gpu", 2000, (1, 10, 100, 1000), tuple(range(20)), tuple(range(5)), 10, tuple(range(10)),
        {"constructed": (Rate(0.5, 50, 40, 400), Rate(1.0, 25, 40, 400), Rate(1.5, 20, 40, 400)),
         "found": (Rate(0.03, 300, 40, 200), Rate(0.06, 150, 40, 200), Rate(0.09, 100, 40, 200))},
        search_steps=30, search_minres=100, plateau_max_updates=200,
        about="2,000 examples, batch 1 to 1,000, 20 seeds, 3 rates per point: a GPU"),
}


def _checked(p: EscapeProfile) -> EscapeProfile:
    if p.iso_batch not in p.batch_sizes:
        raise ValueError(f"profile {p.name}: the isotropic arm's batch {p.iso_batch} is none of its batch sizes "
                         f"{p.batch_sizes} (its noise norm is measured for those)")
    return p


def profile(name: str | None) -> EscapeProfile:
    name = "cpu" if name is None else name
    if name not in PROFILES:
        raise BadOption(f"--escape-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return _checked(PROFILES[name])


def budget_label(point: str, iso_batch: int | None = None) -> str:
    """The cell's `budget` (in its test id: '-same<budget>'): every arm holds the updates equal; the label also names
    the start point and, for the isotropic arm, the batch size whose noise it matches."""
    return f"updates-{point}" + (f"-iso{iso_batch}" if iso_batch else "")


def parse_label(budget: str) -> tuple[str, int | None]:
    """(point, iso batch or None) of a cell's budget label."""
    parts = budget.split("-")
    return parts[1], int(parts[2][3:]) if len(parts) > 2 else None


def cells(name: str | None = None, seeds=None) -> list[RunConfig]:
    """Per start point and rate: the minibatch arms (each seed), the isotropic arm, the full batch. The profiles'
    budgets come from measured escape times (cpu: a seed-0 run of every arm, 2-core CPU): the minibatch budget about
    twice the slowest arm's escape, the full batch's horizon at least 10x it (precondition 3 of the verdict), so a
    full batch that stays runs long enough to count; every run stops at its escape."""
    p = profile(name)
    seeds = p.seeds if seeds is None else parse_seeds(seeds)
    n, out = p.train_size, []

    def cell(size, full, seed, r: Rate, label, checks):
        return RunConfig(p.name, "sgd", size, full, "sigmoid", seed, n, checks, dispatch="fast", probes=False,
                         budget=label, total_updates=r.check_every * checks, learning_rate=r.rate, experiment=NAME,
                         target=p.target, evaluate_test_each_epoch=False)

    for point, rates in p.grids.items():
        for r in rates:
            out += [cell(b, False, s, r, budget_label(point), r.checks) for b in p.batch_sizes for s in seeds]
            out += [cell(n, True, s, r, budget_label(point, p.iso_batch), r.full_checks) for s in p.iso_seeds]
            out += [cell(n, True, s, r, budget_label(point), r.full_checks) for s in p.full_seeds]
    return out


def digest(weights) -> str:
    """sha256 of the weights' bytes (float32, in order): what a run loads."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


@dataclass
class Start:
    """A start point: its float64 weights, certificate, escape subspace, and the training subset it holds for."""

    point: str
    w64: np.ndarray  # flat float64
    certificate: Certificate
    vectors: np.ndarray  # NEGATIVE x dim, float32, unit rows: the escape subspace
    x: np.ndarray
    y: np.ndarray
    weights32: list = field(init=False)

    def __post_init__(self):
        self.weights32 = [w.astype(np.float32) for w in certify.unflatten(self.w64)]

    @property
    def target_loss(self) -> float:
        return self.certificate.loss * (1 - MARGIN)

    def projection(self, flat) -> float:
        """|P (w - w*)|: the norm of the deviation's projection on the escape subspace."""
        return float(np.linalg.norm(self.vectors @ (np.asarray(flat, dtype=np.float64) - self.w64).astype(np.float32)))


def _probe_hvp(x, y):
    """(model, hvp_at): a fresh lecture model and the backend's Hessian-vector product on (x, y) at given flat
    weights (float32: the Lanczos iterations' speed; the certificate's numbers are float64)."""
    model, _ = backends.fresh_model("sigmoid", "sgd", LECTURE_RATE, seed=0, metrics=())
    probe = backends.current().probe(model, x, y)

    def hvp_at(flat):
        model.set_weights([w.astype(np.float32) for w in certify.unflatten(flat)])
        return probe.hvp

    return model, probe, hvp_at


def _blas():
    """All cores for the float64 algebra of a certificate (the backend holds NumPy's BLAS to one thread so that it
    leaves the cores to training; nothing trains while a point is certified)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=os.cpu_count() or 1, user_api="blas")


def _plateau(p: EscapeProfile, x, y, check_every: int = 5) -> tuple[list, str]:
    """Full-batch SGD at the lecture's rate from the seed-0 initialisation, checked every `check_every` updates,
    until the training subset's loss stalls (curvature.probe_plateaus) or plateau_max_updates: (weights, how)."""
    model, _ = backends.fresh_model("sigmoid", "sgd", LECTURE_RATE, seed=0, compile_args={"jit_compile": True},
                                    metrics=())
    probe = backends.current().probe(model, x, y)
    points = []
    for done in range(0, p.plateau_max_updates + 1, check_every):
        for _ in range(check_every if done else 0):
            model.train_on_batch(x, y)
        points.append((done, probe.loss_and_grad_norm_sq()[0]))
        segs = curvature.probe_plateaus(points)
        if segs and segs[-1][1] == done:
            return model.get_weights(), (f"full-batch SGD (rate {LECTURE_RATE:g}) from the seed-0 initialisation "
                                         f"stalled at update {done} (loss {points[-1][1]:.4f})")
    return model.get_weights(), (f"full-batch SGD (rate {LECTURE_RATE:g}) from the seed-0 initialisation did not "
                                 f"stall within {p.plateau_max_updates} updates; its last point")


def make(point: str, p: EscapeProfile, x, y) -> Start:
    """The start point `point`, made (constructed, or found by a search from a plateau) and certified."""
    started = time.perf_counter()
    history, plateau = (), None
    if point == "found":  # first: each fresh model clears Keras' session
        plateau, where = _plateau(p, x, y)
    model, probe, hvp_at = _probe_hvp(x, y)
    if point == "constructed":
        weights = certify.construct(model.get_weights(), y)
        how = (f"constructed: W2 = W3 = 0, b3 = the log class frequencies of the {len(x):,} examples, layer-2 unit 0 "
               f"live (b2 = 0) and the others off (b2 = {certify.OFF_BIAS:g}), the first layer at the seed-0 "
               "initialisation")
    else:
        with _blas():
            weights, history = certify.search(plateau, x, y, hvp_at, p.search_steps, p.search_minres)
        how = (f"found: {where}; then {len(history) - 1} Newton-MR steps ({p.search_minres} MINRES iterations each) "
               f"took the float64 gradient norm from {history[0]:.3g} to {history[-1]:.3g}")
    hvp_at(certify.flatten(weights))
    with _blas():
        cert, vectors = certify.certify(weights, x, y, point, how, hvp=probe.hvp, batches=p.batch_sizes,
                                        search=history, started=started)
    return Start(point, certify.flatten(weights), cert, vectors, x, y)


def _path(folder, p: EscapeProfile, point: str) -> Path:
    return Path(folder) / f"{p.name}-{point}-start.npz"


def recipe(point: str, p: EscapeProfile) -> str:
    """Everything that makes the point (and its certificate): a saved point made another way is made again."""
    made = {"point": point, "train_size": p.train_size, "off_bias": certify.OFF_BIAS, "lecture_rate": LECTURE_RATE,
            "certificate": [certify.FLATNESS, certify.RESIDUAL_TOL, certify.EIGEN_TOL, certify.NEGATIVE]}
    if point == "found":
        made.update(search=[p.search_steps, p.search_minres], plateau_max_updates=p.plateau_max_updates)
    return json.dumps(made, sort_keys=True)


def start(point: str, p: EscapeProfile, data, folder: str | Path) -> Start:
    """The profile's start point `point`: read from `folder` (beside the run store) when it was made before by the same
    recipe, so that a resumed experiment starts from the very same weights; made, certified and saved otherwise."""
    x, y, _, _ = data.prepared(p.train_size)
    path = _path(folder, p, point)
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            cert = Certificate(**json.loads(str(f["certificate"])))
            begin = Start(point, f["w64"], cert, f["vectors"], x, y)
            same = "recipe" in f.files and str(f["recipe"]) == recipe(point, p)
        if same and certify.digest64(certify.unflatten(begin.w64)) == cert.digest64:
            return begin
    begin = make(point, p, x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, certificate=json.dumps(asdict(begin.certificate)), w64=begin.w64, vectors=begin.vectors,
             recipe=recipe(point, p))
    return begin


def _loss(model, x, y) -> float:
    """The mean categorical cross-entropy of the model on (x, y), from its predictions (float64 on the host)."""
    p = np.asarray(model.predict_on_batch(x), dtype=np.float64)
    return float(-np.log(np.clip(p[np.arange(len(y)), np.argmax(y, axis=1)], 1e-7, 1.0)).mean())


class Watch:
    """One run's checks: at each, the loss on the training subset and the projection on the escape subspace; stops
    the run at the first check where both criteria hold. The isotropic arm adds its noise here (after the check)."""

    def __init__(self, begin: Start, cell: RunConfig, noise_norm: float | None):
        self.begin, self.cell, self.noise_norm = begin, cell, noise_norm
        self.trajectory: list[list[float]] = []
        self.geometric = self.loss = self.escaped = None

    def kick(self, flat, index: int):
        """flat + the isotropic arm's noise of one check interval (N(0, s^2 I), d s^2 = K (eta |noise|)^2)."""
        rng = np.random.default_rng([self.cell.seed, 7919, index])
        scale = math.sqrt(self.cell.steps_per_epoch / len(flat)) * self.cell.learning_rate * self.noise_norm
        return np.asarray(flat, dtype=np.float64) + scale * rng.standard_normal(len(flat))

    def start_weights(self) -> list:
        if self.noise_norm is None:
            return self.begin.weights32
        return [w.astype(np.float32) for w in certify.unflatten(self.kick(self.begin.w64, 0))]

    def __call__(self, check) -> bool:
        flat = certify.flatten(check.model.get_weights())
        loss, proj = _loss(check.model, self.begin.x, self.begin.y), self.begin.projection(flat)
        self.trajectory.append([int(check.update), loss, proj])
        if self.geometric is None and proj > DELTA:
            self.geometric = int(check.update)
        if self.loss is None and loss < self.begin.target_loss:
            self.loss = int(check.update)
        if proj > DELTA and loss < self.begin.target_loss:
            self.escaped = int(check.update)
            return True
        if self.noise_norm is not None and math.isfinite(loss):
            check.model.set_weights([w.astype(np.float32) for w in certify.unflatten(self.kick(flat, check.epoch))])
        return False

    def record(self, cfg: RunConfig, iso_batch: int | None) -> Escape:
        b, c = self.begin, self.begin.certificate
        arm = "isotropic" if iso_batch else "full" if cfg.full_batch else "minibatch"
        return Escape(arm=arm, start_digest=digest(b.weights32), start_loss=c.loss, target_loss=b.target_loss,
                      margin=MARGIN, escaped=self.escaped is not None, updates_to_escape=self.escaped,
                      examples_to_escape=self.escaped * cfg.batch_size if self.escaped else None,
                      budget_updates=cfg.expected_updates, check_every=cfg.steps_per_epoch,
                      exit_loss=self.trajectory[-1][1] if self.trajectory else None, deterministic=cfg.full_batch,
                      point=b.point, certificate=c, delta=DELTA, geometric_update=self.geometric,
                      loss_update=self.loss, trajectory=self.trajectory, noise_batch=iso_batch,
                      noise_norm=self.noise_norm)


class EscapeExperiment(Experiment):
    name = NAME
    about = "claim 3 at certified saddles: every batch size and the full batch at the same rates and updates"
    module = "test_escape.py"
    options = (Option("--escape-profile", "--experiment escape's grid: " + ", ".join(
        f"{k} ({p.about})" for k, p in PROFILES.items()) + " (default: cpu)"),)
    reads = ("--seeds",)
    fixed_budget = True

    def __init__(self):
        self.starts: dict[str, Start] = {}

    def cells(self, given: dict) -> list[RunConfig]:
        return cells(given.get("--escape-profile"), given.get("--seeds"))

    def begin(self, ctx: Context) -> list[str]:
        """Every start point: made and certified once, kept beside the run store."""
        p = profile(ctx.option("--escape-profile"))
        lines = []
        for point in p.points:
            s = self.starts[point] = start(point, p, ctx.mnist, Path(ctx.store).parent)
            c = s.certificate
            limit = 2 / c.lambda_max if c.lambda_max > 0 else math.inf
            rates = ", ".join(f"{r.rate:g}" for r in p.grids[point])
            lines.append(f"escape: {point} point {digest(s.weights32)[:12]}: "
                         + ("certified strict saddle" if c.certified else "NOT certified (" + "; ".join(c.failed) + ")")
                         + f"; loss {c.loss:.6g}, |g| {c.grad_norm:.2g}, lambda_min {c.lambda_min:.3g}, lambda_max "
                         f"{c.lambda_max:.3g} (2/lambda_max {limit:.3g}; rates {rates}"
                         + ("" if all(r.rate < limit for r in p.grids[point]) else ": NOT all below it") + ")")
        return lines

    def plan(self, cell: RunConfig, ctx: Context) -> Plan:
        point, iso = parse_label(cell.budget)
        begin = self.starts[point]
        noise = begin.certificate.noise_norm_by_batch.get(str(iso)) if iso else None
        watch = Watch(begin, cell, noise)

        def part(cfg, setup, hessian) -> dict:
            return {"escape": watch.record(cfg, iso)}

        return Plan(cell, weights=watch.start_weights(), stop=watch, part=part, probe_noise=False, validate=False,
                    no_probes_reason="the escape experiment measures its own loss and projection at every check")


EXPERIMENT = EscapeExperiment()
