"""The suite's pytest plugin: options, the session's state (config.stash), the benchmarks parametrized with the
cells themselves, --resume, and each run's record handed to pytest-benchmark's JSON and the run store.

Loaded by the root conftest.py and registered as the `pytest11` entry point `bench.plugin`. Collection does
no heavy work: MNIST, the machine's identity and the calibration are taken once, before the first run.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench import grid, record

BENCH_DIR = Path(__file__).resolve().parent

GRID_OPTIONS = {  # option: (grid.parse_sweep's argument, help)
    "--bench-profile": ("profile", "grid profile: " + ", ".join(
        f"{p.name} ({p.train_size:,} examples, {p.epochs} epochs; {p.purpose})" for p in grid.PROFILES.values())
        + f" (default: {grid.DEFAULT_PROFILE})"),
    "--batch-sizes": ("batch_sizes", "comma-separated batch sizes; 'full' = the whole training set (default: the "
                                     "profile's)"),
    "--optimizers": ("optimizers", "comma-separated Keras optimizer names, 'lecture' (the lecture's seven, default) "
                                   "or 'all'"),
    "--epochs": ("epochs", "epochs per run (default: the profile's)"),
    "--train-size": ("train_size", "first N MNIST training examples, 1 to 50000 (the last 10,000 are the validation split; default: the profile's)"),
    "--seeds": ("seeds", "comma-separated seeds (default: 0)"),
    "--activation": ("activation", "hidden activation: sigmoid (the lecture's, default) or relu"),
    "--dispatch": ("dispatch", "default (what model.fit gives a user) or fast (an epoch per compiled call: no "
                               "per-step host work)"),
}


@dataclass
class State:
    """The pytest session's benchmarking state, in config.stash."""

    sweep: grid.Sweep
    experiment: str | None
    experiment_cells: list
    store: str
    threads: int | None
    precision: str
    machine_label: str | None
    mnist_source: Path | None = None
    mnist: object = None  # bench.data.Mnist, loaded before the first run
    machine: dict | None = None  # the store lines' machine entry
    code_version: str | None = None
    calibration: dict | None = None
    started: bool = False
    to_run: list = field(default_factory=list)  # the cells left after collection (and --resume)
    start: object = None  # --experiment escape: bench.escape.Start, the stuck point every run starts from
    failed: list = field(default_factory=list)  # benchmark-JSON entries of cells that are not timings
    unstable: list = field(default_factory=list)  # (node id, reason) of cells whose kept timing is unstable
    reruns: int = 0  # --rerun-unstable


STATE = pytest.StashKey[State]()


def pytest_addoption(parser):
    group = parser.getgroup("mnist-mlp-bench")
    for option, (dest, help_) in GRID_OPTIONS.items():
        group.addoption(option, dest=f"bench_{dest}", default=None, help=help_)
    group.addoption("--experiment", dest="bench_experiment", default=None,
                    help="run a named experiment instead of the grid: " + ", ".join(grid.EXPERIMENTS))
    group.addoption("--saddle-profile", dest="bench_saddle_profile", default="cpu",
                    help="--experiment saddle's grid: " + ", ".join(f"{k} ({p.about})"
                                                                    for k, p in grid.SADDLE_PROFILES.items()))
    group.addoption("--escape-profile", dest="bench_escape_profile", default="cpu",
                    help="--experiment escape's grid: " + ", ".join(f"{k} ({p.about})"
                                                                    for k, p in grid.ESCAPE_PROFILES.items()))
    group.addoption("--tuning-profile", dest="bench_tuning_profile", default="cpu",
                    help="--experiment tuning's grid: " + ", ".join(f"{k} ({p.about})"
                                                                    for k, p in grid.TUNING_PROFILES.items()))
    group.addoption("--lr-grid", dest="bench_lr_grid", default=None,
                    help="--experiment tuning's learning rates for every optimizer, comma-separated (default: the "
                         "profile's count of rates half a decade apart, centred on each optimizer's pinned rate)")
    group.addoption("--mnist", dest="bench_mnist", default=None,
                    help="Keras-layout mnist.npz (default: $MNIST_NPZ, then Keras' cache, then download)")
    group.addoption("--bench-store", dest="bench_store", default=record.DEFAULT_STORE,
                    help=f"JSON-lines file each finished run is appended to at once (default {record.DEFAULT_STORE})")
    group.addoption("--threads", dest="bench_threads", default=None,
                    help="TensorFlow intra- and inter-op threads (default: TensorFlow's, one per core)")
    group.addoption("--precision", dest="bench_precision", default=None,
                    help="float32 matmul precision: tf32 (TensorFloat-32 where the GPU has it, compute capability 8.0 "
                         "or later; the frameworks' default) or fp32 (full float32); the calibration measures the "
                         "peak at it, and each record says which one its run got")
    group.addoption("--machine-label", dest="bench_machine_label", default=None,
                    help="short name of this machine in results and reports (default: e.g. H100-80GB, EPYC-2c)")
    group.addoption("--shard", dest="bench_shard", default=None, metavar="K/N",
                    help="run only the K-th of N slices of the grid, balanced by estimated cost (N processes, e.g. "
                         "a Slurm job array, cover every cell once; see python -m bench.slurm)")
    group.addoption("--resume", dest="bench_resume", action="store_true",
                    help="skip the cells whose finished record (same protocol, settings, cell, seed, machine) is "
                         "in the store")
    group.addoption("--no-calibration", dest="bench_no_calibration", action="store_true",
                    help="skip measuring the device's matmul rate and memory bandwidth before the first run (~2 s "
                         "on a CPU); runs then carry no peak_fraction")
    group.addoption("--rerun-unstable", dest="bench_rerun_unstable", default="0", metavar="N",
                    help="train a cell whose timing is unstable again, up to N more times, and keep its most stable "
                         "attempt (every attempt is stored; default 0)")
    group.addoption("--no-probes", dest="bench_no_probes", action="store_true",
                    help="skip the curvature and noise probes between epochs (pure speed runs)")
    group.addoption("--deterministic", dest="bench_deterministic", action="store_true",
                    help="TensorFlow op determinism (slower; CPU runs are reproducible without it)")


