"""TensorFlow adapter: tf.Variables are assigned in place, tf.Tensors come back new."""

from __future__ import annotations

import os

import numpy as np

# TensorFlow prints start-up notices to stderr unless told otherwise; keep a user's setting.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from .base import Backend


def _unwrap(x):
    """A Keras 3 variable on the TensorFlow backend holds a tf.Variable in ``.value``;
    decay treats it as that variable (and assigns through the Keras variable)."""
    if not isinstance(x, (tf.Tensor, tf.Variable)) and isinstance(getattr(x, "value", None), tf.Variable):
        return x.value
    return x


class TensorflowBackend(Backend):
    name = "tensorflow"
    aliases = ("tf",)
    module = "tensorflow"
    extra = "tensorflow"

    def is_tensor(self, x) -> bool:
        return isinstance(_unwrap(x), (tf.Tensor, tf.Variable, tf.IndexedSlices))

    def dtype_name(self, x) -> str:
        return _unwrap(x).dtype.name

    def shape(self, x) -> tuple:
        return tuple(int(d) for d in _unwrap(x).shape)

    def device(self, x) -> str:
        return _unwrap(x).device or "default"

    def read(self, x):
        # Variables read as tensors; IndexedSlices (sparse embedding grads) as dense.
        return tf.convert_to_tensor(_unwrap(x))

    def zeros_like(self, x):
        return tf.zeros_like(x)

    def sqrt(self, x):
        return tf.sqrt(x)

    def sign(self, x):
        return tf.sign(x)

    def maximum(self, a, b):
        return tf.maximum(a, b)

    def sum_squares(self, x):
        return tf.reduce_sum(tf.square(x))

    def sum_abs(self, x):
        return tf.reduce_sum(tf.abs(x))

    def all_finite(self, x) -> bool:
        return bool(tf.reduce_all(tf.math.is_finite(x)))

    def cast(self, x, dtype_name):
        return tf.cast(x, dtype_name)

    def assign(self, param, value):
        if isinstance(_unwrap(param), tf.Variable):
            param.assign(value)  # a Keras variable assigns its tf.Variable
            return param
        return tf.convert_to_tensor(value)

    def to_numpy(self, x):
        x = tf.convert_to_tensor(_unwrap(x))
        if x.dtype == tf.bfloat16:
            x = tf.cast(x, tf.float32)
        return np.array(x.numpy(), copy=True)

    def from_numpy(self, array, like):
        like = _unwrap(like)
        with tf.device(like.device or None):
            return tf.constant(np.asarray(array), dtype=like.dtype)
