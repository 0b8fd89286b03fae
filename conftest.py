"""pytest options of the suite, the grid's parametrization, the run fixture, and machine_info enrichment."""

from __future__ import annotations

import dataclasses
import os
import warnings

import pytest

from bench import grid, store

GRID_OPTIONS = {
    # option: (dest, help)
    "--bench-profile": ("profile", f"protocol: {', '.join(f'{p.name} ({p.train_size:,} examples, {p.epochs} epochs)' for p in grid.PROFILES.values())}; default {grid.DEFAULT_PROFILE}"),
    "--batch-sizes": ("batch_sizes", "comma-separated batch sizes, 'full' = whole training set (default: the profile's)"),
    "--optimizers": ("optimizers", "comma-separated Keras optimizer names, 'lecture' (the lecture's seven, default) or 'all'"),
    "--epochs": ("epochs", "epochs per run (default: the profile's)"),
    "--train-size": ("train_size", "first N MNIST training examples, 1 to 60000 (default: the profile's)"),
    "--seeds": ("seeds", "comma-separated seeds (default: 0)"),
    "--activation": ("activation", "hidden activation: sigmoid (the lecture's, default) or relu"),
    "--dispatch": ("dispatch", "default (what model.fit gives a user) or fast (XLA, a whole epoch per "
                               "steps_per_execution call: no per-step host overhead)"),
}


def pytest_addoption(parser):
    group = parser.getgroup("mnist-mlp-bench")
    for option, (dest, help_) in GRID_OPTIONS.items():
        group.addoption(option, dest=f"bench_{dest}", default=None, help=help_)
    group.addoption("--mnist", dest="bench_mnist", default=None,
                    help="Keras-layout mnist.npz (default: $MNIST_NPZ, then Keras' cache, then download)")
    group.addoption("--bench-store", dest="bench_store", default=store.DEFAULT_PATH,
                    help=f"JSON-lines file each finished run is appended to at once (default {store.DEFAULT_PATH})")
    group.addoption("--threads", dest="bench_threads", default=None,
                    help="TensorFlow intra- and inter-op threads (default: TensorFlow's, one per core)")
    group.addoption("--machine-label", dest="bench_machine_label", default=None,
                    help="short name of this machine in results and reports (default: e.g. H100-80GB, EPYC-2c)")
    group.addoption("--resume", dest="bench_resume", action="store_true",
                    help="skip the cells whose finished record (same protocol, cell, seed, machine) is in the store")
    group.addoption("--no-calibration", dest="bench_no_calibration", action="store_true",
                    help="skip measuring the device's matmul rate and memory bandwidth at session start (~2 s on "
                         "a CPU); runs then carry no peak_fraction")
    group.addoption("--saddle-profile", dest="bench_saddle_profile", default="cpu",
                    help="bench/test_saddle.py's grid: " + ", ".join(f"{k} ({p.about})"
                                                             for k, p in grid.SADDLE_PROFILES.items()))
    group.addoption("--no-probes", dest="bench_no_probes", action="store_true",
                    help="skip the curvature and noise probes between epochs (pure speed runs)")
    group.addoption("--deterministic", dest="bench_deterministic", action="store_true",
                    help="TensorFlow op determinism (slower; CPU runs are reproducible without it)")


def pytest_configure(config):
    try:
        config.bench_sweep = grid.parse_sweep(**{
            dest: config.getoption(f"bench_{dest}") for dest, _ in GRID_OPTIONS.values()})
        if config.getoption("bench_no_probes"):
            config.bench_sweep = dataclasses.replace(config.bench_sweep, probes=False)
        threads = config.getoption("bench_threads")
        config.bench_threads = None if threads is None else grid.parse_threads(threads)
    except grid.BadOption as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_ignore_collect(collection_path, config):
    """bench/test_saddle.py runs on request only: when named on the command line, not with `pytest bench`."""
    if collection_path.name != "test_saddle.py":
        return None
    named = any(str(a).split("::")[0].endswith("test_saddle.py") for a in config.args)
    return None if named else True


