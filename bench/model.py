"""The lecture's network, 784-500-500-10, with an in-graph recorder of the minibatch loss and gradient norm."""

from __future__ import annotations

import math

from bench.backend import keras, tf


class CurveRecorder:
    """TensorFlow backend only (a tf.Variable written inside the traced train step).

    Keeps every `stride`-th update's minibatch loss and global gradient L2 norm in a device buffer.

    Written inside the compiled train step and read once after training, so recording costs no
    host synchronisation per step; the gradient norm is computed only on recorded steps.
    """

    def __init__(self, total_updates: int, max_points: int):
        self.stride = max(1, math.ceil(total_updates / max_points))
        self.size = max(1, math.ceil(total_updates / self.stride))
        self.buffer = tf.Variable(tf.fill([self.size, 2], float("nan")), trainable=False, name="curves")

    def record(self, iterations, loss, grads):
        done = tf.cast(iterations, tf.int64) - 1  # updates before this one
        stride = tf.constant(self.stride, tf.int64)

        def write():
            slot = tf.minimum(done // stride, self.size - 1)
            norm = tf.linalg.global_norm(grads)
            value = tf.stack([tf.cast(loss, tf.float32), tf.cast(norm, tf.float32)])
            self.buffer.scatter_nd_update([[slot]], [value])
            return tf.constant(True)

        tf.cond(tf.equal(done % stride, 0), write, lambda: tf.constant(False))

    def curves(self) -> tuple[list, list]:
        """`loss_curve`, `grad_norm_curve` as [[update, value], ...] (update counted from 1)."""
        loss, grad = [], []
        for i, (l, g) in enumerate(self.buffer.numpy().tolist()):
            if math.isnan(l) and math.isnan(g):
                continue  # never reached (a run stopped early)
            update = i * self.stride + 1
            loss.append([update, l])
            grad.append([update, g])
        return loss, grad


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
