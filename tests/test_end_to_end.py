"""The README's commands end to end on the `smoke` profile: `pytest bench --benchmark-json` (every record follows
the contract, every run stored as it finished), pytest-benchmark's own `compare` on the file it wrote, and the
report made from it."""

import json
import os
import sys

import pytest

from bench import grid, record

from .helpers import follows_contract, run, sweep_cmd

pytestmark = pytest.mark.slow
OPTIONS = ["--bench-profile", "smoke", "--optimizers", "sgd,adam"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, real_mnist):
    out = tmp_path_factory.mktemp("smoke")
    proc = run(sweep_cmd(*OPTIONS, "--benchmark-json", str(out / "smoke.json"), store=out / "runs.jsonl",
                         mnist=real_mnist), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_every_cell_has_a_record_that_follows_the_contract(smoke_run):
    out, proc = smoke_run
    cells = grid.parse_sweep("smoke", optimizers="sgd,adam").cells()
    assert f"{len(cells)} passed" in proc.stdout and proc.stdout.count("estimate: ") == 1
    benches = json.loads((out / "smoke.json").read_text())["benchmarks"]
    assert {b["name"] for b in benches} == {f"test_train[{c.test_id}]" for c in cells}
    for b in benches:
        rec = follows_contract(b["extra_info"])
        cell = next(c for c in cells if b["name"] == f"test_train[{c.test_id}]")
        assert rec.status == "ok", (b["name"], rec.error)
        assert rec.updates == cell.expected_updates
        assert rec.peak_fraction > 0 and rec.repeat == cell.repeat and rec.repeats == 3
        if cell.repeat == 1:  # the probes follow the trajectory, the same in every repeat: the first takes them
            assert rec.probes.enabled and rec.hessian.lambda_max > 0 and len(rec.full_grad_norm_by_epoch) == cell.epochs
        else:
            assert not rec.probes.enabled and rec.hessian is None
        # pytest-benchmark's stats are the steady-state epoch times of the run
        assert b["stats"]["rounds"] == cell.epochs - 1 and b["stats"]["min"] == min(rec.epoch_times_s[1:])
        assert b["params"] == cell.params and b["group"] == cell.optimizer


def test_machine_info_identifies_the_machine(smoke_run):
    out, _ = smoke_run
    info = json.loads((out / "smoke.json").read_text())["machine_info"]
    assert isinstance(info["tensorflow"], str) and isinstance(info["keras"], str)
    assert info["keras_backend"] == "tensorflow" and info["jax"] is None
    assert isinstance(info["built_with_cuda"], bool) and isinstance(info["backend_gpus"], list)
    if not info["built_with_cuda"]:  # the CPU wheel: no CUDA/cuDNN versions to report
        assert info["cuda_version"] is None and info["cudnn_version"] is None
    if not info["gpu"]["available"]:
        assert info["gpu"]["reason"] and info["backend_gpus"] == []
        assert info["machine_label"].endswith(f"-{info['cpu_count']}c")
    assert info["cpu_count"] >= 1 and info["cpu"]["brand_raw"]
    assert info["tf_threads"] is None and info["calibration"]["matmul_gflops"] > 0
    assert info["precision"] == "tf32" and info["calibration"]["matmul_precision"] == "fp32"


def test_every_run_was_stored_as_it_finished(smoke_run):
    out, _ = smoke_run
    lines = record.read_store(out / "runs.jsonl").entries
    benches = json.loads((out / "smoke.json").read_text())["benchmarks"]
    assert [e.record.to_dict() for e in lines] == [b["extra_info"] for b in benches]
    assert all(e.nodeid.startswith("bench/test_train.py::") and e.machine.label for e in lines)


@pytest.mark.parametrize("group_by", [None, "param:batch_size"])
def test_pytest_benchmark_compare_reads_the_file(smoke_run, group_by):
    out, _ = smoke_run
    cli = os.path.join(os.path.dirname(sys.executable), "pytest-benchmark")  # installed beside this interpreter
    cmd = [cli, "compare", str(out / "smoke.json"), "--columns=min,median,rounds"]
    if group_by:
        cmd.append(f"--group-by={group_by}")
    proc = run(cmd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_train[adam-bs100-seed0-r1]" in proc.stdout and "test_train[adam-bs100-seed0-r3]" in proc.stdout
    if group_by:
        assert "batch_size=full" in proc.stdout and "batch_size=100" in proc.stdout


def test_the_report_is_made_from_the_file(smoke_run):
    out, _ = smoke_run
    proc = run([sys.executable, "-m", "analysis", "report", str(out / "smoke.json"), "--out", str(out / "rep")])
    assert proc.returncode == 0, proc.stderr
    text = (out / "rep" / "REPORT.md").read_text()
    assert "## All runs" in text and (out / "rep" / "fig1_epoch_time.png").exists()
