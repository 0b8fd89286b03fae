"""The order of a fixed update budget's minibatches, the same on every backend: pass p of the training set is the
permutation numpy's PCG64 draws from (seed, p), cut into len // batch_size batches (the remainder dropped), so the
same seed gives the same minibatches on TensorFlow and on JAX, and a batch never spans two passes."""

from __future__ import annotations

import numpy as np


def pass_batches(n: int, batch_size: int, seed: int, index: int) -> np.ndarray:
    """The index batches of pass `index`: an int64 array of shape (n // batch_size, batch_size)."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch size {batch_size} is not between 1 and the {n} examples")
    per_pass = n // batch_size
    order = np.random.default_rng([int(seed), int(index)]).permutation(n)
    return order[:per_pass * batch_size].reshape(per_pass, batch_size).astype(np.int64)


def batches(n: int, batch_size: int, seed: int):
    """Every index batch, pass after pass, endlessly."""
    index = 0
    while True:
        yield from pass_batches(n, batch_size, seed, index)
        index += 1
