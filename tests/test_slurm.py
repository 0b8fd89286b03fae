"""The Slurm path (bench/slurm.py): the job script it writes, its refusals, and the smoke grid (SGD and Adam) as a 2-shard job array
on a real single-node Slurm (Debian's slurm-wlm and munge, started here and stopped by the process ids started),
with one task killed mid-shard and resubmitted: every cell exactly once, and the merged report builds."""

import json
import subprocess
import sys
import time

import pytest

from bench import grid, record, slurm

from .helpers import run
from .slurm_cluster import LocalSlurm, Unavailable


def test_the_job_script_runs_one_shard_per_array_task(tmp_path):
    text = slurm.job_script(tmp_path, 4, ["--dispatch", "fast"], "h100", 1, "02:00:00", ["--account=abc"])
    lines = text.splitlines()
    for wanted in ("#SBATCH --array=1-4", "#SBATCH --partition=h100", "#SBATCH --gpus-per-task=1",
                   "#SBATCH --time=02:00:00", "#SBATCH --account=abc", "#SBATCH --ntasks=1"):
        assert wanted in lines
    assert "#SBATCH --exclusive" not in lines  # a GPU task shares the node's cores, not its device
    assert "export TF_FORCE_GPU_ALLOW_GROWTH=true XLA_PYTHON_CLIENT_PREALLOCATE=false" in lines
    cmd = lines[-1]
    assert cmd.startswith(f"exec {sys.executable} -m pytest") and "bench --dispatch fast" in cmd
    assert '--shard "${K}/4" --resume' in cmd and f'--bench-store "{tmp_path.resolve()}/shard-${{K}}-of-4.jsonl"' in cmd
    cpu = slurm.job_script(tmp_path, 2, [], None, 0, None, [])
    assert "#SBATCH --exclusive" in cpu.splitlines()  # no two timing processes on one node's cores
    assert not any(line.startswith("#SBATCH --partition") for line in cpu.splitlines())


def test_submit_refuses_what_each_task_sets_itself(tmp_path, capsys):
    assert slurm.main(["submit", "--shards", "2", "--results", str(tmp_path), "--", "--resume"]) == 2
    assert "--resume: set by each task itself" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        slurm.main(["submit", "--shards", "0", "--results", str(tmp_path)])
    assert "--shards: '0' is not a whole number >= 1" in capsys.readouterr().err
    assert slurm.main(["status", str(tmp_path / "nothing")]) == 2
    assert "no submission.json here" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--", "-k", "adam"], "-k: not forwarded to the tasks"),
    (["--", "-madam"], "-madam: not forwarded"),
    (["--", "--collect-only"], "--collect-only: not forwarded"),
    (["--", "bench/test_train.py"], "'bench/test_train.py': a positional argument"),
    (["--", "--optimizers", "adam", "extra"], "'extra': a positional argument"),
    (["--", "--optimiser", "adam"], "--optimiser: not an option of the suite (did you mean --optimizers?)"),
    (["--", "--bench-stor=x"], "--bench-stor: not an option of the suite"),
    (["--", "--epochs", "0"], "the pytest bench options after --: --epochs: 0 is out of range"),
    (["--shards", "1001"], "--shards 1001: at most 1000"),
    (["--gpus-per-task", "65"], "--gpus-per-task 65: at most 64"),
    (["--time", "2 hours"], "--time '2 hours': Slurm's formats are"),
    (["--partition", "gpu\n#SBATCH --x"], "--partition 'gpu\\n#SBATCH --x': a partition name"),
    (["--sbatch-arg=--account abc"], "--sbatch-arg '--account abc': one sbatch option"),
    (["--sbatch-arg=account=abc"], "--sbatch-arg 'account=abc': one sbatch option"),
    (["--sbatch-arg=--array=1-3"], "--sbatch-arg --array=1-3: --array is set by this command (from --shards)"),
    (["--sbatch-arg=--output=x"], "--output is set by this command"),
])
def test_submit_refuses_bad_values_before_writing_anything(tmp_path, capsys, args, message):
    results = tmp_path / "r"
    head = [a for a in args if a != "--" and args.index(a) < (args.index("--") if "--" in args else len(args))]
    tail = args[args.index("--"):] if "--" in args else []
    if "--shards" not in head:
        head = ["--shards", "2"] + head
    assert slurm.main(["submit", "--dry-run", "--results", str(results), *head, *tail]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not results.exists()


def test_the_forwarded_options_of_pytest_and_pytest_benchmark_pass(tmp_path):
    slurm.check_forwarded(["--optimizers", "sgd,adam", "--dispatch=fast", "-q", "-ra", "--benchmark-min-rounds", "1",
                           "--no-probes", "--epochs", "6"])


def test_an_empty_results_folder_is_refused(capsys):
    with pytest.raises(SystemExit):
        slurm.main(["submit", "--shards", "2", "--results="])
    assert "an empty folder name" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{", "[]", '{"shards": 2}', '{"shards": "2", "jobs": [], "script": "x"}'])
def test_a_damaged_submission_is_one_line(tmp_path, capsys, text):
    (tmp_path / slurm.SUBMISSION).write_text(text)
    for command in ("status", "resubmit"):
        assert slurm.main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / slurm.SUBMISSION}: damaged" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        local = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    except Unavailable as exc:
        print(f"local Slurm unavailable: {exc}")
        pytest.skip(f"no local Slurm cluster: {exc}")
    yield local
    local.stop()


def _cli(cluster, *args) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "bench.slurm", *args], env={**cluster.env, "BENCH_SLURM_POLL_S": "2"})


