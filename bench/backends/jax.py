"""Keras on JAX: the same model, data and protocol, e.g. on a GPU machine that has JAX but no TensorFlow build
for its CUDA. Records say `dispatch.backend: jax`; `python -m analysis compare` treats it as another protocol."""

from __future__ import annotations

import jax
import keras
import numpy as np

from bench.backends import Unsupported
from bench.backends.curves import Layout
from bench.backends.probe import ProbeBase
from bench.model import build_mlp

NAME = "jax"
DEVICE_LOOP = True  # --dispatch fast: each epoch one jitted call of the model's stateless train step (fit_device_loop)
NO_CURVES = None  # the curve recorder is part of the model's stateless train step (LectureMLP)
# the device loop runs its steps in blocks aligned to the gradient-norm updates (no per-step conditional);
# False decides at every step, as model.fit does (the tests compare the two)
_ALIGN_NORM_STEPS = True
FIXED_BUDGET = True  # repeated(): the experiments' fixed update budgets, the same minibatches as on TensorFlow
NO_PROBES = None  # the probes run on JAX too (Probe: forward-over-reverse Hessian-vector products)


def enable_determinism() -> None:
    raise Unsupported("--deterministic needs the tensorflow backend (for jax set "
                      "XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting)")


def determinism() -> bool:
    return False


def set_threads(n: int) -> None:
    raise Unsupported("--threads needs the tensorflow backend")


def threads() -> None:
    return None


_precision = "tf32"  # JAX's default on a GPU: TensorFloat-32 for float32 matmuls


def set_precision(setting: str) -> None:
    """--precision: TensorFloat-32 matmuls where the GPU has them (tf32, JAX's default on GPUs) or full float32
    (fp32: jax_default_matmul_precision "highest"); applies to what is traced after it."""
    global _precision
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if setting == "tf32" else "highest")
    _precision = setting


def precision() -> tuple[str, str]:
    """(asked for, actually used): TensorFloat-32 needs a GPU of compute capability 8.0 or later."""
    from bench.backends import used_precision

    capabilities = []
    for device in _gpus():
        try:
            capabilities.append(tuple(int(p) for p in str(device.compute_capability).split(".")[:2]))
        except (AttributeError, ValueError):  # not a CUDA device
            pass
    return _precision, used_precision(_precision, capabilities)


def _gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU platform
        return []


def gpu_devices() -> list[str]:
    return [str(d) for d in _gpus()]


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


class CurveRecorder(Layout, keras.metrics.Metric):
    """Keeps the run's curves (bench.backends.curves.Layout) in device buffers that the model's stateless train
    step writes, read once after training: no host synchronisation per step.

    A Keras Metric because that is how Keras carries state through a stateless JAX train step: its variables
    travel in the step's `metrics_variables`, are synced back to the model after `fit` (and by the device loop
    after each epoch), and stay out of `model.get_weights()`. It reports nothing in the logs, and a new epoch's
    `reset_metrics` leaves it alone: the buffers span the run."""

    def __init__(self, total_updates: int, max_points: int, norm_points: int | None = None):
        keras.metrics.Metric.__init__(self, name="curve_recorder", dtype="float32")
        Layout.__init__(self, total_updates, max_points, norm_points)
        nan = keras.initializers.Constant(float("nan"))
        self.loss = self.add_variable(shape=(self.size,), initializer=nan, dtype="float32", name="loss_curve")
        self.norm = self.add_variable(shape=(self.norm_size,), initializer=nan, dtype="float32",
                                      name="grad_norm_curve")
        # read while a step is traced: "cond" decides on the device at every step (model.fit); the device loop
        # traces its steps as "yes" or "no", knowing which updates are norm updates (no conditional per step)
        self.norm_mode = "cond"

    def update_state(self, done, loss, grads):
        """Record update `done + 1` (`done`: the optimizer's count before it): the minibatch loss at every
        stride-th update, the global gradient L2 norm at every norm_stride-th, computed only then (lax.cond)."""
        import jax.numpy as jnp

        def put(buffer, stride, size, value):
            return buffer.at[jnp.minimum(done // stride, size - 1)].set(jnp.asarray(value, jnp.float32))

        def norm():
            return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))

        losses, norms = self.loss.value, self.norm.value
        self.loss.assign(jnp.where(done % self.stride == 0, put(losses, self.stride, self.size, loss), losses))
        if self.norm_mode == "yes":
            self.norm.assign(put(norms, self.norm_stride, self.norm_size, norm()))
        elif self.norm_mode == "cond":  # on a CPU about 0.3 ms per update at batch 1 (20 %), hence the modes
            self.norm.assign(jax.lax.cond(done % self.norm_stride == 0,
                                          lambda: put(norms, self.norm_stride, self.norm_size, norm()),
                                          lambda: norms))

    def result(self):
        return {}  # nothing in the epoch's logs: the curves are read once, after training

    def reset_state(self):
        pass  # the buffers span the run, not an epoch

    def curves(self) -> tuple[list, list]:
        """`loss_curve`, `grad_norm_curve` as [[update, value], ...] (update counted from 1)."""
        return self.read(keras.ops.convert_to_numpy(self.loss).tolist(),
                         keras.ops.convert_to_numpy(self.norm).tolist())


