"""Every use of pytest-benchmark's internals, in one place: the suite hands pytest-benchmark samples it measured
itself (a run's steady samples) instead of letting the fixture time a function, and writes the JSON when no
benchmark has stats. These are private attributes and methods of pytest-benchmark 5.x (`BenchmarkFixture._make_stats`,
`._mode`, `config._benchmarksession`): pyproject.toml bounds the version to the releases the tests ran with."""

from __future__ import annotations

MODE = "mnist-mlp-bench steady samples"


def fill(benchmark, group: str, params: dict, extra_info: dict, samples: list | None) -> None:
    """The cell's benchmark: its group, params and record (extra_info), and `samples` as its stats (None: the run
    is no timing and gets no stats)."""
    benchmark.group = group
    benchmark.params = params
    benchmark.extra_info.update(extra_info)
    benchmark._mode = MODE  # used, with or without stats (no "benchmark fixture not used" warning)
    if samples is not None and benchmark.enabled:
        stats = benchmark._make_stats(1)
        for t in samples:
            stats.update(t)


def session_of(config):
    """pytest-benchmark's session object (None where the plugin is not active)."""
    return getattr(config, "_benchmarksession", None)


def json_path(config):
    """Where --benchmark-json writes (None: not asked for)."""
    bs = session_of(config)
    path = getattr(bs, "json", None) if bs is not None else None
    return str(path) if path else None


def write_atomically(config) -> None:
    """pytest-benchmark writes its JSON in place at the session's end: a crash in that write leaves a partial file.
    Make it write a temporary file and rename it (bench.record.write_atomic)."""
    from pytest_benchmark.utils import safe_dumps

    from bench.record import write_atomic

    bs = session_of(config)
    if bs is None or getattr(bs, "_atomic", False):
        return

    def save_json(output_json):
        write_atomic(bs.json, safe_dumps(output_json, ensure_ascii=True, indent=4).encode())
        bs.logger.info(f"Wrote benchmark data in: {bs.json}", purple=True)

    bs.save_json = save_json
    bs._atomic = True


def save_without_stats(config) -> bool:
    """pytest-benchmark writes no JSON when no benchmark has stats; write it anyway (the untimed runs' records go in
    through pytest_benchmark_update_json). False when there is nothing to write to."""
    bs = session_of(config)
    if bs is None or not bs.json or bs.benchmarks:
        return False
    machine_info = bs.get_machine_info()
    commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
    output = config.hook.pytest_benchmark_generate_json(config=config, benchmarks=[], include_data=True,
                                                        machine_info=machine_info, commit_info=commit_info)
    config.hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output)
    bs.save_json(output)
    return True
