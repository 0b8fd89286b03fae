"""The escape experiment: the lecture network (sigmoid, plain SGD) from one stuck point, every batch size for the
same number of examples and for the same number of updates, until the probe set's loss falls a margin below the
stuck point's (bench/experiments/escape.py); and the full batch at other learning rates.

Run by name (it is not part of the grid):

    pytest bench --experiment escape --benchmark-json escape.json [--escape-profile test|cpu|gpu] [--seeds ...]
"""


def test_escape(cell, run_cell):
    record = run_cell(cell)
    assert record.status != "ok" or record.escape.start_digest == record.escape.stuck.digest
