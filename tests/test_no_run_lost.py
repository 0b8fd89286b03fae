"""No trained run lost, no valid record unreadable: a store that fails mid-sweep (a real full disk), a benchmark JSON
pointed at the store, every kind of bad store line beside valid records, result sets in which nothing finished,
output paths that cannot be written, and options refused where they are given."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from bench import record

from .helpers import ROOT, benchmarks, run, stored, sweep_cmd

TINY = ["--bench-profile", "smoke", "--optimizers", "sgd", "--train-size", "200", "--epochs", "6", "--repeats", "1",
        "--no-probes", "--no-calibration"]


def _one_error(proc, message: str, status: int):
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if message in line]
    assert proc.returncode == status, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert errors, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr + proc.stdout


# --- a store that cannot take a run ---------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs nearly filled (root only: skipped with the reason elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"could not mount a tmpfs: {proc.stderr.strip()}")
    try:
        with open(mnt / "filler", "wb") as f:
            try:
                f.write(b"\0" * (1024 * 1024))
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_loses_no_trained_run_and_stops_the_sweep(tmp_path, full_disk, real_mnist):
    out = tmp_path / "out.json"
    proc = run(sweep_cmd(*TINY, "--batch-sizes", "10,100,full", "--benchmark-json", str(out),
                         store=full_disk / "runs.jsonl", mnist=real_mnist))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--bench-store: could not append the run of sgd-bs10-seed0" in proc.stdout + proc.stderr
    assert "No space left on device" in proc.stdout + proc.stderr
    timed, untimed = benchmarks(out)  # the record reached the benchmark JSON ...
    assert [b["extra_info"]["batch_size"] for b in timed + untimed] == [10]  # ... and nothing else trained
    kept = [p for p in Path(tempfile.gettempdir()).glob("runs.unsaved-*.jsonl")
            if any(e.nodeid.endswith("[sgd-bs10-seed0]") for e in record.read_store(p).entries)]
    assert kept, "the fallback file holds the run"
    for p in kept:
        p.unlink()


def test_a_store_under_proc_is_refused_before_training_even_as_root(tmp_path):
    proc = run(sweep_cmd("--collect-only", "-q", *TINY, store="/proc/mnist-mlp-bench.jsonl"), timeout=300)
    _one_error(proc, "--bench-store: cannot write the file '/proc/mnist-mlp-bench.jsonl'", 4)


def test_the_benchmark_json_can_never_be_the_store(tmp_path):
    path = tmp_path / "runs.jsonl"
    record.append(path, "kept", stored(0))
    before = path.read_bytes()
    proc = run(sweep_cmd("--collect-only", "-q", *TINY, "--benchmark-json", str(path), store=path), timeout=300)
    _one_error(proc, "is the run store (--bench-store)", 4)
    assert path.read_bytes() == before


# --- every valid record stays readable -------------------------------------------------------------------------

NO_PROBES = {"enabled": False, "reason": "off (--no-probes)", "requested": False}


def _bad_store(path: Path, machine=None) -> list[str]:
    """Valid records (batch 10, 11 and 100 of TINY's protocol) interleaved with every kind of bad line; returns the
    bad lines' expected reasons."""
    record.append(path, "a", stored(0, train_size=200, epochs=6, probes=NO_PROBES), machine=machine)
    with open(path, "ab") as f:
        f.write(b"garbage, not a record\n")
        f.write(b'{"schema": "mnist-mlp-bench/3", "nodeid": "x", "record": {"schema": "mnist-mlp-bench/3", "st\xff"}\n')
    record.append(path, "b", stored(1, train_size=200, epochs=6, probes=NO_PROBES), machine=machine)
    with open(path, "a") as f:
        f.write(json.dumps({"schema": record.SCHEMA, "record": {**stored(2), "schema": "mnist-mlp-bench/9"}}) + "\n")
        f.write(json.dumps({"schema": record.SCHEMA, "record": stored(3, updates="400")}) + "\n")
        f.write('{"schema": "mnist-mlp-bench/4", "nodeid": "cut", "rec\n')
    record.append(path, "c", stored(90, train_size=200, epochs=6, probes=NO_PROBES), machine=machine)
    with open(path, "ab") as f:
        f.write(b"\0" * 512)  # the NUL-filled tail a crash leaves
    return ["not a JSON line", "not UTF-8", "written by a newer mnist-mlp-bench", "record.updates: expected int",
            "torn line", "NUL bytes"]


def test_every_valid_record_of_a_store_with_every_kind_of_bad_line_is_read(tmp_path):
    path = tmp_path / "runs.jsonl"
    reasons = _bad_store(path)
    with pytest.warns(record.BadLineWarning) as caught:
        store = record.read_store(path)
    assert [e.nodeid for e in store.entries] == ["a", "b", "c"]
    assert len(store.bad) == len(reasons) and len(caught) == len(reasons)
    for bad, reason in zip(store.bad, reasons):
        assert reason in bad.reason and bad.where.startswith(f"{path}:"), (bad, reason)


def test_resume_and_the_report_use_every_valid_record_and_name_every_bad_line(tmp_path):
    from bench.machine import store_machine

    path = tmp_path / "runs.jsonl"
    reasons = _bad_store(path, store_machine())
    proc = run(sweep_cmd("--collect-only", "-q", *TINY, "--resume", store=path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resume: 2 of 4 cells already in {path}, skipped; 2 to run" in proc.stdout  # batch 10 and 100
    assert all(reason in proc.stdout for reason in reasons)
    rep = run([sys.executable, "-m", "analysis", "report", str(path), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert f"**{len(reasons)} record(s) skipped**" in text and f"{path}:2" in text


# --- result sets in which nothing finished -------------------------------------------------------------------------

@pytest.mark.parametrize("statuses", [["error"] * 4, ["interrupted"]])
def test_a_result_set_with_no_finished_run_is_reported(tmp_path, statuses):
    from analysis.cli import main

    doc = json.loads((ROOT / "tests" / "fixtures" / "smoke.json").read_text())
    runs = doc["benchmarks"][:len(statuses)]
    for b, status in zip(runs, statuses):
        b["extra_info"].update(status=status, error=f"{status}: injected", test_accuracy=None)
    doc["benchmarks"], doc["untimed_runs"] = [], runs
    (tmp_path / "in.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "in.json"), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "Nothing was timed: no run of the grid finished" in text and "## Runs that did not finish" in text
    assert text.count(f"| {statuses[0]} ") >= len(statuses)


@pytest.mark.slow
def test_a_sweep_whose_every_cell_errored_fails_and_a_resume_with_nothing_left_succeeds(tmp_path, real_mnist):
    store = tmp_path / "runs.jsonl"
    failed = run(sweep_cmd(*TINY, "--batch-sizes", "100,full", "--benchmark-json", str(tmp_path / "a.json"),
                           store=store, mnist=real_mnist, plugins=["tests.faults"]), env={"BENCH_FAULT": "error:*"})
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert [b["extra_info"]["status"] for b in benchmarks(tmp_path / "a.json")[1]] == ["error", "error"]
    done = run(sweep_cmd(*TINY, "--batch-sizes", "100,full", store=store, mnist=real_mnist))
    assert done.returncode == 0
    again = run(sweep_cmd(*TINY, "--batch-sizes", "100,full", "--resume", "--benchmark-json",
                          str(tmp_path / "b.json"), store=store, mnist=real_mnist))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resume: 2 of 2 cells already in" in again.stdout
    assert json.loads((tmp_path / "b.json").read_text())["benchmarks"] == []  # the file is still written


# --- outputs that cannot be written, options refused where they are given -------------------------------------

def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    fixture = str(ROOT / "tests" / "fixtures" / "smoke.json")
    for cmd, message in [
        ([sys.executable, "-m", "analysis", "report", fixture, "--out", str(tmp_path / "file" / "r")], "--out"),
        ([sys.executable, "-m", "analysis", "compare", fixture, fixture, "--out", str(tmp_path / "file" / "c")],
         "--out"),
        ([sys.executable, "-m", "bench.slurm", "submit", "--shards", "2", "--dry-run", "--results",
          str(tmp_path / "file" / "s")], "--results"),
        ([sys.executable, "-m", "bench.overhead", "--json", str(tmp_path / "file" / "o.json")], "--json"),
    ]:
        proc = run(cmd, timeout=300)
        assert proc.returncode == 2, (cmd, proc.stdout[-1000:], proc.stderr[-1000:])
        assert message in proc.stderr and "file" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_slurm_checks_the_forwarded_options_before_writing_anything(tmp_path):
    results = tmp_path / "runs"
    proc = run([sys.executable, "-m", "bench.slurm", "submit", "--shards", "2", "--dry-run", "--results", str(results),
                "--", "--batch-sizes", "abc"], timeout=300)
    _one_error(proc, "--batch-sizes: 'abc' is not an integer", 2)
    assert not results.exists()


@pytest.mark.parametrize("args,env,message", [
    (["--escape-profile", "test"], {}, "--escape-profile: an option of --experiment escape, not of the grid"),
    (["--epochs", "100000"], {}, "--epochs: 100000 is out of range; epochs is an integer from 1 to 1,000"),
    (["--machine-label", ""], {}, "--machine-label: '' is not a usable label"),
    (["--machine-label", "a|b"], {}, "--machine-label: 'a|b' is not a usable label"),
    (["--machine-label", "a\nb"], {}, "is not a usable label"),
    ([], {"KERAS_BACKEND": "nope"}, "KERAS_BACKEND is 'nope'; mnist-mlp-bench runs on tensorflow or jax"),
])
def test_bad_values_are_refused_where_they_are_given(tmp_path, args, env, message):
    proc = run(sweep_cmd("--collect-only", "-q", *TINY, *args, store=tmp_path / "s.jsonl"), env=env, timeout=300)
    _one_error(proc, message, 4)


def test_reading_a_store_never_warns_about_valid_lines(tmp_path):
    path = tmp_path / "runs.jsonl"
    for i in range(3):
        record.append(path, str(i), stored(i))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(record.read_store(path).entries) == 3
