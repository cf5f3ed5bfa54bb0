"""JAX adapter: arrays are immutable, so every step is functional and returns new arrays.

The vocabulary is :class:`decay.ops.Ops`'s, with the operators (in-place operations put
new arrays into the lists, as on TensorFlow). Two ways to run a step:

- eagerly (concrete arrays): the step's numbers are computed in Python float64 as on
  every backend and the whole step runs as ONE ``jax.jit`` function per structure
  (:meth:`JaxBackend.run_compiled`), shared by every rule with the same structure;
- inside a user's ``jax.jit`` (traced arrays, the state a pytree whose ``count`` is
  traced): :meth:`JaxBackend.traced_step` evaluates the same Python float64 numbers in a
  host callback (``jax.pure_callback``) from the traced count, so the numbers, the
  schedules and their checks are decay's own, and the update is traced into the caller's
  function. ``on_nonfinite="skip"`` becomes a select, as ``optax.apply_if_finite`` does.
"""

from __future__ import annotations

import collections
import itertools
import operator
import threading

import jax
import jax.numpy as jnp
import numpy as np

from .base import Backend

_Tracer = jax.core.Tracer
# The concrete array type (not a tracer), and what a step's checks read of each array.
_ArrayImpl = type(jnp.zeros(()))
_STRUCTURE = operator.attrgetter("shape", "dtype", "sharding")
_LAYOUT = operator.attrgetter("shape", "dtype")


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def _coefficient_dtype():
    # Python float64 numbers, rounded once to float32 where JAX has no float64 (x64 off):
    # the same rounding optax's float32 hyperparameters have.
    return np.float64 if _x64() else np.float32


# Rule attributes the step's structure already covers (the Hyper records and the parts
# are made from them) or that are caches.
_COVERED = frozenset({"_kwargs", "defaults", "groups", "mask", "regularizer", "_layout_cache",
                      "_step_cache", "_trusted_slots", "_xla_steps", "_signature", "_version",
                      "_memory_cache"})


def _plain(value) -> bool:
    if isinstance(value, tuple):
        return all(map(_plain, value))
    return isinstance(value, (bool, int, float, str, type(None)))


def _rule_signature(rule):
    """What a rule's definition may read besides its Hyper record: its plain attributes
    (boolean options, string choices such as ``decay_scaled_by``). Two rules of one
    class with equal signatures and equal structures trace the same step. Any other
    attribute (an object a rule's math might read) is keyed by identity: no sharing, and
    no step traced for another rule's object."""
    items = []
    for key, value in sorted(vars(rule).items()):
        if _plain(value):
            items.append((key, value))
        elif key not in _COVERED:
            items.append((key, id(value)))
    return (type(rule), tuple(items))


def _by_value(x):
    """``x`` (the engine's structure: nested tuples) with every object that has a config
    (a penalty in a DecayPlan) replaced by its class and config: the plans are rebuilt
    whenever the parameters are new arrays, which with JAX is every step."""
    if isinstance(x, tuple):
        return tuple(_by_value(v) for v in x)
    get_config = getattr(x, "get_config", None)
    if get_config is not None and not isinstance(x, type):
        return (type(x), repr(get_config()))
    return x


