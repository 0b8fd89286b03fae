"""Sweeps as a user runs them: kill -9 then --resume, Ctrl-C, a JAX --resume beside TensorFlow runs, a failed
cell that is not a timing, and the stores and options that are refused before any training."""

import json
import os
import signal
import subprocess
import threading
import warnings

import pytest

from bench import grid, record

from .helpers import ROOT, benchmarks, lines_in, run, stored, sweep_cmd, wait_for

TINY = ["--bench-profile", "smoke", "--optimizers", "sgd", "--train-size", "200", "--epochs", "2", "--repeats", "1"]


@pytest.mark.slow
def test_kill_9_then_resume_completes_the_grid(tmp_path, real_mnist):
    path = tmp_path / "runs.jsonl"
    options = ["-q", "--bench-profile", "smoke", "--optimizers", "sgd", "--train-size", "500", "--epochs", "2",
               "--batch-sizes", "10,50,100,250,full"]
    cells = grid.parse_sweep("smoke", optimizers="sgd", train_size="500", epochs="2",
                             batch_sizes="10,50,100,250,full").cells()
    proc = subprocess.Popen(sweep_cmd(*options, store=path, mnist=real_mnist), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: lines_in(path) >= 2, proc, what="two stored runs")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn line would fail here: the lock + single write keep lines whole
        stored = record.read_store(path).entries
    k = len(stored)
    assert 2 <= k < len(cells) and all(e.record.status == "ok" for e in stored)

    done = run(sweep_cmd(*options, "--resume", "--benchmark-json", str(tmp_path / "rest.json"), store=path,
                         mnist=real_mnist))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    n = len(cells)
    assert f"resume: {k} of {n} cells already in {path}, skipped; {n - k} to run" in done.stdout
    labels = sorted(e.record.label for e in record.read_store(path).entries)
    assert labels == sorted(c.test_id.split("-")[1][2:] for c in cells)  # every cell once: no duplicates
    assert len(benchmarks(tmp_path / "rest.json")[0]) == n - k

    report = run([os.sys.executable, "-m", "analysis", "report", str(path), "--out", str(tmp_path / "rep")])
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert sum(1 for line in text[text.index("## All runs"):].splitlines() if "| sgd " in line) == n


@pytest.mark.slow
@pytest.mark.parametrize("backend,sig", [("tensorflow", "SIGINT"), ("jax", "SIGINT"), ("tensorflow", "SIGTERM")])
def test_ctrl_c_mid_run_is_recorded_and_stops_the_sweep(tmp_path, real_mnist, backend, sig):
    """On JAX too: Keras' JAX trainer leaves its variables unsynchronised after an interrupted fit. SIGTERM (what
    Slurm sends at a job's time limit or scancel) as Ctrl-C."""
    if backend == "jax":
        pytest.importorskip("jax")
    path, out = tmp_path / "runs.jsonl", tmp_path / "b.json"
    cmd = sweep_cmd("-v", "--bench-profile", "smoke", "--optimizers", "sgd", "--batch-sizes", "1", "--seeds", "0,1,2",
                    "--epochs", "3", "--train-size", "1000", "--no-probes", "--repeats", "1", "--benchmark-json", str(out),
                    store=path, mnist=real_mnist)
    # the sweep gets Ctrl-C as a terminal would deliver it, also when this test runs in the background (nohup,
    # `pytest tests &` from a script), where SIGINT is ignored and a child would inherit that
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    # the progress line of seed 1's first epoch: the signal lands inside its second epoch
    wait_for(lambda: any("sgd-bs1-seed1: epoch 1 " in line for line in output), proc, what="seed 1's first epoch")
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=120)
    reader.join(timeout=10)
    assert proc.returncode == 2, "".join(output)[-2000:]  # pytest's "interrupted"
    entries = record.read_store(path).entries
    assert [e.record.status for e in entries] == ["ok", "interrupted"]
    assert sig in entries[1].record.error and entries[1].record.seed == 1
    # pytest-benchmark still writes its JSON at the interrupted session's end: the interrupted run is in it,
    # apart from the timings
    timed, failed = benchmarks(out)
    assert [b["extra_info"]["status"] for b in timed] == ["ok"]
    assert [b["extra_info"]["status"] for b in failed] == ["interrupted"]


