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
        # the curve recorder is part of the TensorFlow train step: on JAX no curves, and the record says so
        assert rec.loss_curve == [] and rec.curve_stride is None and rec.grad_norm_stride is None
        assert rec.probes.enabled is False and rec.probes.requested is True and "tensorflow" in rec.probes.reason
    assert recs["test_train[adam-bs10-seed0]"].test_accuracy > 0.5  # 10 classes: chance is 0.1
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
    assert backend.NO_PROBES and backend.NO_CURVES and backend.threads() is None
