"""The benchmark: the lecture's MLP trained once per grid cell (optimizer x batch size x seed), timed per epoch."""


def test_train(cell, run_cell):
    record = run_cell(cell)
    if record.status == "ok":
        assert record.updates == cell.expected_updates