@pytest.mark.slow
def test_a_jax_resume_beside_tensorflow_runs_runs_every_cell(tmp_path, real_mnist):
    pytest.importorskip("jax")
    path = tmp_path / "runs.jsonl"
    options = [*TINY, "--batch-sizes", "100,full", "-q"]
    n = len(grid.parse_sweep("smoke", optimizers="sgd", train_size="200", batch_sizes="100,full", repeats="1").cells())
    first = run(sweep_cmd(*options, store=path, mnist=real_mnist))
    assert first.returncode == 0, first.stdout[-2000:]
    jax = run(sweep_cmd(*options, "--resume", store=path, mnist=real_mnist), env={"KERAS_BACKEND": "jax"})
    assert jax.returncode == 0, jax.stdout[-2000:]
    assert f"resume: 0 of {n} cells already in {path}, skipped; {n} to run" in jax.stdout
    again = run(sweep_cmd(*options, "--resume", "--collect-only", store=path, mnist=real_mnist),
                env={"KERAS_BACKEND": "jax"})
    assert f"resume: {n} of {n} cells already in {path}, skipped; 0 to run" in again.stdout
    backends = [e.record.dispatch.backend for e in record.read_store(path).entries]
    assert backends == ["tensorflow"] * n + ["jax"] * n


