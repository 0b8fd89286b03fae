"""The lecture's network, 784-500-500-10, and its FLOPs per example (backend-neutral: the backend passes its Keras)."""

from __future__ import annotations

# (inputs, outputs) of the three Dense layers: 784-500-500-10.
LAYERS = ((784, 500), (500, 500), (500, 10))


def flops_per_example() -> int:
    """Multiply-add FLOPs of one training example through the network (2 per multiply-add):
    forward, gradient w.r.t. the weights (same size as forward) and w.r.t. each hidden layer's input
    (none for the data). Bias, activation, loss and optimizer work are O(width), under 1 % here, and left out."""
    forward = sum(2 * i * o for i, o in LAYERS)
    input_grads = sum(2 * i * o for i, o in LAYERS[1:])
    return 2 * forward + input_grads


def build_mlp(keras, activation: str = "sigmoid", cls=None):
    """784 -> Dense 500 -> Dense 500 -> Dense 10 softmax, as in the lecture, as a `cls` (keras.Sequential or a
    backend's subclass with its own train step) of the given Keras module."""
    cls = cls or keras.Sequential
    return cls([
        keras.Input(shape=(LAYERS[0][0],)),
        keras.layers.Dense(LAYERS[0][1], activation=activation),
        keras.layers.Dense(LAYERS[1][1], activation=activation),
        keras.layers.Dense(LAYERS[2][1], activation="softmax"),
    ])
