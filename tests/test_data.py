"""MNIST loading: the real file passes its published checks; missing, corrupt or wrong files are refused in one line."""

import numpy as np
import pytest

from bench import data


def test_real_mnist_passes_the_published_checks(real_mnist):
    assert real_mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert real_mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(real_mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs((real_mnist.x_train / 255.0).mean() - 0.1306604762738429) < 1e-9


def test_prepared_is_the_lectures_preprocessing(real_mnist):
    x, y, xt, yt = real_mnist.prepared(123)
    assert x.shape == (123, 784) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (123, 10) and (y.argmax(1) == real_mnist.y_train[:123]).all()
    assert xt.shape == (10000, 784) and yt.shape == (10000, 10)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _fake_arrays(**override):
    arrays = {k: np.zeros(shape, dtype) for k, (shape, dtype) in data.EXPECTED.items()}
    arrays.update(override)
    return arrays


def test_missing_file(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_mnist(tmp_path / "nope.npz")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(data.DataError, match="is not a .npz archive"):
        data.load_mnist(bad)


def test_files_that_are_no_npz_archive(tmp_path):
    import numpy as np

    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "folder.npz").mkdir()
    for name, message in (("plain.npy", "is not a .npz archive"), ("text.npz", "is not a .npz archive"),
                          ("folder.npz", "is a folder, not a file")):
        with pytest.raises(data.DataError, match=message):
            data.load_mnist(tmp_path / name)
    with pytest.raises(data.DataError, match="--mnist: '' is no path"):
        data.locate("")


def test_wrong_shape(tmp_path):
    path = _write(tmp_path / "m.npz", **_fake_arrays(x_train=np.zeros((100, 28, 28), np.uint8)))
    with pytest.raises(data.DataError, match=r"x_train is uint8\[100, 28, 28\], expected uint8\[60000, 28, 28\]"):
        data.load_mnist(path)


def test_wrong_dtype(tmp_path):
    path = _write(tmp_path / "m.npz", **_fake_arrays(y_test=np.zeros(10000, np.int64)))
    with pytest.raises(data.DataError, match="y_test is int64"):
        data.load_mnist(path)


def test_missing_keys(tmp_path):
    path = _write(tmp_path / "m.npz", x_train=np.zeros((60000, 28, 28), np.uint8))
    with pytest.raises(data.DataError, match="lacks x_test, y_test, y_train"):
        data.load_mnist(path)


def test_env_var_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "from-env.npz"))
    with pytest.raises(data.DataError, match="from-env.npz"):
        data.load_mnist()


def test_offline_without_file_names_env_var_and_cache(tmp_path, monkeypatch):
    from bench.backends import current

    keras = current().keras
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def no_network():
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_network)
    with pytest.raises(data.DataError) as info:
        data.load_mnist()
    assert "MNIST_NPZ" in str(info.value) and str(tmp_path / "datasets" / "mnist.npz") in str(info.value)