@pytest.mark.slow
def test_a_failed_cell_is_recorded_but_is_not_a_timing(tmp_path, real_mnist):
    path, out = tmp_path / "runs.jsonl", tmp_path / "b.json"
    env = {"BENCH_FAULT": "error:sgd-bs10-seed0"}
    proc = run(sweep_cmd(*TINY, "--batch-sizes", "10,100", "--benchmark-json", str(out), store=path,
                         mnist=real_mnist, plugins=["tests.faults"]), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "sgd-bs10-seed0 ended as error: RuntimeError: injected failure" in proc.stdout
    statuses = {e.nodeid.split("[")[1][:-1]: e.record.status for e in record.read_store(path).entries}
    assert statuses == {"sgd-bs10-seed0": "error", "sgd-bs100-seed0": "ok"}
    timed, failed = benchmarks(out)
    assert [b["name"] for b in timed] == ["test_train[sgd-bs100-seed0]"]
    assert [(b["name"], b["extra_info"]["status"]) for b in failed] == [("test_train[sgd-bs10-seed0]", "error")]
    cli = os.path.join(os.path.dirname(os.sys.executable), "pytest-benchmark")
    table = run([cli, "compare", str(out), "--columns=min,median,rounds"])
    assert table.returncode == 0 and "sgd-bs100-seed0" in table.stdout
    assert "sgd-bs10-seed0" not in table.stdout  # no epoch time of the failed cell, under any name

    # a sweep whose every cell failed exits 1, and still writes its JSON, with the records of the failures
    alone = run(sweep_cmd(*TINY, "--batch-sizes", "10", "--benchmark-json", str(tmp_path / "c.json"),
                          store=tmp_path / "c.jsonl", mnist=real_mnist, plugins=["tests.faults"]), env=env)
    assert alone.returncode == 1, alone.stdout[-2000:]  # every run failed: the sweep fails
    timed, failed = benchmarks(tmp_path / "c.json")
    assert timed == [] and [b["extra_info"]["status"] for b in failed] == ["error"]


@pytest.mark.slow
def test_each_round_trains_in_a_fresh_process_and_a_killed_one_loses_only_its_run(tmp_path, real_mnist):
    """Repeat 2 of batch 100 is killed as it starts training (SIGKILL, as the out-of-memory killer does): it is
    recorded as an error that says so, the sweep goes on in a fresh process, and every other run is a timing."""
    path, out, pids = tmp_path / "runs.jsonl", tmp_path / "b.json", tmp_path / "pids"
    tiny = ["--bench-profile", "smoke", "--optimizers", "sgd", "--train-size", "200", "--epochs", "2"]
    proc = run(sweep_cmd(*tiny, "--batch-sizes", "100,full", "--repeats", "3", "--benchmark-json", str(out),
                         store=path, mnist=real_mnist, plugins=["tests.faults"]),
               env={"BENCH_FAULT": "die:sgd-bs100-seed0-r2", "BENCH_PIDS": str(pids)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = {(e.record.label, e.record.repeat): e.record for e in record.read_store(path).entries}
    assert sorted(runs) == [(b, r) for b in ("100", "full") for r in (1, 2, 3)]
    killed = runs.pop(("100", 2))
    assert killed.status == "error" and "ended by signal SIGKILL" in killed.error and killed.epochs_done == 0
    assert all(r.status == "ok" and r.process == "round" for r in runs.values())
    # one process per round and a fresh one after the killed one, none of them the sweep's own (its pid ends the
    # sweep id), which wrote its pid first
    own, *workers = [int(p) for p in pids.read_text().split()]
    assert killed.sweep.endswith(f"-{own}") and len(set(workers)) == len(workers) == 4 and own not in workers
    timed, failed = benchmarks(out)
    assert len(timed) == 5 and [b["extra_info"]["status"] for b in failed] == ["error"]
    assert json.loads(out.read_text())["machine_info"]["calibration"]["matmul_gflops"] > 0  # measured by round 1's

    alone = run(sweep_cmd(*tiny, "--repeats", "1", "--batch-sizes", "full", "--in-process",
                          store=tmp_path / "in.jsonl", mnist=real_mnist, plugins=["tests.faults"]),
                env={"BENCH_PIDS": str(tmp_path / "in-pids")})
    assert alone.returncode == 0, alone.stdout[-2000:]
    assert [e.record.process for e in record.read_store(tmp_path / "in.jsonl").entries] == ["sweep"]
    assert len((tmp_path / "in-pids").read_text().split()) == 1  # nothing but the sweep's process


def test_an_unwritable_store_is_refused_before_any_training(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run(sweep_cmd(*TINY, "--batch-sizes", "100", store=tmp_path / "file" / "sub" / "runs.jsonl"), timeout=300)
    assert proc.returncode == 4, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--bench-store: cannot write the file" in errors[0] and "file/sub/runs.jsonl" in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_resume_from_a_store_with_a_bad_line_uses_every_valid_record(tmp_path):
    from bench.machine import store_machine

    path = tmp_path / "bad.jsonl"
    record.append(path, "done", stored(0, train_size=200, batch_size=10), machine=store_machine())
    with open(path, "a") as f:
        f.write("not json\n")
    proc = run(sweep_cmd("--collect-only", "-q", *TINY, "--resume", store=path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resume: 1 of 4 cells already in {path}, skipped; 3 to run" in proc.stdout
    assert f"{path}:2: not a JSON line" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--batch-sizes", "abc"], "--batch-sizes: 'abc' is not an integer"),
    (["--mnist", "/nonexistent/mnist.npz"], "'/nonexistent/mnist.npz' does not exist"),
    (["--precision", "fp16"], "--precision: unknown precision 'fp16'; choose tf32"),
])
def test_bad_options_are_one_line_usage_errors(args, message):
    """The wiring of option errors (their texts are checked in-process by test_grid.py and test_data.py)."""
    proc = run(sweep_cmd("--collect-only", "-q", *args), timeout=300)
    assert proc.returncode == 4  # pytest's usage-error status
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_collecting_the_grid_is_quick_and_starts_no_backend():
    """`pytest bench --collect-only`: the cells, by id, without importing TensorFlow, Keras or JAX."""
    code = ("import sys, pytest; rc = pytest.main(['bench', '--collect-only', '-q', '-p', 'no:cacheprovider', "
            "'--bench-profile', 'smoke']); "
            "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([os.sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cells = grid.parse_sweep("smoke").cells()
    assert f"{len(cells)} tests collected" in proc.stdout and "IMPORTED []" in proc.stdout
    assert all(f"test_train[{c.test_id}]" in proc.stdout for c in cells)
    assert "test_saddle" not in proc.stdout
