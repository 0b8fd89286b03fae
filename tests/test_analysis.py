"""analysis/ on a committed fixture from a real smoke run (tests/fixtures/smoke.json: SGD and Adam, batch 1, 10,
100 and full, seeds 0 and 1, 500 examples, 4 epochs): loader, derived metrics, figures, report, CLI errors."""

import json
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from analysis import metrics
from analysis.cli import FIGURES, build
from analysis.findings import Skipped
from analysis.load import LoadError, load_runs, machine_label

from .helpers import FIXTURES, REPORTS

FIXTURE = FIXTURES / "smoke.json"


@pytest.fixture(scope="module")
def runs():
    return load_runs([FIXTURE])


@pytest.fixture(scope="module")
def built(runs):
    return build(runs)


def test_loader_one_row_per_run_with_record_columns(runs):
    assert len(runs) == 16
    assert set(runs["optimizer"]) == {"sgd", "adam"}
    assert sorted(runs["batch_label"].unique()) == ["1", "10", "100", "full"]
    for col in ("epoch_time_s", "time_per_update_s", "test_accuracy", "loss_curve", "gpu.available",
                "dispatch.jit_compile", "stats.median", "machine", "file"):
        assert col in runs.columns, col
    assert runs["machine"].nunique() == 1
    # pytest-benchmark's stats are the run's steady samples: their minimum is the record's estimate, their median
    # its median
    assert (runs["stats.min"] == runs["epoch_time_s"]).all() and (runs["stats.median"] == runs["epoch_time_median_s"]).all()


def test_loader_reads_several_files_in_order_and_counts_each_run_once(runs, tmp_path):
    other = json.loads(FIXTURE.read_text())
    other["machine_info"].update(node="second-host", machine_label="second")
    (tmp_path / "b.json").write_text(json.dumps(other))
    both = load_runs([FIXTURE, tmp_path / "b.json"])
    assert len(both) == 2 * len(runs) and both.attrs["duplicates"] == 0
    assert list(both["machine"].cat.categories) == [runs["machine"].iloc[0], "second"]
    again = load_runs([FIXTURE, FIXTURE])  # the same runs twice: one measurement each
    assert len(again) == len(runs) and again.attrs["duplicates"] == len(runs)


def test_machine_label():
    assert machine_label({"gpu": {"available": True, "name": "NVIDIA H100", "count": 1}, "node": "n1"}) \
        == "NVIDIA H100 (n1)"
    assert machine_label({"gpu": {"available": False}, "cpu": {"brand_raw": "AMD EPYC"}, "cpu_count": 2,
                          "node": "vm"}) == "AMD EPYC 2c (vm)"
    assert machine_label({"machine_label": "EPYC-1thread", "node": "vm"}) == "EPYC-1thread"  # --machine-label wins


def test_knee_known_values():
    # flat to 100, then linear in the batch: the knee is 100
    assert metrics.knee([1, 10, 100, 1000, 10000], [1.0, 1.0, 1.2, 12.0, 120.0]) == 100
    # grows only as batch^0.3: no knee
    assert metrics.knee([1, 10, 100], [1.0, 2.0, 4.0]) is None


def test_loss_noise_known_values():
    flat = [[i, 1.0] for i in range(100)]
    assert metrics.loss_noise(flat) == 0.0
    # a period-5 wiggle that sums to zero: the 25-point running mean is exactly 1
    wiggle = [0.1, -0.1, 0.2, -0.2, 0.0]
    noisy = [[i, 1.0 + wiggle[i % 5]] for i in range(199)]  # 175 points with a full window: 35 periods
    assert metrics.loss_noise(noisy) == pytest.approx(math.sqrt(0.02), rel=1e-6)
    assert math.isnan(metrics.loss_noise([[1, 2.0]]))


def test_speedup_over_batch_one(built):
    runs = built[0].runs
    bs1 = runs[runs["batch_size"] == 1]
    assert (bs1["epoch_speedup_vs_bs1"] == 1.0).all() and (bs1["update_cost_vs_bs1"] == 1.0).all()
    row = runs[(runs["batch_size"] == 10) & (runs["optimizer"] == "adam") & (runs["seed"] == 0)].iloc[0]
    base = runs[(runs["batch_size"] == 1) & (runs["optimizer"] == "adam") & (runs["seed"] == 0)].iloc[0]
    assert row["epoch_speedup_vs_bs1"] == pytest.approx(base["epoch_time_s"] / row["epoch_time_s"])


def test_cell_summary_spread_over_seeds(built):
    summary = built[0].summary
    assert len(summary) == 8 and (summary["seeds"] == 2).all()
    cell = summary[(summary["optimizer"] == "adam") & (summary["batch_size"] == 1)].iloc[0]
    accs = built[0].runs.query("optimizer == 'adam' and batch_size == 1")["test_accuracy"]
    assert cell["test_accuracy_max"] - cell["test_accuracy_min"] == pytest.approx(accs.max() - accs.min())


