"""Run the grid on a Slurm cluster as one job array, one shard per task (`pytest bench --shard K/N`).

    python -m bench.slurm submit --shards 4 --results runs/h100 --partition h100 --gpus-per-task 1 -- --dispatch fast
    python -m bench.slurm status runs/h100 [--wait]
    python -m bench.slurm resubmit runs/h100        # shards that died: again, with --resume (missing cells only)
    python -m analysis report runs/h100/*.jsonl --out reports/h100

Plain `sbatch`, not submitit: each task is a command line (pytest), not a Python function to pickle; the job
script is a file a user can read, edit and submit by hand; resubmitting some shards is `sbatch --array=2,5` of
the same script; and nothing beyond Slurm's own client is needed on the login node.

Each task writes its own run store (`shard-K-of-N.jsonl`, every finished run at once) and benchmark JSON
(`shard-K-of-N.job<array job id>.json`, at the end of the task) in the results folder, which must be on storage
the nodes share. A GPU task gets `--gpus-per-task` devices (Slurm sets CUDA_VISIBLE_DEVICES), with TensorFlow's
memory growth on and JAX's preallocation off so that no process takes a whole device's memory at start; a
CPU-only task takes its node whole (`--exclusive`) so that no two timing processes share cores. Every task runs
with `--resume`, so that a resubmitted shard runs only the cells its store lacks.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import record, shard

RESERVED = ("--shard", "--bench-store", "--benchmark-json", "--resume")  # options every task sets itself
# pytest options that would make a task run a different set of cells than its shard plan says (status and resubmit
# count cells by that plan) or run none at all
NOT_FORWARDED = ("-k", "-m", "-p", "--collect-only", "--co", "--deselect", "--lf", "--last-failed", "--ff",
                 "--failed-first", "--sw", "--stepwise", "-x", "--exitfirst", "--maxfail")
SBATCH_SET_HERE = {"--array": "--shards", "-a": "--shards", "--output": "the results folder", "-o": "the results folder",
                   "--chdir": "the folder you submit from", "-D": "the folder you submit from",
                   "--partition": "--partition", "-p": "--partition", "--time": "--time", "-t": "--time",
                   "--gpus-per-task": "--gpus-per-task", "--exclusive": "--gpus-per-task 0"}
MAX_SHARDS = 1000
MAX_GPUS_PER_TASK = 64
TIME_LIMIT = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^(UNLIMITED|INFINITE)$")  # Slurm's --time formats
PARTITION = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
SUBMISSION = "submission.json"
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
               "BOOT_FAIL", "DEADLINE"}


class SlurmError(RuntimeError):
    """One line for the user: what failed and what to do."""


def store_of(results: Path, k: int, n: int) -> Path:
    return results / f"shard-{k}-of-{n}.jsonl"


def job_script(results: Path, shards: int, pytest_args: list, partition: str | None, gpus_per_task: int,
               time_limit: str | None, sbatch_args: list, python: str = sys.executable, workdir: Path | None = None,
               job_name: str = "mnist-mlp-bench") -> str:
    """The array job's script: one shard per array task."""
    results = results.resolve()
    logs = results / "slurm"
    head = [f"--job-name={job_name}", f"--array=1-{shards}", "--ntasks=1",
            f"--output={logs}/shard-%a-of-{shards}.job%A.out", f"--chdir={(workdir or Path.cwd()).resolve()}"]
    if partition:
        head.append(f"--partition={partition}")
    head.append(f"--gpus-per-task={gpus_per_task}" if gpus_per_task else "--exclusive")
    if time_limit:
        head.append(f"--time={time_limit}")
    head += sbatch_args
    store = f"{results}/shard-${{K}}-of-{shards}.jsonl"
    out = f"{results}/shard-${{K}}-of-{shards}.job${{SLURM_ARRAY_JOB_ID}}.json"
    cmd = [shlex.quote(python), "-m", "pytest", "-p", "no:cacheprovider", "bench",
           *map(shlex.quote, pytest_args), f"--shard \"${{K}}/{shards}\"", "--resume",
           f"--bench-store \"{store}\"", f"--benchmark-json \"{out}\""]
    return "\n".join([
        "#!/bin/bash",
        "# mnist-mlp-bench: one shard of the grid per array task (written by python -m bench.slurm submit)",
        *(f"#SBATCH {h}" for h in head),
        "set -uo pipefail",
        "K=${SLURM_ARRAY_TASK_ID}",
        "# one device per task: Slurm sets CUDA_VISIBLE_DEVICES; neither framework takes all device memory at start",
        "export TF_FORCE_GPU_ALLOW_GROWTH=true XLA_PYTHON_CLIENT_PREALLOCATE=false",
        "echo \"shard ${K}/" + str(shards) + " on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none}\"",
        "exec " + " ".join(cmd), ""])


