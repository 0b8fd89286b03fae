"""The sweep session without pytest: the options parsed and checked, the cells of the chosen experiment, the shard
and --resume selection, the start (MNIST, machine, estimate, calibration, the experiment's preparation), and each
cell's run with its attempts, stored as it finishes. The pytest plugin (bench/plugin.py) only wires this to pytest's
hooks and fixtures; the tests drive it in process."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bench import experiments, grid, record
from bench.grid import BadOption, RunConfig

# The session's own options (beside the grid's, bench.grid.COMMON_OPTIONS, and the experiments' own):
# flag -> (default, help); a flag whose default is False is a switch.
SESSION_OPTIONS = {
    "--experiment": (None, "run a named experiment instead of the grid: " + ", ".join(
        f"{e.name} ({e.about})" for e in experiments.REGISTRY.values() if e.name != record.GRID)),
    "--mnist": (None, "Keras-layout mnist.npz (default: $MNIST_NPZ, then Keras' cache, then download)"),
    "--bench-store": (record.DEFAULT_STORE, f"JSON-lines file each finished run is appended to at once (default "
                                            f"{record.DEFAULT_STORE})"),
    "--threads": (None, "TensorFlow intra- and inter-op threads (default: TensorFlow's, one per core)"),
    "--precision": (None, "float32 matmul precision: tf32 (TensorFloat-32 where the GPU has it, compute capability "
                          "8.0 or later; the frameworks' default) or fp32 (full float32); the calibration measures "
                          "the peak at it, and each record says which one its run got"),
    "--machine-label": (None, "short name of this machine in results and reports (default: e.g. H100-80GB, "
                              "EPYC-2c)"),
    "--shard": (None, "K/N: run only the K-th of N slices of the grid, balanced by estimated cost (N processes, e.g. "
                      "a Slurm job array, cover every cell once; see python -m bench.slurm)"),
    "--resume": (False, "skip the cells whose finished record (same protocol, settings, cell, seed, machine) is in "
                        "the store"),
    "--no-calibration": (False, "skip measuring the device's matmul rate and memory bandwidth before the first run "
                                "(~2 s on a CPU); runs then carry no peak_fraction"),
    "--rerun-unstable": ("0", "train a cell whose timing is unstable again, up to N more times, and keep its most "
                              "stable attempt (every attempt is stored; default 0)"),
    "--deterministic": (False, "TensorFlow op determinism (slower; CPU runs are reproducible without it)"),
    "--in-process": (False, "train every run in this process instead of each round of repeats in a fresh one "
                            "(bench.worker; for a debugger or a profiler: the repeats then share the process's state, "
                            "and their interval leaves out what varies between processes)"),
}


def dest(flag: str) -> str:
    """The pytest option's dest of a flag: --bench-store -> bench_bench_store."""
    return "bench_" + flag.lstrip("-").replace("-", "_")


def all_flags() -> list[str]:
    """Every option of the suite: the grid's, the experiments', the session's."""
    return [*grid.COMMON_OPTIONS, *(o.flag for o in experiments.all_options()), *SESSION_OPTIONS]


SWITCHES = ("--no-probes", "--probes", *(f for f, (default, _) in SESSION_OPTIONS.items() if default is False))