def curve_recorder(total_updates: int, max_points: int, norm_points: int | None = None) -> CurveRecorder:
    return CurveRecorder(total_updates, max_points, norm_points)


def _index(variables, wanted) -> list[int]:
    """Positions of `wanted` in `variables`, by identity (== on a Keras variable compares values)."""
    return [i for i, v in enumerate(variables) if any(v is w for w in wanted)]


class LectureMLP(keras.Sequential):
    """Sequential model whose stateless train step also feeds a CurveRecorder: Keras' JAX `train_step` (its
    `compute_loss_and_updates`, the optimizer's `stateless_apply`, its metrics update), with the minibatch's
    loss and gradients handed to the recorder between the update and the metrics."""

    recorder: CurveRecorder | None = None

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        (_, aux), grads = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)(
            trainable, non_trainable, metrics_vars, x, y, sample_weight, training=True,
            optimizer_variables=optimizer_vars)
        unscaled_loss, y_pred, non_trainable, metrics_vars = aux
        (iterations,) = _index(self.optimizer.variables, [self.optimizer.iterations])
        done = optimizer_vars[iterations]  # updates before this one
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        mine = _index(self.metrics_variables, self.recorder.variables)
        new = self.recorder.stateless_update_state([metrics_vars[i] for i in mine], done, unscaled_loss, grads)
        metrics_vars = list(metrics_vars)
        for i, value in zip(mine, new):
            metrics_vars[i] = value
        logs, metrics_vars = self._update_metrics_variables(  # Keras' own step's last part (a private helper)
            metrics_vars, unscaled_loss, x, y, y_pred, sample_weight)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def build_model(activation: str, recorder: CurveRecorder | None = None):
    """The lecture's MLP (bench.model), recording curves in its train step when given a recorder."""
    if recorder is None:
        return build_mlp(keras, activation, cls=keras.Sequential)
    model = build_mlp(keras, activation, cls=LectureMLP)
    model.recorder = recorder  # tracked as one of the model's metrics: its buffers travel in metrics_variables
    return model


def _state(model) -> tuple:
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])


def _assign(model, state) -> None:
    groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
              model.metrics_variables)
    for variables, values in zip(groups, state):
        for ref, value in zip(variables, values):
            ref.assign(value)


