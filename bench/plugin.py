"""The suite's pytest plugin: its options, and the hooks and fixtures that wire a sweep session
(bench.session.Session: parsing, selection, start, each cell's run) to pytest and each run's record to
pytest-benchmark (bench.adapter). Nothing else lives here, as pytest-benchmark splits plugin, session and fixture.

Loaded by the root conftest.py and registered as the `pytest11` entry point `bench.plugin`. Collection does
no heavy work: MNIST, the machine's identity and the calibration are taken once, before the first run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from bench import adapter, experiments, grid, record
from bench.session import SESSION_OPTIONS, SWITCHES, LostRun, Session, StoreFailed, all_flags, dest, is_timing

BENCH_DIR = Path(__file__).resolve().parent
SESSION = pytest.StashKey[Session]()


def pytest_addoption(parser):
    group = parser.getgroup("mnist-mlp-bench")
    helps = {**{f: h for f, (_, h) in grid.COMMON_OPTIONS.items()},
             **{o.flag: o.help for o in experiments.all_options()}, **{f: h for f, (_, h) in SESSION_OPTIONS.items()}}
    for flag in all_flags():
        if flag in SWITCHES:
            group.addoption(flag, dest=dest(flag), action="store_true", help=helps[flag])
        else:
            default = SESSION_OPTIONS.get(flag, (None, ""))[0]
            group.addoption(flag, dest=dest(flag), default=default, help=helps[flag])


def pytest_configure(config):
    given = {flag: config.getoption(dest(flag)) for flag in all_flags()}
    try:
        config.stash[SESSION] = Session.from_options(given)
    except grid.BadOption as exc:
        raise pytest.UsageError(str(exc)) from None


def _terminated(signum, frame):
    raise KeyboardInterrupt  # pytest ends the session as after Ctrl-C: the benchmark JSON is still written


def pytest_sessionstart(session):
    """SIGTERM (a batch system's time limit) ends the sweep as Ctrl-C does: the run in progress is recorded as
    interrupted and the benchmark JSON is written; by default it would kill the process and lose both."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        session.config.stash[_PREVIOUS_TERM] = signal.signal(signal.SIGTERM, _terminated)


def pytest_unconfigure(config):
    import signal

    previous = config.stash.get(_PREVIOUS_TERM, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


_PREVIOUS_TERM = pytest.StashKey[object]()


def pytest_ignore_collect(collection_path, config):
    """Only the chosen experiment's benchmark module (the grid's without --experiment) is collected from bench/."""
    session = config.stash.get(SESSION, None)
    path = Path(collection_path)
    if session is None or path.parent != BENCH_DIR or not path.name.startswith("test_"):
        return None
    return None if path.name == session.experiment.module else True


def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames or Path(metafunc.module.__file__).resolve().parent != BENCH_DIR:
        return
    cells = metafunc.config.stash[SESSION].cells
    metafunc.parametrize("cell", cells, ids=[c.test_id for c in cells])


def _cell_of(item):
    spec = getattr(item, "callspec", None)
    return spec.params.get("cell") if spec is not None else None


def pytest_collection_modifyitems(session, config, items):
    state = config.stash[SESSION]
    cells = [c for c in map(_cell_of, items) if c is not None]
    if not cells:
        return
    from bench import backends, data

    adapter.write_atomically(config)
    try:
        state.configure(adapter.json_path(config))
        kept, lines = state.select(cells)
    except (data.DataError, record.StoreError, backends.Unsupported) as exc:
        raise pytest.UsageError(str(exc)) from None
    for line in lines:
        _say(config, line)
    kept = set(map(id, kept))
    dropped = [i for i in items if _cell_of(i) is not None and id(_cell_of(i)) not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]


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


@pytest.fixture(scope="session")
def bench_session(request) -> Session:
    """The sweep session, started before the first run (MNIST, machine, estimate, calibration, experiment)."""
    from bench import data

    state = request.config.stash[SESSION]
    if not state.started:
        try:
            lines = state.start()
        except data.DataError as exc:
            pytest.exit(str(exc), returncode=4)
        for line in lines:
            _say(request.config, line)
    return state


def group_of(cell: grid.RunConfig) -> str:
    """pytest-benchmark's group of a cell: the optimizer in the grid, else the experiment's profile and its arm."""
    if cell.experiment == record.GRID:
        return cell.optimizer
    return f"{cell.profile}: {cell.optimizer} " + (cell.role or f"same {cell.budget}")


@pytest.fixture
def run_cell(request, benchmark, bench_session):
    """Train one cell; its record goes to extra_info and the store, its steady samples to pytest-benchmark's stats.
    A cell whose epochs are not timings (session.is_timing) gets no stats: it is written to the benchmark JSON under
    `untimed_runs`, beside the `benchmarks` that `pytest-benchmark compare` reads."""
    config, node = request.config, request.node

    def progress(epoch, seconds):
        if config.getoption("verbose") > 0:
            _say(config, f"  {node.callspec.id}: epoch {epoch} {seconds:.3f} s")

    def _run(cell: grid.RunConfig) -> record.Record:
        try:
            rec = bench_session.run(cell, node.nodeid, progress)
        except (experiments.PlanError, LostRun) as exc:
            pytest.fail(str(exc), pytrace=False)
        except StoreFailed as exc:  # the record goes to the benchmark JSON; the sweep stops at this cell
            adapter.fill(benchmark, group_of(cell), cell.params, exc.record.to_dict(),
                         exc.record.steady_samples_s if is_timing(exc.record) else None)
            if not is_timing(exc.record):
                bench_session.untimed.append((node.nodeid, cell, exc.record))
            pytest.exit(str(exc), returncode=pytest.ExitCode.TESTS_FAILED)
        adapter.fill(benchmark, group_of(cell), cell.params, rec.to_dict(),
                     rec.steady_samples_s if is_timing(rec) else None)
        for line in bench_session.progress(cell, rec):
            _say(config, line)
        if rec.status == "interrupted":
            raise KeyboardInterrupt  # recorded and stored: now stop the sweep as the user asked
        if rec.status != "ok":
            warnings.warn(f"{cell.test_id} ended as {rec.status}: {rec.error} (recorded)", pytest.PytestWarning)
        return rec

    return _run


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """The last round's worker process ends with the runs, before pytest-benchmark asks the machine's identity
    (which may open the device: the worker must have let it go)."""
    try:
        return (yield)
    finally:
        state = session.config.stash.get(SESSION, None)
        if state is not None:
            state.close()


def pytest_terminal_summary(terminalreporter, config):
    """The cells whose timing is unstable, and how to measure them again."""
    state = config.stash.get(SESSION, None)
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
    state = config.stash.get(SESSION, None)
    if state is not None and state.untimed:
        output_json["untimed_runs"] = [
            {"name": nodeid.rsplit("::", 1)[-1], "fullname": nodeid, "group": group_of(cell), "params": cell.params,
             "extra_info": rec.to_dict()} for nodeid, cell, rec in state.untimed]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """pytest-benchmark writes no JSON when no benchmark has stats: write it anyway (the untimed runs' records
    belong in it; a --resume with nothing left still leaves its file). A sweep whose every run ended in error
    fails; a --resume that found every cell done succeeds."""
    state = session.config.stash.get(SESSION, None)
    if state is None or session.config.option.collectonly or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return
    # nothing to run is no error where the selection emptied it: every cell in the store (--resume), or a shard
    # that got no cell of a small grid
    nothing_left = (exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and state.cells
                    and (state.given.get("--resume") or state.given.get("--shard")))
    if state.started or nothing_left:
        adapter.save_without_stats(session.config)
    if state.done and all(rec.status == "error" for _, rec in state.done):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if nothing_left:
        session.exitstatus = pytest.ExitCode.OK


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.machine import code_version, machine_identity, short_label

    state = config.stash.get(SESSION, None)
    if state is None:
        return
    machine_info.update(machine_identity())
    cpu = (machine_info.get("cpu") or {}).get("brand_raw")
    machine_info["machine_label"] = (state.machine.label if state.machine else state.given.get("--machine-label")
                                     or short_label(machine_info["gpu"], cpu, machine_info["cpu_count"]))
    machine_info["tf_threads"] = state.threads
    machine_info["precision"] = state.precision  # asked for; each record says what its run got
    machine_info["calibration"] = state.calibration
    machine_info["dispatch_mode"] = state.cells[0].dispatch if state.cells else None
    machine_info["code_version"] = state.code_version or code_version()