def check_argv(argv: list) -> "Session":
    """The suite's options among a `pytest bench` command line's arguments, parsed and checked as the plugin does
    (BadOption: one line), without starting anything: what `python -m bench.slurm submit` checks before it writes
    a job script. Other arguments (pytest's, pytest-benchmark's) are left to pytest."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in all_flags():
        if flag in SWITCHES:
            parser.add_argument(flag, action="store_true", default=False)
        else:
            parser.add_argument(flag, default=SESSION_OPTIONS.get(flag, (None, ""))[0])
    known, _ = parser.parse_known_args([str(a) for a in argv])
    return Session.from_options({flag: getattr(known, flag.lstrip("-").replace("-", "_")) for flag in all_flags()})


@dataclass
class Session(experiments.Context):
    """One sweep: what was asked, what is selected to run, what has run."""

    given: dict  # flag -> value as given on the command line (None / False: not given)
    experiment: experiments.Experiment = None
    cells: list = field(default_factory=list)  # the experiment's cells, in run order
    store: str = record.DEFAULT_STORE
    threads: int | None = None
    precision: str = "tf32"
    reruns: int = 0
    mnist_source: Path | None = None
    mnist: object = None  # bench.data.Mnist, loaded by start()
    machine: record.Machine | None = None
    code_version: str | None = None
    calibration: dict | None = None
    started: bool = False
    to_run: list = field(default_factory=list)  # the cells left after selection
    untimed: list = field(default_factory=list)  # (node id, cell, record) of runs that are not timings
    unstable: list = field(default_factory=list)  # (node id, reason) of cells whose kept timing is unstable
    done: list = field(default_factory=list)  # (cell, record) of every run of this session, in order
    started_at: float | None = None  # time.monotonic() of the first run
    sweep_id: str | None = None  # what every record of this session names as its sweep
    worker: object = None  # bench.worker.Worker training the current round, where rounds run in fresh processes
    worker_round: int | None = None  # the round (repeat) the worker trains

    @classmethod
    def from_options(cls, given: dict) -> "Session":
        """Parse and check every option (BadOption: a one-line usage error) and the chosen experiment's cells."""
        from bench import shard

        experiment = experiments.get(given.get("--experiment"))
        experiments.check_given(experiment, {f: given.get(f) for f in [*grid.COMMON_OPTIONS,
                                                                      *(o.flag for o in experiments.all_options())]})
        threads = given.get("--threads")
        shard.parse(given.get("--shard"))  # a bad K/N is a usage error before anything runs
        grid.parse_machine_label(given.get("--machine-label"))
        return cls(given=given, experiment=experiment, cells=experiment.cells(given),
                   store=given.get("--bench-store") or record.DEFAULT_STORE,
                   threads=None if threads is None else grid.parse_threads(threads),
                   precision=grid.parse_precision(given.get("--precision")),
                   reruns=grid.parse_reruns(given.get("--rerun-unstable") or "0"))

    # --- experiments.Context --------------------------------------------------------------------------------

    def option(self, flag: str):
        return self.given.get(flag)

    def read_store(self) -> record.Store:
        """The store, and the runs a failing store could not take that were kept beside it (fallback): --resume
        and the estimate count them as done."""
        with warnings.catch_warnings():  # the start message counts the skipped lines once
            warnings.simplefilter("ignore", record.BadLineWarning)
            store = record.read_store(self.store)
            for kept in sorted(Path(self.store).parent.glob(f"{Path(self.store).stem}{UNSAVED}*.jsonl")):
                more = record.read_store(kept)
                store.entries += more.entries
                store.bad += more.bad
        return store

    @property
    def machine_id(self) -> str:
        return self.identify().id

    # --- before the first run -------------------------------------------------------------------------------

    def identify(self) -> record.Machine:
        if self.machine is None:
            from bench.machine import store_machine

            self.machine = store_machine(grid.parse_machine_label(self.given.get("--machine-label")))
        return self.machine

    def configure(self, benchmark_json=None) -> None:
        """Where MNIST comes from, that the store and the benchmark JSON can be written (by writing) and are not one
        file, and the backend's settings (DataError, StoreError, Unsupported: usage errors)."""
        from bench import backends, data

        self.mnist_source = data.locate(self.given.get("--mnist"))
        if self.mnist_source is not None:  # a bad file is a usage error now, not a failure at the first run
            self.mnist = data.read_npz(self.mnist_source)
        record.check_writable(self.store)
        if benchmark_json is not None:
            if Path(benchmark_json).resolve() == Path(self.store).resolve():
                raise record.StoreError(f"--benchmark-json {benchmark_json} is the run store (--bench-store): "
                                        "pytest-benchmark rewrites its file at the end; give another path")
            record.check_writable(benchmark_json, "--benchmark-json")
        backends.name()  # an unknown KERAS_BACKEND is a usage error here, before anything trains
        backend = backends.apply_settings(self.threads, self.precision, bool(self.given.get("--deterministic")))
        if self.experiment.fixed_budget and not (backend or backends.current()).FIXED_BUDGET:
            raise backends.Unsupported(f"--experiment {self.experiment.name}: its fixed update budgets need the "
                                       "tensorflow backend")

    def key(self, cell: RunConfig) -> record.RunKey:
        from bench.backends import name

        return cell.run_key(name(), self.threads, self.precision, self.machine_id)

    def select(self, cells: list) -> tuple[list, list[str]]:
        """The cells this process runs (its shard, less those --resume finds finished), with the lines to print;
        a shard writes its plan beside its store."""
        from bench import shard

        lines = []
        if self.given.get("--shard"):
            k, n = shard.parse(self.given["--shard"])
            mine = shard.split(cells, n)[k - 1]
            shard.write_plan(self.store, k, n, [c.test_id for c in mine], [self.key(c).flat() for c in mine])
            lines.append(f"shard {k}/{n}: {len(mine)} of {len(cells)} cells, estimated "
                         f"{shard.loads([mine])[0] / 60:.1f} min of {sum(shard.loads([cells])) / 60:.1f} (like "
                         f"{shard.REFERENCE})")
            cells = [c for c in cells if c in mine]
        if self.given.get("--resume"):
            store = self.read_store()
            done = store.finished_keys()
            kept = [c for c in cells if self.key(c) not in done]
            lines.append(f"resume: {len(cells) - len(kept)} of {len(cells)} cells already in {self.store}, "
                         f"skipped; {len(kept)} to run")
            lines += [f"resume: {b.text()}: skipped, not a valid record" for b in store.bad]
            cells = kept
        self.to_run = list(cells)
        return cells, lines

    def start(self) -> list[str]:
        """Once, before the first run: MNIST, the machine, the estimate, the calibration, the experiment's
        preparation. Returns the lines to print (DataError when MNIST cannot be read)."""
        from bench import backends, data, estimate
        from bench.machine import code_version

        if self.mnist is None:
            self.mnist = data.read_npz(self.mnist_source) if self.mnist_source else data.load_mnist()
        self.identify()
        self.sweep_id = sweep_id(self.machine)
        self.code_version = code_version()
        store = self.read_store()
        lines = estimate.lines(self.to_run, store.entries, self.machine_id, backends.name(),
                               self.to_run[0].dispatch if self.to_run else "default")
        if store.bad:
            lines.append(f"store {self.store}: {len(store.bad)} line(s) are no valid record and were skipped "
                         f"(first: {store.bad[0].text()})")
        short = sorted({c.epochs for c in self.to_run if c.epochs - 1 < record.MIN_SAMPLES})
        if short:
            lines.append(f"note: {short[0]} epoch(s) per run give {short[0] - 1} steady sample(s) per repeat, fewer "
                         f"than {record.MIN_SAMPLES}: those timings are marked unstable (fine for a smoke check, not "
                         f"for a result; --epochs {record.MIN_SAMPLES + 1} or more)")
        if not self.given.get("--no-calibration"):
            if self.fresh_rounds and self.to_run:  # the device is the workers': the sweep's process never touches it
                self.calibration = self._worker_for(self.to_run[0]).call("calibrate")
            else:
                from bench.calibrate import calibrate

                self.calibration = calibrate()
        lines += self.experiment.begin(self)
        self.started = True
        return lines

    # --- each cell ------------------------------------------------------------------------------------------

    def run(self, cell: RunConfig, nodeid: str, on_epoch=None) -> record.Record:
        """Train the cell, again while its timing is unstable (up to --rerun-unstable more times); every attempt is
        stored as it finishes, the most stable one is returned (PlanError: its experiment could not plan it)."""
        from bench.train import run

        plan = self.experiment.plan(cell, self)
        attempts = []
        for attempt in range(1, self.reruns + 2):
            if self.fresh_rounds:
                try:
                    rec = self._train_in_worker(cell, attempt, plan, on_epoch)
                except LostRun:
                    if not attempts:
                        raise
                    break  # a rerun lost: the attempts stored before it stand
            else:
                rec = run(cell, self.mnist, peak=self.calibration, on_epoch=on_epoch, attempt=attempt, plan=plan,
                          code_version=self.code_version)
            rec.sweep = self.sweep_id
            rec.process = "round" if self.fresh_rounds else "sweep"
            self._store(nodeid, cell, rec)
            attempts.append(rec)
            if not rec.unstable or rec.status not in record.FINISHED:
                break
        kept = min(attempts, key=lambda r: record.stability_key(r.status, r.unstable, r.spread))
        if not is_timing(kept):
            self.untimed.append((nodeid, cell, kept))
        if kept.unstable and kept.status in record.FINISHED:
            self.unstable.append((nodeid, kept.unstable_reason))
        self.done.append((cell, kept))
        return kept

    # --- rounds in fresh processes (bench.worker) --------------------------------------------------------------

    @property
    def fresh_rounds(self) -> bool:
        """Each round of repeats trains in a fresh process: the experiment's runs are timings, and --in-process was
        not given."""
        return bool(self.experiment.fresh_process_rounds and not self.given.get("--in-process"))

    def _worker_for(self, cell: RunConfig):
        """The worker of the cell's round: the current one, or a fresh process when the round changes."""
        from bench.worker import Worker

        if self.worker is not None and self.worker_round != cell.repeat:
            self.close()
        if self.worker is None:
            self.worker = Worker({"mnist": str(self.mnist_source) if self.mnist_source else None,
                                  "threads": self.threads, "precision": self.precision,
                                  "deterministic": bool(self.given.get("--deterministic"))})
            self.worker_round = cell.repeat
        return self.worker

    def _train_in_worker(self, cell: RunConfig, attempt: int, plan, on_epoch) -> record.Record:
        """The run, trained by its round's worker. A worker that dies leaves the run's record as it stood when
        training began, as an error saying how the process ended (LostRun if it died, or failed, before that), and
        the next run gets a fresh worker."""
        from bench import worker

        try:
            return self._worker_for(cell).call("run", cell, self.calibration, attempt, plan, self.code_version,
                                               on_epoch=on_epoch)
        except (worker.WorkerDied, worker.WorkerFailed) as exc:
            self.close()
            rec = getattr(exc, "record", None)
            if rec is None:
                raise LostRun(f"{cell.test_id}: not recorded: {exc}") from None
            rec.status, rec.error = "error", str(exc)
            return rec

    def close(self) -> None:
        """End the round's worker, if any (at a round's end, and when the sweep ends)."""
        if self.worker is not None:
            self.worker.close()
            self.worker, self.worker_round = None, None

    def _store(self, nodeid: str, cell: RunConfig, rec: record.Record) -> None:
        """Append the run to the store; when the store cannot take it, keep it in a fallback file and raise
        StoreFailed (the sweep stops at this cell: nothing else trains for a store that loses its runs)."""
        try:
            record.append(self.store, nodeid, rec, machine=self.machine, version=self.code_version)
        except (OSError, record.StoreError) as exc:
            kept = fallback(nodeid, rec, self.machine, self.code_version, self.store)
            raise StoreFailed(f"--bench-store: could not append the run of {cell.test_id} to {self.store} "
                              f"({getattr(exc, 'strerror', None) or exc}); its record is in "
                              + (f"{kept} and " if kept else "") + "the benchmark JSON (if asked for); the sweep "
                              "stops here, nothing else trains", rec) from None

    def progress(self, cell: RunConfig, rec: record.Record) -> list[str]:
        """The lines to print after a run: its estimate, the cell's estimate and interval once its last repeat of
        this sweep is done, and the sweep's remaining time re-estimated from the runs done so far."""
        import time

        from bench import estimate

        self.started_at = self.started_at or time.monotonic()
        per = rec.time_per_update_s
        line = (f"  {cell.test_id}: {rec.status}" + (f", {per * 1000:.4g} ms/update (fastest of "
                                                     f"{len(rec.steady_samples_s)} epochs)" if per else ""))
        lines = [line + (f"; unstable: {rec.unstable_reason}" if rec.unstable else "")]
        mine = [r for c, r in self.done if _same_cell(c, cell)]
        if len(mine) == sum(1 for c in self.to_run if _same_cell(c, cell)) and len(mine) > 1:
            value, low, high, n = record.repeats_interval([r.time_per_update_s for r in mine])
            if n >= 2:
                lines.append(f"  cell {cell.optimizer} batch {cell.label}: {value * 1000:.4g} ms/update "
                             f"[{low * 1000:.4g}, {high * 1000:.4g}] (95% interval over {n} repeats)")
        left = self.to_run[len(self.done):]
        if left:
            finished = [r for _, r in self.done if r.status == "ok" and r.time_per_update_s]
            seconds = estimate.remaining(left, finished)
            if seconds is not None:
                lines.append(f"  {len(self.done)} of {len(self.to_run)} runs done; about {estimate.duration(seconds)} "
                             "left (re-estimated from this sweep's runs)")
        return lines