def pytest_generate_tests(metafunc):
    if "saddle_cell" in metafunc.fixturenames:
        config = metafunc.config
        try:
            cells = grid.saddle_cells(config.getoption("bench_saddle_profile"), config.getoption("bench_train_size"),
                                      config.getoption("bench_seeds"))
        except grid.BadOption as exc:
            raise pytest.UsageError(str(exc)) from None
        if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
            raise pytest.UsageError("bench/test_saddle.py needs the tensorflow backend (its probes differentiate twice)")
        config.bench_saddle_cells = {c.test_id: c for c in cells}
        metafunc.parametrize("batch_size,budget,seed",
                             [(grid.FULL if c.full_batch else c.batch_size, c.budget, c.seed) for c in cells],
                             ids=[c.test_id for c in cells])
        return
    if "cell" not in metafunc.fixturenames:
        return
    cells = metafunc.config.bench_sweep.cells()
    metafunc.parametrize(
        "optimizer,batch_size,seed",
        [(c.optimizer, grid.FULL if c.full_batch else c.batch_size, c.seed) for c in cells],
        ids=[c.test_id for c in cells],
    )


def pytest_collection_modifyitems(session, config, items):
    # Load MNIST once, before any run, so a bad path is one usage error rather than N test errors.
    if any({"cell", "saddle_cell"} & set(getattr(item, "fixturenames", ())) for item in items):
        from bench.data import DataError, load_mnist

        try:
            config.bench_mnist_data = load_mnist(config.getoption("bench_mnist"))
        except DataError as exc:
            raise pytest.UsageError(str(exc)) from None
        if config.bench_threads is not None:
            from bench.backend import set_threads

            try:
                set_threads(config.bench_threads)
            except RuntimeError as exc:
                raise pytest.UsageError(str(exc)) from None
        config.bench_machine = store_machine(config.getoption("bench_machine_label"))
        config.bench_code_version = store.code_version()
        if config.getoption("bench_resume"):
            _resume(config, items)
        _print_estimate(config, items)
        config.bench_calibration = None
        if not config.getoption("bench_no_calibration"):
            from bench.calibrate import calibrate

            config.bench_calibration = calibrate()
        if config.getoption("bench_deterministic"):
            from bench.backend import Unsupported, enable_determinism

            try:
                enable_determinism()
            except Unsupported as exc:
                raise pytest.UsageError(str(exc)) from None


def _print_estimate(config, items):
    """Before the sweep: how many updates it holds and how long they take on this and reference machines."""
    from bench import estimate
    from bench.backend import BACKEND

    cells = {c.test_id: c for c in config.bench_sweep.cells()}
    todo = [cells[i.callspec.id] for i in items
            if "cell" in getattr(i, "fixturenames", ()) and getattr(i, "callspec", None) and i.callspec.id in cells]
    try:
        with warnings.catch_warnings():  # a torn last line is reported by the resume/store path, not twice
            warnings.simplefilter("ignore")
            entries = store.read(config.getoption("bench_store"))
    except (store.StoreError, OSError):
        entries = []
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for line in estimate.lines(todo, entries, store.machine_id(config.bench_machine), BACKEND,
                               config.bench_sweep.dispatch):
        if reporter is not None:
            reporter.write_line(line)


def store_machine(label: str | None = None) -> dict:
    """What a store line says of its machine: enough to label it and to match it on resume."""
    import platform

    import cpuinfo

    from bench.gpu import describe_gpus
    from bench.machine import short_label

    gpu = describe_gpus()
    cpu = cpuinfo.get_cpu_info().get("brand_raw")
    return {"node": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "gpu_name": gpu.get("name"), "gpu_count": gpu.get("count", 0),
            "label": label or short_label(gpu, cpu, os.cpu_count())}


