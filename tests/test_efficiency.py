"""Measuring the hardware, not the harness: FLOP counts, the peak calibration, per-run efficiency and memory,
`--dispatch fast`, the duration estimate, the overhead tool, and the analysis figures of all that."""

import json
import math
import statistics
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from bench import estimate, grid, record, train
from bench.model import LAYERS, flops_per_example

from .helpers import FIXTURES, ROOT, cfg


def test_flops_per_example_from_the_layer_shapes():
    assert LAYERS == ((784, 500), (500, 500), (500, 10))
    forward = 2 * (784 * 500 + 500 * 500 + 500 * 10)  # 1,294,000
    assert flops_per_example() == forward + forward + 2 * (500 * 500 + 500 * 10) == 3_098_000


def test_calibration_measures_positive_ceilings():
    from bench.calibrate import bandwidth, calibrate, matmul_peak

    m = matmul_peak(256, chain=2, repeats=2)
    assert m["matmul_n"] == 256 and 0.1 < m["matmul_gflops"] < 1e6
    b = bandwidth(2**20, repeats=2)
    assert b["bandwidth_mib"] == 4 and 0.01 < b["bandwidth_gbs"] < 1e5
    c = calibrate()
    assert c["device"] == "CPU" and c["dtype"] == "float32" and c["backend"] == "tensorflow"
    assert c["matmul_gflops"] > 0 and c["bandwidth_gbs"] > 0 and c["seconds"] < 30
    assert c["matmul_precision"] == "fp32"  # a CPU has no TensorFloat-32


def test_the_record_says_which_precision_its_run_asked_for_and_got(small_mnist):
    from bench.backends import current

    backend = current()
    try:
        backend.set_precision("fp32")
        r = train.run(cfg("sgd", 100, 200, 1, probes=False), small_mnist)
        assert (r.dispatch.precision, r.dispatch.matmul_precision) == ("fp32", "fp32")
    finally:
        backend.set_precision("tf32")
    r = train.run(cfg("sgd", 100, 200, 1, probes=False), small_mnist)
    assert r.status == "ok" and (r.dispatch.precision, r.dispatch.matmul_precision) == ("tf32", "fp32")  # no GPU


@pytest.fixture(scope="module")
def default_and_fast(small_mnist):
    peak = {"matmul_gflops": 100.0}
    return (train.run(cfg("adam", 50, 1000, 3, probes=False), small_mnist, peak=peak),
            train.run(grid.RunConfig("smoke", "adam", 50, False, "sigmoid", 0, 1000, 3, dispatch="fast", probes=False),
                      small_mnist, peak=peak))


def test_fast_dispatch_runs_the_same_updates_as_one_call_per_epoch(default_and_fast):
    default, fast = default_and_fast
    assert default.dispatch.mode == "default" and default.dispatch.steps_per_execution == 1
    assert fast.dispatch.mode == "fast" and fast.dispatch.jit_compile is True
    assert fast.dispatch.steps_per_execution == 20  # 1,000 examples / batch 50: an epoch per call
    assert fast.dispatch.driver == "device_loop" and default.dispatch.driver == "keras_fit"
    assert fast.status == "ok" and fast.updates == default.updates == 3 * 20
    # the recorder works inside the XLA-compiled loop: every loss, and the gradient norm at most
    # FAST_NORM_POINTS times (every 2nd of 60 updates), where default mode records it at every update
    assert [u for u, _ in fast.loss_curve] == list(range(1, 61))
    assert [u for u, _ in fast.grad_norm_curve] == list(range(1, 61, 2)) and fast.grad_norm_stride == 2
    assert len(default.grad_norm_curve) == 60 and default.grad_norm_stride == 1
    assert all(v > 0 for _, v in fast.grad_norm_curve)
    assert fast.test_accuracy > 0.5 and abs(fast.test_accuracy - default.test_accuracy) < 0.05


@pytest.mark.parametrize("batch_size,train_size,epochs", [(7, 200, 2)])
def test_fast_driver_makes_fits_update_count_with_a_partial_last_batch(small_mnist, batch_size, train_size, epochs):
    c = grid.RunConfig("smoke", "sgd", batch_size, batch_size == train_size, "relu", 0, train_size, epochs,
                       dispatch="fast", probes=False)
    r = train.run(c, small_mnist)
    assert r.status == "ok" and r.dispatch.driver == "device_loop"
    assert r.updates == epochs * math.ceil(train_size / batch_size) == len(r.loss_curve)
    assert len(r.epoch_times_s) == len(r.train_loss_by_epoch) == len(r.test_accuracy_by_epoch) == epochs
    assert r.test_accuracy > 0.2  # better than chance (0.1) after even one small epoch


