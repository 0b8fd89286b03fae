"""The tuning experiment: per optimizer x batch size, trials over a base grid of learning rates and every trial seed,
widened while the best rate sits on an edge, judged by updates to a validation target; then final runs at the chosen
rate (and the pinned rate) with other seeds, probing the noise scale at the target (bench/experiments/tuning.py). Run
by name (it is not part of the grid):

    pytest bench --experiment tuning --dispatch fast --benchmark-json tuning.json [--tuning-profile test|cpu|gpu]
        [--lr-grid 0.001,0.01,0.1] [--optimizers sgd,adam] [--seeds 3,4,5 (the final runs')]

A widening trial the search does not need is skipped with the reason (`-ra` lists them); `--resume` decides again.
"""

import pytest

from bench.experiments.tuning import EXPERIMENT


def test_tuning(cell, bench_session, request):
    why = EXPERIMENT.not_needed(cell, bench_session)
    if why:
        pytest.skip(why)
    record = request.getfixturevalue("run_cell")(cell)  # only now: a skipped cell makes no benchmark
    assert record.tuning is not None and record.role == cell.role