def _resume(config, items):
    path = config.getoption("bench_store")
    try:
        done = store.finished_keys(path)
    except store.StoreError as exc:
        raise pytest.UsageError(str(exc)) from None
    me = store.machine_id(config.bench_machine)
    cells = {c.test_id: c for c in config.bench_sweep.cells()}
    skipped, kept = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        cfg = cells.get(spec.id) if spec is not None and "cell" in item.fixturenames else None
        if cfg is not None and store.cell_key(dataclasses.asdict(cfg), me) in done:
            skipped.append(item)
        else:
            kept.append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"resume: {len(skipped)} of {len(skipped) + len(kept)} cells already in {path}, "
                            f"skipped; {len(kept)} to run")


@pytest.fixture
def cell(request, optimizer, batch_size, seed) -> grid.RunConfig:
    sweep = request.config.bench_sweep
    return next(c for c in sweep.cells()
                if (c.optimizer, grid.FULL if c.full_batch else c.batch_size, c.seed) == (optimizer, batch_size, seed))


@pytest.fixture
def saddle_cell(request, batch_size, budget, seed) -> grid.RunConfig:
    return next(c for c in request.config.bench_saddle_cells.values()
                if (grid.FULL if c.full_batch else c.batch_size, c.budget, c.seed) == (batch_size, budget, seed))


@pytest.fixture
def mnist(request):
    return request.config.bench_mnist_data


@pytest.fixture
def run_cell(request, benchmark, mnist):
    """Train one cell, hand its epoch times to pytest-benchmark and its record to extra_info and the store."""
    from bench.train import run

    def _run(cfg: grid.RunConfig) -> dict:
        record = run(cfg, mnist, peak=getattr(request.config, "bench_calibration", None))
        benchmark.group = cfg.optimizer if cfg.budget is None else f"{cfg.profile}: sgd, same {cfg.budget}"
        benchmark.extra_info.update(record)
        if benchmark.enabled:
            record_epoch_times(benchmark, record)
        config = request.config
        store.append(config.getoption("bench_store"), request.node.nodeid, record,
                     machine=config.bench_machine, version=config.bench_code_version)
        if record["status"] == "interrupted":
            raise KeyboardInterrupt  # recorded and stored: now stop the sweep as the user asked
        if record["status"] != "ok":
            warnings.warn(f"{cfg.test_id} ended as {record['status']}: {record['error']} (recorded)",
                          pytest.PytestWarning)
        return record

    return _run


def record_epoch_times(benchmark, record: dict) -> None:
    """Make pytest-benchmark's stats the run's steady-state epoch times.

    A Keras epoch cannot be re-run as a pytest-benchmark round (each round would be a new fit
    with its own set-up), so the times measured inside one fit are fed to the fixture's stats
    object. This uses the fixture's internal `_make_stats`; tests check the JSON it produces.
    """
    times = record["epoch_times_s"]
    steady = times[1:] or times  # the first epoch includes tracing: kept apart as first_epoch_s
    if not steady:  # failed before one epoch ended: still a row, with the time it took
        steady = [record["fit_wall_s"]]
    benchmark._mode = "mnist-mlp-bench epoch times"
    stats = benchmark._make_stats(1)
    for t in steady:
        stats.update(t)


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.machine import machine_identity, short_label

    machine_info.update(machine_identity())
    cpu = (machine_info.get("cpu") or {}).get("brand_raw")
    machine = getattr(config, "bench_machine", None)
    machine_info["machine_label"] = (machine["label"] if machine else
                                     config.getoption("bench_machine_label")
                                     or short_label(machine_info["gpu"], cpu, machine_info["cpu_count"]))
    machine_info["tf_threads"] = getattr(config, "bench_threads", None)
    machine_info["calibration"] = getattr(config, "bench_calibration", None)
    machine_info["dispatch_mode"] = config.bench_sweep.dispatch
