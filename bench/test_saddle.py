"""The saddle benchmark: plain SGD at batch sizes from 1 to the full batch, for the same number of epochs
and for the same number of updates, several seeds, each run probed for plateaus, gradient norm, noise
scale and the Hessian's extreme eigenvalues (bench/curvature.py).

Run on request (it is not part of `pytest bench`):

    pytest bench/test_saddle.py --benchmark-json saddle.json [--saddle-profile smoke|cpu] [--seeds 0,1,2]
"""


def test_saddle(saddle_cell, run_cell):
    run_cell(saddle_cell)