@pytest.mark.slow
def test_the_smoke_grid_as_a_two_shard_array_on_a_real_slurm(cluster, tmp_path, real_mnist):
    results = tmp_path / "results"
    started = time.monotonic()
    # the smoke grid of two optimizers (8 cells): minutes on 2 cores
    sub = _cli(cluster, "submit", "--shards", "2", "--results", str(results), "--", "--bench-profile", "smoke",
               "--optimizers", "sgd,adam", "--mnist", real_mnist.source)
    assert sub.returncode == 0, sub.stderr
    job = json.loads((results / "submission.json").read_text())["jobs"][0]["id"]
    assert f"submitted job {job}: 2 shard(s)" in sub.stdout

    # kill shard 1's task once it has stored a run: the run in progress is lost, the stored ones are kept
    store1 = slurm.store_of(results, 1, 2)
    deadline = time.monotonic() + 600
    while not (store1.exists() and len(record.read_store(store1).entries) >= 2):
        assert time.monotonic() < deadline, cluster.log_tail("slurmctld")
        time.sleep(0.5)
    subprocess.run(["scancel", f"{job}_1"], env=cluster.env, check=True)
    status = _cli(cluster, "status", str(results), "--wait")
    assert status.returncode == 1 and "shard(s) 1 stopped short" in status.stdout, status.stdout + status.stderr
    first_pass = time.monotonic() - started

    again = _cli(cluster, "resubmit", str(results))
    assert again.returncode == 0 and "resubmitted shard(s) 1 as job" in again.stdout, again.stdout + again.stderr
    status = _cli(cluster, "status", str(results), "--wait")
    assert status.returncode == 0 and "2 of 2 shards done" in status.stdout, status.stdout
    print(f"2-shard smoke array: {time.monotonic() - started:.0f} s in all ({first_pass:.0f} s to the kill's end)")

    cells = grid.parse_sweep("smoke", optimizers="sgd,adam").cells()
    entries = [e for k in (1, 2) for e in record.read_store(slurm.store_of(results, k, 2)).entries]
    finished = [e for e in entries if e.record.status in record.FINISHED]
    keys = [record.run_key(e.record, e.machine.id) for e in finished]
    assert len(keys) == len(set(keys)) == len(cells)  # every cell exactly once: the resubmission skipped the done
    assert {(e.record.optimizer, e.record.batch_size) for e in finished} == \
        {(c.optimizer, c.batch_size) for c in cells}
    # shard 2's first task wrote its benchmark JSON and shard 1's second did. Whether the cancelled task wrote one
    # depends on Slurm: a plain scancel sends no SIGTERM to the batch step (the suite's process), only SIGKILL
    # after KillWait, while a time limit or `scancel --batch` does send it; its stored runs are kept either way
    shard1 = sorted(p.name for p in results.glob("shard-1-of-2.job*.json"))
    shard2 = sorted(p.name for p in results.glob("shard-2-of-2.job*.json"))
    assert shard2 == [f"shard-2-of-2.job{job}.json"], shard2
    assert len(set(shard1) - {f"shard-1-of-2.job{job}.json"}) == 1, shard1

    stores = sorted(str(p) for p in results.glob("shard-*-of-2.jsonl"))
    rep = run([sys.executable, "-m", "analysis", "report", *stores, "--out", str(tmp_path / "report")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "repeat a measurement" not in text  # nothing counted twice
