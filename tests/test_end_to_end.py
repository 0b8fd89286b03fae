"""The README's benchmark command end to end: `pytest bench --bench-profile smoke --benchmark-json`, then
pytest-benchmark's own `compare` on the file it wrote; and each bad option as a one-line usage error."""

import json
import os
import subprocess
import sys

import pytest

from bench import grid

from .test_train import GPU_KEYS, RECORD_KEYS, plain_types


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, real_mnist):
    out = tmp_path_factory.mktemp("smoke")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "bench", "--bench-profile", "smoke",
         "--mnist", real_mnist.source, "--benchmark-json", str(out / "smoke.json"),
         "--bench-store", str(out / "runs.jsonl")],
        cwd=root, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_smoke_json_has_every_cell_with_a_complete_record(smoke_run):
    out, proc = smoke_run
    assert "28 passed" in proc.stdout
    doc = json.loads((out / "smoke.json").read_text())
    benches = doc["benchmarks"]
    expected = {f"test_train[{c.test_id}]" for c in grid.parse_sweep("smoke").cells()}
    assert {b["name"] for b in benches} == expected
    for b in benches:
        rec = b["extra_info"]
        for key, kind in RECORD_KEYS.items():
            assert isinstance(rec[key], kind), (b["name"], key)
        assert set(rec["gpu"]) >= GPU_KEYS
        assert plain_types(rec)
        assert rec["status"] == "ok", (b["name"], rec["error"])
        assert rec["updates"] == 2 * -(-1000 // rec["batch_size"])
        assert rec["probes"]["enabled"] is True and rec["hessian"]["lambda_max"] > 0  # probes on by default
        assert len(rec["full_grad_norm_by_epoch"]) == 2 and rec["peak_fraction"] > 0
        # pytest-benchmark's stats are the steady-state epoch times of the run
        assert b["stats"]["rounds"] == 1 and b["stats"]["min"] == rec["epoch_times_s"][1]
        assert b["params"]["batch_size"] == rec["batch_size"] and b["params"]["optimizer"] == rec["optimizer"]


def test_machine_info_identifies_the_machine(smoke_run):
    out, _ = smoke_run
    info = json.loads((out / "smoke.json").read_text())["machine_info"]
    assert isinstance(info["tensorflow"], str) and isinstance(info["keras"], str)
    assert info["keras_backend"] == "tensorflow" and info["jax"] is None
    assert isinstance(info["built_with_cuda"], bool) and isinstance(info["backend_gpus"], list)
    if not info["built_with_cuda"]:  # the CPU wheel: no CUDA/cuDNN versions to report
        assert info["cuda_version"] is None and info["cudnn_version"] is None
    assert isinstance(info["gpu"]["available"], bool)
    if not info["gpu"]["available"]:
        assert info["gpu"]["reason"] and info["backend_gpus"] == []
    assert info["cpu_count"] >= 1 and info["cpu"]["brand_raw"]
    assert isinstance(info["machine_label"], str) and info["machine_label"].endswith(f"-{info['cpu_count']}c") \
        or info["gpu"]["available"]
    assert info["tf_threads"] is None  # TensorFlow's default: one thread per core


def test_every_run_was_stored_as_it_finished(smoke_run):
    out, _ = smoke_run
    from bench import store

    lines = store.read(out / "runs.jsonl")
    assert len(lines) == 28
    assert all(line["record"]["schema"] == grid.SCHEMA and line["nodeid"].startswith("bench/") for line in lines)


@pytest.mark.parametrize("group_by", [None, "param:batch_size"])
def test_pytest_benchmark_compare_reads_the_file(smoke_run, group_by):
    out, _ = smoke_run
    # the `pytest-benchmark` command installed beside this interpreter
    cli = os.path.join(os.path.dirname(sys.executable), "pytest-benchmark")
    cmd = [cli, "compare", str(out / "smoke.json"),
           "--columns=min,median,rounds"]
    if group_by:
        cmd.append(f"--group-by={group_by}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_train[adam-bs100-seed0]" in proc.stdout
    if group_by:
        assert "batch_size=1000" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--batch-sizes", "0"], "--batch-sizes: 0 is out of range"),
    (["--batch-sizes", "abc"], "--batch-sizes: 'abc' is not an integer"),
    (["--bench-profile", "smoke", "--batch-sizes", "5000"], "use 'full'"),
    (["--optimizers", "sgdd"], "unknown optimizer 'sgdd'"),
    (["--train-size", "70000"], "--train-size: 70000 is out of range"),
    (["--epochs", "0"], "--epochs: 0 is out of range"),
    (["--bench-profile", "nope"], "unknown profile 'nope'"),
    (["--mnist", "/nonexistent/mnist.npz"], "'/nonexistent/mnist.npz' does not exist"),
    (["--threads", "0"], "--threads: 0 is out of range"),
])
def test_bad_options_are_usage_errors(run_pytest, args, message):
    proc = run_pytest("bench", "--collect-only", "-q", *args, timeout=300)
    assert proc.returncode == 4  # pytest's usage-error status
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
