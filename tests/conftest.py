"""Fixtures for the checks: real MNIST when it can be found."""

import os

import pytest

from bench.data import DataError, load_mnist


@pytest.fixture(scope="session")
def real_mnist():
    try:
        return load_mnist(os.environ.get("MNIST_NPZ"))
    except DataError as exc:
        pytest.skip(f"real MNIST not found (set MNIST_NPZ): {exc}")


@pytest.fixture(scope="session")
def small_mnist(real_mnist):
    """Real MNIST with its first 1,000 test images: the evaluation after every epoch costs a tenth, for checks
    that do not read accuracy to three digits."""
    from bench.data import Mnist

    m = real_mnist
    return Mnist(m.x_train, m.y_train, m.x_test[:1000], m.y_test[:1000], m.source)
