"""TensorFlow adapter: tf.Variables are assigned in place, tf.Tensors come back new.

The vocabulary is :class:`decay.ops.Ops`'s, with the operators: tensors are immutable,
so in-place operations put new tensors into the lists."""

from __future__ import annotations

import operator
import os
import weakref
from itertools import compress

import numpy as np

# TensorFlow prints start-up notices to stderr unless told otherwise; keep a user's setting.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from .base import Backend

try:
    # decay's step has no Python control flow on tensors (every branch is on a fixed
    # choice), so AutoGraph has nothing to convert in it; converting it anyway breaks
    # on generated code such as a dataclass's __init__ when a user's tf.function calls
    # rule.step. Keras and TensorFlow exempt themselves the same way.
    from tensorflow.python.autograph.core import config as _autograph_config

    _autograph_config.CONVERSION_RULES = (
        _autograph_config.DoNotConvert("decay"),
    ) + tuple(_autograph_config.CONVERSION_RULES)
except (ImportError, AttributeError):  # pragma: no cover - TensorFlow moved it
    pass


def _unwrap(x):
    """A Keras 3 variable on the TensorFlow backend holds a tf.Variable in ``.value``;
    decay treats it as that variable (and assigns through the Keras variable)."""
    if not isinstance(x, (tf.Tensor, tf.Variable)) and isinstance(getattr(x, "value", None), tf.Variable):
        return x.value
    return x


def _slot_variable(x):
    """A new variable holding a slot's value, where the value is."""
    x = tf.convert_to_tensor(_unwrap(x))
    with tf.device(x.device or None):
        return tf.Variable(x, trainable=False)


def _refs(xs):
    """Weak references (None stays None). CPython hands out one reference per object, so
    two lists of them compare by identity (``operator.is_``), never by the tensors' ``==``."""
    return [None if x is None else weakref.ref(x) for x in xs]


class _Compiled:
    """One compiled step with the variables it captured, held weakly: the cache on the
    rule keeps no model or optimizer state alive, and an entry whose variables are gone
    can never match again."""

    def __init__(self, params, slots, structure, concrete, used):
        self.params = _refs(params)
        self.slots = {name: _refs(col) for name, col in slots.items()}
        self.structure = structure
        self.used = used  # per coefficient: whether the compiled math reads it
        self.last_used = self.coefficients = None  # the last coefficients passed
        call = getattr(concrete, "_call_flat", None)
        if call is None:  # not in this TensorFlow: the public call (same result, slower)
            self.run = lambda flat: concrete(flat[:-1], flat[-1])
        else:
            # The public call matches each argument's type against the signature, about
            # 10 µs per tensor (more than the update of a 1k tensor); Rule.step has
            # already checked every gradient against its parameter's shape and dtype.
            captured = concrete.captured_inputs
            self.run = lambda flat: call(flat, captured)

    def matches(self, params, columns, structure) -> bool:
        return (
            self.structure == structure
            and len(params) == len(self.params)
            and all(map(operator.is_, _refs(params), self.params))
            and all(all(map(operator.is_, _refs(col), self.slots[name])) for name, col in columns.items())
        )

    def alive(self) -> bool:
        refs = self.params + [r for col in self.slots.values() for r in col if r is not None]
        return all(r() is not None for r in refs)


# XLA on the CPU sums a tensor on one thread, a matrix–vector product on Eigen's threads:
# Σx² of ten 1000x1000 float32 matrices inside the compiled step took 9 ms as a reduction
# and 2 ms as (x·x) @ 1 over rows of _ROW elements (Adafactor's and LAMB's norms). Small
# tensors keep the reduction (a product's setup would cost more than it saves).
_ROW = 1024
_LARGE = 16 * _ROW  # elements from which a sum of squares is a product


def _row_sums_of_squares(rows):
    """Σ over the last axis of rows² (a matrix), as one matrix–vector product."""
    return tf.linalg.matvec(rows * rows, tf.ones([rows.shape[-1]], rows.dtype))


def _sum_squares(x):
    """Σx² over every element (a 0-d tensor)."""
    n = x.shape.num_elements()
    if n is None or n < _LARGE:
        return tf.reduce_sum(tf.square(x))
    flat = tf.reshape(x, [-1])
    body = n - n % _ROW
    total = tf.reduce_sum(_row_sums_of_squares(tf.reshape(flat[:body] if body < n else flat, [-1, _ROW])))
    return total + tf.reduce_sum(tf.square(flat[body:])) if body < n else total


