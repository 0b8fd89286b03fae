"""The escape experiment: claim 3 at certified strict saddles of the lecture network (sigmoid, plain SGD): every
minibatch size, the full batch (float32 rounding its only perturbation) and the full batch with isotropic noise,
each at the same learning rates for the same updates, until the run leaves the point along its negative curvature
and its loss falls a margin below the point's (bench/experiments/escape.py).

Run by name (it is not part of the grid):

    pytest bench --experiment escape --benchmark-json escape.json [--escape-profile test|cpu|gpu] [--seeds ...]
"""


def test_escape(cell, run_cell):
    record = run_cell(cell)
    assert record.status != "ok" or (record.escape.certificate is not None
                                     and record.escape.updates_to_escape in (None, record.updates))