def sweep_id(machine: record.Machine) -> str:
    """'2026-11-30T05:12:03Z-vm-1234': when and where this sweep started, and its process."""
    import datetime
    import os

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now}-{machine.node}-{os.getpid()}"


def _same_cell(a: RunConfig, b: RunConfig) -> bool:
    """The same cell of the grid: everything but the repeat (and the seed: timings pool over seeds)."""
    return (a.experiment, a.profile, a.optimizer, a.batch_size, a.full_batch, a.budget, a.learning_rate,
            a.role, a.dispatch, a.train_size, a.epochs) == (b.experiment, b.profile, b.optimizer, b.batch_size,
                                                            b.full_batch, b.budget, b.learning_rate, b.role,
                                                            b.dispatch, b.train_size, b.epochs)


class LostRun(RuntimeError):
    """A run whose worker died before its training began, so no record could be made; the message says how."""


class StoreFailed(RuntimeError):
    """The store could not take a finished run (a full disk, a failing device); `record` is that run."""

    def __init__(self, message: str, rec: record.Record):
        super().__init__(message)
        self.record = rec


def fallback(nodeid: str, rec: record.Record, machine, version, store) -> Path | None:
    """Write a run the store could not take to a file of its own: beside the store, else in the temporary folder
    (often another file system); the path written, or None when neither could take it."""
    import tempfile
    import time

    name = f"{Path(store).stem}{UNSAVED}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
    for folder in (Path(store).parent, Path(tempfile.gettempdir())):
        try:
            record.append(folder / name, nodeid, rec, machine=machine, version=version)
            return folder / name
        except (OSError, record.StoreError):
            try:  # no empty file left on a full disk
                if (folder / name).stat().st_size == 0:
                    (folder / name).unlink()
            except OSError:
                pass
    return None


UNSAVED = ".unsaved-"  # <store stem>.unsaved-<time>-<pid>.jsonl: runs a failing store could not take


def is_timing(rec: record.Record) -> bool:
    """Whether a run's steady samples are timings: it finished or diverged, after at least one steady epoch. A
    cell that ended in error, oom or interrupted has none, whatever its wall time; a run of one epoch has none
    either (that epoch compiles)."""
    return rec.status in ("ok", "diverged") and bool(rec.steady_samples_s)
