"""The tuning experiment: per optimizer x batch size, trials over a log grid of learning rates for a fixed update
budget, judged on the validation split; then final runs at the chosen rate and at the pinned rate, other seeds
(bench/experiments/tuning.py). Run by name (it is not part of the grid):

    pytest bench --experiment tuning --dispatch fast --benchmark-json tuning.json [--tuning-profile test|cpu|gpu]
        [--lr-grid 0.001,0.01,0.1] [--optimizers sgd,adam] [--seeds 1,2,3 (the final runs')]
"""


def test_tuning(cell, run_cell):
    record = run_cell(cell)
    assert record.tuning is not None and record.role == cell.role
