"""Shards of a sweep (bench/shard.py, `pytest bench --shard K/N`): every cell in exactly one shard, shards of
about equal estimated cost, the same split in every process, and the plan each shard writes."""

import pytest

from bench import grid, shard
from bench.experiments import escape, saddle

from .helpers import run, sweep_cmd

GRIDS = {
    "smoke": grid.parse_sweep("smoke", optimizers="sgd,adam,rmsprop,adagrad,adadelta,adamax,nadam").cells(),
    "quick 3 seeds": grid.parse_sweep("quick", optimizers="sgd,adam,rmsprop", seeds="0,1,2").cells(),
    "lecture": grid.parse_sweep("lecture", optimizers="sgd,adam").cells(),
    "saddle": saddle.cells("cpu"),
    "escape": escape.cells("cpu"),
}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("name", list(GRIDS))
def test_shards_cover_the_grid_once_with_balanced_cost(name, n):
    cells = GRIDS[name]
    shards = shard.split(cells, n)
    assert len(shards) == n
    ids = [c.test_id for s in shards for c in s]
    assert sorted(ids) == sorted(c.test_id for c in cells) and len(set(ids)) == len(ids)  # union, no overlap
    for s in shards:  # each shard keeps the grid's order
        assert [c.test_id for c in s] == [c.test_id for c in cells if c in s]
    loads = shard.loads(shards)
    mean = sum(loads) / n
    costs = sorted(shard.loads([[c] for c in cells]), reverse=True)
    # no split beats the largest cell, nor (pigeonhole) two of the n + 1 largest sharing a shard
    bound = max(costs[0], costs[n - 1] + costs[n] if len(costs) > n else 0)
    assert max(loads) <= max(1.25 * mean, bound) + 1e-9, (loads, bound)  # within 25 % where the grid allows


def test_the_split_depends_only_on_the_cells():
    cells = GRIDS["quick 3 seeds"]
    assert [[c.test_id for c in s] for s in shard.split(cells, 4)] == \
        [[c.test_id for c in s] for s in shard.split(list(cells), 4)]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_refused_naming_it(text):
    with pytest.raises(grid.BadOption, match=f"--shard: '{text}' is not K/N"):
        shard.parse(text)


def test_shards_of_the_collected_grid_partition_it(tmp_path):
    """What each array task collects: `pytest bench --shard K/3` over the smoke grid, and the plan it writes."""
    base = ["--collect-only", "-q", "--bench-profile", "smoke", "--optimizers", "sgd,adam,rmsprop"]
    every = run(sweep_cmd(*base, store=tmp_path / "all.jsonl"))
    assert every.returncode == 0, every.stderr
    everything = {line for line in every.stdout.splitlines() if "::" in line}
    assert len(everything) == 12 * 3  # 12 cells x 3 repeats
    seen = []
    for k in (1, 2, 3):
        store = tmp_path / f"shard-{k}-of-3.jsonl"
        proc = run(sweep_cmd(*base, "--shard", f"{k}/3", store=store))
        assert proc.returncode == 0, proc.stderr
        mine = [line for line in proc.stdout.splitlines() if "::" in line]
        assert f"shard {k}/3: {len(mine)} of 36 cells" in proc.stdout
        plan = shard.read_plan(store)
        assert plan["shard"] == (k, 3) and len(plan["cells"]) == len(plan["keys"]) == len(mine)
        assert {f"bench/test_train.py::test_train[{c}]" for c in plan["cells"]} == set(mine)
        seen += mine
    assert sorted(seen) == sorted(everything)
    bad = run(sweep_cmd(*base, "--shard", "4/3", store=tmp_path / "x.jsonl"))
    assert bad.returncode != 0 and "--shard: '4/3' is not K/N" in bad.stderr
