"""The saddle benchmark: plain SGD at batch sizes from 1 to the full batch, for the same number of epochs
and for the same number of updates, several seeds, each run probed for plateaus, gradient norm, noise
scale and the Hessian's extreme eigenvalues (bench/curvature.py).

Run by name (it is not part of the grid):

    pytest bench --experiment saddle --benchmark-json saddle.json [--saddle-profile smoke|cpu] [--seeds 0,1,2]
"""


def test_saddle(cell, run_cell):
    record = run_cell(cell)
    if record.status == "ok":
        assert record.updates == cell.expected_updates
