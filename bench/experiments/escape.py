"""The escape experiment (`pytest bench --experiment escape`, bench/test_escape.py): the lecture network (sigmoid,
plain SGD) from one stuck point, every batch size for the same number of examples and for the same number of
updates, until the probe set's loss falls a margin below the stuck point's; and the full batch at other learning
rates. The stuck point: full-batch descent to a flat point with negative curvature, saved once so that every
batch size starts from the same weights."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import backends, curvature
from bench.experiments.base import Context, Experiment, Option, Plan
from bench.grid import FULL, BadOption, RunConfig, parse_seeds
from bench.record import Escape, Stuck, Target

NAME = "escape"


@dataclass(frozen=True)
class EscapeProfile:
    """Plain SGD from one stuck point of the lecture network, every batch size, for the same number of examples
    and for the same number of updates, probed at `checks` equal steps until the probe set's loss falls `margin`
    below the stuck point's; and the full batch at other learning rates (the fairness arm)."""

    name: str
    train_size: int
    batch_sizes: tuple
    seeds: tuple  # the minibatch order's; the full batch is deterministic and runs once (seed 0)
    examples: int  # the same-examples budget
    updates: int  # the same-updates budget
    checks: int  # probe points per run: the escape's resolution is budget / checks updates
    learning_rate: float  # SGD's in both arms (the lecture's 0.1)
    fairness_rates: tuple  # the full batch's other learning rates
    margin: float  # escaped: probe-set loss below (1 - margin) x the stuck point's
    stuck_max_updates: int  # full-batch descent to a stuck point: at most this many updates
    about: str
    target: Target = Target(value=0.90, split="validation")


PROFILES = {
    "test": EscapeProfile("escape-test", 300, (1, 10, FULL), (0, 1), 300, 40, 4, 0.1, (1.0,), 0.05, 40,
                          "the tests: seconds"),
    "cpu": EscapeProfile("escape", 10_000, (1, 10, 100, 1000, FULL), (0, 1, 2, 3, 4), 10_000, 200, 20, 0.1,
                         (0.3, 1.0, 3.0), 0.1, 200, "10,000 examples, 5 seeds: about 15 minutes on 2 CPU cores"),
    "gpu": EscapeProfile("escape-lecture", 50_000, (1, 10, 100, 1000, 10000, FULL), tuple(range(10)), 100_000,
                         2_000, 50, 0.1, (0.3, 1.0, 3.0, 10.0), 0.1, 500, "the lecture's 50,000 examples, 10 seeds"),
}


