"""The same benchmark on Keras' JAX backend (`KERAS_BACKEND=jax`), as used on GPU machines that have JAX but
no TensorFlow: a real smoke sweep on real MNIST, its records and machine identity, and the options JAX
cannot honour refused as usage errors."""

import json
import os
import subprocess
import sys

import pytest

from .test_train import RECORD_KEYS, plain_types

pytest.importorskip("jax", reason="JAX not installed (pip install -e '.[dev]' brings it)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args, tmp_path, timeout=900):
    env = dict(os.environ, KERAS_BACKEND="jax")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "bench", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, real_mnist):
    out = tmp_path_factory.mktemp("jax")
    proc = bench("--bench-profile", "smoke", "--optimizers", "sgd,adam", "--batch-sizes", "10,full",
                 "--mnist", real_mnist.source, "--benchmark-json", str(out / "jax.json"),
                 "--bench-store", str(out / "runs.jsonl"), tmp_path=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "jax.json").read_text()), out


def test_jax_records_follow_the_contract(jax_run):
    doc, out = jax_run
    recs = {(b["extra_info"]["optimizer"], b["extra_info"]["batch_size"]): b["extra_info"] for b in doc["benchmarks"]}
    assert set(recs) == {("sgd", 10), ("sgd", 1000), ("adam", 10), ("adam", 1000)}
    for rec in recs.values():
        assert rec["status"] == "ok", rec["error"]
        for key, kind in RECORD_KEYS.items():
            if key not in ("loss_curve", "grad_norm_curve", "curve_stride", "grad_norm_stride"):
                assert isinstance(rec[key], kind), key
        assert plain_types(rec)
        assert rec["updates"] == 2 * -(-1000 // rec["batch_size"])
        assert rec["dispatch"]["backend"] == "jax" and rec["dispatch"]["jit_compile"] is True
        assert rec["dispatch"]["threads"] is None and rec["dispatch"]["device"] == "CPU"
        # the curve recorder is part of the TensorFlow train step: on JAX no curves, and the record says so
        assert rec["loss_curve"] == [] and rec["grad_norm_curve"] == [] and rec["curve_stride"] is None
        assert rec["grad_norm_stride"] is None and rec["dispatch"]["driver"] == "keras_fit"
    assert recs[("adam", 10)]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4


def test_jax_machine_identity(jax_run):
    info = jax_run[0]["machine_info"]
    assert info["keras_backend"] == "jax" and isinstance(info["jax"], str) and info["tensorflow"] is None
    assert info["backend_gpus"] == [] or info["gpu"]["available"]


def test_jax_results_feed_the_report(jax_run, tmp_path):
    _, out = jax_run
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(out / "jax.json"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "jax" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.parametrize("option,says", [
    (["--threads", "1"], "--threads needs the tensorflow backend"),
    (["--deterministic"], "--deterministic needs the tensorflow backend"),
])
def test_options_jax_cannot_honour_are_usage_errors(real_mnist, tmp_path, option, says):
    proc = bench("--bench-profile", "smoke", "--optimizers", "sgd", "--batch-sizes", "100",
                 "--mnist", real_mnist.source, *option, tmp_path=tmp_path, timeout=300)
    assert proc.returncode == 4
    assert says in proc.stderr and proc.stderr.strip().count("\n") == 0