def _parse(config) -> State:
    from bench.backends import optimizer_names

    opt = config.getoption
    sweep = grid.parse_sweep(**{dest: opt(f"bench_{dest}") for dest, _ in GRID_OPTIONS.values()},
                             discover=optimizer_names)
    if opt("bench_no_probes"):
        sweep = dataclasses.replace(sweep, probes=False)
    experiment = opt("bench_experiment")
    if experiment is not None and experiment not in grid.EXPERIMENTS:
        raise grid.BadOption(f"--experiment: unknown experiment {experiment!r}; choose one of "
                             f"{', '.join(grid.EXPERIMENTS)}")
    cells = []
    if experiment == "saddle":
        cells = grid.saddle_cells(opt("bench_saddle_profile"), opt("bench_train_size"), opt("bench_seeds"))
    elif experiment == "escape":
        cells = grid.escape_cells(opt("bench_escape_profile"), opt("bench_seeds"))
    elif experiment == "tuning":
        cells = grid.tuning_cells(opt("bench_tuning_profile"), opt("bench_optimizers"), opt("bench_lr_grid"),
                                  opt("bench_seeds"))
    threads = opt("bench_threads")
    from bench import shard

    shard.parse(opt("bench_shard"))  # a bad K/N is a usage error before anything runs
    return State(sweep=sweep, experiment=experiment, experiment_cells=cells, store=opt("bench_store"),
                 threads=None if threads is None else grid.parse_threads(threads),
                 precision=grid.parse_precision(opt("bench_precision")),
                 machine_label=opt("bench_machine_label"), reruns=grid.parse_reruns(opt("bench_rerun_unstable")))


def pytest_configure(config):
    try:
        config.stash[STATE] = _parse(config)
    except grid.BadOption as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_ignore_collect(collection_path, config):
    """Only the grid's module, or only the requested experiment's, is collected from bench/."""
    state = config.stash.get(STATE, None)
    path = Path(collection_path)
    if state is None or path.parent != BENCH_DIR or not path.name.startswith("test_"):
        return None
    wanted = grid.EXPERIMENTS[state.experiment] if state.experiment else grid.GRID_MODULE
    return None if path.name == wanted else True


def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames or Path(metafunc.module.__file__).resolve().parent != BENCH_DIR:
        return
    state = metafunc.config.stash[STATE]
    cells = state.experiment_cells if state.experiment else state.sweep.cells()
    metafunc.parametrize("cell", cells, ids=[c.test_id for c in cells])


def _cell_of(item):
    spec = getattr(item, "callspec", None)
    return spec.params.get("cell") if spec is not None else None


def pytest_collection_modifyitems(session, config, items):
    state = config.stash[STATE]
    if not any(_cell_of(i) for i in items):
        return
    from bench import backends, data

    try:
        state.mnist_source = data.locate(config.getoption("bench_mnist"))
        record.check_writable(state.store)
        backend = backends.current() if (state.threads or config.getoption("bench_deterministic")
                                         or state.experiment or state.precision != grid.PRECISIONS[0]) else None
        if state.threads is not None:
            backend.set_threads(state.threads)
        if state.precision != grid.PRECISIONS[0]:
            backend.set_precision(state.precision)
        if config.getoption("bench_deterministic"):
            backend.enable_determinism()
        if state.experiment and not backend.FIXED_BUDGET:
            raise backends.Unsupported(f"--experiment {state.experiment}: its fixed update budgets need the "
                                       "tensorflow backend")
        if config.getoption("bench_shard"):
            _shard(config, state, items)
        if config.getoption("bench_resume"):
            _resume(config, state, items)
    except (data.DataError, record.StoreError, backends.Unsupported) as exc:
        raise pytest.UsageError(str(exc)) from None
    state.to_run = [c for c in map(_cell_of, items) if c is not None]