@pytest.mark.slow
def test_fast_driver_is_seeded_and_reshuffles_every_epoch(small_mnist):
    from bench.backends import current
    from bench.backends import make_optimizer
    from bench.model import build_mlp

    backend = current()
    keras = backend.keras
    x, y, _, _ = small_mnist.prepared(200)

    def weights_after(epochs, seed):
        keras.utils.set_random_seed(0)
        model = build_mlp(keras, "sigmoid")
        model.compile(optimizer=make_optimizer("sgd"), loss="categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=True)
        seen = []

        class Logs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append(dict(logs))

        backend.fit_device_loop(model, x, y, batch_size=10, epochs=epochs, seed=seed, callbacks=[Logs()])
        assert [set(s) for s in seen] == [{"loss", "accuracy"}] * epochs
        assert int(model.optimizer.iterations) == 20 * epochs
        return model.get_weights()[0]

    a, b, c = weights_after(2, 0), weights_after(2, 0), weights_after(2, 1)
    assert (a == b).all() and not (a == c).all()  # same seed, same run; another seed, another order


def test_runs_are_scored_against_the_peak(default_and_fast):
    for r in default_and_fast:
        assert r.flops_per_epoch == 1000 * 3_098_000
        assert r.achieved_gflops == pytest.approx(r.flops_per_epoch / r.epoch_time_s / 1e9, rel=1e-3)
        assert r.peak_fraction == pytest.approx(r.achieved_gflops / 100.0, rel=1e-3)


def test_peak_host_memory_is_recorded_per_run(default_and_fast, small_mnist):
    for r in default_and_fast:
        assert r.host_memory_source == "VmHWM since run start"
        assert 100 < r.host_memory_peak_mib < 24 * 1024  # TensorFlow alone is a few hundred MiB
    no_peak = train.run(cfg("sgd", 500, 1000, 2, probes=False), small_mnist)
    assert no_peak.peak_fraction is None and no_peak.achieved_gflops > 0


def test_estimate_interpolates_measured_per_update_times():
    table = {1: 0.001, 100: 0.004, 10000: 0.4}
    assert estimate.per_update(table, 1) == 0.001 and estimate.per_update(table, 100) == 0.004
    assert estimate.per_update(table, 10) == pytest.approx(0.002)  # halfway on log-log
    assert estimate.per_update(table, 50000) == pytest.approx(2.0)  # beyond every table: proportional to the batch
    # beyond the sizes measured, the growth of the reference's shape: from batch 10 to 1,000 as on the EPYC
    ref = estimate.REFERENCES[estimate.SHAPE]["per_update_s"]
    assert estimate.per_update({1: 0.001, 10: 0.001}, 1000) == pytest.approx(0.001 * ref[1000] / ref[10])
    assert 3 < ref[1000] / ref[10] < 10  # far from the 100 a proportional rule gives
    cells = grid.parse_sweep("smoke", batch_sizes="1,100").cells()
    sgd = [c for c in cells if c.optimizer == "sgd"]
    # smoke: 200 examples x 6 epochs, 3 repeats: 1,200 updates at batch 1 and 12 at batch 100 per repeat
    assert estimate.seconds(sgd, table, 1.0) == pytest.approx(3 * (1200 * 0.001 + 12 * 0.004 + 2.0))
    lines = estimate.lines(grid.parse_sweep("lecture").cells())
    assert lines[0].startswith("estimate: 126 runs, 23,333,520 updates (lecture: 50,000 examples x 20 epochs")
    assert any("H200-140GB" in line and " h " in line for line in lines)


@pytest.mark.parametrize("label", list(estimate.REFERENCES))
def test_reference_times_are_the_committed_measurements(label):
    ref = estimate.REFERENCES[label]
    doc = json.loads((ROOT / ref["source"]).read_text())
    per_bs, over = {}, []
    for b in doc["benchmarks"]:
        r = record.Record.from_dict(b["extra_info"])  # today's estimate, as every reader sees it
        if r.status == "ok":
            per_bs.setdefault(r.batch_size, []).append(r.time_per_update_s)
            over.append(r.fit_wall_s - r.epochs * r.epoch_time_s)
    assert doc["machine_info"].get("machine_label", label).startswith(label.split("-")[0])
    for bs, t in ref["per_update_s"].items():
        assert t == pytest.approx(statistics.median(per_bs[bs]), rel=1e-3), bs
    assert ref["per_run_s"] == pytest.approx(statistics.median(over), abs=0.01)


@pytest.mark.slow
def test_overhead_tool_writes_dispatch_and_overhead_tables(tmp_path, real_mnist):
    out = tmp_path / "o.json"
    proc = subprocess.run([sys.executable, "-m", "bench.overhead", "--batch-sizes", "100", "--train-size", "500",
                           "--epochs", "2", "--repeats", "1", "--mnist", real_mnist.source, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    (o,), (d,) = res["overhead"], res["dispatch"]
    assert o["batch_size"] == 100 and o["ratio"] == pytest.approx(o["suite_s"] / o["plain_s"])
    assert o["ratio_of_minima"] == pytest.approx(o["suite_min_s"] / o["plain_min_s"]) and o["plain_min_s"] <= o["plain_s"]
    for k in ("default_ms_per_update", "fast_ms_per_update", "keras_fast_ms_per_update", "floor_ms_per_update"):
        assert d[k] > 0
    assert res["overhead_dispatch"] == "default"
    assert d["default_over_floor"] == pytest.approx(d["default_ms_per_update"] / d["floor_ms_per_update"])
    assert "default/floor" in proc.stdout and "(target <= 1.03)" in proc.stdout


def test_overhead_tool_rejects_bad_values(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.overhead", "--repeats", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--repeats: 0 is not a whole number from 1 to 100" in proc.stderr


@pytest.fixture(scope="module")
def both_modes():
    from analysis.cli import build
    from analysis.load import load_runs

    return build(load_runs([FIXTURES / "adam-default.json", FIXTURES / "adam-fast.json"]))


def test_report_keeps_every_run_and_draws_efficiency_and_dispatch(both_modes):
    found, figs = both_modes
    runs, summary = found.runs, found.summary
    assert len(runs) == 8 and set(runs["dispatch.mode"]) == {"default", "fast"}
    assert set(summary["batch_size"]) == {1, 10, 100, 2000} and len(summary) == 4  # figures 1-8: default runs
    try:
        ax = figs["efficiency"].axes[0]
        plotted = sorted(y for line in ax.get_lines() for y in line.get_ydata() if not math.isnan(y))
        for p in summary["peak_fraction"]:
            assert any(math.isclose(p * 100, y, rel_tol=1e-9) for y in plotted)
        assert "peak" in ax.get_ylabel() and "GFLOP/s" in ax.get_title()
        ax = figs["dispatch"].axes[0]  # default / fast per batch size, median over optimizers
        plotted = [y for line in ax.get_lines() for y in line.get_ydata()]
        for ratio in found.dispatch.ratio.values():
            assert any(math.isclose(ratio.value, y, rel_tol=1e-9) for y in plotted)
        fast = found.by_mode[found.by_mode["dispatch.mode"] == "fast"]
        plotted = [y for line in figs["time_per_update"].axes[0].get_lines() for y in line.get_ydata()]
        for ms in fast["time_per_update_s"] * 1000:  # figure 2 draws both modes
            assert any(math.isclose(ms, y, rel_tol=1e-9) for y in plotted)
    finally:
        for f in figs.values():
            if isinstance(f, plt.Figure):
                plt.close(f)


def test_report_text_states_efficiency_and_dispatch_gap(both_modes):
    from analysis import report
    from analysis.cli import FIGURES

    found, _ = both_modes
    text = report.render(found, {key: f"{key}.png" for key in FIGURES})
    assert "Measured matmul peak" in text and "MiB" in text
    assert "default vs fast" in text and "With `fast`, the achieved share of the matmul peak" in text


@pytest.mark.parametrize("args,message", [
    (["--batch-sizes="], "--batch-sizes"),
    (["--repeats", "101"], "--repeats: 101 is not a whole number from 1 to 100"),
    (["--json="], "--json"),
    (["--what", "dispatch", "--dispatch", "turbo"], "invalid choice: 'turbo'"),
    (["--optimizer", "adamm"], "--optimizer: unknown optimizer 'adamm'"),
    (["--optimizer", "sgd,adam"], "--optimizer sgd,adam: one optimizer"),
])
def test_overhead_tool_refuses_bad_values_in_one_line(args, message, capsys):
    from bench import overhead

    with pytest.raises(SystemExit) as info:
        overhead.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].startswith("python -m bench.overhead: error:")