def _epoch_function(model, xd, yd, batch_size: int):
    """The device loop's epoch: one jitted call `epoch(state, key, done) -> (state, logs)` over the training set on
    the device (`xd`, `yd`), from `done` updates.

    With a curve recorder whose norm is kept every `every` updates, the loop runs in blocks aligned to them, so
    that no step decides on the device whether to take the norm (a per-step conditional: a fifth of an update's
    time at batch 1 on a CPU, a host round trip on some GPUs): the steps before the next norm update, whole blocks
    (a norm update, then every-1 others), and the epoch's last < every steps deciding per step."""
    import jax.numpy as jnp

    n = xd.shape[0]
    steps, rest = divmod(n, batch_size)
    recorder = getattr(model, "recorder", None)
    every = recorder.norm_stride if recorder is not None else 1  # a gradient norm at every every-th update

    def step(state, index, norm_mode="cond"):
        if recorder is not None:
            recorder.norm_mode = norm_mode  # read while the step is traced
        return model.train_step(state, (jnp.take(xd, index, axis=0), jnp.take(yd, index, axis=0)))

    def steps_from(order, norm_mode):
        def body(i, carry):
            state, _ = carry
            logs, state = step(state, jax.lax.dynamic_slice(order, (i * batch_size,), (batch_size,)), norm_mode)
            return state, logs
        return body

    def aligned(order, carry, done):
        plain = steps_from(order, "no")
        lead = jnp.minimum((-done) % every, steps)
        carry = jax.lax.fori_loop(0, lead, plain, carry)
        blocks = (steps - lead) // every

        def block(j, carry):
            state, _ = carry
            start = lead + j * every
            logs, state = step(state, jax.lax.dynamic_slice(order, (start * batch_size,), (batch_size,)), "yes")
            return jax.lax.fori_loop(start + 1, start + every, plain, (state, logs))

        carry = jax.lax.fori_loop(0, blocks, block, carry)
        return jax.lax.fori_loop(lead + blocks * every, steps, steps_from(order, "cond"), carry)

    @jax.jit
    def epoch(state, key, done):
        order = jax.random.permutation(key, n)
        first = jax.lax.dynamic_slice(order, (0,), (batch_size,)) if steps else order
        logs = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),  # the loop carry's initial logs
                                      jax.eval_shape(lambda s: step(s, first)[0], state))
        carry = (state, logs)
        if every == 1 or not _ALIGN_NORM_STEPS:
            mode = "yes" if recorder is not None and every == 1 else "cond"
            carry = jax.lax.fori_loop(0, steps, steps_from(order, mode), carry)
        else:
            carry = aligned(order, carry, done)
        state, logs = carry
        if rest:
            logs, state = step(state, order[steps * batch_size:])
        return state, logs

    return epoch


def fit_device_loop(model, x, y, *, batch_size: int, epochs: int, seed: int, callbacks=()) -> None:
    """`model.fit(x, y, batch_size, epochs, shuffle=True)` with each epoch one jitted call: the JAX counterpart of
    the TensorFlow backend's device loop.

    The training set is placed on the device once; each epoch draws a fresh permutation on the device
    (jax.random, keyed by seed and epoch) and runs the model's own stateless `train_step` (Keras' loss,
    optimizer and metrics) over every batch in a `lax.fori_loop`, the last batch partial as in fit. The
    variables are read from the model before the epoch and written back after it, so callbacks and
    evaluation see the trained weights; `model.stop_training` ends the run after an epoch.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    if not model.compiled:
        raise Unsupported("the device loop needs a compiled model")
    model._symbolic_build(data_batch=(x[:1], y[:1]))  # metrics' variables, as fit builds them
    epoch = _epoch_function(model, jax.device_put(x), jax.device_put(y), batch_size)
    recorder = getattr(model, "recorder", None)
    (iterations,) = _index(model.optimizer.variables, [model.optimizer.iterations])
    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    hooks.on_train_begin()
    try:
        for e in range(epochs):
            model.reset_metrics()
            hooks.on_epoch_begin(e)
            state = _state(model)
            state, logs = epoch(state, jax.random.fold_in(jax.random.PRNGKey(seed), e), state[2][iterations])
            _assign(model, state)
            hooks.on_epoch_end(e, {k: float(v) for k, v in logs.items()})
            if model.stop_training:
                break
    finally:
        if recorder is not None:
            recorder.norm_mode = "cond"  # model.fit after this decides per step again
    hooks.on_train_end()


class _Repeated(keras.utils.PyDataset):
    """Batch i of the endless sequence bench.backends.order draws, by index (num_batches None: endless). Keras reads
    a PyDataset from index 0 when fit starts and, with steps_per_epoch, continues the same iterator across epochs;
    being indexed, the sequence does not depend on what Keras peeks at before training (its symbolic build)."""

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = np.asarray(x), np.asarray(y), batch_size, seed
        self.per_pass = len(self.x) // batch_size
        self._pass = (None, None)  # (pass index, its index batches): one permutation drawn per pass

    @property
    def num_batches(self):
        return None  # endless

    def __getitem__(self, i):
        from bench.backends import order

        index, k = divmod(int(i), self.per_pass)
        if self._pass[0] != index:
            self._pass = (index, order.pass_batches(len(self.x), self.batch_size, self.seed, index))
        rows = self._pass[1][k]
        return self.x[rows], self.y[rows]


def repeated(x, y, batch_size: int, seed: int):
    """Minibatches of exactly `batch_size` examples, endlessly, in the order bench.backends.order draws: the same
    batches as the TensorFlow backend's for the same seed, without TensorFlow (a keras.utils.PyDataset)."""
    return _Repeated(x, y, batch_size, seed)


