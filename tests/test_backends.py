"""The same benchmark on Keras' JAX backend (`KERAS_BACKEND=jax`), as used on GPU machines that have JAX but no
TensorFlow: a real smoke sweep on real MNIST, its records and machine identity, and the options JAX cannot
honour refused as usage errors."""

import json
import sys

import pytest

from bench import grid

from .helpers import follows_contract, run, sweep_cmd

pytest.importorskip("jax", reason="JAX not installed (pip install -e '.[dev]' brings it)")
JAX = {"KERAS_BACKEND": "jax"}


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, real_mnist):
    out = tmp_path_factory.mktemp("jax")
    proc = run(sweep_cmd("--bench-profile", "smoke", "--optimizers", "sgd,adam", "--batch-sizes", "10,full",
                         "--benchmark-json", str(out / "jax.json"), store=out / "runs.jsonl", mnist=real_mnist),
               env=JAX)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "jax.json").read_text()), out


@pytest.mark.slow
def test_jax_records_follow_the_contract(jax_run):
    doc, out = jax_run
    cells = grid.parse_sweep("smoke", optimizers="sgd,adam", batch_sizes="10,full").cells()
    recs = {b["name"]: follows_contract(b["extra_info"]) for b in doc["benchmarks"]}
    assert set(recs) == {f"test_train[{c.test_id}]" for c in cells}
    for cell in cells:
        rec = recs[f"test_train[{cell.test_id}]"]
        assert rec.status == "ok", rec.error
        assert rec.updates == cell.expected_updates
        assert rec.dispatch.backend == "jax" and rec.dispatch.jit_compile is True and rec.dispatch.driver == "keras_fit"
        assert rec.dispatch.threads is None and rec.dispatch.device == "CPU"
        # the curves come from the JAX train step's device buffers (every update's loss at smoke's size)
        assert rec.curve_stride >= 1 and rec.grad_norm_stride % rec.curve_stride == 0
        assert len(rec.loss_curve) == -(-rec.updates // rec.curve_stride)
        assert [u for u, _ in rec.loss_curve] == list(range(1, rec.updates + 1, rec.curve_stride))
        assert len(rec.grad_norm_curve) == -(-rec.updates // rec.grad_norm_stride)
        assert all(v > 0 for _, v in rec.loss_curve + rec.grad_norm_curve)
        if cell.repeat == 1:  # the probes follow the trajectory: the first repeat of each cell takes them
            assert rec.probes.enabled is True and rec.hessian is not None and rec.hessian.lambda_max > 0
            assert len(rec.full_grad_norm_by_epoch) == cell.epochs and len(rec.noise_scale_by_epoch) == cell.epochs
        else:
            assert rec.probes.enabled is False and rec.hessian is None
    assert recs["test_train[adam-bs10-seed0-r1]"].test_accuracy > 0.5  # 10 classes: chance is 0.1
    assert len((out / "runs.jsonl").read_text().splitlines()) == len(cells)


@pytest.mark.slow
def test_jax_machine_identity_and_report(jax_run, tmp_path):
    doc, out = jax_run
    info = doc["machine_info"]
    assert info["keras_backend"] == "jax" and isinstance(info["jax"], str) and info["tensorflow"] is None
    assert info["backend_gpus"] == [] or info["gpu"]["available"]
    proc = run([sys.executable, "-m", "analysis", "report", str(out / "jax.json"), "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert "jax" in (tmp_path / "REPORT.md").read_text()


def test_options_jax_cannot_honour_are_usage_errors():
    proc = run(sweep_cmd("--collect-only", "-q", "--bench-profile", "smoke", "--threads", "1"), env=JAX, timeout=300)
    assert proc.returncode == 4
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--threads needs the tensorflow backend" in errors[0], proc.stderr


def test_the_jax_backend_says_what_it_cannot_do():
    from bench.backends import Unsupported
    from bench.backends import jax as backend

    with pytest.raises(Unsupported, match="--deterministic needs the tensorflow backend"):
        backend.enable_determinism()
    with pytest.raises(Unsupported, match="--threads needs the tensorflow backend"):
        backend.set_threads(2)
    assert backend.NO_PROBES is None and backend.NO_CURVES is None and backend.threads() is None
    assert backend.DEVICE_LOOP  # --dispatch fast: the stateless train step in a jitted epoch (fit_device_loop)


FAST_VS_DEFAULT = """
import json, sys
from bench import data, grid, train
d = data.read_npz(sys.argv[1])
out = {}
for mode in ("fast", "default"):
    r = train.run(grid.RunConfig("smoke", "adam", 7, False, "sigmoid", 0, 500, 4, dispatch=mode, probes=False), d)
    out[mode] = {"updates": r.updates, "driver": r.dispatch.driver, "acc": r.test_accuracy, "status": r.status,
                 "epochs": len(r.epoch_times_s), "loss": r.train_loss_by_epoch}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_jax_fast_keeps_training_on_the_device_with_fits_updates(real_mnist):
    """Batch 7 on 500 examples: 71 full batches and a partial one of 3 per epoch, as model.fit makes them."""
    proc = run([sys.executable, "-c", FAST_VS_DEFAULT, real_mnist.source], env=JAX)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    fast, default = res["fast"], res["default"]
    assert fast["status"] == default["status"] == "ok"
    assert fast["updates"] == default["updates"] == 4 * 72 and fast["epochs"] == 4
    assert (fast["driver"], default["driver"]) == ("device_loop", "keras_fit")
    assert fast["acc"] > 0.5 and abs(fast["acc"] - default["acc"]) < 0.1  # the same training within seed noise
    assert fast["loss"][-1] < fast["loss"][0]  # the epochs' logs come back from the device


ONE_RECORD = """
import json, sys
from bench import data, grid, train
d = data.read_npz(sys.argv[1])
r = train.run(grid.RunConfig("smoke", "adam", 50, False, "sigmoid", 0, 500, 2, dispatch=sys.argv[2]), d,
              max_curve_points=4)
print(json.dumps(r.to_dict()))
"""


def _shape(value):
    """A record's structure: its keys and the kinds of its values (numbers as one kind), not the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", _shape(value[0]) if value else None]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return type(value).__name__
    return "number"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "fast"])
def test_jax_records_have_the_tensorflow_records_fields_and_types(real_mnist, mode):
    """One cell (Adam, batch 50, 500 examples, 2 epochs: 20 updates) on each backend: the same fields with the same
    kinds of values, curves and probes included, and the same curve layout."""
    out = {}
    for backend in ("tensorflow", "jax"):
        proc = run([sys.executable, "-c", ONE_RECORD, real_mnist.source, mode], env={"KERAS_BACKEND": backend})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    tf_, jx = out["tensorflow"], out["jax"]
    assert jx["status"] == tf_["status"] == "ok"
    differ = {k for k in tf_ if _shape(tf_[k]) != _shape(jx.get(k))} | (set(jx) - set(tf_))
    # threads: TensorFlow's thread pools; JAX has no such setting (None), as the contract allows
    assert differ == {"dispatch"} and _shape({**jx["dispatch"], "threads": None}) == _shape({**tf_["dispatch"], "threads": None})
    for key in ("curve_stride", "grad_norm_stride", "updates"):
        assert jx[key] == tf_[key], key
    assert [u for u, _ in jx["loss_curve"]] == [u for u, _ in tf_["loss_curve"]] == [1, 6, 11, 16]
    assert [u for u, _ in jx["grad_norm_curve"]] == [u for u, _ in tf_["grad_norm_curve"]] == [1, 6, 11, 16]
    assert jx["hessian"]["lambda_max"] > 0 and len(jx["noise_scale_by_epoch"]) == 2


ALIGNED = """
import json, sys
from bench import data, grid, train
from bench.backends import jax as backend
d = data.read_npz(sys.argv[1])
out = {}
for aligned in (True, False):
    backend._ALIGN_NORM_STEPS = aligned
    r = train.run(grid.RunConfig("smoke", "adam", 7, False, "sigmoid", 0, 500, 4, dispatch="fast", probes=False), d,
                  max_curve_points=60)
    out[str(aligned)] = {"norm": r.grad_norm_curve, "loss": r.loss_curve, "stride": r.grad_norm_stride}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_device_loop_takes_the_gradient_norm_at_the_same_updates_without_a_per_step_conditional(real_mnist):
    """Batch 7 on 500 examples, 4 epochs of 72 updates, a norm every 10th update: the norm updates fall at a
    different place in every epoch. The loop in blocks aligned to them records the same norms at the same updates
    as a loop that decides at every step."""
    proc = run([sys.executable, "-c", ALIGNED, real_mnist.source], env=JAX)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    aligned, per_step = res["True"], res["False"]
    assert aligned["stride"] == per_step["stride"] == 10
    assert [u for u, _ in aligned["norm"]] == [u for u, _ in per_step["norm"]] == list(range(1, 289, 10))
    assert [v for _, v in aligned["norm"]] == pytest.approx([v for _, v in per_step["norm"]], rel=1e-4)
    assert [v for _, v in aligned["loss"]] == pytest.approx([v for _, v in per_step["loss"]], rel=1e-4)


SAME_WEIGHTS = """
import json, sys
import numpy as np
from bench import curvature
from bench.backends import current
from bench.model import build_mlp
keras = current().keras
with np.load(sys.argv[1]) as f:
    weights, x, y = [f[f"w{i}"] for i in range(6)], f["x"], f["y"]
model = build_mlp(keras, "sigmoid")
model.set_weights(weights)
probe = current().probe(model, x, y)
loss, sq = probe.loss_and_grad_norm_sq()
h = curvature.hessian_extremes(probe)
print(json.dumps({"loss": loss, "grad_norm": sq ** 0.5, "lambda_max": h["lambda_max"], "lambda_min": h["lambda_min"],
                  "converged": h["converged"], "dim": probe.dim}))
"""


@pytest.mark.slow
def test_the_same_weights_give_the_same_curvature_on_both_backends(tmp_path, small_mnist):
    """One set of weights and examples, loaded into Keras on TensorFlow and on JAX: the same loss, gradient norm
    and lambda_max (within 1 %): the probes measure the network, not the framework."""
    import numpy as np

    x, y, _, _ = small_mnist.prepared(256)
    rng = np.random.default_rng(0)
    shapes = [(784, 500), (500,), (500, 500), (500,), (500, 10), (10,)]
    weights = [rng.normal(0, 0.05, s).astype("float32") for s in shapes]
    np.savez(tmp_path / "w.npz", x=x, y=y, **{f"w{i}": w for i, w in enumerate(weights)})
    out = {}
    for backend in ("tensorflow", "jax"):
        proc = run([sys.executable, "-c", SAME_WEIGHTS, str(tmp_path / "w.npz")], env={"KERAS_BACKEND": backend})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    tf_, jx = out["tensorflow"], out["jax"]
    assert tf_["dim"] == jx["dim"] == 784 * 500 + 500 + 500 * 500 + 500 + 500 * 10 + 10
    assert jx["loss"] == pytest.approx(tf_["loss"], rel=1e-4)
    assert jx["grad_norm"] == pytest.approx(tf_["grad_norm"], rel=1e-3)
    assert tf_["converged"] and jx["converged"]
    assert jx["lambda_max"] == pytest.approx(tf_["lambda_max"], rel=0.01)


@pytest.mark.slow
def test_the_gpu_script_dry_runs_on_the_cpu(tmp_path, real_mnist):
    """scripts/gpu_lecture.sh with a tiny profile and no GPU required: a store, the sweeps' benchmark JSON, the
    dispatch table and the environment land in $OUT."""
    from .helpers import ROOT

    out = tmp_path / "out"
    env = {"PROFILE": "smoke", "REQUIRE_GPU": "0", "OPTIMIZERS": "sgd", "BATCHES": "10,full",
           "OVERHEAD_BATCHES": "10", "OVERHEAD_TRAIN": "500", "OUT": str(out), "MNIST_NPZ": real_mnist.source,
           "PYTHON": sys.executable}
    proc = run(["bash", str(ROOT / "scripts" / "gpu_lecture.sh")], env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "jax" in (out / "environment.txt").read_text()
    fast = json.loads((out / "lecture-fast.json").read_text())
    assert {b["extra_info"]["dispatch"]["driver"] for b in fast["benchmarks"]} == {"device_loop"}
    assert len(fast["benchmarks"]) == 2 * 3  # 2 cells x 3 repeats: the suite's timing protocol
    default = json.loads((out / "lecture-default-2ep.json").read_text())
    assert {b["extra_info"]["epochs"] for b in default["benchmarks"]} == {2} and len(default["benchmarks"]) == 4
    assert len((out / "gpu-runs.jsonl").read_text().splitlines()) == 10
    calibration = json.loads((out / "calibration.json").read_text())
    assert {p: c["matmul_precision"] for p, c in calibration.items()} == {"tf32": "fp32", "fp32": "fp32"}  # a CPU
    assert all(c["matmul_gflops"] > 0 for c in calibration.values())
    assert {b["extra_info"]["dispatch"]["precision"] for b in fast["benchmarks"]} == {"tf32"}
    (row,) = json.loads((out / "overhead.json").read_text())["dispatch"]
    assert row["batch_size"] == 10 and row["fast_over_floor"] > 0
