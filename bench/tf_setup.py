"""Imports TensorFlow and Keras once, configured for benchmarking: TF backend, quiet logs, GPU memory growth."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}; mnist-mlp-bench measures the 'tensorflow' backend")

# Memory growth must be set before TensorFlow touches a GPU: without it TF grabs the whole card,
# which hides the memory a run really used and starves NVML's sampler of a meaningful reading.
for _gpu in tf.config.list_physical_devices("GPU"):
    try:
        tf.config.experimental.set_memory_growth(_gpu, True)
    except RuntimeError:  # already initialised by the caller: their choice stands
        pass

_determinism = False


def enable_determinism() -> None:
    """Deterministic kernels (GPU reductions in particular); off by default because it slows training.

    On the CPU the same seed already gives the same result without it (tests check this).
    """
    global _determinism
    tf.config.experimental.enable_op_determinism()
    _determinism = True


def determinism() -> bool:
    return _determinism


def set_threads(n: int) -> None:
    """Limit TensorFlow to `n` threads per op and `n` ops in parallel: fewer CPU resources, measured as such."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as exc:  # TensorFlow already running: the setting would silently not apply
        raise RuntimeError(f"--threads must be applied before TensorFlow starts ({exc})") from None


def threads() -> dict:
    """TensorFlow's thread settings as used (0 = TensorFlow's default, one per core)."""
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def gpu_devices() -> list:
    return tf.config.list_logical_devices("GPU")


__all__ = ["keras", "tf", "gpu_devices", "enable_determinism", "determinism", "set_threads", "threads"]