def profile(name: str | None) -> EscapeProfile:
    name = "cpu" if name is None else name
    if name not in PROFILES:
        raise BadOption(f"--escape-profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def cells(name: str | None = None, seeds=None) -> list[RunConfig]:
    """The escape experiment's grid: each batch size for the same examples and for the same updates (the full
    batch once: it is deterministic), and the full batch at each fairness learning rate."""
    p = profile(name)
    n = p.train_size
    seeds = p.seeds if seeds is None else parse_seeds(seeds)
    out = []

    def cell(size, full, seed, budget, total, lr=None):
        checks = math.gcd(total, p.checks)  # equal steps of whole updates
        return RunConfig(p.name, "sgd", size, full, "sigmoid", seed, n, checks, dispatch="fast", budget=budget,
                         total_updates=total, learning_rate=lr, experiment=NAME, target=p.target)

    for bs in p.batch_sizes:
        size, full = (n, True) if bs == FULL else (bs, False)
        for seed in (seeds[:1] if full else seeds):
            out.append(cell(size, full, seed, "examples", max(1, p.examples // size)))
            out.append(cell(size, full, seed, "updates", p.updates))
    out += [cell(n, True, seeds[0], "updates", p.updates, lr) for lr in p.fairness_rates]
    return out


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


def find(p: EscapeProfile, data, check_every: int = 5) -> tuple:
    """Full-batch SGD at the profile's learning rate from the seed-0 initialisation, probed every `check_every`
    updates; while the probe set's loss has stalled (curvature.probe_plateaus) the Hessian is probed at those
    weights (every 4th probe point at most), and the first point the classifier calls a saddle is the stuck
    point. Without one within stuck_max_updates: the probed point with the most negative curvature relative to
    lambda_max (its label says what it is). Returns (its description, its weights)."""
    model, _ = backends.fresh_model("sigmoid", "sgd", p.learning_rate, seed=0, compile_args={"jit_compile": True},
                                    metrics=())
    x, y, _, _ = data.prepared(p.train_size)
    prober = _probe(model, x, y)
    best, last_probe = None, None
    for done in range(0, p.stuck_max_updates + 1, check_every):
        for _ in range(check_every if done else 0):
            model.train_on_batch(x, y)
        entry = prober.measure(0, done, noise=False)
        segs = curvature.probe_plateaus([(e["update"], e["full_loss"]) for e in prober.epochs])
        stalled = bool(segs) and segs[-1][1] == done
        final = done + check_every > p.stuck_max_updates
        if not (stalled and (last_probe is None or done - last_probe >= 4 * check_every)) and not (final and best is None):
            continue
        h, last_probe = prober.hessian(entry), done
        kind = curvature.classify(h["grad_norm"], h["loss"], h["lambda_min"], h["lambda_max"], h["converged"])
        point = (kind == "saddle", -h["lambda_min"] / abs(h["lambda_max"]), done, h, model.get_weights(), kind)
        best = point if best is None or point[:2] > best[:2] else best
        if kind == "saddle":
            break
    _, _, updates, h, weights, kind = best
    how = (f"full-batch SGD (learning rate {p.learning_rate:g}) from the seed-0 initialisation, probed every "
           f"{check_every} updates; " + ("stopped at the first stalled point classified a saddle" if kind == "saddle"
                                          else f"no stalled point was classified a saddle within "
                                               f"{p.stuck_max_updates} updates: the probed point with the most "
                                               f"negative curvature ({kind})"))
    return Stuck(how=how, updates=updates, loss=h["loss"], grad_norm=h["grad_norm"], lambda_min=h["lambda_min"],
                 lambda_max=h["lambda_max"], flatness=curvature.flatness(h["grad_norm"], h["loss"], h["lambda_max"]),
                 kind=kind, digest=digest(weights)), weights


def start(p: EscapeProfile, data, folder: str | Path) -> Start:
    """The profile's stuck point: read from `folder` (beside the run store) when it was found before, so that a
    resumed experiment starts from the very same weights; found and saved otherwise."""
    path = Path(folder) / f"{p.name}-stuck-point.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            stuck = Stuck(**json.loads(str(f["stuck"])))
            weights = [f[f"w{i}"] for i in range(int(f["count"]))]
        if digest(weights) == stuck.digest:
            return Start(weights, stuck, p.margin)
    stuck, weights = find(p, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, stuck=json.dumps(asdict(stuck)), count=len(weights), **{f"w{i}": w for i, w in enumerate(weights)})
    return Start(weights, stuck, p.margin)


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


class EscapeExperiment(Experiment):
    name = NAME
    about = "claim 3: every batch size from one stuck point, for the same examples and the same updates"
    module = "test_escape.py"
    options = (Option("--escape-profile", "--experiment escape's grid: " + ", ".join(
        f"{k} ({p.about})" for k, p in PROFILES.items()) + " (default: cpu)"),)
    reads = ("--seeds",)
    fixed_budget = True

    def __init__(self):
        self.start: Start | None = None

    def cells(self, given: dict) -> list[RunConfig]:
        return cells(given.get("--escape-profile"), given.get("--seeds"))

    def begin(self, ctx: Context) -> list[str]:
        """The stuck point every run starts from: found once, kept beside the run store."""
        self.start = start(profile(ctx.option("--escape-profile")), ctx.mnist, Path(ctx.store).parent)
        s = self.start.stuck
        return [f"escape: every run starts from the stuck point {s.digest[:12]} ({s.kind}, loss {s.loss:.4g} after "
                f"{s.updates} full-batch updates); escaped below {self.start.target_loss:.4g}"]

    def plan(self, cell: RunConfig, ctx: Context) -> Plan:
        begin = self.start

        def part(cfg, setup, hessian) -> dict:
            if setup.prober is None:
                return {}
            return {"escape": measure(cfg, begin, digest(setup.start_weights), setup.prober, hessian)}

        return Plan(cell, weights=begin.weights, stop=lambda check: stops(check.probe, begin), part=part,
                    probe_noise=False)


EXPERIMENT = EscapeExperiment()
