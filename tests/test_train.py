"""Real training runs on real MNIST: exact update counts, the record's keys and types, accuracy, determinism."""

import json
import math

import numpy as np
import pytest

from bench import grid, train
from bench.data import Mnist

RECORD_KEYS = {
    "schema": str, "status": str, "profile": str, "optimizer": str, "batch_size": int, "activation": str,
    "dtype": str, "seed": int, "train_size": int, "test_size": int, "epochs": int, "learning_rate": float,
    "updates": int,
    "epoch_times_s": list, "first_epoch_s": float, "epoch_time_s": float, "time_per_update_s": float,
    "examples_per_s": float, "train_loss": float, "train_accuracy": float, "test_loss": float,
    "test_accuracy": float, "test_accuracy_by_epoch": list, "train_loss_by_epoch": list, "loss_curve": list,
    "grad_norm_curve": list, "curve_stride": int, "grad_norm_stride": int, "diverged": bool, "gpu": dict, "dispatch": dict,
}
GPU_KEYS = {"available", "reason", "name", "util_mean_pct", "util_max_pct", "memory_used_max_mib",
            "power_mean_w", "energy_j"}


def cfg(optimizer="sgd", batch_size=100, train_size=1000, epochs=2, seed=0, activation="sigmoid"):
    return grid.RunConfig("smoke", optimizer, batch_size, batch_size == train_size, activation, seed,
                          train_size, epochs)


def plain_types(value):
    """True if `value` holds only what json produces: no numpy scalars anywhere."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_types(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize("batch_size,train_size,epochs,updates", [
    (1, 1003, 1, 1003), (7, 1003, 2, 288), (1000, 1003, 2, 4), (1003, 1003, 3, 3),
])
def test_exact_update_counts(real_mnist, batch_size, train_size, epochs, updates):
    record = train.run(cfg("sgd", batch_size, train_size, epochs), real_mnist)
    assert record["status"] == "ok"
    assert record["updates"] == updates == epochs * math.ceil(train_size / batch_size)
    assert len(record["epoch_times_s"]) == epochs


@pytest.fixture(scope="module")
def adam_record(real_mnist):
    return train.run(cfg("adam", 10, 2000, 2), real_mnist, max_curve_points=50)


def test_record_keys_and_types(adam_record):
    for key, kind in RECORD_KEYS.items():
        assert isinstance(adam_record[key], kind), key
    assert set(adam_record["gpu"]) >= GPU_KEYS
    assert plain_types(adam_record)
    json.dumps(adam_record, allow_nan=False)
    assert adam_record["schema"] == grid.SCHEMA
    assert adam_record["learning_rate"] == grid.LEARNING_RATES["adam"]
    assert adam_record["dispatch"]["backend"] == "tensorflow" and adam_record["dispatch"]["mode"] == "default"
    assert adam_record["dtype"] == "float32"
    assert adam_record["dispatch"]["steps_per_execution"] == 1
    assert isinstance(adam_record["dispatch"]["jit_compile"], bool)
    assert set(adam_record["dispatch"]["threads"]) == {"intra_op", "inter_op"}


def test_timing_fields_agree(adam_record):
    r = adam_record
    assert r["first_epoch_s"] == r["epoch_times_s"][0]
    assert r["epoch_time_s"] == r["epoch_times_s"][1]  # median of the epochs after the first
    assert r["time_per_update_s"] == pytest.approx(r["epoch_time_s"] / 200)
    assert r["examples_per_s"] == pytest.approx(2000 / r["epoch_time_s"])


def test_curves_are_subsampled_and_start_at_the_first_update(adam_record):
    loss, grad = adam_record["loss_curve"], adam_record["grad_norm_curve"]
    assert len(loss) == len(grad) == 50  # 400 updates, stride 8
    assert [u for u, _ in loss] == list(range(1, 401, 8))
    assert all(v > 0 and math.isfinite(v) for _, v in loss + grad)
    assert loss[0][1] > loss[-1][1]  # adam learns: first minibatch loss above the last


def test_beats_chance_and_curves_per_epoch(adam_record):
    assert adam_record["test_accuracy"] > 0.7  # chance is 0.1
    assert adam_record["train_accuracy"] > 0.7
    assert len(adam_record["test_accuracy_by_epoch"]) == 2 and len(adam_record["train_loss_by_epoch"]) == 2
    assert adam_record["test_accuracy"] == adam_record["test_accuracy_by_epoch"][-1]


def test_same_seed_same_result_other_seed_differs(real_mnist, adam_record):
    again = train.run(cfg("adam", 10, 2000, 2), real_mnist, max_curve_points=50)
    assert again["test_accuracy"] == adam_record["test_accuracy"]
    assert again["loss_curve"] == adam_record["loss_curve"]
    other = train.run(cfg("adam", 10, 2000, 2, seed=1), real_mnist, max_curve_points=50)
    assert other["loss_curve"] != adam_record["loss_curve"]


def test_divergence_is_a_result(real_mnist):
    x = real_mnist.x_train.copy()
    poisoned = Mnist(x, real_mnist.y_train, real_mnist.x_test, real_mnist.y_test, "test")
    nan_data = _NanMnist(poisoned)
    record = train.run(cfg("sgd", 50, 200, 3), nan_data)
    assert record["status"] == "diverged" and record["diverged"] is True
    assert "became nan" in record["error"]
    assert record["epochs_done"] == 1  # training stopped after the epoch that went NaN
    assert record["test_accuracy"] is None
    assert plain_types(record)
    json.dumps(record, allow_nan=False)


class _NanMnist:
    """Real MNIST with one NaN pixel in the training inputs: the loss turns NaN on the first update."""

    def __init__(self, mnist):
        self.mnist = mnist

    def prepared(self, n):
        x, y, xt, yt = self.mnist.prepared(n)
        x[0, 0] = np.nan
        return x, y, xt, yt


def test_out_of_memory_is_a_result(real_mnist, monkeypatch):
    from bench.backend import keras, tf

    def oom(self, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[50000,500]")

    monkeypatch.setattr(keras.Model, "fit", oom)
    record = train.run(cfg("sgd", 1000, 1000, 1), real_mnist)
    assert record["status"] == "oom" and "OOM when allocating" in record["error"]
    assert record["epoch_times_s"] == [] and record["updates"] == 0 and record["diverged"] is False
    json.dumps(record, allow_nan=False)


@pytest.mark.parametrize("exc,status,reason", [
    (ValueError("Cannot convert a symbolic tf.Tensor"), "error", "ValueError: Cannot convert"),
    (KeyboardInterrupt(), "interrupted", "SIGINT"),
])
def test_other_failures_are_results(real_mnist, monkeypatch, exc, status, reason):
    """A TF/Keras error in one cell and a Ctrl-C each leave a record (injected into model.fit here;
    tests/test_store.py sends a real SIGINT to a real sweep)."""
    from bench.backend import keras

    def fail(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(keras.Model, "fit", fail)
    record = train.run(cfg("sgd", 100, 1000, 1), real_mnist)
    assert record["status"] == status and reason in record["error"]
    assert plain_types(record)

