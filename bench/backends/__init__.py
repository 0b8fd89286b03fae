"""The Keras backends behind one interface: `current()` is the module for $KERAS_BACKEND (tensorflow, the
default, or jax), imported on first use. Every module here offers the same surface; nothing outside this
folder asks which backend it is.

The surface (see tensorflow.py for the reference implementation):

* ``keras``, ``NAME``; ``gpu_devices()``, ``build_info()``, ``to_int(variable)``;
* ``set_threads(n)``, ``threads()``, ``enable_determinism()``, ``determinism()`` (``Unsupported`` where a
  backend cannot honour a setting);
* ``set_precision(setting)``, ``precision()``: the float32 matmul precision asked for (``bench.grid.PRECISIONS``) and the
  one the run actually gets (``used_precision``);
* ``is_oom(exc)``: whether a training failure is the device running out of memory;
* ``curve_recorder(total_updates, max_points, norm_points)`` and ``build_model(activation, recorder)``: the
  lecture's MLP whose train step records the minibatch loss and gradient norm in device buffers (None where
  the backend has no recorder, with ``NO_CURVES`` saying why);
* ``DEVICE_LOOP`` and ``fit_device_loop(model, x, y, *, batch_size, epochs, seed, callbacks)``: each epoch one
  compiled call over the training set held on the device (``--dispatch fast``);
* ``FIXED_BUDGET`` and ``repeated(x, y, batch_size, seed)``: endless reshuffled minibatches for a fixed update
  budget (the experiments; False where the backend has none);
* ``floor_epoch(model, optimizer, xb, yb)``: a hand-written compiled epoch of bare update steps over batches
  already on the device, the floor bench.overhead measures the drivers against;
* ``probe(model, x, y)``: loss, gradient and Hessian-vector products on a fixed probe set for
  bench/curvature.py (None where the backend has none, with ``NO_PROBES`` saying why).
"""

from __future__ import annotations

import importlib
import inspect
import os

SUPPORTED = ("tensorflow", "jax")

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX grabs 75 % of the card at start unless told not to: that hides the memory a run really used, and a
# second process on the same GPU would find it taken.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


# --precision (bench.grid.PRECISIONS): TensorFlow and JAX both default to TensorFloat-32 (10-bit mantissa
# products, float32 accumulation) on NVIDIA GPUs of compute capability 8.0 (Ampere) and later.
def used_precision(setting: str, capabilities) -> str:
    """The matmul precision a run gets: tf32 only where it is allowed and a GPU (compute capability
    `capabilities`, (major, minor) pairs; none on a CPU) has TensorFloat-32."""
    return "tf32" if setting == "tf32" and any(tuple(c) >= (8, 0) for c in capabilities) else "fp32"


class Unsupported(RuntimeError):
    """A setting this backend cannot honour; the message says which and why, in one line."""


def name() -> str:
    """The backend this process trains on ($KERAS_BACKEND), without importing it."""
    chosen = os.environ["KERAS_BACKEND"]
    if chosen not in SUPPORTED:
        raise Unsupported(f"KERAS_BACKEND is {chosen!r}; mnist-mlp-bench runs on {' or '.join(SUPPORTED)}")
    return chosen


_BLAS_LIMIT = None


def current():
    """The backend module (imports Keras and its framework on first use)."""
    global _BLAS_LIMIT
    module = importlib.import_module(f"{__name__}.{name()}")
    if _BLAS_LIMIT is None:
        from threadpoolctl import threadpool_limits

        # NumPy's BLAS (OpenBLAS) only serves the probes' small vector algebra here (bench.curvature), but its
        # worker threads keep spinning after a call and take cores from the training that follows: on 2 CPU
        # cores an epoch after a Lanczos probe measured 2.7 s instead of 0.27 s. One BLAS thread, for good
        # (set once NumPy is loaded: the limit applies to the libraries loaded when it is set).
        _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
    if module.keras.backend.backend() != module.NAME:  # Keras was imported earlier with another backend
        raise Unsupported(f"Keras runs on {module.keras.backend.backend()}, not {module.NAME}: set KERAS_BACKEND "
                          "before anything imports Keras")
    return module


def optimizer_classes() -> dict:
    """Every optimizer class the installed Keras ships, by lower-case name, wrappers excluded.

    A wrapper (LossScaleOptimizer) is told apart by needing an inner optimizer to be built.
    """
    keras = current().keras
    found = {}
    for key, cls in vars(keras.optimizers).items():
        if not (inspect.isclass(cls) and issubclass(cls, keras.optimizers.Optimizer)) or cls is keras.optimizers.Optimizer:
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        if any(p.default is p.empty and p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params):
            continue
        found[key.lower()] = cls
    return found


def optimizer_names() -> list[str]:
    return sorted(optimizer_classes())
