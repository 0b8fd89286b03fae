"""Real training runs on real MNIST (bench.train.run): exact update counts, the record's contract, accuracy,
determinism, and failures that are results."""

import math

import numpy as np
import pytest

from bench import grid, train

from .helpers import cfg, follows_contract


@pytest.mark.parametrize("batch_size,train_size,epochs,updates", [
    (1, 203, 1, 203), (7, 203, 2, 58), (203, 203, 3, 3),
])
def test_exact_update_counts(small_mnist, batch_size, train_size, epochs, updates):
    record = train.run(cfg("sgd", batch_size, train_size, epochs, probes=False), small_mnist)
    assert record.status == "ok"
    assert record.updates == updates == epochs * math.ceil(train_size / batch_size)
    assert len(record.epoch_times_s) == epochs


@pytest.fixture(scope="module")
def adam_record(small_mnist):
    return train.run(cfg("adam", 10, 1000, 4), small_mnist, max_curve_points=50)


def test_the_record_follows_the_contract(adam_record):
    follows_contract(adam_record.to_dict())
    r = adam_record
    assert r.test_size == 1000  # the test set it was given
    assert r.learning_rate == grid.LEARNING_RATES["adam"] and r.dtype == "float32"
    assert r.dispatch.backend == "tensorflow" and r.dispatch.mode == "default" and r.dispatch.driver == "keras_fit"
    assert r.dispatch.steps_per_execution == 1 and set(r.dispatch.threads) == {"intra_op", "inter_op"}
    assert r.gpu.available is False and r.gpu.reason  # no GPU on the machines the tests run on
    assert r.probes.enabled and r.probes.requested and r.hessian.update == r.updates == 400
    assert r.attempt == 1 and r.host_memory_run_mib is not None and 0 <= r.host_memory_run_mib <= r.host_memory_peak_mib


def test_timing_fields_agree(adam_record):
    r = adam_record
    assert r.first_epoch_s == r.epoch_times_s[0] and r.steady_samples_s == r.epoch_times_s[1:]
    assert r.epoch_time_s == min(r.steady_samples_s)  # the estimate: the fastest steady sample
    assert r.epoch_time_median_s == sorted(r.steady_samples_s)[1]  # the median of the three
    assert r.compile_s == pytest.approx(r.first_epoch_s - r.epoch_time_s)
    mad = sorted(abs(x - r.epoch_time_median_s) for x in r.steady_samples_s)[1]
    assert r.spread == pytest.approx(1.4826 * mad / r.epoch_time_median_s) and r.unstable  # 3 samples: too few
    assert r.time_per_update_s == pytest.approx(r.epoch_time_s / 100)
    assert r.examples_per_s == pytest.approx(1000 / r.epoch_time_s)


def test_curves_are_subsampled_and_start_at_the_first_update(adam_record):
    loss, grad = adam_record.loss_curve, adam_record.grad_norm_curve
    assert len(loss) == len(grad) == 50  # 400 updates, stride 8
    assert [u for u, _ in loss] == list(range(1, 401, 8))
    assert all(v > 0 and math.isfinite(v) for _, v in loss + grad)
    assert loss[0][1] > loss[-1][1]  # adam learns: first minibatch loss above the last


def test_beats_chance_and_curves_per_epoch(adam_record):
    assert adam_record.test_accuracy > 0.7  # chance is 0.1
    assert adam_record.train_accuracy > 0.7
    assert len(adam_record.test_accuracy_by_epoch) == 4 and len(adam_record.train_loss_by_epoch) == 4
    assert adam_record.test_accuracy == adam_record.test_accuracy_by_epoch[-1]


@pytest.mark.slow
def test_same_seed_same_result_other_seed_differs(small_mnist):
    a, b, other = (train.run(cfg("sgd", 50, 200, 1, seed=s, probes=False), small_mnist) for s in (0, 0, 1))
    assert a.test_accuracy == b.test_accuracy and a.loss_curve == b.loss_curve
    assert other.loss_curve != a.loss_curve


class _NanMnist:
    """Real MNIST with one NaN pixel in the training inputs: the loss turns NaN on the first update."""

    def __init__(self, mnist):
        self.mnist = mnist

    def prepared(self, n):
        x, y, xt, yt = self.mnist.prepared(n)
        x[0, 0] = np.nan
        return x, y, xt, yt

    def validation(self):
        return self.mnist.validation()


def test_divergence_is_a_result(small_mnist):
    record = train.run(cfg("sgd", 50, 200, 3, probes=False), _NanMnist(small_mnist))
    assert record.status == "diverged" and record.diverged is True
    assert "became nan" in record.error
    assert record.epochs_done == 1  # training stopped after the epoch that went NaN
    assert record.test_accuracy is None
    follows_contract(record.to_dict())


@pytest.mark.parametrize("exc,status,reason", [
    ("oom", "oom", "OOM when allocating"),
    (ValueError("Cannot convert a symbolic tf.Tensor"), "error", "ValueError: Cannot convert"),
    (KeyboardInterrupt(), "interrupted", "SIGINT"),
])
def test_failures_are_results(small_mnist, monkeypatch, exc, status, reason):
    """Out of memory, a framework error in one cell and a Ctrl-C each leave a record (injected into model.fit here;
    tests/test_sweeps.py sends a real SIGINT to a real sweep)."""
    from bench.backends import current

    if exc == "oom":
        tf = pytest.importorskip("tensorflow")
        exc = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[50000,500]")

    def fail(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(current().keras.Model, "fit", fail)
    record = train.run(cfg("sgd", 100, 1000, 1), small_mnist)
    assert record.status == status and reason in record.error
    assert record.epoch_times_s == [] and record.updates == 0 and record.diverged is False
    follows_contract(record.to_dict())


def test_a_ctrl_c_that_a_library_swallows_still_ends_the_run(small_mnist):
    """A real SIGINT lands where a bare `except:` catches the KeyboardInterrupt (as Keras' compile_utils does while
    it traces a step): the run still ends as interrupted, at the end of the epoch it landed in."""
    import os
    import signal
    import time

    def swallowing(epoch, seconds):
        if epoch == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here and raises KeyboardInterrupt...
            except:  # noqa: E722  ...which a library's bare except swallows
                pass

    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this process (a background launch): there is no Ctrl-C to remember")
    record = train.run(cfg("sgd", 50, 200, 3, probes=False), small_mnist, on_epoch=swallowing)
    assert record.status == "interrupted" and "SIGINT" in record.error
    assert record.epochs_done == 2  # the epoch after the swallowed signal was the last
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone again