class JaxBackend(Backend):
    name = "jax"
    aliases = ("jnp",)
    module = "jax"
    extra = "jax"

    def __init__(self):
        from ._jax_traced import register_state

        register_state()  # lazily, when the backend loads: import decay never imports JAX
        self._lock = threading.Lock()
        # (rule signature, structure) -> jitted step, most recently used last. Shared by
        # rules (not kept on each, as TensorFlow's are): a test suite or a sweep that makes
        # many rules of one structure compiles once.
        self._compiled: collections.OrderedDict = collections.OrderedDict()
        self._parts_memo: dict = {}

    MAX_COMPILED = 64

    # -- inspection -----------------------------------------------------------------------
    def is_tensor(self, x) -> bool:
        return isinstance(x, jax.Array)

    def dtype_name(self, x) -> str:
        return np.dtype(x.dtype).name

    def shape(self, x) -> tuple:
        return tuple(x.shape)

    def device(self, x) -> str:
        if isinstance(x, _Tracer):
            return "traced"
        return ",".join(sorted(str(d) for d in x.sharding.device_set))

    def device_key(self, x):
        if isinstance(x, _Tracer):
            return "traced"
        return frozenset(x.sharding.device_set)

    def same_layout(self, a, b) -> bool:
        return a.shape == b.shape and a.dtype == b.dtype

    def is_floating(self, x) -> bool:
        return jnp.issubdtype(x.dtype, jnp.floating)

    traces = True

    def traced(self, xs) -> bool:
        """Whether any of ``xs`` is a tracer (the step runs inside a jax transformation)."""
        return any(map(isinstance, xs, itertools.repeat(_Tracer)))  # one C-level pass

    def structure_key(self, leaves):
        if not all(type(x) is _ArrayImpl for x in leaves):  # tracers, other arrays: no cache
            return None
        return tuple(map(_STRUCTURE, leaves))

    def layouts(self, xs):
        if not all(map(isinstance, xs, itertools.repeat(jax.Array))):
            return None
        return list(map(_LAYOUT, xs))

    # -- arithmetic ----------------------------------------------------------------------
    def zeros_like(self, x):
        # jnp.zeros_like keeps a committed array's sharding: slots live where their
        # parameter's shards are.
        return jnp.zeros_like(x)

    def zeros(self, shape, like):
        # On like's device; a slot of another shape cannot take a sharded one's layout.
        out = jnp.zeros(shape, like.dtype)
        devices = () if isinstance(like, _Tracer) else like.devices()
        return jax.device_put(out, next(iter(devices))) if len(devices) == 1 else out

    def sqrt(self, x):
        return jnp.sqrt(x)

    def sign(self, x):
        return jnp.sign(x)

    def maximum(self, a, b):
        return jnp.maximum(a, b)

    def abs(self, x):
        return jnp.abs(x)

    # per-tensor norms, ratios and matrix products (LAMB, Muon): as TensorFlow's
    def norm(self, x):
        if x.dtype in (jnp.bfloat16, jnp.float16):  # in float32, rounded once (as torch)
            return self.norm(x.astype(jnp.float32)).astype(x.dtype)
        return jnp.sqrt(jnp.sum(jnp.square(x)))

    def safe_ratio(self, n, d, default):
        ok = (n > 0) & (d > 0)
        return jnp.where(ok, n / jnp.where(ok, d, 1), jnp.asarray(default, n.dtype))

    def matmul(self, a, b):
        return jnp.matmul(a, b)

    def rsqrt_(self, xs):
        xs[:] = [jax.lax.rsqrt(x) for x in xs]

    def mean(self, x, axis):
        return jnp.mean(x) if axis is None else jnp.mean(x, axis=axis, keepdims=True)

    def transpose(self, x):
        return jnp.swapaxes(x, -1, -2)

    def sum_squares(self, x):
        return jnp.sum(jnp.square(x))

    def sum_abs(self, x):
        return jnp.sum(jnp.abs(x))

    def all_finite(self, x) -> bool:
        return bool(jnp.isfinite(x).all())

    def cast(self, x, dtype_name):
        return x.astype(dtype_name)

    def write(self, param, value):
        return value  # immutable: the new array is the result

    def clone(self, xs):
        return [jnp.array(x, copy=True) for x in xs]

    # -- the vocabulary: decay.ops.Ops's operators, rebinding list entries ------------------
    def scalar(self, s, x):
        # Inside a compiled step a coefficient is a 0-d float64 (float32 without x64)
        # array: cast to x's dtype, as optax casts its hyperparameters.
        if isinstance(s, jax.Array) and s.dtype != x.dtype:
            return s.astype(x.dtype)
        return s

    def _each(self, xs, s):
        if isinstance(s, list):
            return s
        if not isinstance(s, jax.Array):
            return [s] * len(xs)
        casts = {}  # one cast per dtype, not per array
        return [casts[x.dtype] if x.dtype in casts else casts.setdefault(x.dtype, self.scalar(s, x)) for x in xs]

    # -- fast path: the whole step as one jitted function per structure -----------------
    compiles = True

    def run_compiled(self, owner, structure, traced, params, grads, columns, values) -> bool:
        """Run ``traced`` as one ``jax.jit`` function of (params, grads, slots,
        coefficients) and put its results into ``params`` and ``columns``. The per-step
        numbers are an argument (one vector), so later steps do not retrace; jit's own
        cache handles new shapes, dtypes and shardings."""
        if self.traced(params) or self.traced(grads):
            return False  # inside someone's transformation: traced_step's business
        try:
            key = (owner.signature(_rule_signature), self._parts_by_value(structure[0]), structure[1:],
                   tuple((n, tuple(x is None for x in c)) for n, c in columns.items()))
            hash(key)
        except TypeError:  # an unhashable constant (a user's object): the plain path
            return False
        with self._lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compiled[key] = jax.jit(_pure(traced))
                while len(self._compiled) > self.MAX_COMPILED:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(key)
        coefficients = np.asarray(values, dtype=_coefficient_dtype())
        new_params, new_columns = fn(list(params), list(grads), columns, coefficients)
        params[:] = new_params
        for name, col in new_columns.items():
            columns[name][:] = col
        return True

    def _parts_by_value(self, parts):
        """:func:`_by_value` of the engine's parts, remembered for the last few parts
        objects (a rule keeps one per structure of parameters)."""
        memo = self._parts_memo
        hit = memo.get(id(parts))
        if hit is None or hit[0] is not parts:
            hit = memo[id(parts)] = (parts, _by_value(parts))  # parts kept: the id stays theirs
            while len(memo) > self.MAX_COMPILED:
                memo.pop(next(iter(memo)))
        return hit[1]

    def traced_step(self, rule, flat, grads, state, group_of, decayed, parts):
        """``rule.step`` inside a jax transformation; see :mod:`decay.backends._jax_traced`."""
        from ._jax_traced import traced_step

        return traced_step(self, rule, flat, grads, state, group_of, decayed, parts)

    # -- conversion ------------------------------------------------------------------------
    def to_numpy(self, x):
        if x.dtype == jnp.bfloat16:
            x = x.astype(jnp.float32)  # NumPy has no bfloat16; float32 holds it exactly
        return np.array(x, copy=True)

    def tensor(self, array, variable=True):
        return jnp.asarray(np.array(array, copy=True))

    def from_numpy(self, array, like):
        out = jnp.asarray(np.asarray(array), dtype=like.dtype)
        if not isinstance(like, _Tracer):
            out = jax.device_put(out, like.sharding)
        return out


def _pure(traced):
    """``traced`` (which writes into lists) as a pure function returning new lists."""

    def step(params, grads, columns, coefficients):
        params = list(params)
        columns = {name: list(col) for name, col in columns.items()}
        traced(params, list(grads), columns, [coefficients[i] for i in range(coefficients.shape[0])])
        return params, columns

    return step


__all__ = ["JaxBackend"]
