"""Keras on JAX: the same model, data and protocol, e.g. on a GPU machine that has JAX but no TensorFlow build
for its CUDA. Records say `dispatch.backend: jax`; `python -m analysis compare` treats it as another protocol."""

from __future__ import annotations

import jax
import keras

from bench.backends import Unsupported

NAME = "jax"
DEVICE_LOOP = False  # --dispatch fast is model.fit with XLA and steps_per_execution = an epoch
NO_CURVES = "the curve recorder is part of the TensorFlow train step; the JAX backend records none"
NO_PROBES = "the probes need the tensorflow backend"


def enable_determinism() -> None:
    raise Unsupported("--deterministic needs the tensorflow backend (for jax set "
                      "XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting)")


def determinism() -> bool:
    return False


def set_threads(n: int) -> None:
    raise Unsupported("--threads needs the tensorflow backend")


def threads() -> None:
    return None


def gpu_devices() -> list[str]:
    try:
        return [str(d) for d in jax.devices("gpu")]
    except RuntimeError:  # no GPU platform
        return []


def is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(exc)


def build_info() -> dict:
    """Framework versions and, on a GPU, the CUDA and cuDNN libraries jaxlib's plugin loaded."""
    info = {"keras": keras.__version__, "keras_backend": NAME, "tensorflow": None, "jax": jax.__version__,
            "built_with_cuda": False, "cuda_version": None, "cudnn_version": None}
    if gpu_devices():
        try:  # numbers like 12080 / 90300
            from jax._src.lib import cuda_versions

            info.update(built_with_cuda=True, cuda_version=str(cuda_versions.cuda_runtime_get_version()),
                        cudnn_version=str(cuda_versions.cudnn_get_version()))
        except Exception:  # private API: absent in some releases; the versions stay unknown
            info["built_with_cuda"] = True
    return info


def to_int(variable) -> int:
    return int(keras.ops.convert_to_numpy(variable))


def curve_recorder(total_updates: int, max_points: int, norm_points: int | None = None) -> None:
    return None


def build_model(activation: str, recorder=None):
    from bench.model import build_mlp

    return build_mlp(activation, cls=keras.Sequential)


def fit_device_loop(model, x, y, *, batch_size: int, epochs: int, seed: int, callbacks=()) -> None:
    raise Unsupported("the device loop is written for the tensorflow backend")


def repeated(x, y, batch_size: int, seed: int):
    raise Unsupported("a fixed update budget (the saddle benchmark) needs the tensorflow backend")


def floor_epoch(model, optimizer, xb, yb):
    raise Unsupported("the dispatch floor is written for the tensorflow backend")


def probe(model, x, y) -> None:
    return None
