"""An experiment is one module behind bench.experiments' interface: this file defines a toy one (plain SGD at two
learning rates, the full batch, on 200 examples) and is loaded into `pytest bench` as a plugin
(`-p tests.test_toy_experiment`, which registers it); the test runs it by name and finds it in the report."""

import sys

import pytest

from bench import experiments, record
from bench.experiments import Experiment, Plan
from bench.grid import RunConfig, parse_seeds
from bench.record import Target

from .helpers import benchmarks, run, sweep_cmd


class Toy(Experiment):
    name = "toy"
    about = "a toy: SGD at two rates on 200 examples"
    reads = ("--seeds",)

    def cells(self, given: dict) -> list[RunConfig]:
        seeds = parse_seeds(given["--seeds"]) if given.get("--seeds") else (0,)
        return [RunConfig("toy-200", "sgd", 200, True, "sigmoid", seed, 200, 2, probes=False, learning_rate=rate,
                          experiment=self.name, role="arm", target=Target(value=0.3, split="validation"))
                for rate in (0.1, 1.0) for seed in seeds]

    def plan(self, cell: RunConfig, ctx) -> Plan:
        return Plan(cell)


experiments.register(Toy())


@pytest.mark.slow
def test_a_toy_experiment_defined_in_one_file_runs_through_pytest_bench_and_is_reported(tmp_path, real_mnist):
    out, store = tmp_path / "toy.json", tmp_path / "toy.jsonl"
    proc = run(sweep_cmd("-q", "--experiment", "toy", "--benchmark-json", str(out), store=store, mnist=real_mnist,
                         plugins=["tests.test_toy_experiment"]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    timed, untimed = benchmarks(out)
    recs = [record.Record.from_dict(b["extra_info"]) for b in timed + untimed]
    assert sorted(r.learning_rate for r in recs) == [0.1, 1.0]
    assert all(r.experiment == "toy" and r.role == "arm" and r.target.value == 0.3 and r.updates == 2 for r in recs)
    unused = run(sweep_cmd("--collect-only", "-q", "--experiment", "toy", "--optimizers", "adam",
                           plugins=["tests.test_toy_experiment"]))
    assert unused.returncode == 4 and "--optimizers: --experiment toy does not use it" in unused.stderr

    rep = run([sys.executable, "-m", "analysis", "report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## Other experiments" in text and "| toy " in text and "toy-200" in text
