"""The run record as a contract (bench/record.py): every committed result file reads back through the record
type, upgrades only add, the protocol/cell/resume keys, and the store's reader and writer."""

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
        assert out == record.upgrade(data) and record.upgrade(out) == out
        assert _contains(out, data), "an upgrade changed or dropped a recorded value"


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
    tf, me = cell.planned("tensorflow", None), "host|cpu|no-gpu"
    key = record.resume_key(tf, me)
    assert key == record.resume_key(stored(batch_size=cell.batch_size, train_size=cell.train_size, epochs=cell.epochs,
                                           optimizer=cell.optimizer,
                                           dispatch={"mode": "default", "backend": "tensorflow",
                                                     "threads": {"intra_op": 0, "inter_op": 0}}), me)
    others = [cell.planned("jax", None), cell.planned("tensorflow", 1), cell.planned("tensorflow", None, "fp32"),
              grid.RunConfig(**{**cell.__dict__, "probes": False}).planned("tensorflow", None),
              grid.RunConfig(**{**cell.__dict__, "activation": "relu"}).planned("tensorflow", None),
              grid.RunConfig(**{**cell.__dict__, "dispatch": "fast"}).planned("tensorflow", None)]
    assert len({key, *(record.resume_key(o, me) for o in others)}) == 1 + len(others)
    assert record.resume_key(tf, "other|cpu|no-gpu") != key
    assert record.protocol_key(tf) == ("smoke", cell.train_size, cell.epochs, "sigmoid", "float32", "default",
                                       "tensorflow")
    assert record.cell_key(tf) == (cell.optimizer, cell.batch_size, False, None, None, None)


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
    with pytest.warns(record.TornLineWarning, match=r"s\.jsonl:3: torn line skipped"):
        entries = record.read_store(path)
    assert [e["nodeid"] for e in entries] == ["a", "b", "d"]
    assert entries[2]["record"]["batch_size"] == 13


GOOD = json.dumps({"schema": record.SCHEMA, "record": stored()})


@pytest.mark.parametrize("content,message", [
    (f"{GOOD}\nnot json\n{GOOD}\n", r"bad.jsonl:2: not a JSON line"),
    ('[1, 2]\n{"x": 1}\n', r"bad.jsonl:1: not a run-store line"),
    ('{"schema": "other/2", "record": {"schema": "other/2"}}\n', r"bad.jsonl:1: unknown schema 'other/2'"),
])
def test_bad_store_is_an_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(record.StoreError, match=message):
        record.read_store(path)
    assert path.read_text() == content  # never overwritten


def test_two_writers_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    # records of ~200 kB: far above what a single write() is guaranteed to keep whole without the lock
    code = ("import sys; from bench import record; from tests.helpers import stored\n"
            "for i in range(40): record.append(sys.argv[1], sys.argv[2], stored(i, pad='x' * 200_000))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"writer{w}"], cwd=ROOT) for w in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entries = record.read_store(path)
    assert sorted(e["nodeid"] for e in entries) == ["writer0"] * 40 + ["writer1"] * 40


def test_an_unwritable_store_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(record.StoreError, match=r"--bench-store: cannot create .*file/sub/runs.jsonl"):
        record.check_writable(tmp_path / "file" / "sub" / "runs.jsonl")
    with pytest.raises(record.StoreError, match="not a writable file"):
        record.check_writable(tmp_path)
    record.check_writable(tmp_path / "new" / "runs.jsonl")  # creatable: no error, and nothing created
    assert not (tmp_path / "new").exists()
