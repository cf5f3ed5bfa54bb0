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

    # -- hot path: the generic math, XLA-compiled once per structure ---------------------
    def fast_update(self, rule, params, grads, slots, hypers, decayed) -> bool:
        """Run ``rule.compute`` for all variables in one ``tf.function(jit_compile=True)``,
        traced once per structure (shapes, dtypes, groups, mask, constants) and cached on
        the rule; the step-dependent coefficients (``rule.step_keys``) are arguments, so
        later steps do not retrace. The math is the generic path's, compiled."""
        variables = [_unwrap(p) for p in params]
        if not tf.executing_eagerly() or not all(isinstance(v, tf.Variable) for v in variables):
            return False  # inside someone's graph already, or immutable tensors: generic path
        group_index, groups = [], []
        for h in hypers:
            for j, seen in enumerate(groups):
                if seen is h:
                    group_index.append(j)
                    break
            else:
                group_index.append(len(groups))
                groups.append(h)
        constants = tuple(
            tuple(sorted((k, v) for k, v in h.items() if k not in rule.step_keys)) for h in groups
        )
        slot_names = tuple(tuple(sorted(s)) for s in slots)
        key = (
            tuple((tuple(v.shape), v.dtype.name) for v in variables),
            tuple(decayed), tuple(group_index), constants, slot_names,
        )
        try:
            cache = rule.__dict__.setdefault("_xla_steps", {})
            compiled = cache.get(key)
            if compiled is None:
                compiled = cache[key] = self._compile(rule, variables, group_index, constants, slot_names, decayed)
        except TypeError:  # an unhashable constant (a user's object): no compiled path
            return False
        coefficients = [tf.constant([float(h[k]) for k in rule.step_keys], dtype=tf.float64) for h in groups]
        flat_slots = [slots[i][name] for i, names in enumerate(slot_names) for name in names]
        grads = [tf.convert_to_tensor(g) for g in grads]
        new_flat = compiled(grads, flat_slots, coefficients)
        position = 0
        for i, names in enumerate(slot_names):
            for name in names:
                slots[i][name] = new_flat[position]
                position += 1
        return True

    def _compile(self, rule, variables, group_index, constants, slot_names, decayed):
        step_keys = rule.step_keys
        compute_dtypes = [tf.float32 if v.dtype in (tf.float16, tf.bfloat16) else v.dtype for v in variables]

        @tf.function(jit_compile=True)
        def step(grads, flat_slots, coefficients):
            hypers, leaf_slots, position = [], [], 0
            for i, names in enumerate(slot_names):
                h = dict(constants[group_index[i]])
                for j, k in enumerate(step_keys):
                    h[k] = tf.cast(coefficients[group_index[i]][j], compute_dtypes[i])
                hypers.append(h)
                leaf_slots.append({name: flat_slots[position + n] for n, name in enumerate(names)})
                position += len(names)
            values, new_slots = rule.compute(self, variables, grads, leaf_slots, hypers, list(decayed))
            for v, value in zip(variables, values):
                v.assign(value)
            return [s[name] for s, names in zip(new_slots, slot_names) for name in names]

        return step

    def to_numpy(self, x):
        x = tf.convert_to_tensor(_unwrap(x))
        if x.dtype == tf.bfloat16:
            x = tf.cast(x, tf.float32)
        return np.array(x.numpy(), copy=True)

    def tensor(self, array, variable=True):
        value = tf.constant(np.asarray(array))
        return tf.Variable(value) if variable else value

    def from_numpy(self, array, like):
        like = _unwrap(like)
        with tf.device(like.device or None):
            return tf.constant(np.asarray(array), dtype=like.dtype)