def floor_epoch(model, optimizer, xb, yb):
    """A hand-written epoch of the bare update steps, one jitted `fori_loop` over batches already cut and on the
    device (`xb`, `yb`: steps x batch x features): the model's stateless call, the loss's gradient and the
    optimizer's stateless apply, nothing else (no train_step, metrics or shuffling): the floor bench.overhead
    measures the drivers against, as the TensorFlow backend's. Returns a callable that runs one epoch and
    waits for it."""
    import jax.numpy as jnp

    xb, yb = jax.device_put(xb), jax.device_put(yb)
    steps = int(xb.shape[0])
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()
    fixed = [v.value for v in model.non_trainable_variables]

    def loss(trainable, x, y):
        pred, _ = model.stateless_call(trainable, fixed, x, training=True)
        return loss_fn(y, pred)

    @jax.jit
    def epoch(trainable, opt_vars, xb, yb):
        def body(i, carry):
            trainable, opt_vars, _ = carry
            value, grads = jax.value_and_grad(loss)(trainable, xb[i], yb[i])
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, opt_vars, value

        return jax.lax.fori_loop(0, steps, body, (trainable, opt_vars, jnp.float32(0.0)))

    state = [[v.value for v in model.trainable_variables], [v.value for v in optimizer.variables]]

    def run() -> float:
        state[0], state[1], value = epoch(state[0], state[1], xb, yb)
        return float(value)

    return run


class Probe(ProbeBase):
    """Loss, gradient and Hessian-vector products of `model` on one fixed set of examples, the JAX way: the model's
    stateless call on its current variables, `jax.value_and_grad`, and H v as the forward-mode derivative of the
    gradient (`jax.jvp` of `jax.grad`). The same interface as the TensorFlow backend's Probe, so the probe logic
    (bench.curvature: the eigen-solver, noise scale, plateaus) exists once."""

    def __init__(self, model, x, y):
        import jax.numpy as jnp

        super().__init__(model.trainable_variables, int(x.shape[0]))
        self.model = model
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        loss_fn = keras.losses.CategoricalCrossentropy()

        def loss(trainable, fixed, x, y):  # the training loss: cross-entropy and the model's penalties
            pred, _, losses = model.stateless_call(trainable, fixed, x, training=False, return_losses=True)
            value = loss_fn(y, pred)
            return value + sum(losses) if losses else value

        def grad_sq(trainable, fixed, x, y):
            value, grads = jax.value_and_grad(loss)(trainable, fixed, x, y)
            return value, sum(jnp.sum(jnp.square(g)) for g in grads)

        def hvp(trainable, fixed, x, y, vs):
            return jax.jvp(lambda t: jax.grad(loss)(t, fixed, x, y), (trainable,), (vs,))[1]

        self._grad = jax.jit(jax.value_and_grad(loss))
        self._grad_sq, self._hvp = jax.jit(grad_sq), jax.jit(hvp)

    def _now(self) -> tuple:
        return [v.value for v in self.model.trainable_variables], [v.value for v in self.model.non_trainable_variables]

    @staticmethod
    def tensor(array):
        import jax.numpy as jnp

        return jnp.asarray(array, dtype=jnp.float32)

    def subset(self, index) -> tuple:
        return self.x[index], self.y[index]

    def loss_and_grad(self, x=None, y=None):
        value, grads = self._grad(*self._now(), self.x if x is None else x, self.y if y is None else y)
        return float(value), self.flatten(grads)

    def loss_and_grad_norm_sq(self, x=None, y=None) -> tuple[float, float]:
        value, sq = self._grad_sq(*self._now(), self.x if x is None else x, self.y if y is None else y)
        return float(value), float(sq)

    def grad_norm_sq(self, x=None, y=None) -> float:
        return self.loss_and_grad_norm_sq(x, y)[1]

    def hvp(self, vector):
        return self.flatten(self._hvp(*self._now(), self.x, self.y, self.split(vector)))


def probe(model, x, y) -> Probe:
    return Probe(model, x, y)
