"""The lecture's network, 784-500-500-10, with an in-graph recorder of the minibatch loss and gradient norm."""

from __future__ import annotations

import math

from bench.backend import keras, tf


class CurveRecorder:
    """TensorFlow backend only (tf.Variables written inside the traced train step).

    Keeps every `stride`-th update's minibatch loss, and every `norm_stride`-th update's global gradient
    L2 norm (a multiple of `stride`), in device buffers: at most `max_points` losses and `norm_points`
    norms (default: as many as losses).

    Written inside the compiled train step and read once after training, so recording costs no
    host synchronisation per step. The loss is free; the norm is a reduction over all 648,010 gradient
    entries, computed only on the steps it is recorded at. Inside an XLA-compiled CPU loop it costs
    about as much as a whole update at batch 10 (0.5 ms), hence `norm_points` for --dispatch fast.
    """

    def __init__(self, total_updates: int, max_points: int, norm_points: int | None = None):
        self.stride = max(1, math.ceil(total_updates / max_points))
        self.size = max(1, math.ceil(total_updates / self.stride))
        per_norm = max(1, math.ceil(total_updates / (norm_points or max_points)))
        self.norm_stride = self.stride * max(1, math.ceil(per_norm / self.stride))
        self.norm_size = max(1, math.ceil(total_updates / self.norm_stride))
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

    @staticmethod
    def _curve(values, stride: int) -> list:
        # slots never reached (a run stopped early) stay NaN and are left out; a NaN loss that training
        # produced is kept (the record writes it as null)
        reached = len(values)
        while reached and math.isnan(values[reached - 1]):
            reached -= 1
        return [[i * stride + 1, v] for i, v in enumerate(values[:reached])]

    def curves(self) -> tuple[list, list]:
        """`loss_curve`, `grad_norm_curve` as [[update, value], ...] (update counted from 1)."""
        return self._curve(self.loss.numpy().tolist(), self.stride), self._curve(self.norm.numpy().tolist(),
                                                                                  self.norm_stride)


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


# (inputs, outputs) of the three Dense layers: 784-500-500-10.
LAYERS = ((784, 500), (500, 500), (500, 10))


def flops_per_example() -> int:
    """Multiply-add FLOPs of one training example through the network (2 per multiply-add):
    forward, gradient w.r.t. the weights (same size as forward) and w.r.t. each hidden layer's input
    (none for the data). Bias, activation, loss and optimizer work are O(width), under 1 % here, and left out."""
    forward = sum(2 * i * o for i, o in LAYERS)
    input_grads = sum(2 * i * o for i, o in LAYERS[1:])
    return 2 * forward + input_grads


def build_mlp(activation: str = "sigmoid", recorder: CurveRecorder | None = None, cls=None):
    """784 -> Dense 500 -> Dense 500 -> Dense 10 softmax, as in the lecture.

    With a recorder (TensorFlow backend only) the model is a LectureMLP, else a plain keras.Sequential.
    """
    cls = cls or (LectureMLP if recorder is not None else keras.Sequential)
    model = cls([
        keras.Input(shape=(LAYERS[0][0],)),
        keras.layers.Dense(LAYERS[0][1], activation=activation),
        keras.layers.Dense(LAYERS[1][1], activation=activation),
        keras.layers.Dense(LAYERS[2][1], activation="softmax"),
    ])
    if recorder is not None:
        model.recorder = recorder
    return model


def make_optimizer(name: str):
    """A Keras optimizer by its lower-case name, with the suite's fixed learning rate where it pins one."""
    from bench.grid import LEARNING_RATES, keras_optimizers

    cls = keras_optimizers()[name]
    return cls(learning_rate=LEARNING_RATES[name]) if name in LEARNING_RATES else cls()