def _plotted(ax) -> list:
    return [y for line in ax.get_lines() for y in line.get_ydata() if not math.isnan(y)]


def test_figures_hold_the_plotted_data(built):
    found, figs = built
    cells = found.by_mode
    plotted = _plotted(figs["epoch_time"].axes[0])
    for y in cells["epoch_time_s"] * 1000 / cells["train_size"]:  # per 1,000 examples: not the lecture's 50,000
        assert any(math.isclose(y, p, rel_tol=1e-9) for p in plotted), y
    assert "lecture, GTX 980" in [t.get_text() for t in figs["epoch_time"].axes[0].get_legend().get_texts()]
    plotted = _plotted(figs["time_per_update"].axes[0])
    assert all(any(math.isclose(y * 1000, p, rel_tol=1e-9) for p in plotted) for y in cells["time_per_update_s"])
    # figure 3 is drawn from the tuning experiment's tuned runs, which the smoke fixture does not hold
    assert isinstance(figs["speed_vs_stability"], Skipped) and "--experiment tuning" in figs["speed_vs_stability"].reason
    loss_ax = figs["saddle"].axes[0]
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} == {"batch 1", "batch 10", "batch 100",
                                                                        "batch full"}
    assert len(figs["learning_curves"].axes) == 2
    assert isinstance(figs["gpu"], Skipped) and "no run had a GPU" in figs["gpu"].reason
    assert isinstance(figs["machines"], Skipped)


def test_unstable_cells_are_drawn_hollow(built):
    found, figs = built
    ax = figs["time_per_update"].axes[0]
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0))
              and len(line.get_xdata())]
    assert found.by_mode["unstable"].all() and len(hollow) >= 2  # the fixture's runs have one steady epoch each


def test_figure_axes_are_labelled(built):
    for key in ("epoch_time", "time_per_update", "saddle"):
        for ax in built[1][key].axes:
            assert ax.get_ylabel(), key
        assert any(ax.get_title() for ax in built[1][key].axes), key


@pytest.mark.slow
def test_cli_writes_every_figure_and_the_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(FIXTURE), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # one CPU machine, default dispatch, no experiment (escape, tuning) in the smoke fixture
    drawn = [k for k in FIGURES if k not in ("speed_vs_stability", "gpu", "machines", "dispatch", "escape", "steps_to_target",
                                          "sensitivity")]
    for i, key in enumerate(FIGURES, start=1):
        for ext in ("png", "svg"):
            assert (tmp_path / f"fig{i}_{key}.{ext}").exists() == (key in drawn)
    report = (tmp_path / "REPORT.md").read_text()
    assert "![1. Epoch time vs batch size" in report and "## All runs" in report
    assert "Not drawn: no run had a GPU" in report
    assert "Not drawn: no tuning experiment in these files" in report
    assert report.count("\n| ") >= 16  # the runs table


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("not json {", "not JSON"),
    (json.dumps({"some": "other tool"}), "not a pytest-benchmark result file"),
    (json.dumps({"machine_info": {}, "benchmarks": []}), "holds no mnist-mlp-bench runs"),
    (json.dumps({"machine_info": {}, "benchmarks": [{"extra_info": {"schema": "mnist-mlp-bench/99"}}]}),
     "unknown record schema 'mnist-mlp-bench/99'"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadError, match=message):
        load_runs([path])