def _sbatch(script: Path, array: str | None = None) -> str:
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found: run this on a Slurm login node (or install slurm-wlm)")
    cmd = ["sbatch", "--parsable"] + ([f"--array={array}"] if array else []) + [str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def check_forwarded(pytest_args: list) -> None:
    """The options after `--`, refused now (one line) where every task would refuse them after its queue wait, or
    where they would make a task's cells differ from its shard plan."""
    from bench.grid import BadOption
    from bench.session import SWITCHES, all_flags, check_argv

    suite = set(all_flags())
    takes_value = suite - set(SWITCHES)
    i = 0
    while i < len(pytest_args):
        arg = str(pytest_args[i])
        name = arg.split("=")[0]
        if name in RESERVED:
            raise SlurmError(f"{name}: set by each task itself; leave out {', '.join(RESERVED)}")
        if name in NOT_FORWARDED or (arg.startswith("-k") or arg.startswith("-m")) and not arg.startswith("--"):
            raise SlurmError(f"{arg}: not forwarded to the tasks (a shard runs the cells its plan names; select "
                             "cells with the suite's options, e.g. --optimizers, --batch-sizes)")
        if not arg.startswith("-"):
            raise SlurmError(f"{arg!r}: a positional argument after --; the tasks run `pytest bench` and select cells "
                             "by the suite's options only")
        if arg.startswith("--") and name not in suite and not name.startswith("--benchmark-"):
            close = difflib.get_close_matches(name, sorted(suite), n=1, cutoff=0.8)
            if close or name.startswith("--bench-"):
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SlurmError(f"{name}: not an option of the suite{hint}; see pytest bench --help")
        # skip the option's value: a suite option's, or the next word of any other option that takes one
        if "=" not in arg and (name in takes_value or name not in suite) and i + 1 < len(pytest_args) \
                and not str(pytest_args[i + 1]).startswith("-"):
            i += 1
        i += 1
    try:  # the options every task would refuse after its queue wait: refused now, before anything is written
        check_argv(pytest_args)
    except BadOption as exc:
        raise SlurmError(f"the pytest bench options after --: {exc}") from None


def check_sbatch(partition, gpus_per_task: int, time_limit, sbatch_args) -> None:
    """The #SBATCH lines' values, one line each: no spaces or newlines (each would break or add a line of the job
    script), and none of the options this command sets itself."""
    if partition is not None and not PARTITION.match(partition):
        raise SlurmError(f"--partition {partition!r}: a partition name (letters, digits, _ . -; several joined by "
                         "commas), no spaces")
    if gpus_per_task > MAX_GPUS_PER_TASK:
        raise SlurmError(f"--gpus-per-task {gpus_per_task}: at most {MAX_GPUS_PER_TASK} (one task times one run; "
                         "the suite uses one device per process)")
    if time_limit is not None and not TIME_LIMIT.match(time_limit):
        raise SlurmError(f"--time {time_limit!r}: Slurm's formats are minutes, minutes:seconds, hours:minutes:seconds,"
                         " days-hours, days-hours:minutes, days-hours:minutes:seconds or UNLIMITED")
    for arg in sbatch_args:
        if not arg.startswith("-") or any(c.isspace() for c in arg) or not arg.isprintable():
            raise SlurmError(f"--sbatch-arg {arg!r}: one sbatch option with its value joined by '=', no spaces or "
                             "newlines, e.g. --sbatch-arg=--account=abc")
        name = arg.split("=")[0] if arg.startswith("--") else arg[:2]
        if name in SBATCH_SET_HERE:
            raise SlurmError(f"--sbatch-arg {arg}: {name} is set by this command (from {SBATCH_SET_HERE[name]})")


def submit(results: Path, shards: int, pytest_args: list, partition=None, gpus_per_task: int = 0,
           time_limit=None, sbatch_args=(), dry_run: bool = False) -> dict:
    if shards > MAX_SHARDS:
        raise SlurmError(f"--shards {shards}: at most {MAX_SHARDS}")
    check_sbatch(partition, gpus_per_task, time_limit, sbatch_args)
    check_forwarded(pytest_args)
    if results.exists():
        record.check_writable(results, "--results", folder=True)
    else:
        record.check_writable(results / SUBMISSION, "--results")
    results.mkdir(parents=True, exist_ok=True)
    if (results / SUBMISSION).exists():
        raise SlurmError(f"{results} already holds a submission; use `python -m bench.slurm resubmit {results}` "
                         "or another --results folder")
    (results / "slurm").mkdir(exist_ok=True)
    script = results / "slurm" / "job.sh"
    record.write_atomic(script, job_script(results, shards, pytest_args, partition, gpus_per_task, time_limit,
                                           list(sbatch_args)).encode())
    script.chmod(0o755)
    sub = {"shards": shards, "pytest_args": pytest_args, "partition": partition, "gpus_per_task": gpus_per_task,
           "script": str(script), "jobs": []}
    if not dry_run:
        sub["jobs"].append({"id": _sbatch(script), "array": f"1-{shards}"})
    record.write_atomic(results / SUBMISSION, json.dumps(sub, indent=1).encode())
    return sub


def load(results: Path) -> dict:
    path = results / SUBMISSION
    if not path.exists():
        raise SlurmError(f"{results}: no {SUBMISSION} here (submit with python -m bench.slurm submit --results "
                         f"{results} ...)")
    try:
        sub = json.loads(path.read_text())
        if not isinstance(sub, dict):
            raise ValueError("not a JSON object")
        shards, jobs, script = sub["shards"], sub["jobs"], sub["script"]
        if not (isinstance(shards, int) and 1 <= shards <= MAX_SHARDS and isinstance(jobs, list)
                and all(isinstance(j, dict) and isinstance(j.get("id"), str) for j in jobs)
                and isinstance(script, str)):
            raise ValueError("shards, jobs or script of the wrong type")
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise SlurmError(f"{path}: damaged ({type(exc).__name__}: {exc}); it is written by python -m bench.slurm "
                         "submit: submit again into a new --results folder") from None
    return sub


def queue_states(job_ids: list) -> dict:
    """{array task id: state} of the submission's tasks Slurm still knows about (pending, running, or recently
    finished)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%K %T"], capture_output=True,
                          text=True)
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            states[int(parts[0])] = parts[1]
    return states


def shard_status(results: Path, sub: dict) -> list[dict]:
    """Per shard: cells planned, cells finished (in its store, by resume key), and Slurm's state of its task."""
    n = sub["shards"]
    queue = queue_states([j["id"] for j in sub["jobs"]])
    rows = []
    for k in range(1, n + 1):
        store = store_of(results, k, n)
        plan = shard.read_plan(store)
        done = {k.flat() for k in record.read_store(store, warn=False).finished_keys()}
        state = queue.get(k)
        finished = len(plan["keys"] & done) if plan else 0
        complete = plan is not None and finished == len(plan["keys"])
        rows.append({"shard": k, "planned": len(plan["cells"]) if plan else None, "finished": finished,
                     "complete": complete, "queue": state,
                     "active": state is not None and state not in DONE_STATES})
    return rows


def describe(rows: list[dict], results: Path) -> list[str]:
    out = []
    for r in rows:
        where = f"({r['queue'].lower()})" if r["queue"] else "(not in the queue)"
        if r["planned"] is None:
            out.append(f"shard {r['shard']}/{len(rows)}: not started {where}")
        else:
            mark = "done" if r["complete"] else where
            out.append(f"shard {r['shard']}/{len(rows)}: {r['finished']} of {r['planned']} cells finished {mark}")
    done = sum(r["complete"] for r in rows)
    dead = [r["shard"] for r in rows if not r["complete"] and not r["active"]]
    out.append(f"{done} of {len(rows)} shards done" + (
        f"; shard(s) {','.join(map(str, dead))} stopped short: python -m bench.slurm resubmit {results}" if dead
        else ""))
    return out


def resubmit(results: Path) -> tuple[list[int], str | None]:
    """Submits again the shards that are neither complete nor pending/running (their tasks run with --resume:
    only the cells their stores lack)."""
    sub = load(results)
    rows = shard_status(results, sub)
    todo = [r["shard"] for r in rows if not r["complete"] and not r["active"]]
    if not todo:
        return [], None
    array = ",".join(map(str, todo))
    job = _sbatch(Path(sub["script"]), array)
    sub["jobs"].append({"id": job, "array": array})
    record.write_atomic(results / SUBMISSION, json.dumps(sub, indent=1).encode())
    return todo, job


def _positive(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name; give a folder, e.g. --results runs/h100")
    return Path(text)


def _nonnegative(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m bench.slurm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit the grid as one job array; pytest bench options after --")
    s.add_argument("--shards", type=_positive, required=True, help="array tasks (shards of the grid)")
    s.add_argument("--results", type=_folder, default=Path("results"),
                   help="folder on shared storage for the stores, JSON files and logs (default results/)")
    s.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    s.add_argument("--gpus-per-task", type=_nonnegative, default=0,
                   help="GPUs per task (default 0: a CPU task, which takes its node whole)")
    s.add_argument("--time", dest="time_limit", default=None, help="time limit per task, e.g. 02:00:00")
    s.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="one more #SBATCH option, e.g. --sbatch-arg=--account=abc (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="write the job script, do not submit")
    for name, help_ in (("status", "which shards finished"), ("resubmit", "submit the shards that stopped short")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("results", type=_folder)
        if name == "status":
            q.add_argument("--wait", action="store_true", help="poll until no shard is pending or running")
    args = p.parse_args(argv)
    try:
        if args.command == "submit":
            done = submit(args.results, args.shards, pytest_args, args.partition, args.gpus_per_task,
                          args.time_limit, args.sbatch_arg, args.dry_run)
            n = args.shards
            if args.dry_run:
                print(f"wrote {done['script']} (not submitted: sbatch {done['script']})")
            else:
                print(f"submitted job {done['jobs'][0]['id']}: {n} shard(s); results in {args.results.resolve()}/ "
                      f"(shard-K-of-{n}.jsonl, shard-K-of-{n}.job{done['jobs'][0]['id']}.json, logs in slurm/)")
                print(f"status: python -m bench.slurm status {args.results}")
            return 0
        if args.command == "status":
            sub_ = load(args.results)
            rows = shard_status(args.results, sub_)
            while args.wait and any(r["active"] for r in rows):
                time.sleep(float(os.environ.get("BENCH_SLURM_POLL_S", "10")))
                rows = shard_status(args.results, sub_)
            print("\n".join(describe(rows, args.results)))
            return 0 if all(r["complete"] for r in rows) else 1
        todo, job = resubmit(args.results)
        print(f"resubmitted shard(s) {','.join(map(str, todo))} as job {job} (--resume: missing cells only)" if todo
              else "nothing to resubmit: every shard is complete, pending or running")
        return 0
    except (SlurmError, record.StoreError) as exc:
        print(f"bench.slurm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
