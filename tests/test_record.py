"""The run record as a contract (bench/record.py): every committed result file reads back through the record
type, upgrades only add (a chain, one step per schema version), the protocol/cell/run keys, and the store's reader
and writer."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench import grid, record

from .helpers import FIXTURES, REPORTS, ROOT, stored

COMMITTED = sorted([*REPORTS.rglob("*.json"), *REPORTS.rglob("*.jsonl"), *FIXTURES.glob("*.json")])


def _records(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line)["record"] for line in path.read_text().splitlines() if line.strip()]
    doc = json.loads(path.read_text())
    return [b["extra_info"] for b in doc.get("benchmarks", []) + doc.get("untimed_runs", [])]


def _contains(new, old) -> bool:
    """Every key of `old` is in `new` with the same value, recursively (an upgrade only adds)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _contains(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(map(_contains, new, old))
    return new == old


@pytest.mark.parametrize("path", [p for p in COMMITTED if _records(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_record_reads_back_through_the_record_type(path):
    for i, data in enumerate(_records(path)):
        out = record.Record.from_dict(data, where=f"{path.name}[{i}]").to_dict()
        assert out == record.upgrade(data) and record.upgrade(out) == out and out["schema"] == record.SCHEMA
        moved = {"schema"} | ({"tuning"} if data.get("tuning") else set())  # the tuning's role moved up in schema 3
        if data["schema"] != record.SCHEMA:  # schema 4 redefined the estimate: recomputed from the epoch times
            moved |= set(record.RECOMPUTED_IN_V4)
            timing = record.steady_timing(data["epoch_times_s"]) if len(data.get("epoch_times_s") or []) > 1 else {}
            assert all(out[k] == timing[k] for k in timing if k in record.RECOMPUTED_IN_V4)
        assert _contains(out, {k: v for k, v in data.items() if k not in moved}), "an upgrade changed a value"
        if data.get("tuning") and "role" in data["tuning"]:  # written before schema 3
            assert out["role"] == data["tuning"]["role"]


def test_a_record_that_breaks_the_contract_is_refused_naming_the_field():
    data = record.upgrade(_records(FIXTURES / "adam-fast.json")[0])
    for change, message in [(dict(updates="400"), r"record\.updates: expected int, got str"),
                            (dict(gpu={**data["gpu"], "samples": 1.5}), r"record\.gpu\.samples: expected int"),
                            (dict(epoch_times_s=[1.0, None]), r"record\.epoch_times_s\[1\]: expected float"),
                            (dict(surprise=1), r"record: unknown field\(s\) surprise"),
                            (dict(schema="mnist-mlp-bench/99"), "unknown schema 'mnist-mlp-bench/99'")]:
        with pytest.raises(record.RecordError, match=message):
            record.Record.from_dict({**data, **change})
    missing = {k: v for k, v in data.items() if k != "status"}
    with pytest.raises(record.RecordError, match="missing field 'status'"):
        record.Record.from_dict(missing)


def test_every_field_is_documented():
    docs = record.fields_doc()
    assert "dispatch.backend" in docs and "gpu.energy_j" in docs and "plateaus.kind" in docs
    assert all(docs.values()), [k for k, v in docs.items() if not v]
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| key | meaning |"):readme.index("`machine_info` adds")]
    undocumented = [k for k in docs if "." not in k and f"`{k}`" not in table]
    assert not undocumented, f"README's record table lacks {undocumented}"
    gpu = next(line for line in table.splitlines() if line.startswith("| `gpu` |"))
    assert all(f"`{k.split('.')[1]}`" in gpu for k in docs if k.startswith("gpu."))


def test_keys_separate_protocols_settings_and_machines():
    cell = grid.parse_sweep("smoke").cells()[0]
    me = "host|cpu|no-gpu"
    key = cell.run_key("tensorflow", None, "tf32", me)
    base = stored(batch_size=cell.batch_size, train_size=cell.train_size, epochs=cell.epochs, optimizer=cell.optimizer)
    finished = record.Record.from_dict({**base, "dispatch": {**base["dispatch"],
                                                             "threads": {"intra_op": 0, "inter_op": 0}}})
    assert key == record.run_key(finished, me)  # what --resume plans is what the finished run's record says
    others = [cell.run_key("jax", None, "tf32", me), cell.run_key("tensorflow", 1, "tf32", me),
              cell.run_key("tensorflow", None, "fp32", me), cell.run_key("tensorflow", None, "tf32", "other|cpu|-"),
              *(grid.RunConfig(**{**cell.__dict__, **change}).run_key("tensorflow", None, "tf32", me)
                for change in ({"probes": False}, {"activation": "relu"}, {"dispatch": "fast"},
                               {"experiment": "toy"}, {"role": "trial"}))]
    assert len({key, *others}) == 1 + len(others)
    assert key.protocol == record.Protocol(experiment="grid", profile="smoke", train_size=cell.train_size,
                                           epochs=cell.epochs, activation="sigmoid", dtype="float32", mode="default",
                                           backend="tensorflow")
    assert key.cell == record.Cell(optimizer=cell.optimizer, batch_size=cell.batch_size, full_batch=False,
                                   budget=None, lr_setting=None, role=None)
    assert record.PROTOCOL == tuple(record.Protocol.PATHS.values()) and "dispatch.backend" in record.PROTOCOL


def test_schema_upgrades_are_a_chain_one_step_per_version():
    assert list(record.UPGRADES) == list(record.SCHEMAS[:-1])
    steps, schema = [], record.SCHEMAS[0]
    while schema != record.SCHEMA:
        schema = record.UPGRADES[schema][0]
        steps.append(schema)
    assert steps == list(record.SCHEMAS[1:])
    old = _records(REPORTS / "machines" / "2threads.json")[0]  # schema 1
    assert old["schema"] == "mnist-mlp-bench/1" and record.upgrade(old)["schema"] == record.SCHEMA
    with pytest.raises(record.RecordError, match="written by a newer mnist-mlp-bench"):
        record.upgrade({**old, "schema": "mnist-mlp-bench/99"})


def test_the_record_names_its_experiment_target_and_role_and_older_ones_get_them_on_reading():
    """Schema 2 left the experiment to be guessed from which parts were set: the upgrade decides it once."""
    escape = _records(REPORTS / "saddle" / "escape.json")[0]
    tuning = _records(REPORTS / "tuning" / "tuning.json")[0]
    saddle = _records(REPORTS / "saddle" / "saddle.json")[0]
    grid_run = _records(FIXTURES / "grid-schema2-validation.json")[0]  # a dirty-tree file: a fixture, not evidence
    got = {name: record.Record.from_dict(r) for name, r in
           (("escape", escape), ("tuning", tuning), ("saddle", saddle), ("grid", grid_run))}
    assert {k: r.experiment for k, r in got.items()} == {k: k for k in got}
    assert got["tuning"].role == tuning.get("role", tuning["tuning"].get("role")) and got["tuning"].role in ("trial", "tuned", "pinned")
    assert got["grid"].role is None
    assert got["tuning"].target == record.Target(value=0.90, split="validation")
    assert got["grid"].target == record.Target(value=0.90, split="validation")  # quick, with the validation split
    assert got["saddle"].target.split == "test"  # made before the validation split


def test_upgrade_fills_what_older_runs_used():
    old = _records(REPORTS / "machines" / "2threads.json")[0]  # before dispatch modes, probes and budgets existed
    new = record.upgrade(old)
    assert "probes" not in old and new["probes"] == {
        "enabled": False, "requested": False, "reason": "not recorded (made before the probes existed)",
        "probe_size": None, "lanczos_iters": None, "eigen_solver": None, "seconds": None}
    assert new["dispatch"]["mode"] == "default" and new["budget"] is None and new["plateaus"] is None
    assert new["grad_norm_stride"] == old["curve_stride"]
    # before --precision: the frameworks' default was asked for; a CPU run got full float32, a GPU's is unknown
    assert new["dispatch"]["precision"] == "tf32" and new["dispatch"]["matmul_precision"] == "fp32"
    gpu = record.upgrade({**old, "dispatch": {**old["dispatch"], "device": "GPU"}})
    assert gpu["dispatch"]["matmul_precision"] is None
    no_probes = record.upgrade({**old, "probes": {"enabled": False, "reason": "off (--no-probes)"}})
    assert no_probes["probes"]["requested"] is False


def test_a_record_appended_after_a_torn_line_is_read_back_intact(tmp_path):
    path = tmp_path / "s.jsonl"
    record.append(path, "a", stored(0))
    record.append(path, "b", stored(1))
    with open(path, "a") as f:
        f.write('{"schema": "mnist-mlp-bench/1", "nodeid": "c", "rec')  # the write a kill -9 cut
    record.append(path, "d", stored(3))
    with pytest.warns(record.BadLineWarning, match=r"s\.jsonl:3: torn line"):
        store = record.read_store(path)
    assert [e.nodeid for e in store.entries] == ["a", "b", "d"]
    assert store.entries[2].record.batch_size == 13 and [b.where for b in store.bad] == [f"{path}:3"]


GOOD = json.dumps({"schema": record.SCHEMA, "record": stored()})


@pytest.mark.parametrize("line,reason", [
    (json.dumps({"schema": record.SCHEMA, "record": stored(status="okay")}), "'okay' is none of"),
    (json.dumps({"schema": record.SCHEMA, "record": stored(epoch_time_s=-1.0)}), "epoch_time_s: -1.0 is no time"),
    (json.dumps({"schema": record.SCHEMA, "record": stored(fit_wall_s=float("inf"))}), "fit_wall_s: inf is no time"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
])
def test_values_a_run_cannot_have_are_bad_lines_named_with_their_reason(tmp_path, line, reason):
    path = tmp_path / "s.jsonl"
    path.write_text(GOOD + "\n" + line + "\n" + GOOD + "\n")
    with pytest.warns(record.BadLineWarning):
        store = record.read_store(path)
    assert len(store.entries) == 2 and [b.where for b in store.bad] == [f"{path}:2"]
    assert reason in store.bad[0].text()


def test_a_byte_order_mark_an_editor_added_is_no_bad_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(("\ufeff" + GOOD + "\n" + GOOD + "\n").encode("utf-8"))
    store = record.read_store(path)
    assert len(store.entries) == 2 and not store.bad


def test_two_writers_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    # records of ~200 kB: far above what a single write() is guaranteed to keep whole without the lock
    code = ("import sys; from bench import record; from tests.helpers import stored\n"
            "curve = [[k, 0.5] for k in range(20_000)]\n"
            "for i in range(40): record.append(sys.argv[1], sys.argv[2], stored(i, loss_curve=curve))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"writer{w}"], cwd=ROOT) for w in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entries = record.read_store(path).entries
    assert sorted(e.nodeid for e in entries) == ["writer0"] * 40 + ["writer1"] * 40


def test_an_unwritable_store_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(record.StoreError, match=r"--bench-store: cannot write the file .*file/sub/runs.jsonl"):
        record.check_writable(tmp_path / "file" / "sub" / "runs.jsonl")
    with pytest.raises(record.StoreError, match="not a file"):
        record.check_writable(tmp_path)
    record.check_writable(tmp_path / "new" / "runs.jsonl")  # creatable: no error, and nothing left behind
    assert not (tmp_path / "new").exists()
    with pytest.raises(record.StoreError, match=r"--out: cannot write the folder .*file"):
        record.check_writable(tmp_path / "file", "--out", folder=True)
