"""The escape experiment's stuck point: the lecture network (sigmoid, plain SGD) driven by full-batch descent
to a flat point with negative curvature, saved once so that every batch size starts from the same weights."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import backends, curvature
from bench.grid import EscapeProfile, RunConfig
from bench.record import Escape, Stuck


@dataclass
class Start:
    """Where every run of the escape experiment starts, and when it has escaped."""

    weights: list  # numpy arrays, in model.get_weights() order
    stuck: Stuck
    margin: float

    @property
    def target_loss(self) -> float:
        return self.stuck.loss * (1 - self.margin)


def digest(weights) -> str:
    """sha256 of the weights' bytes (float32, in order)."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


def _probe(model, x, y):
    n = min(curvature.PROBE_SIZE, len(x))
    return curvature.Prober(backends.current().probe(model, x[:n], y[:n]), noise=False)


def find(profile: EscapeProfile, data, check_every: int = 5) -> tuple:
    """Full-batch SGD at the profile's learning rate from the seed-0 initialisation, probed every `check_every`
    updates; while the probe set's loss has stalled (curvature.probe_plateaus) the Hessian is probed at those
    weights (every 4th probe point at most), and the first point the classifier calls a saddle is the stuck
    point. Without one within stuck_max_updates: the probed point with the most negative curvature relative to
    lambda_max (its label says what it is). Returns (its description, its weights)."""
    from bench.model import build_mlp, make_optimizer

    keras = backends.current().keras
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(0)
    x, y, _, _ = data.prepared(profile.train_size)
    model = build_mlp("sigmoid")
    model.compile(optimizer=make_optimizer("sgd", profile.learning_rate), loss="categorical_crossentropy",
                  jit_compile=True)
    prober = _probe(model, x, y)
    best, last_probe = None, None
    for done in range(0, profile.stuck_max_updates + 1, check_every):
        for _ in range(check_every if done else 0):
            model.train_on_batch(x, y)
        entry = prober.measure(0, done, noise=False)
        segs = curvature.probe_plateaus([(e["update"], e["full_loss"]) for e in prober.epochs])
        stalled = bool(segs) and segs[-1][1] == done
        final = done + check_every > profile.stuck_max_updates
        if not (stalled and (last_probe is None or done - last_probe >= 4 * check_every)) and not (final and best is None):
            continue
        h, last_probe = prober.hessian(entry), done
        kind = curvature.classify(h["grad_norm"], h["loss"], h["lambda_min"], h["lambda_max"], h["converged"])
        point = (kind == "saddle", -h["lambda_min"] / abs(h["lambda_max"]), done, h, model.get_weights(), kind)
        best = point if best is None or point[:2] > best[:2] else best
        if kind == "saddle":
            break
    _, _, updates, h, weights, kind = best
    how = (f"full-batch SGD (learning rate {profile.learning_rate:g}) from the seed-0 initialisation, probed every "
           f"{check_every} updates; " + ("stopped at the first stalled point classified a saddle" if kind == "saddle"
                                          else f"no stalled point was classified a saddle within "
                                               f"{profile.stuck_max_updates} updates: the probed point with the most "
                                               f"negative curvature ({kind})"))
    return Stuck(how=how, updates=updates, loss=h["loss"], grad_norm=h["grad_norm"], lambda_min=h["lambda_min"],
                 lambda_max=h["lambda_max"], flatness=curvature.flatness(h["grad_norm"], h["loss"], h["lambda_max"]),
                 kind=kind, digest=digest(weights)), weights


def start(profile: EscapeProfile, data, folder: str | Path) -> Start:
    """The profile's stuck point: read from `folder` (beside the run store) when it was found before, so that a
    resumed experiment starts from the very same weights; found and saved otherwise."""
    path = Path(folder) / f"{profile.name}-stuck-point.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            stuck = Stuck(**json.loads(str(f["stuck"])))
            weights = [f[f"w{i}"] for i in range(int(f["count"]))]
        if digest(weights) == stuck.digest:
            return Start(weights, stuck, profile.margin)
    stuck, weights = find(profile, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, stuck=json.dumps(asdict(stuck)), count=len(weights), **{f"w{i}": w for i, w in enumerate(weights)})
    return Start(weights, stuck, profile.margin)


def measure(cfg: RunConfig, begin: Start, start_digest: str, prober, exit_hessian: dict | None) -> Escape:
    """The run's Escape entry: the first probe point below the target, if any, and where the run stopped."""
    points = [e for e in prober.epochs if e["epoch"] > 0]
    below = next((e for e in points if e["full_loss"] < begin.target_loss), None)
    arm = "fairness" if cfg.learning_rate is not None else cfg.budget
    last = prober.epochs[-1] if prober.epochs else None
    return Escape(arm=arm, start_digest=start_digest, start_loss=begin.stuck.loss, target_loss=begin.target_loss,
                  margin=begin.margin, escaped=below is not None,
                  updates_to_escape=below["update"] if below else None,
                  examples_to_escape=below["update"] * cfg.batch_size if below else None,
                  budget_updates=cfg.expected_updates, check_every=cfg.steps_per_epoch,
                  exit_loss=last["full_loss"] if last else None,
                  exit_lambda_min=exit_hessian["lambda_min"] if exit_hessian else None,
                  exit_lambda_max=exit_hessian["lambda_max"] if exit_hessian else None,
                  deterministic=cfg.full_batch, stuck=begin.stuck)


def stops(entry: dict, begin: Start | None) -> bool:
    """Whether a run from `begin` has escaped at this probe point (training stops there)."""
    return begin is not None and entry is not None and math.isfinite(entry["full_loss"]) \
        and entry["full_loss"] < begin.target_loss