def test_bad_input_on_the_command_line_is_one_line_and_status_2(tmp_path, capsys):
    from analysis.cli import main

    path = tmp_path / "in.json"
    path.write_text("not json {")
    assert main(["report", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not JSON" in err and str(path) in err


def test_failed_runs_are_shown_not_dropped(tmp_path):
    """A diverged run among the timings, and an errored one under `untimed_runs` (no stats: not a timing)."""
    from analysis import report

    doc = json.loads(FIXTURE.read_text())
    rec = doc["benchmarks"][0]["extra_info"]
    rec.update(status="diverged", diverged=True, error="training loss became nan in epoch 1", test_accuracy=None)
    failed = doc["benchmarks"].pop()
    failed["extra_info"].update(status="error", error="RuntimeError: injected", epoch_times_s=[], epoch_time_s=None)
    doc["untimed_runs"] = [{k: failed[k] for k in ("name", "fullname", "group", "params", "extra_info")}]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    runs = load_runs([tmp_path / "d.json"])
    assert len(runs) == 16 and (runs["status"] == "diverged").sum() == 1 and (runs["status"] == "error").sum() == 1
    found, figs = build(runs)
    text = report.render(found, {k: f"{k}.png" if isinstance(v, plt.Figure) else v for k, v in figs.items()})
    assert "## Runs that did not finish" in text and "training loss became nan" in text and "injected" in text
    plt.close("all")


def test_analysis_never_imports_tensorflow():
    code = "import analysis.cli, analysis.figures, analysis.report, analysis.load, sys; " \
           "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.slow
def test_two_machines_get_the_side_by_side_figure(tmp_path):
    """On the two committed real runs of this CPU at 2 and 1 TensorFlow threads (reports/machines)."""
    files = [REPORTS / "machines" / "2threads.json", REPORTS / "machines" / "1thread.json"]
    found, figs = build(load_runs(files))
    assert list(found.runs["machine"].cat.categories) == ["EPYC-2c-2threads", "EPYC-2c-1thread"]
    ax = figs["machines"].axes[0]
    assert {l.get_label() for l in ax.get_lines()} >= {"EPYC-2c-2threads", "EPYC-2c-1thread"}
    plt.close("all")
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", *map(str, files), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fig7_machines.png").exists()
    text = (tmp_path / "REPORT.md").read_text()
    assert "Epoch time relative to EPYC-2c-2threads" in text and "EPYC-2c-1thread: batch 1 " in text


def test_claims_are_judged_per_backend_on_one_machine():
    """EPYC-tf-quick.json and EPYC-jax-quick.json share the label EPYC-2c and every cell: the claims are judged once
    per backend, each verdict row naming it, never one backend's timings overwriting the other's."""
    from analysis import report

    files = [REPORTS / "machines" / "EPYC-tf-quick.json", REPORTS / "machines" / "EPYC-jax-quick.json"]
    found, figs = build(load_runs(files))
    settings = {(c.machine, c.backend, c.mode) for c in found.claims}
    assert settings == {("EPYC-2c", "tensorflow", "default"), ("EPYC-2c", "jax", "default")}
    by_backend = {c.backend: c for c in found.claims}
    for backend, c in by_backend.items():
        cells = found.by_mode[found.by_mode["dispatch.backend"] == backend]
        bs10, bs1 = (cells[cells["batch_size"] == b].set_index("optimizer")["time_per_update_s"] for b in (10, 1))
        assert c.cost_bs10.n == 1  # one run per cell in these files: one replicate, no interval
        assert c.cost_bs10.value == pytest.approx((bs10 / bs1).median())  # from this backend's cells alone
    assert by_backend["tensorflow"].cost_bs10.value != by_backend["jax"].cost_bs10.value
    text = report.render(found, {k: f"{k}.png" if isinstance(v, plt.Figure) else v for k, v in figs.items()})
    verdicts = text[text.index("## Verdicts"):text.index("## 1.")]
    assert verdicts.count("| 1: a batch-10") == 2 and "tensorflow, default" in verdicts and "jax, default" in verdicts
    assert not isinstance(found.machines, Skipped) and list(found.machines.ratios) == ["EPYC-2c, jax"]
    plt.close("all")


def test_repeats_and_rates_at_batch_1_never_duplicate_a_run(tmp_path):
    """The speed-up over batch 1 joins each run to its own batch-1 run: with several repeats (or an experiment's
    several rates) at batch 1, a join on the cell alone would multiply the rows."""
    doc = json.loads(FIXTURE.read_text())
    again = json.loads(json.dumps(doc["benchmarks"]))
    for b in again:
        b["extra_info"]["repeat"] = 2
        b["name"] += "-r2"
    doc["benchmarks"] += again
    (tmp_path / "r.json").write_text(json.dumps(doc))
    runs = load_runs([tmp_path / "r.json"])
    assert len(runs) == 32 and len(metrics.add_run_metrics(runs)) == 32


def test_replicate_refuses_a_sweep_compared_with_itself_and_files_with_no_common_setting(capsys, tmp_path):
    from analysis.cli import main

    quick = REPORTS / "machines" / "Xeon-tf-quick.json"
    assert main(["replicate", str(quick), str(quick)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same file twice" in err
    doc = json.loads(quick.read_text())
    for b in doc["benchmarks"]:
        b["extra_info"]["sweep"] = "EPYC-2c-20261130T0000-1"
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(doc))
    assert main(["replicate", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err  # the same sweep under another name
    assert err.count("\n") == 1 and "one sweep is no replication of itself" in err
    assert main(["replicate", str(quick), str(REPORTS / "machines" / "H200-jax-quick.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "share no setting" in err and "H200" in err


@pytest.mark.parametrize("mode", ["default", "fast"])
def test_the_committed_evidence_replication_is_what_replicate_prints_today(mode, capsys):
    """The two sweeps of the evidence protocol (scripts/evidence.sh) are two sweeps of one setting, and the committed
    replicate-<mode>.txt is exactly what `python -m analysis replicate` prints from them."""
    from analysis import replication
    from analysis.cli import main

    evidence = REPORTS / "evidence"
    a, b = evidence / f"quick-{mode}-a.json", evidence / f"quick-{mode}-b.json"
    found = replication.compare(load_runs([a]), load_runs([b]))
    assert found.cells == 28 and found.checked > 0 and {v[1] for v in found.verdicts} == {"1", "2"}
    assert len(found.knees) == 7  # the lecture's seven optimizers
    assert main(["replicate", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert printed == (evidence / f"replicate-{mode}.txt").read_text()
    assert printed.splitlines() == found.lines()
