"""The small regression problem the framework-parity tests train on: a 3-H-1 tanh MLP
on 32 fixed samples, float64, and its gradient as one traced TensorFlow function."""

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=None)
def data(seed: int, hidden: int):
    """(x, y, initial weights w1, b1, w2, b2) for a 3-``hidden``-1 MLP."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 3))
    y = np.sin(x @ np.array([1.0, -2.0, 0.5])) + 0.1 * rng.normal(size=32)
    init = {
        "w1": rng.normal(size=(3, hidden)) / math.sqrt(3.0),
        "b1": 0.1 * rng.normal(size=hidden),
        "w2": rng.normal(size=(hidden, 1)) / math.sqrt(hidden),
        "b2": np.array([0.05]),
    }
    return x, y, init


@functools.lru_cache(maxsize=None)
def tf_grad_function(seed: int, hidden: int):
    """d mean((MLP(x) − y)²) / d(w1, b1, w2, b2), traced once: the variables are
    arguments, not captures, since eager tape replay dominated the tests' time. The
    ops are those of two Dense layers, in their order."""
    import tensorflow as tf

    x, y, _ = data(seed, hidden)

    @tf.function(reduce_retracing=True)
    def grads(w1, b1, w2, b2):
        with tf.GradientTape() as tape:
            pred = (tf.tanh(x @ w1 + b1) @ w2 + b2)[:, 0]
            loss = tf.reduce_mean((pred - y) ** 2)
        return tape.gradient(loss, [w1, b1, w2, b2])

    return grads