def _machine(state: State) -> dict:
    if state.machine is None:
        from bench.machine import store_machine

        state.machine = store_machine(state.machine_label)
    return state.machine


def _shard(config, state: State, items) -> None:
    """Keep the items of this shard (bench.shard.split over every collected cell) and write the shard's plan beside
    its store (what `python -m bench.slurm status` counts finished cells against)."""
    from bench import shard
    from bench.backends import name

    k, n = shard.parse(config.getoption("bench_shard"))
    cells = [c for c in map(_cell_of, items) if c is not None]
    mine = {c.test_id for c in shard.split(cells, n)[k - 1]}
    kept = [i for i in items if _cell_of(i) is None or _cell_of(i).test_id in mine]
    dropped = [i for i in items if i not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    me = record.machine_id(_machine(state))
    planned = [c for c in cells if c.test_id in mine]
    shard.write_plan(state.store, k, n, [c.test_id for c in planned],
                     [record.resume_key(c.planned(name(), state.threads, state.precision), me) for c in planned])
    _say(config, f"shard {k}/{n}: {len(mine)} of {len(cells)} cells, estimated "
                 f"{shard.loads([planned])[0] / 60:.1f} min of {sum(shard.loads([cells])) / 60:.1f} (like "
                 f"{shard.REFERENCE})")


def _resume(config, state: State, items) -> None:
    from bench.backends import name

    done = record.finished_keys(record.read_store(state.store))
    me = record.machine_id(_machine(state))
    skipped, kept = [], []
    for item in items:
        cell = _cell_of(item)
        planned = cell.planned(name(), state.threads, state.precision) if cell is not None else None
        (skipped if planned and record.resume_key(planned, me) in done else kept).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept
    _say(config, f"resume: {len(skipped)} of {len(skipped) + len(kept)} cells already in {state.store}, "
                 f"skipped; {len(kept)} to run")


def _say(config, line: str) -> None:
    """A line on the terminal, also while a test runs (output capture suspended for it)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line)


def _start(config, state: State) -> None:
    """Before the first run, once: MNIST, the machine, the estimate, the calibration."""
    from bench import backends, data, estimate
    from bench.machine import code_version

    try:
        state.mnist = data.read_npz(state.mnist_source) if state.mnist_source else data.load_mnist()
    except data.DataError as exc:
        pytest.exit(str(exc), returncode=4)
    me = record.machine_id(_machine(state))
    state.code_version = code_version()
    try:
        with warnings.catch_warnings():  # a torn line is reported by the store's own readers, not twice
            warnings.simplefilter("ignore")
            entries = record.read_store(state.store)
    except record.StoreError:
        entries = []
    for line in estimate.lines(state.to_run, entries, me, backends.name(), state.sweep.dispatch):
        _say(config, line)
    if not config.getoption("bench_no_calibration"):
        from bench.calibrate import calibrate

        state.calibration = calibrate()
    if state.experiment == "escape":
        from bench import escape

        profile = grid.escape_profile(config.getoption("bench_escape_profile"))
        state.start = escape.start(profile, state.mnist, Path(state.store).parent)
        _say(config, f"escape: every run starts from the stuck point {state.start.stuck.digest[:12]} "
                     f"({state.start.stuck.kind}, loss {state.start.stuck.loss:.4g} after "
                     f"{state.start.stuck.updates} full-batch updates); escaped below {state.start.target_loss:.4g}")
    state.started = True


@pytest.fixture(scope="session")
def bench_state(request) -> State:
    state = request.config.stash[STATE]
    if not state.started:
        _start(request.config, state)
    return state


def is_timing(rec: record.Record) -> bool:
    """Whether a run's steady samples are timings: it finished or diverged, after at least one steady epoch. A
    cell that ended in error, oom or interrupted has none, whatever its wall time; a run of one epoch has none
    either (that epoch compiles)."""
    return rec.status in ("ok", "diverged") and bool(rec.steady_samples_s)


def _attempts(cell, state, train, progress, node) -> record.Record:
    """Train the cell, again while its timing is unstable (up to --rerun-unstable more times); every attempt is
    stored as it finishes, the most stable one is returned."""
    attempts, tuning = [], None
    if cell.tuning_role is not None:
        from bench import tuning as T

        profile = grid.tuning_profile(node.config.getoption("bench_tuning_profile"))
        try:
            cell, tuning = T.prepare(cell, record.read_store(state.store), record.machine_id(_machine(state)),
                                     node.config.getoption("bench_lr_grid"), profile.grid_points)
        except T.NoTrials as exc:
            pytest.fail(str(exc), pytrace=False)
    for attempt in range(1, state.reruns + 2):
        rec = train(cell, state.mnist, peak=state.calibration, on_epoch=progress, attempt=attempt, start=state.start)
        rec.tuning = tuning
        record.append(state.store, node.nodeid, rec.to_dict(), machine=_machine(state), version=state.code_version)
        attempts.append(rec)
        if not rec.unstable or rec.status not in record.FINISHED:
            break
    return min(attempts, key=lambda r: record.stability_key(r.status, r.unstable, r.spread))


@pytest.fixture
def run_cell(request, benchmark, bench_state):
    """Train one cell; its record goes to extra_info and the store, its steady samples to pytest-benchmark's stats.
    A cell whose epochs are not timings (is_timing) gets no stats: it is written to the benchmark JSON under
    `untimed_runs`, beside the `benchmarks` that `pytest-benchmark compare` reads."""
    from bench.train import run

    config, node = request.config, request.node

    def progress(epoch, seconds):
        if config.getoption("verbose") > 0:
            _say(config, f"  {node.callspec.id}: epoch {epoch} {seconds:.3f} s")

    def _run(cell: grid.RunConfig) -> record.Record:
        rec = _attempts(cell, bench_state, run, progress, node)
        data = rec.to_dict()
        benchmark.group = (cell.optimizer if cell.budget is None else f"{cell.profile}: {cell.optimizer} "
                           + (cell.tuning_role if cell.tuning_role else f"same {cell.budget}"))
        benchmark.params = cell.params
        benchmark.extra_info.update(data)
        benchmark._mode = "mnist-mlp-bench steady samples"  # used, with or without stats (no "not used" warning)
        if is_timing(rec) and benchmark.enabled:
            stats = benchmark._make_stats(1)  # fixture internals; tests check the JSON they produce
            for t in rec.steady_samples_s:
                stats.update(t)
        else:
            bench_state.failed.append({"name": node.name, "fullname": node.nodeid, "group": benchmark.group,
                                       "params": cell.params, "extra_info": data})
        if rec.unstable and rec.status in record.FINISHED:
            bench_state.unstable.append((node.nodeid, rec.unstable_reason))
        if rec.status == "interrupted":
            raise KeyboardInterrupt  # recorded and stored: now stop the sweep as the user asked
        if rec.status != "ok":
            warnings.warn(f"{cell.test_id} ended as {rec.status}: {rec.error} (recorded)", pytest.PytestWarning)
        return rec

    return _run


def pytest_terminal_summary(terminalreporter, config):
    """The cells whose timing is unstable, and how to measure them again."""
    state = config.stash.get(STATE, None)
    if state is None or not state.unstable:
        return
    tr = terminalreporter
    tr.section(f"mnist-mlp-bench: {len(state.unstable)} unstable timing(s)", yellow=True)
    for nodeid, reason in state.unstable:
        tr.write_line(f"{nodeid}: {reason}")
    tr.write_line("Measure them again with the same options, naming each by its node id instead of `bench` (e.g. "
                  f"pytest \"{state.unstable[0][0]}\" ...), or rerun unstable cells at once with "
                  "--rerun-unstable N; a figure draws an unstable cell hollow.")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    state = config.stash.get(STATE, None)
    if state is not None and state.failed:
        output_json["untimed_runs"] = state.failed


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """pytest-benchmark writes no JSON when no benchmark has stats; the failed cells' records still belong in it."""
    config = session.config
    state = config.stash.get(STATE, None)
    bs = getattr(config, "_benchmarksession", None)
    if state is None or not state.failed or bs is None or not bs.json or bs.benchmarks:
        return
    machine_info = bs.get_machine_info()
    commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
    output = config.hook.pytest_benchmark_generate_json(config=config, benchmarks=[], include_data=True,
                                                        machine_info=machine_info, commit_info=commit_info)
    config.hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output)
    bs.save_json(output)


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.machine import machine_identity, short_label

    state = config.stash.get(STATE, None)
    if state is None:
        return
    machine_info.update(machine_identity())
    cpu = (machine_info.get("cpu") or {}).get("brand_raw")
    machine_info["machine_label"] = (state.machine["label"] if state.machine else state.machine_label
                                     or short_label(machine_info["gpu"], cpu, machine_info["cpu_count"]))
    machine_info["tf_threads"] = state.threads
    machine_info["precision"] = state.precision  # asked for; each record says what its run got
    machine_info["calibration"] = state.calibration
    machine_info["dispatch_mode"] = state.sweep.dispatch
