"""Sweeps that survive: the run store under kill -9, Ctrl-C, torn writes and two writers; --resume; bad stores."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from bench import grid, store

ROOT = Path(__file__).resolve().parents[1]


def _record(i=0, **over):
    rec = {"schema": grid.SCHEMA, "status": "ok", "profile": "smoke", "train_size": 500, "epochs": 2,
           "activation": "sigmoid", "optimizer": "sgd", "batch_size": 10 + i, "full_batch": False, "seed": 0}
    rec.update(over)
    return rec


def test_append_and_read_back(tmp_path):
    path = tmp_path / "s.jsonl"
    for i in range(3):
        store.append(path, f"node{i}", _record(i), machine={"node": "h"}, version="1")
    entries = store.read(path)
    assert [e["record"]["batch_size"] for e in entries] == [10, 11, 12]
    assert entries[0]["machine"] == {"node": "h"} and entries[0]["code_version"] == "1"


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "s.jsonl"
    store.append(path, "a", _record(0))
    store.append(path, "b", _record(1))
    with open(path, "a") as f:
        f.write('{"schema": "mnist-mlp-bench/1", "nodeid": "c", "rec')  # the write a kill -9 cut
    with pytest.warns(store.TornLineWarning, match=r"s.jsonl:3: torn last line"):
        entries = store.read(path)
    assert len(entries) == 2
    from analysis.load import load_runs

    with pytest.warns(UserWarning, match="torn last line"):
        assert len(load_runs([path])) == 2


GOOD = json.dumps({"schema": grid.SCHEMA, "record": _record()})


@pytest.mark.parametrize("content,message", [
    (f"{GOOD}\nnot json\n{GOOD}\n", r"bad.jsonl:2: not a JSON line"),
    ('[1, 2]\n{"x": 1}\n', r"bad.jsonl:1: not a run-store line"),
    ('{"schema": "other/2", "record": {"schema": "other/2"}}\n', r"bad.jsonl:1: unknown schema 'other/2'"),
])
def test_bad_store_is_an_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(store.StoreError, match=message):
        store.read(path)
    assert path.read_text() == content  # never overwritten


def test_resume_from_a_bad_store_is_a_usage_error(tmp_path, run_pytest, real_mnist):
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{GOOD}\nnot json\n{GOOD}\n")
    proc = run_pytest("bench", "--collect-only", "-q", "--bench-profile", "smoke", "--resume",
                      "--bench-store", str(path), "--mnist", real_mnist.source, timeout=300)
    assert proc.returncode == 4
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "bad.jsonl:2: not a JSON line" in errors[0]
    assert "Traceback" not in proc.stderr


def test_two_writers_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    # records of ~200 kB: far above what a single write() is guaranteed to keep whole without the lock
    code = ("import sys; from bench import store; from tests.test_store import _record\n"
            "for i in range(40): store.append(sys.argv[1], sys.argv[2], _record(i, pad='x' * 200_000))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"writer{w}"], cwd=ROOT) for w in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    entries = store.read(path)
    assert len(entries) == 80
    assert sorted(e["nodeid"] for e in entries) == ["writer0"] * 40 + ["writer1"] * 40


SWEEP = ["--bench-profile", "smoke", "--optimizers", "sgd", "--train-size", "500", "--epochs", "2",
         "--batch-sizes", "10,50,100,250,full"]


def _sweep(mnist, store_path, *extra):
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "bench", *SWEEP,
            "--mnist", mnist.source, "--bench-store", str(store_path), *extra]


def _wait_for_lines(path, n, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, "the sweep ended before storing enough runs"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} runs stored after {timeout} s")


def test_kill_9_then_resume_completes_the_grid(tmp_path, real_mnist):
    path = tmp_path / "runs.jsonl"
    proc = subprocess.Popen(_sweep(real_mnist, path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn line would fail here: the lock + single write keep lines whole
        stored = store.read(path)
    k = len(stored)
    assert 2 <= k < 5 and all(e["record"]["status"] == "ok" for e in stored)

    done = subprocess.run(_sweep(real_mnist, path, "--resume", "--benchmark-json", str(tmp_path / "rest.json")),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"resume: {k} of 5 cells already in {path}, skipped; {5 - k} to run" in done.stdout
    entries = store.read(path)
    labels = [("full" if e["record"]["full_batch"] else str(e["record"]["batch_size"])) for e in entries]
    assert sorted(labels) == sorted(["10", "50", "100", "250", "full"])  # every cell once: no duplicates
    assert len(json.loads((tmp_path / "rest.json").read_text())["benchmarks"]) == 5 - k

    report = subprocess.run([sys.executable, "-m", "analysis", "report", str(path), "--out", str(tmp_path / "rep")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    table = text[text.index("## All runs"):]
    assert sum(1 for line in table.splitlines() if "| sgd " in line) == 5


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_ctrl_c_mid_run_is_recorded_and_stops_the_sweep(tmp_path, real_mnist, backend):
    """On JAX too: Keras' JAX trainer leaves its variables unsynchronised after an interrupted fit."""
    if backend == "jax":
        pytest.importorskip("jax")
    path = tmp_path / "runs.jsonl"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "bench", "--bench-profile", "smoke",
           "--optimizers", "sgd", "--batch-sizes", "1", "--seeds", "0,1,2", "--epochs", "3",
           # JAX steps are ~5x faster here: a bigger epoch keeps the signal inside the second run
           *(["--train-size", "6000"] if backend == "jax" else []),
           "--mnist", real_mnist.source, "--bench-store", str(path), "--benchmark-json", str(tmp_path / "b.json")]
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _wait_for_lines(path, 1, proc)
    time.sleep(2.5)  # well inside the next run's 3,000 updates
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-2000:]  # pytest's "interrupted"
    entries = store.read(path)
    assert [e["record"]["status"] for e in entries] == ["ok", "interrupted"]
    assert "SIGINT" in entries[1]["record"]["error"]
    assert entries[1]["record"]["seed"] == 1
    # pytest-benchmark still writes its JSON at the interrupted session's end, the interrupted run included
    benches = json.loads((tmp_path / "b.json").read_text())["benchmarks"]
    assert [b["extra_info"]["status"] for b in benches] == ["ok", "interrupted"]