def _is_last(x, axis) -> bool:
    """Whether a mean over ``axis`` is one over the last axis of a large matrix."""
    rank, n = x.shape.rank, x.shape.num_elements()
    return (axis is not None and rank is not None and rank >= 2 and axis in (-1, rank - 1) and n is not None
            and n >= _LARGE and x.shape[-1] >= 64)


def _row_mean_squares(x):
    """The mean of x² over the last axis, kept as size 1 (see _ROW)."""
    sums = _row_sums_of_squares(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(sums / x.shape[-1], [*x.shape[:-1], 1])


def _find(entries, params, columns, structure):
    for i, entry in enumerate(entries):
        if entry.matches(params, columns, structure):
            if i:
                entries.insert(0, entries.pop(i))  # most recently used first
            return entry
    entries[:] = [e for e in entries if e.alive()]
    return None


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

    def same_layout(self, a, b) -> bool:
        a, b = _unwrap(a), _unwrap(b)
        # Inside a tf.function a gradient is a graph tensor with no device yet (""): it
        # runs where its variable is, so only two known devices can disagree.
        return (
            tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype
            and (a.device == b.device or not a.device or not b.device)
        )

    def read(self, x):
        # Variables read as tensors; IndexedSlices (sparse embedding grads) as dense.
        return tf.convert_to_tensor(_unwrap(x))

    def zeros_like(self, x):
        return tf.zeros_like(x)

    def zeros(self, shape, like):
        like = _unwrap(like)
        with tf.device(like.device or None):
            return tf.zeros(shape, like.dtype)

    def sqrt(self, x):
        return tf.sqrt(x)

    def sign(self, x):
        return tf.sign(x)

    def maximum(self, a, b):
        return tf.maximum(a, b)

    def abs(self, x):
        return tf.abs(x)

    def sum_squares(self, x):
        return tf.reduce_sum(tf.square(x))

    def sum_abs(self, x):
        return tf.reduce_sum(tf.abs(x))

    def all_finite(self, x) -> bool:
        return bool(tf.reduce_all(tf.math.is_finite(x)))

    def cast(self, x, dtype_name):
        return tf.cast(x, dtype_name)

    def write(self, param, value):
        if isinstance(_unwrap(param), tf.Variable):
            param.assign(value)  # a Keras variable assigns its tf.Variable
            return param
        return tf.convert_to_tensor(value)

    # -- per-step checks: Rule.step compares the grads' layouts with the params' ---------
    def layouts(self, xs):
        """(shape, dtype, device) per tensor from TensorFlow's cheapest reads, or None when
        an entry is not a dense tf.Tensor/tf.Variable (Rule.step then checks one by one)."""
        out = []
        for x in xs:
            if not isinstance(x, (tf.Tensor, tf.Variable)):
                x = _unwrap(x)
                if not isinstance(x, (tf.Tensor, tf.Variable)):
                    return None
            out.append((tuple(x.shape), x.dtype, x.device))
        return out

    def read_all(self, xs):
        # Eager gradients are tensors already: skip convert_to_tensor's dispatch for them.
        return [x if isinstance(x, tf.Tensor) else self.read(x) for x in xs]

    # -- the vocabulary: decay.ops.Ops's operators, rebinding list entries ----------------
    def scalar(self, s, x):
        # Inside a compiled step a coefficient is a float64 tensor: cast to x's dtype
        # (Python floats are converted by the operators themselves).
        if isinstance(s, tf.Tensor) and s.dtype != x.dtype:
            return tf.cast(s, x.dtype)
        return s

    def _each(self, xs, s):
        if isinstance(s, list) or not isinstance(s, tf.Tensor):
            return s if isinstance(s, list) else [s] * len(xs)
        casts = {}  # one cast per dtype, not per tensor
        return [casts[x.dtype] if x.dtype in casts else casts.setdefault(x.dtype, self.scalar(s, x)) for x in xs]

    def clone(self, xs):
        return [tf.identity(x) for x in xs]

    # -- fast path: the whole step XLA-compiled once per set of variables --------------------
    # Only the gradients and one float64 vector of the step's coefficients go into the
    # compiled function: parameters and slots are tf.Variables that it captures and
    # assigns in place, as a hand-written tf.function would. Passing the slots in and out
    # as tensors cost as much as the update itself on small tensors (tf.function's
    # per-argument dispatch). Slots that arrive as tensors (from init, load_state_dict or
    # a generic step) become variables on their first fast step; the returned state
    # holds them, and later steps update them in place (Rule.step: the state passed in
    # is consumed).
    compiles = True
    MAX_COMPILED = 4  # compiled steps kept per owner (one per set of params and slots)

    def run_compiled(self, owner, structure, traced, params, grads, columns, values) -> bool:
        """Run ``traced`` in one ``tf.function(jit_compile=True)`` that assigns the
        parameters and the slots. It is traced once per set of variables and structure
        (parts, fixed hyperparameters) and kept on ``owner``; the per-step numbers are
        an argument, so later steps do not retrace."""
        if not tf.executing_eagerly() or tf.distribute.has_strategy():
            return False  # inside someone's graph, or mirrored variables: not compiled here
        try:
            hash(structure)
        except TypeError:  # an unhashable constant (a user's object): no compiled path
            return False
        entries = owner.__dict__.setdefault("_xla_steps", [])
        entry = _find(entries, params, columns, structure)
        if entry is None:
            variables = [_unwrap(p) for p in params]
            if not all(isinstance(v, tf.Variable) for v in variables):
                return False  # immutable tensors: not compiled
            for col in columns.values():  # this step's lists, not the state passed in
                col[:] = [x if x is None or isinstance(x, tf.Variable) else _slot_variable(x) for x in col]
            entry = self._compile(traced, params, variables, grads, columns, structure, len(values))
            entries.insert(0, entry)
            del entries[self.MAX_COMPILED:]
        used = tuple(compress(values, entry.used))
        if used != entry.last_used:
            # A new coefficient tensor only when a value the math reads has changed (not
            # for the step count SGD never reads): after a large update the caches are
            # cold and making one costs ~0.15 ms, 3% of a 10M-parameter step.
            entry.last_used, entry.coefficients = used, tf.constant(values, dtype=tf.float64)
        entry.run([*grads, entry.coefficients])
        return True

    def _compile(self, traced, params, variables, grads, columns, structure, size):
        names = list(columns)
        taken = []  # the traced coefficient tensors, to find which ones the math reads

        def step(grads, coefficients):
            values = [coefficients[i] for i in range(size)]
            taken.extend(values)
            work = [tf.convert_to_tensor(v) for v in variables]
            cols = {n: [None if x is None else tf.convert_to_tensor(x) for x in columns[n]] for n in names}
            traced(work, list(grads), cols, values)
            for v, value in zip(variables, work):
                v.assign(value)
            for n in names:
                for var, value in zip(columns[n], cols[n]):
                    if var is not None:
                        var.assign(value)

        concrete = tf.function(step, jit_compile=True).get_concrete_function(
            [tf.TensorSpec(g.shape, g.dtype) for g in grads], tf.TensorSpec([size], tf.float64),
        )
        # A coefficient tensor nothing consumes does not change the result whatever its value.
        used = [bool(tensor.consumers()) for tensor in taken[:size]]
        return _Compiled(params, columns, structure, concrete, used)

    # -- per-tensor norms, ratios and matrix products (LAMB, Muon) -----------------------
    def norm(self, x):
        if x.dtype in (tf.bfloat16, tf.float16):  # in float32, rounded once (as torch)
            return tf.cast(self.norm(tf.cast(x, tf.float32)), x.dtype)
        return tf.sqrt(_sum_squares(x))

    def mean_squares_all(self, xs, axes):
        return [_row_mean_squares(x) if _is_last(x, axis) else self.mean(x * x, axis) for x, axis in zip(xs, axes)]

    def safe_ratio(self, n, d, default):
        ratio = tf.math.divide_no_nan(n, d)
        return tf.where((n > 0) & (d > 0), ratio, tf.cast(default, n.dtype))

    def matmul(self, a, b):
        return tf.linalg.matmul(a, b)

    def rsqrt_(self, xs):
        xs[:] = [tf.math.rsqrt(x) for x in xs]

    def mean(self, x, axis):
        return tf.reduce_mean(x) if axis is None else tf.reduce_mean(x, axis=axis, keepdims=True)

    def transpose(self, x):
        return tf.linalg.matrix_transpose(x)

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
