"""Fixtures for the fast checks: real MNIST when it can be found, tiny synthetic arrays for plumbing."""

import os
import sys

import pytest

from bench.data import DataError, load_mnist


@pytest.fixture(scope="session")
def real_mnist():
    try:
        return load_mnist(os.environ.get("MNIST_NPZ"))
    except DataError as exc:
        pytest.skip(f"real MNIST not found (set MNIST_NPZ): {exc}")


@pytest.fixture
def run_pytest(tmp_path):
    """Run `python -m pytest ARGS` in the project root; returns the CompletedProcess."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def _run(*args, timeout=900):
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                              cwd=root, capture_output=True, text=True, timeout=timeout)

    return _run
