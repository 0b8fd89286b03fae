"""Imports Keras once, configured for benchmarking, on the TensorFlow backend (the default) or JAX.

TensorFlow is what the suite measures by default (`KERAS_BACKEND` unset). `KERAS_BACKEND=jax` runs the
same model, data and protocol on Keras' JAX backend, e.g. on a GPU machine that has JAX but no
TensorFlow build for its CUDA; the record's `dispatch.backend` says which, and `python -m analysis
compare` treats a different backend as a different protocol.
"""

import os

SUPPORTED = ("tensorflow", "jax")

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX grabs 75 % of the card at start unless told not to: that hides the memory a run really used.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

if os.environ["KERAS_BACKEND"] not in SUPPORTED:
    raise RuntimeError(f"KERAS_BACKEND is {os.environ['KERAS_BACKEND']!r}; mnist-mlp-bench runs on "
                       f"{' or '.join(SUPPORTED)}")

import keras  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

# NumPy's BLAS (OpenBLAS) only serves the probes' small vector algebra here (bench.curvature), but its
# worker threads keep spinning after a call and take cores from the training that follows: on 2 CPU
# cores an epoch after a Lanczos probe measured 2.7 s instead of 0.27 s. One BLAS thread, for good.
BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Memory growth must be set before TensorFlow touches a GPU: without it TF grabs the whole card,
    # which hides the memory a run really used and starves NVML's sampler of a meaningful reading.
    for _gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(_gpu, True)
        except RuntimeError:  # already initialised by the caller: their choice stands
            pass
else:
    tf = None
    import jax

_determinism = False


class Unsupported(RuntimeError):
    """A setting this backend cannot honour; the message says which and why."""


def enable_determinism() -> None:
    """Deterministic kernels (GPU reductions in particular); off by default because it slows training.

    On the CPU the same seed already gives the same result without it (tests check this).
    """
    global _determinism
    if BACKEND != "tensorflow":
        raise Unsupported("--deterministic needs the tensorflow backend (for jax set "
                          "XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting)")
    tf.config.experimental.enable_op_determinism()
    _determinism = True


def determinism() -> bool:
    return _determinism


def set_threads(n: int) -> None:
    """Limit TensorFlow to `n` threads per op and `n` ops in parallel: fewer CPU resources, measured as such."""
    if BACKEND != "tensorflow":
        raise Unsupported("--threads needs the tensorflow backend")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as exc:  # TensorFlow already running: the setting would silently not apply
        raise Unsupported(f"--threads must be applied before TensorFlow starts ({exc})") from None


def threads() -> dict | None:
    """TensorFlow's thread settings as used (0 = TensorFlow's default, one per core); None on JAX."""
    if BACKEND != "tensorflow":
        return None
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def gpu_devices() -> list[str]:
    """Names of the GPUs the backend will train on (empty: it trains on the CPU)."""
    if BACKEND == "tensorflow":
        return [d.name for d in tf.config.list_logical_devices("GPU")]
    try:
        return [str(d) for d in jax.devices("gpu")]
    except RuntimeError:  # no GPU platform
        return []


def is_oom(exc: BaseException) -> bool:
    """Whether a training failure is the device running out of memory."""
    if BACKEND == "tensorflow":
        return isinstance(exc, tf.errors.ResourceExhaustedError)
    return type(exc).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(exc)


def build_info() -> dict:
    """Framework versions and the CUDA/cuDNN the backend was built with (None where it was not)."""
    info = {"keras": keras.__version__, "keras_backend": BACKEND, "tensorflow": None, "jax": None,
            "built_with_cuda": False, "cuda_version": None, "cudnn_version": None}
    if BACKEND == "tensorflow":
        build = tf.sysconfig.get_build_info()
        info.update(tensorflow=tf.__version__, built_with_cuda=bool(build.get("is_cuda_build", False)),
                    cuda_version=build.get("cuda_version"), cudnn_version=build.get("cudnn_version"))
    else:
        info["jax"] = jax.__version__
        if gpu_devices():
            try:  # the CUDA libraries jaxlib's plugin loaded, as numbers like 12080 / 90300
                from jax._src.lib import cuda_versions

                info.update(built_with_cuda=True, cuda_version=str(cuda_versions.cuda_runtime_get_version()),
                            cudnn_version=str(cuda_versions.cudnn_get_version()))
            except Exception:  # private API: absent in some releases; the versions stay unknown
                info["built_with_cuda"] = True
    return info


def to_int(variable) -> int:
    return int(keras.ops.convert_to_numpy(variable))


__all__ = ["BACKEND", "keras", "tf", "Unsupported", "gpu_devices", "enable_determinism", "determinism",
           "set_threads", "threads", "is_oom", "build_info", "to_int"]
