"""Keras on TensorFlow: the device loop, the in-graph curve recorder, the probes' derivatives, OOM, threads."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench.backends.curves import Layout
from bench.backends.probe import ProbeBase
from bench.model import build_mlp

NAME = "tensorflow"
DEVICE_LOOP = True
NO_CURVES = None
FIXED_BUDGET = True  # a fixed update budget (the experiments) through repeated()
NO_PROBES = None

# Memory growth must be set before TensorFlow touches a GPU: without it TF grabs the whole card, which hides
# the memory a run really used, starves NVML's sampler of a meaningful reading, and keeps a second process off it.
for _gpu in tf.config.list_physical_devices("GPU"):
    try:
        tf.config.experimental.set_memory_growth(_gpu, True)
    except RuntimeError:  # already initialised by the caller: their choice stands
        pass

_determinism = False
_precision = "tf32"  # TensorFlow's default: TensorFloat-32 allowed


def enable_determinism() -> None:
    """Deterministic kernels (GPU reductions in particular); off by default because it slows training.
    On the CPU the same seed already gives the same result without it (tests check this)."""
    global _determinism
    tf.config.experimental.enable_op_determinism()
    _determinism = True


def determinism() -> bool:
    return _determinism


def set_threads(n: int) -> None:
    """Limit TensorFlow to `n` threads per op and `n` ops in parallel: fewer CPU resources, measured as such."""
    from bench.backends import Unsupported

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as exc:  # TensorFlow already running: the setting would silently not apply
        raise Unsupported(f"--threads must be applied before TensorFlow starts ({exc})") from None


def threads() -> dict:
    """TensorFlow's thread settings as used (0 = TensorFlow's default, one per core)."""
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def set_precision(setting: str) -> None:
    """--precision: allow TensorFloat-32 matmuls (tf32, TensorFlow's default) or not (fp32)."""
    global _precision
    tf.config.experimental.enable_tensor_float_32_execution(setting == "tf32")
    _precision = setting


def precision() -> tuple[str, str]:
    """(asked for, actually used): TensorFloat-32 needs a GPU of compute capability 8.0 or later."""
    from bench.backends import used_precision

    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0)
                    for g in tf.config.list_physical_devices("GPU")]
    return _precision, used_precision(_precision, capabilities)


def gpu_devices() -> list[str]:
    """Names of the GPUs TensorFlow will train on (empty: it trains on the CPU)."""
    return [d.name for d in tf.config.list_logical_devices("GPU")]


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, tf.errors.ResourceExhaustedError)


def build_info() -> dict:
    """Framework versions and the CUDA/cuDNN TensorFlow was built with (None where it was not)."""
    build = tf.sysconfig.get_build_info()
    return {"keras": keras.__version__, "keras_backend": NAME, "tensorflow": tf.__version__, "jax": None,
            "built_with_cuda": bool(build.get("is_cuda_build", False)), "cuda_version": build.get("cuda_version"),
            "cudnn_version": build.get("cudnn_version")}


def to_int(variable) -> int:
    return int(keras.ops.convert_to_numpy(variable))


