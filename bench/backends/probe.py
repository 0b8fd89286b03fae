"""What a probe of either backend shares: the bookkeeping between a flat parameter vector (what the eigen-solver
works on, numpy float64) and the model's trainable variables (one tensor each)."""

from __future__ import annotations

import numpy as np


class ProbeBase:
    """Shapes and sizes of the trainable variables; a subclass provides `tensor(array)` (its framework's float32
    tensor) and the derivatives (`loss_and_grad`, `loss_and_grad_norm_sq`, `grad_norm_sq`, `hvp`, `subset`)."""

    def __init__(self, variables, size: int):
        self.variables = variables
        self.size = size  # examples in the probe set
        self.shapes = [tuple(v.shape) for v in variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dim = int(sum(self.sizes))

    @staticmethod
    def tensor(array):
        raise NotImplementedError

    def split(self, vector) -> list:
        """A flat vector as one tensor per trainable variable."""
        parts, start = [], 0
        for shape, n in zip(self.shapes, self.sizes):
            parts.append(self.tensor(np.asarray(vector[start:start + n]).reshape(shape)))
            start += n
        return parts

    @staticmethod
    def flatten(tensors) -> np.ndarray:
        """One tensor per variable as a flat float64 vector."""
        return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in tensors])
