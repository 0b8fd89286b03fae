"""MNIST in Keras' layout: find it (MNIST_NPZ, --mnist, Keras' cache, download), check it, prepare it."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "MNIST_NPZ"
VALIDATION_SIZE = 10_000  # the last 10,000 of the 60,000 training images: validation, never trained on
MAX_TRAIN_SIZE = 60_000 - VALIDATION_SIZE
EXPECTED = {
    "x_train": ((60000, 28, 28), np.uint8),
    "y_train": ((60000,), np.uint8),
    "x_test": ((10000, 28, 28), np.uint8),
    "y_test": ((10000,), np.uint8),
}


class DataError(ValueError):
    """MNIST could not be found or is not MNIST; the message is one line for the user."""


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def prepared(self, train_size: int):
        """The lecture's preprocessing: the first `train_size` images flattened, scaled to [0, 1]; one-hot labels."""
        def x(a):
            return (a.reshape(len(a), 784).astype(np.float32) / 255.0)

        def y(a):
            return np.eye(10, dtype=np.float32)[a]

        if not 1 <= train_size <= MAX_TRAIN_SIZE:
            raise DataError(f"train size {train_size} is out of range: 1 to {MAX_TRAIN_SIZE:,} (the last "
                            f"{VALIDATION_SIZE:,} training images are the validation split)")
        return x(self.x_train[:train_size]), y(self.y_train[:train_size]), x(self.x_test), y(self.y_test)

    def validation(self):
        """The validation split: the last VALIDATION_SIZE training images (in file order), prepared the same way;
        no train size reaches them."""
        start = len(self.x_train) - VALIDATION_SIZE
        xv = self.x_train[start:].reshape(-1, 784).astype(np.float32) / 255.0
        return xv, np.eye(10, dtype=np.float32)[self.y_train[start:]]


def keras_cache_path() -> Path:
    """Where `keras.datasets.mnist.load_data()` keeps its download."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home) if home else Path.home() / ".keras"
    return base / "datasets" / "mnist.npz"


def _missing(path: Path) -> DataError:
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    return DataError(f"MNIST file {str(path)!r} {what}; give a Keras-layout mnist.npz")


def read_npz(path: str | os.PathLike) -> Mnist:
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    if not zipfile.is_zipfile(path):  # np.load would read a .npy or a pickle instead, or fail on a text file
        raise DataError(f"MNIST file {str(path)!r} is not a .npz archive (not a zip file); give a Keras-layout "
                        "mnist.npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = sorted(set(EXPECTED) - set(f.files))
            if missing:
                raise DataError(f"MNIST file {str(path)!r} lacks {', '.join(missing)}; "
                                f"expected keys {', '.join(EXPECTED)} (Keras' mnist.npz layout)")
            arrays = {k: f[k] for k in EXPECTED}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"MNIST file {str(path)!r} is not a readable .npz ({type(exc).__name__}: {exc})") from None
    return _checked(arrays, str(path.resolve()))


def _checked(arrays: dict, source: str) -> Mnist:
    for key, (shape, dtype) in EXPECTED.items():
        a = arrays[key]
        if a.shape != shape or a.dtype != dtype:
            raise DataError(f"MNIST from {source!r}: {key} is {a.dtype}{list(a.shape)}, "
                            f"expected {np.dtype(dtype)}{list(shape)}")
    if arrays["y_train"].max() > 9 or arrays["y_test"].max() > 9:
        raise DataError(f"MNIST from {source!r}: labels outside 0-9")
    return Mnist(source=source, **arrays)


def locate(path: str | os.PathLike | None = None) -> Path | None:
    """Where MNIST will be read from: `path`, else $MNIST_NPZ, else Keras' cache; None when it must be
    downloaded. A named file that does not exist is a DataError (cheap: nothing is read)."""
    if path is not None and str(path).strip() == "":
        raise DataError("--mnist: '' is no path; give a Keras-layout mnist.npz (or leave it out: $MNIST_NPZ, then "
                        "Keras' cache)")
    named = path or os.environ.get(ENV_VAR)
    if named:
        if not Path(named).is_file():
            raise _missing(Path(named))
        return Path(named)
    cache = keras_cache_path()
    return cache if cache.is_file() else None


def load_mnist(path: str | os.PathLike | None = None) -> Mnist:
    """MNIST from `path`, else $MNIST_NPZ, else Keras' cache, else Keras' own download."""
    found = locate(path)
    if found is not None:
        return read_npz(found)
    from bench.backends import current

    keras = current().keras
    cache = keras_cache_path()

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as exc:  # any download failure: no network, proxy, HTTP error
        raise DataError(f"MNIST is not available offline and could not be downloaded ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                        f"set {ENV_VAR} to a Keras-layout mnist.npz or place it at {cache}") from None
    return _checked(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test),
                    "keras.datasets.mnist.load_data()")