class CurveRecorder(Layout):
    """Keeps the run's curves (bench.backends.curves.Layout) in tf.Variables written inside the traced train step,
    read once after training: recording costs no host synchronisation per step."""

    def __init__(self, total_updates: int, max_points: int, norm_points: int | None = None):
        super().__init__(total_updates, max_points, norm_points)
        self.loss = tf.Variable(tf.fill([self.size], float("nan")), trainable=False, name="loss_curve")
        self.norm = tf.Variable(tf.fill([self.norm_size], float("nan")), trainable=False, name="grad_norm_curve")

    @staticmethod
    def _when(done, stride: int, fn):
        """fn() at every stride-th update: one tf.cond per step (in graph mode each costs host time at batch 1),
        none at all when every update is recorded."""
        if stride == 1:
            fn()
            return
        stride_t = tf.constant(stride, tf.int64)

        def write():
            fn()
            return tf.constant(True)

        tf.cond(tf.equal(done % stride_t, 0), write, lambda: tf.constant(False))

    def record(self, iterations, loss, grads):
        done = tf.cast(iterations, tf.int64) - 1  # updates before this one

        def put(buffer, stride, size, value):
            slot = tf.minimum(done // stride, size - 1)
            buffer.scatter_nd_update([[slot]], [tf.cast(value, tf.float32)])

        def put_norm():
            put(self.norm, self.norm_stride, self.norm_size, tf.linalg.global_norm(grads))

        def put_both():
            put(self.loss, self.stride, self.size, loss)
            # the norm's stride is a multiple of the loss's: checked only on steps that record the loss
            self._when(done // self.stride, self.norm_stride // self.stride, put_norm)

        self._when(done, self.stride, put_both)

    def curves(self) -> tuple[list, list]:
        """`loss_curve`, `grad_norm_curve` as [[update, value], ...] (update counted from 1)."""
        return self.read(self.loss.numpy().tolist(), self.norm.numpy().tolist())


def curve_recorder(total_updates: int, max_points: int, norm_points: int | None = None) -> CurveRecorder:
    return CurveRecorder(total_updates, max_points, norm_points)


class LectureMLP(keras.Sequential):
    """Sequential model whose train step also feeds a CurveRecorder (Keras' documented custom train_step)."""

    recorder: CurveRecorder | None = None

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        if self.recorder is not None:
            self.recorder.record(self.optimizer.iterations, loss, grads)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, y_pred)


def build_model(activation: str, recorder: CurveRecorder | None = None):
    """The lecture's MLP (bench.model), recording curves in its train step when given a recorder."""
    model = build_mlp(keras, activation, cls=LectureMLP if recorder is not None else keras.Sequential)
    model.recorder = recorder
    return model


def fit_device_loop(model, x, y, *, batch_size: int, epochs: int, seed: int, callbacks=()) -> None:
    """`model.fit(x, y, batch_size, epochs, shuffle=True)` with each epoch one XLA-compiled call.

    The training set is copied to the device once; each epoch draws a fresh permutation on the device and
    runs the model's own `train_step` (Keras' loss, optimizer and metrics, and the curve recorder) on every
    batch inside one compiled loop, the last batch partial as in fit. No per-step host work at all: Keras'
    own `steps_per_execution` still pays a data-iterator read and a compiled-function launch per step.
    Callbacks get fit's epoch hooks (logs with the epoch's loss and metrics); `model.stop_training` ends the
    run after an epoch.
    """
    n = len(x)
    steps, rest = divmod(n, batch_size)
    xd, yd = tf.constant(x), tf.constant(y)

    # the data are arguments, not captured constants: a traced function keeps what it captures alive in
    # TensorFlow's function library, and a sweep's runs would pile up a copy of the training set each
    @tf.function(jit_compile=True, reduce_retracing=True)
    def epoch(key, xd, yd):
        def step(index):
            model.train_step((tf.gather(xd, index), tf.gather(yd, index)))

        order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        for i in tf.range(steps):
            # tf.slice keeps the batch's static shape; a Python slice here would be dynamic, and XLA
            # would pad every step to the whole training set
            step(tf.slice(order, [i * batch_size], [batch_size]))
        if rest:
            step(order[steps * batch_size:])
        return model.get_metrics_result()

    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for e in range(epochs):
        model.reset_metrics()
        hooks.on_epoch_begin(e)
        logs = epoch(tf.constant([seed, e], tf.int32), xd, yd)
        hooks.on_epoch_end(e, {k: float(v) for k, v in logs.items()})
        if model.stop_training:
            break
    hooks.on_train_end()


def repeated(x, y, batch_size: int, seed: int):
    """Minibatches of exactly `batch_size` examples, endlessly, in the order bench.backends.order draws (each pass a
    fresh permutation from (seed, pass), the remainder dropped): the same batches as the JAX backend's for the same
    seed. (tf.data's own shuffle would give an order no other backend can reproduce, and the escape experiment
    compares the backends run for run.)"""
    from bench.backends import order

    n = len(x)
    per_pass = n // batch_size
    xd, yd = tf.constant(x), tf.constant(y)

    def indices(index):
        return order.pass_batches(n, batch_size, seed, int(index))

    passes = tf.data.Dataset.counter().map(
        lambda i: tf.ensure_shape(tf.numpy_function(indices, [i], tf.int64), [per_pass, batch_size]))
    return (passes.unbatch().map(lambda index: (tf.gather(xd, index), tf.gather(yd, index)))
            .prefetch(tf.data.AUTOTUNE))


def floor_epoch(model, optimizer, xb, yb):
    """A hand-written epoch of the bare update steps, one XLA-compiled loop over batches already cut and on the
    device (`xb`, `yb`: steps x batch x features): the floor bench.overhead measures the drivers against.
    Returns a callable that runs one epoch and waits for it."""
    xb, yb = tf.constant(xb), tf.constant(yb)
    steps = int(xb.shape[0])
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function(jit_compile=True)
    def epoch(xb, yb):
        loss = tf.constant(0.0)
        for i in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb[i], model(xb[i], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
        return loss

    return lambda: float(epoch(xb, yb))


class Probe(ProbeBase):
    """Loss, gradient and Hessian-vector products (double backprop) of `model` on one fixed set of examples."""

    def __init__(self, model, x, y):
        super().__init__(model.trainable_variables, int(x.shape[0]))
        self.x, self.y = tf.constant(x), tf.constant(y)
        loss_fn = keras.losses.CategoricalCrossentropy()

        def loss(x, y):  # the training loss: cross-entropy, and the model's penalties where it has any
            value = loss_fn(y, model(x, training=False))
            return value + tf.add_n(model.losses) if model.losses else value

        @tf.function
        def grad(x, y):
            with tf.GradientTape() as tape:
                value = loss(x, y)
            return value, tape.gradient(value, self.variables)

        @tf.function
        def hvp(x, y, vs):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    value = loss(x, y)
                grads = inner.gradient(value, self.variables)
                dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
            return outer.gradient(dot, self.variables)

        @tf.function
        def grad_sq(x, y):
            value, grads = grad(x, y)
            return value, tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])

        self._grad, self._hvp, self._grad_sq = grad, hvp, grad_sq

    @staticmethod
    def tensor(array):
        return tf.constant(array, dtype=tf.float32)

    def subset(self, index) -> tuple:
        return tf.gather(self.x, index), tf.gather(self.y, index)

    def loss_and_grad(self, x=None, y=None) -> tuple[float, np.ndarray]:
        value, grads = self._grad(self.x if x is None else x, self.y if y is None else y)
        return float(value), self.flatten(grads)

    def loss_and_grad_norm_sq(self, x=None, y=None) -> tuple[float, float]:
        """The mean loss and |gradient|^2 at the current weights, both reduced on the device."""
        value, sq = self._grad_sq(self.x if x is None else x, self.y if y is None else y)
        return float(value), float(sq)

    def grad_norm_sq(self, x=None, y=None) -> float:
        """|gradient|^2 of the mean loss, reduced on the device: the per-epoch probes need only norms, and
        copying 648,010-entry gradients to the host (as float64) at every epoch end measurably slowed the
        XLA-compiled epochs that followed (20-40 % at batch 10 in --dispatch fast)."""
        _, sq = self._grad_sq(self.x if x is None else x, self.y if y is None else y)
        return float(sq)

    def hvp(self, vector: np.ndarray) -> np.ndarray:
        """H v for the probe set's mean loss, H the Hessian w.r.t. all trainable parameters."""
        return self.flatten(self._hvp(self.x, self.y, self.split(vector)))


def probe(model, x, y) -> Probe:
    return Probe(model, x, y)
