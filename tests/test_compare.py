"""`python -m analysis compare` on committed real result files: reports/machines/2threads.json and 1thread.json
(the `smoke` protocol on this CPU at 2 and 1 TensorFlow threads) and H200-jax-quick.json (the `quick` profile
on an H200 with Keras on JAX): matching, ratios, knees, the protocol refusal and its override, the table."""

import json
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from analysis import compare as C
from analysis import metrics
from analysis.cli import COMPARE_FIGURES, compare_figures
from analysis.load import LoadError, load_runs

from .helpers import REPORTS, ROOT

MACHINES = REPORTS / "machines"
TWO, ONE, H200 = MACHINES / "2threads.json", MACHINES / "1thread.json", MACHINES / "H200-jax-quick.json"


def epoch_times(path):
    """(optimizer, batch size) -> steady-state epoch time, read straight from the JSON."""
    doc = json.loads(path.read_text())
    return {(b["extra_info"]["optimizer"], b["extra_info"]["batch_size"]): b["extra_info"]["epoch_time_s"]
            for b in doc["benchmarks"] if b["extra_info"]["status"] == "ok"}


@pytest.fixture(scope="module")
def threads():
    return C.compare(load_runs([TWO, ONE]))


def test_matches_every_cell_of_two_machines_with_the_same_protocol(threads):
    assert threads.machines == ["EPYC-2c-2threads", "EPYC-2c-1thread"] and threads.baseline == "EPYC-2c-2threads"
    assert not threads.ignored and not threads.unmatched
    t = threads.table
    assert len(t) == len(epoch_times(TWO)) + len(epoch_times(ONE))  # every cell of both machines
    assert set(t["profile"]) == {"smoke"} and set(t["dispatch.backend"]) == {"tensorflow"}


def test_speed_ratio_is_baseline_epoch_time_over_the_machines(threads):
    two, one = epoch_times(TWO), epoch_times(ONE)
    other = threads.table[threads.table["machine"] == "EPYC-2c-1thread"]
    assert len(other) == len(one)
    for _, r in other.iterrows():
        cell = (r["optimizer"], r["batch_size"])
        assert r["epoch_time_s"] == pytest.approx(one[cell])
        assert r["speedup"] == pytest.approx(two[cell] / one[cell])
    base = threads.table[threads.table["machine"] == "EPYC-2c-2threads"]
    assert (base["speedup"] == 1).all()


def test_baseline_option_inverts_the_ratios(threads):
    flipped = C.compare(load_runs([TWO, ONE]), baseline="EPYC-2c-1thread")
    assert flipped.machines[0] == "EPYC-2c-1thread"
    a = threads.table[threads.table["machine"] == "EPYC-2c-1thread"].set_index(["optimizer", "batch_size"])
    b = flipped.table[flipped.table["machine"] == "EPYC-2c-2threads"].set_index(["optimizer", "batch_size"])
    for cell in a.index:
        assert a.loc[cell, "speedup"] * b.loc[cell, "speedup"] == pytest.approx(1.0)


def test_knee_per_machine_and_optimizer(threads):
    assert len(threads.knees) == 2 * 7
    for _, k in threads.knees.iterrows():
        g = threads.table[(threads.table["machine"] == k["machine"]) & (threads.table["optimizer"] == k["optimizer"])]
        assert k["knee_batch_size"] == metrics.knee(g["batch_size"], g["time_per_update_s"])
    (table,) = C.knee_tables(threads).values()  # one protocol: one table
    assert list(table.columns) == ["optimizer", "EPYC-2c-2threads", "EPYC-2c-1thread"] and len(table) == 7


def test_different_protocols_are_refused_naming_the_fields():
    runs = load_runs([TWO, H200])
    with pytest.raises(C.ProtocolMismatch) as err:
        C.compare(runs)
    msg = str(err.value)
    assert "\n" not in msg and "--allow-mismatch" in msg
    for field in ("profile quick vs smoke", "train size 10000 vs 1000", "backend jax vs tensorflow"):
        assert field in msg


def test_allow_mismatch_compares_and_says_so():
    cmp = C.compare(load_runs([MACHINES / "2threads.json", H200]), allow_mismatch=True)
    assert set(cmp.ignored) == {"profile", "train_size", "dispatch.backend"}
    note = cmp.mismatch_note()
    assert "backend" in note and "jax" in note and "tensorflow" in note
    # matched on optimizer x batch size: smoke's 1..1000 against quick's 1..10000, Nadam at batch 1 is
    # missing from the H200 file (its run failed there), so 27 cells pair up
    assert len(cmp.table[cmp.table["machine"] == "H200-140GB"]) == 27
    figs = compare_figures(cmp)
    try:
        for key in COMPARE_FIGURES:
            texts = [t.get_text() for ax in figs[key].axes for t in ax.texts]
            assert note in texts, key
    finally:
        for f in figs.values():
            plt.close(f)


def test_figures_plot_the_matched_data(threads):
    figs = compare_figures(threads)
    try:
        ax = figs["epoch_time"].axes[0]
        plotted = sorted(y for line in ax.get_lines() for y in line.get_ydata() if not math.isnan(y))
        # seaborn draws one line per machine x optimizer: every matched epoch time appears
        for y in threads.table["epoch_time_s"]:
            assert any(math.isclose(y, p, rel_tol=1e-9) for p in plotted), y
        assert "log" in ax.get_yscale() and "batch size" in ax.get_xlabel() and "(s" in ax.get_ylabel()
        assert "EPYC-2c-1thread" in ax.get_title()
        speed = figs["speedup"].axes[0]
        assert "speed relative to EPYC-2c-2threads" in speed.get_ylabel()
    finally:
        for f in figs.values():
            plt.close(f)


def test_one_machine_and_unknown_baseline_are_errors():
    with pytest.raises(LoadError, match="at least two machines"):
        C.compare(load_runs([TWO]))
    with pytest.raises(LoadError, match="--baseline 'A100': no such machine; the files hold EPYC-2c-2threads"):
        C.compare(load_runs([TWO, ONE]), baseline="A100")


@pytest.mark.slow
def test_cli_prints_the_ratio_table_and_writes_report(tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "analysis", "compare", str(TWO), str(ONE), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    two, one = epoch_times(TWO), epoch_times(ONE)
    ratio = two[("sgd", 1)] / one[("sgd", 1)]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| sgd ") and "|       1 |" in line)
    assert f"{ratio:.2f}x" in row
    assert "EPYC-2c-1thread speed vs EPYC-2c-2threads" in proc.stdout and "Saturation knee" in proc.stdout
    names = {p.name for p in out.iterdir()}
    for i, key in enumerate(COMPARE_FIGURES, start=1):
        assert {f"cmp{i}_{key}.png", f"cmp{i}_{key}.svg"} <= names
    md = (out / "COMPARE.md").read_text()
    assert f"{ratio:.2f}x" in md and "cmp3_speedup.png" in md
    assert len((out / "compare.csv").read_text().splitlines()) == 1 + len(epoch_times(TWO)) + len(epoch_times(ONE))


def test_cli_refuses_mismatch_with_one_line_and_status_2(tmp_path, capsys):
    from analysis.cli import main

    assert main(["compare", str(TWO), str(H200), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "protocols differ" in err and "--allow-mismatch" in err
    assert not (tmp_path / "out").exists()
