"""The Keras backends behind one interface, `Backend` (a typing.Protocol): `current()` is the module for
$KERAS_BACKEND (tensorflow, the default, or jax), imported on first use. Both modules satisfy it with the same
public names (tests/test_backends.py checks their conformance); nothing outside this folder asks which backend it
is. `fresh_model` is the one setup of a fresh seeded model every caller uses (a run, the overhead tool's plain
fits, the escape experiment's descent).
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

SUPPORTED = ("tensorflow", "jax")

if not os.environ.get("KERAS_BACKEND"):  # unset or empty: Keras' own default
    os.environ["KERAS_BACKEND"] = "tensorflow"
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


@runtime_checkable
class Backend(Protocol):
    """What every backend module offers (tensorflow.py is the reference implementation)."""

    keras: Any  # the Keras module, running on this backend
    NAME: str  # tensorflow or jax
    DEVICE_LOOP: bool  # --dispatch fast has fit_device_loop
    FIXED_BUDGET: bool  # repeated() exists: the experiments' fixed update budgets
    NO_CURVES: str | None  # why there is no curve recorder (None: there is one)
    NO_PROBES: str | None  # why there are no probes (None: there are)
    CurveRecorder: ClassVar[type]
    LectureMLP: ClassVar[type]
    Probe: ClassVar[type]

    def gpu_devices(self) -> list[str]: ...  # the GPUs the backend trains on (empty: the CPU)
    def build_info(self) -> dict: ...  # framework versions, CUDA/cuDNN
    def to_int(self, variable) -> int: ...
    def set_threads(self, n: int) -> None: ...  # Unsupported where it cannot
    def threads(self) -> dict | None: ...
    def enable_determinism(self) -> None: ...  # Unsupported where it cannot
    def determinism(self) -> bool: ...
    def set_precision(self, setting: str) -> None: ...  # bench.grid.PRECISIONS
    def precision(self) -> tuple[str, str]: ...  # (asked for, actually used: used_precision)
    def is_oom(self, exc: BaseException) -> bool: ...  # a training failure is the device out of memory
    def curve_recorder(self, total_updates: int, max_points: int, norm_points: int | None = None): ...
    def build_model(self, activation: str, recorder=None): ...  # the lecture's MLP, recording curves in its step
    def fit_device_loop(self, model, x, y, *, batch_size: int, epochs: int, seed: int, callbacks=()) -> None: ...
    def repeated(self, x, y, batch_size: int, seed: int): ...  # endless reshuffled minibatches (fixed budgets)
    def floor_epoch(self, model, optimizer, xb, yb) -> Callable[[], float]: ...  # bench.overhead's floor
    def probe(self, model, x, y): ...  # loss, gradient, Hessian-vector products on a fixed probe set


def name() -> str:
    """The backend this process trains on ($KERAS_BACKEND), without importing it."""
    chosen = os.environ.get("KERAS_BACKEND") or "tensorflow"  # Keras reads an empty value as unset too
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


def apply_settings(threads: int | None = None, precision: str | None = None, deterministic: bool = False):
    """The sweep's backend settings in this process, before anything trains: its thread counts, its float32 matmul
    precision (other than the frameworks' default, tf32) and op determinism. Returns the backend, or None where no
    setting asks for one (nothing imported)."""
    if not (threads or deterministic or (precision and precision != "tf32")):
        return None
    backend = current()
    if threads is not None:
        backend.set_threads(threads)
    if precision and precision != "tf32":
        backend.set_precision(precision)
    if deterministic:
        backend.enable_determinism()
    return backend


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


def make_optimizer(name: str, learning_rate: float | None = None):
    """A Keras optimizer by its lower-case name, at `learning_rate`, else the suite's fixed learning rate where it
    pins one, else the installed Keras' default."""
    from bench.grid import LEARNING_RATES

    cls = optimizer_classes()[name]
    rate = learning_rate if learning_rate is not None else LEARNING_RATES.get(name)
    return cls(learning_rate=rate) if rate is not None else cls()


def fresh_model(activation: str, optimizer: str, learning_rate: float | None = None, *, seed: int = 0,
                compile_args: dict | None = None, recorder: Callable[[], Any] | None = None, metrics=("accuracy",),
                plain: bool = False, on_cleared: Callable[[], Any] | None = None):
    """A fresh seeded lecture MLP, compiled: Keras' session cleared (`on_cleared()` then runs, e.g. to reset the
    memory high-water mark), the seed set, the model built (its train step recording curves in `recorder()`, made
    after the session is cleared; `plain`: a bare keras.Sequential) and compiled with the optimizer. Returns
    (model, optimizer); the recorder, when asked for, is `model.recorder`."""
    backend = current()
    keras = backend.keras
    keras.backend.clear_session(free_memory=True)
    if on_cleared is not None:
        on_cleared()
    keras.utils.set_random_seed(seed)
    if plain:
        from bench.model import build_mlp

        model = build_mlp(keras, activation)
    else:
        model = backend.build_model(activation, recorder() if recorder is not None else None)
    opt = make_optimizer(optimizer, learning_rate)
    model.compile(optimizer=opt, loss="categorical_crossentropy", metrics=list(metrics), **(compile_args or {}))
    return model, opt
