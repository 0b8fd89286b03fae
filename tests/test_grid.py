"""Option parsing: the grid each profile declares, every override, and the one-line errors for bad values."""

import pytest

from bench import grid


def test_profiles_match_design():
    smoke = grid.parse_sweep("smoke")
    assert (smoke.train_size, smoke.batch_sizes, smoke.repeats) == (200, (1, 10, 100, grid.FULL), 3)
    quick = grid.parse_sweep()
    assert (quick.profile, quick.train_size, quick.batch_sizes) == ("quick", 500, (1, 10, 100, grid.FULL))
    assert (quick.epochs, quick.repeats, quick.probes) == (6, 3, False)  # the main command: no probes
    lecture = grid.parse_sweep("lecture")
    assert (lecture.train_size, lecture.epochs, lecture.repeats) == (50_000, 20, 3)
    assert lecture.batch_sizes[-1] == grid.FULL
    assert all(p.target.split == "validation" for p in grid.PROFILES.values())


@pytest.mark.parametrize("profile", list(grid.PROFILES))
def test_every_profile_gives_each_cell_enough_repeats_and_steady_samples(profile):
    from bench.record import MIN_SAMPLES

    sweep = grid.parse_sweep(profile)
    assert sweep.epochs - 1 >= MIN_SAMPLES and sweep.repeats >= 3  # the first epoch compiles


def test_smoke_grid_has_28_cells_in_3_repeats_with_readable_ids():
    cells = grid.parse_sweep("smoke").cells()
    assert len(cells) == 28 * 3
    assert len({c.test_id for c in cells}) == 28 * 3
    assert {"adam-bs100-seed0-r1", "adam-bs100-seed0-r3"} <= {c.test_id for c in cells}
    assert "adam-bs100-seed0" in {c.test_id for c in grid.parse_sweep("smoke", repeats="1").cells()}


def test_overrides():
    sweep = grid.parse_sweep("smoke", train_size="500", epochs="3", batch_sizes="1,7,full",
                             optimizers="Adam,sgd", seeds="0,1,2", activation="relu")
    assert sweep.train_size == 500 and sweep.epochs == 3 and sweep.activation == "relu"
    assert sweep.optimizers == ("adam", "sgd") and sweep.seeds == (0, 1, 2)
    cells = sweep.cells()
    assert len(cells) == 2 * 3 * 3 * 3  # optimizers x batch sizes x seeds x repeats
    full = [c for c in cells if c.full_batch]
    assert {c.batch_size for c in full} == {500}
    assert {c.test_id for c in full} >= {"adam-bsfull-seed2-r3"}
    assert len(grid.parse_sweep("smoke", repeats="5").cells()) == 28 * 5
    with pytest.raises(grid.BadOption, match="--repeats: 0 is out of range"):
        grid.parse_sweep("smoke", repeats="0")


def test_smaller_train_size_drops_batch_sizes_that_do_not_fit():
    assert grid.parse_sweep("quick", train_size="150").batch_sizes == (1, 10, 100, grid.FULL)


@pytest.mark.parametrize("train_size,batch,expected", [
    (1003, 1, 1003), (1003, 7, 144), (1003, 1000, 2), (1003, 1003, 1), (1000, 1000, 1),
])
def test_expected_updates(train_size, batch, expected):
    cfg = grid.RunConfig("smoke", "sgd", batch, batch == train_size, "sigmoid", 0, train_size, 3)
    assert cfg.steps_per_epoch == expected
    assert cfg.expected_updates == 3 * expected


def test_threads():
    assert grid.parse_threads("1") == 1
    for bad in ("0", "-2", "two"):
        with pytest.raises(grid.BadOption, match="--threads"):
            grid.parse_threads(bad)


def test_precision():
    assert grid.parse_precision(None) == "tf32" and grid.parse_precision("fp32") == "fp32"
    for bad in ("FP32", "bf16", ""):
        with pytest.raises(grid.BadOption, match="--precision: unknown precision") as info:
            grid.parse_precision(bad)
        assert "\n" not in str(info.value)


def test_the_precision_a_run_gets():
    """TensorFloat-32 needs it allowed and an Ampere-or-later GPU: the controls include the answer tf32."""
    from bench.backends import used_precision

    assert used_precision("tf32", [(9, 0)]) == used_precision("tf32", [(8, 0)]) == "tf32"  # H100/H200, A100
    assert used_precision("fp32", [(9, 0)]) == "fp32"  # not allowed
    assert used_precision("tf32", [(7, 0)]) == "fp32"  # V100: no TensorFloat-32
    assert used_precision("tf32", []) == "fp32"  # a CPU


def test_all_optimizers_come_from_keras_without_wrappers():
    from bench.backends import optimizer_names

    names = grid.parse_optimizers("all", optimizer_names)
    assert names[:7] == grid.LECTURE_OPTIMIZERS
    assert "adamw" in names and "lion" in names
    assert "lossscaleoptimizer" not in names and "optimizer" not in names


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_sizes="0"), "--batch-sizes: 0 is out of range"),
    (dict(batch_sizes="-5"), "--batch-sizes: -5 is out of range"),
    (dict(batch_sizes="ten"), "--batch-sizes: 'ten' is not an integer"),
    (dict(batch_sizes="1,,10"), "has an empty item"),
    (dict(batch_sizes="20000"), "use 'full'"),
    (dict(optimizers="adamm"), "unknown optimizer 'adamm'; known: lecture, all, adadelta"),
    (dict(optimizers="adamw"), "unknown optimizer 'adamw'"),  # without discover: only the lecture's seven
    (dict(train_size="0"), "--train-size: 0 is out of range; the train size is 1 to 50,000"),
    (dict(train_size="60001"), "--train-size: 60001 is out of range"),
    (dict(epochs="0"), "--epochs: 0 is out of range"),
    (dict(profile="huge"), "unknown profile 'huge'; choose one of smoke, quick, lecture"),
    (dict(activation="tanh"), "unknown activation 'tanh'; choose one of sigmoid, relu"),
    (dict(seeds="a"), "--seeds: 'a' is not an integer"),
    (dict(dispatch="turbo"), "--dispatch: unknown mode 'turbo'; choose one of default, fast"),
    (dict(batch_sizes="1_0"), "--batch-sizes: '1_0' is not an integer"),
    (dict(train_size="200", batch_sizes="1,200"), "200 is the whole training set; give it as 'full'"),  # the whole training set is the full batch
    (dict(epochs="1001"), "--epochs: 1001 is out of range"),
    (dict(seeds=",".join(map(str, range(101)))), "--seeds: 101 seeds; at most 100"),
])
def test_bad_values_are_one_line_errors(kwargs, message):
    from bench.backends import optimizer_names

    discover = None if kwargs.get("optimizers") == "adamw" else optimizer_names
    with pytest.raises(grid.BadOption) as info:
        grid.parse_sweep(**kwargs, discover=discover)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_dispatch_mode_is_part_of_every_cell():
    assert grid.parse_sweep("smoke").dispatch == "default"
    assert {c.dispatch for c in grid.parse_sweep("smoke", dispatch="fast").cells()} == {"fast"}


def test_cells_carry_their_benchmark_params():
    cell = grid.parse_sweep("smoke", batch_sizes="full", train_size="300").cells()[0]
    assert cell.params == {"optimizer": "sgd", "batch_size": "full", "seed": 0, "repeat": 1} and cell.batch_size == 300
