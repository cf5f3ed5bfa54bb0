"""NumPy adapter: arrays are updated in place."""

from __future__ import annotations

import itertools
import operator
import threading

import numpy as np

from ..errors import DecayError
from .._memory import span
from ._numpy_blocks import BLOCK, GATHER, Arena, gathered
from .base import Backend

# dtype.name is a slow property; rules ask for it per tensor per step.
_DTYPE_NAMES = {np.dtype(n): n for n in ("float16", "float32", "float64", "int32", "int64", "bool")}
_FLOAT_DTYPES = frozenset(np.dtype(n) for n in ("float16", "float32", "float64"))
_DTYPE = operator.attrgetter("dtype")
_NDIM = operator.attrgetter("ndim")
_SHAPE = operator.attrgetter("shape")
_SHAPE_AND_DTYPE = operator.attrgetter("shape", "dtype")
_C_CONTIGUOUS = operator.attrgetter("flags.c_contiguous")
_add, _multiply, _divide = np.add, np.multiply, np.divide
_WRITEABLE = operator.attrgetter("flags.writeable")
_BASE_ATTR = operator.attrgetter("base")


def _numpy_dtype(name: str):
    """NumPy's dtype of that name; bfloat16 from ml_dtypes (installed with JAX)."""
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes
    except ImportError:
        raise DecayError(
            "NumPy has no bfloat16: the NumPy backend takes it from the ml_dtypes package, which is not "
            f"installed. Received: dtype={name!r}. Fix: pip install ml_dtypes, or choose 'float32'."
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


class NumpyBackend(Backend):
    name = "numpy"
    aliases = ("np",)
    module = "numpy"
    extra = ""

    def is_tensor(self, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def dtype_name(self, x) -> str:
        dtype = x.dtype if isinstance(x, (np.ndarray, np.generic)) else np.asarray(x).dtype
        name = _DTYPE_NAMES.get(dtype)
        return name if name is not None else dtype.name

    def shape(self, x) -> tuple:
        return np.shape(x)

    def same_layout(self, a, b) -> bool:
        return np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype

    def is_floating(self, x) -> bool:
        return np.asarray(x).dtype.kind == "f"

    def zeros_like(self, x):
        return np.zeros_like(x)

    def zeros(self, shape, like):
        return np.zeros(shape, np.asarray(like).dtype)

    def sqrt(self, x):
        return np.sqrt(x)

    def sign(self, x):
        return np.sign(x)

    def abs(self, x):
        return np.abs(x)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def sum_squares(self, x):
        flat = np.ravel(x)
        # np.dot is the fastest exact Σx² NumPy has (BLAS); it returns x's dtype.
        return np.dot(flat, flat) if flat.dtype.kind == "f" else np.sum(flat * flat)

    def sum_abs(self, x):
        return np.sum(np.abs(x))

    def sum_squares_all(self, xs):
        # Many small tensors: the cost is per-tensor Python, so the checks run in C (map)
        # and np.dot (BLAS, as sum_squares) maps over the tensors; one sum at the end.
        if set(map(_DTYPE, xs)) <= _FLOAT_DTYPES:
            if max(map(_NDIM, xs), default=0) > 1:
                xs = [x.reshape(-1) if x.ndim > 1 else x for x in xs]  # np.dot of matrices is a product
            return _sum_values(list(map(np.dot, xs, xs)))
        return _sum_values([self.sum_squares(x) for x in xs])

    def sum_abs_all(self, xs):
        return _sum_values([np.sum(np.abs(x)) for x in xs])

    def all_finite(self, x) -> bool:
        return bool(np.isfinite(x).all())

    def cast(self, x, dtype_name):
        return np.asarray(x).astype(_numpy_dtype(dtype_name), copy=False)

    def check_dtype(self, name):
        _numpy_dtype(name)

    def read(self, x):
        # The vocabulary writes in place: a read-only array or a subclass (np.matrix's
        # operators are not elementwise) is worked on as a plain copy, written back after.
        if type(x) is np.ndarray and x.flags.writeable:
            return x
        return np.array(x, subok=False)

    def overlaps_itself(self, x) -> bool:
        # A read-only array is worked on as a copy (read), so only writeable ones count.
        if not isinstance(x, np.ndarray) or not x.flags.writeable or x.size <= 1:
            return False
        if x.flags.c_contiguous or x.flags.f_contiguous:
            return False
        return self.strides_overlap(x.shape, x.strides, x.itemsize)

    def memory_spans(self, xs):
        # Arrays that own their memory (base None) share it with no other distinct array:
        # () says "nothing shared", found by two C-level passes.
        if all(map(operator.is_, map(_BASE_ATTR, xs), itertools.repeat(None))) and len(set(map(id, xs))) == len(xs):
            return ()
        spans = [span(*self.memory_layout(x)) if isinstance(x, np.ndarray) else (0, 0) for x in xs]
        return [a for a, _ in spans], [b for _, b in spans]

    def memory_layout(self, x):
        return x.__array_interface__["data"][0], x.shape, x.strides, x.itemsize

    def grads_alias(self, grads, params):
        # The same array, or views of one buffer that may overlap (bounds compared).
        # Arrays that own their memory (the usual fresh gradients) alias only themselves.
        if all(b is None for b in map(_BASE_ATTR, grads)) and all(b is None for b in map(_BASE_ATTR, params)):
            return list(map(operator.is_, grads, params))
        return [
            g is p or (isinstance(g, np.ndarray) and isinstance(p, np.ndarray) and _base(g) is _base(p)
                       and np.may_share_memory(g, p))
            for g, p in zip(grads, params)
        ]

    def read_all(self, xs):
        if set(map(type, xs)) == {np.ndarray} and all(map(_WRITEABLE, xs)):
            return list(xs)
        return [self.read(x) for x in xs]

    def write(self, param, value):
        if isinstance(param, np.ndarray) and param.flags.writeable:
            param[...] = value
            return param
        return np.asarray(value)

    def layouts(self, xs):
        # One C-level pass (map) for the usual all-ndarray list.
        if set(map(type, xs)) == {np.ndarray}:
            return list(map(_SHAPE_AND_DTYPE, xs))
        return super().layouts(xs)

    # -- the vocabulary, in place with out= -----------------------------------------------
    def _tmp(self, like):
        """A scratch array shaped like ``like``, reused by every operation of this thread
        (each needs it only within its own call): no allocation per call for blocks."""
        n = like.size
        if n > BLOCK:
            return np.empty(like.shape, like.dtype)
        buf = self._local.__dict__.get(like.dtype)
        if buf is None:
            buf = self._local.__dict__[like.dtype] = np.empty(BLOCK, like.dtype)
        return buf[:n] if like.ndim == 1 else buf[:n].reshape(like.shape)

    # Written for the fewest Python steps per tensor: with 50k-element tensors the
    # calls, not the passes, are what a step spends beyond the memory traffic.
    def mul_(self, xs, s):
        _in_place(_multiply, xs, s)

    def div_(self, xs, s):
        _in_place(_divide, xs, s)

    def add_(self, xs, ys, alpha=1.0):
        if not isinstance(ys, list):
            for x in xs:
                _add(x, ys, out=x)
        elif alpha == 1.0:
            for x, y in zip(xs, ys):
                _add(x, y, out=x)
        else:
            tmp = self._tmp
            for x, y in zip(xs, ys):
                _add(x, _multiply(y, alpha, out=tmp(x)), out=x)

    def lerp_(self, xs, ys, weight):
        # torch's formula, exact at both ends: x + w·(y − x) for w < 0.5, else y − (1 − w)·(y − x)
        for x, y in zip(xs, ys):
            t = np.subtract(y, x, out=self._tmp(x))
            if abs(weight) < 0.5:
                t *= weight
                x += t
            else:
                t *= 1.0 - weight
                np.subtract(y, t, out=x)

    def addcmul_(self, xs, ys, zs, value=1.0):
        self._add_scaled(_multiply, xs, ys, zs, value)

    def addcdiv_(self, xs, ys, zs, value=1.0):
        self._add_scaled(_divide, xs, ys, zs, value)

    def _add_scaled(self, ufunc, xs, ys, zs, value):
        """x ← x + value·ufunc(y, z), through one scratch array."""
        tmp = self._tmp
        for x, y, z in zip(xs, ys, zs):
            t = ufunc(y, z, out=tmp(x))
            _multiply(t, value, out=t)
            _add(x, t, out=x)

    def maximum_(self, xs, ys):
        for x, y in zip(xs, ys):
            np.maximum(x, y, out=x)

    def sqrt_(self, xs):
        for x in xs:
            np.sqrt(x, out=x)

    def abs_(self, xs):
        for x in xs:
            np.abs(x, out=x)

    def sign_(self, xs):
        # np.sign with out= its own input runs unvectorized here (7x slower on 64k float32
        # elements): into the scratch array, then copied back.
        for x in xs:
            np.copyto(x, np.sign(x, out=self._tmp(x)))

    def rsqrt_(self, xs):
        for x in xs:
            np.sqrt(x, out=x)
            np.divide(1.0, x, out=x)

    def clamp_min_(self, xs, s):
        _in_place(np.maximum, xs, s)

    # New lists: out= keeps 0-d results arrays (a ufunc returns NumPy scalars for them,
    # which later in-place operations could not write into). Inside run_elementwise they
    # are cut from scratch blocks reused at every call (Arena), not allocated.
    def _new(self, xs):
        arena = self._local.__dict__.get("arena")
        if arena is not None and arena.active:
            return arena.take(xs)
        return [np.empty_like(x) for x in xs]

    def add(self, xs, ys, alpha=1.0):
        if not isinstance(ys, list):
            return self._new_with(_add, xs, ys)
        out = self._new(ys)
        for o, x, y in zip(out, xs, ys):
            np.multiply(y, alpha, out=o)
            np.add(x, o, out=o)
        return out

    def mul(self, xs, s):
        return self._new_with(_multiply, xs, s)

    def div(self, xs, ys):
        return self._new_with(_divide, xs, ys)

    def sqrt_all(self, xs):
        return self._new_with(np.sqrt, xs)

    def sign_all(self, xs):
        return self._new_with(np.sign, xs)

    def abs_all(self, xs):
        return self._new_with(np.abs, xs)

    def _new_with(self, ufunc, xs, s=None):
        """A new list ufunc(x) or ufunc(x, s) (``s`` a scalar or a list; a list entry of
        another shape broadcasts, into an entry of the broadcast shape)."""
        if isinstance(s, list) and not all(map(operator.eq, map(_SHAPE, xs), map(np.shape, s))):
            shapes = [np.broadcast_shapes(x.shape, np.shape(y)) for x, y in zip(xs, s)]
            if shapes != list(map(_SHAPE, xs)):
                out = [np.empty(shape, np.result_type(x, y)) for shape, x, y in zip(shapes, xs, s)]
                for o, x, y in zip(out, xs, s):
                    ufunc(x, y, out=o)
                return out
        out = self._new(xs)
        if s is None:
            for o, x in zip(out, xs):
                ufunc(x, out=o)
        else:
            for o, x, y in zip(out, xs, s if isinstance(s, list) else [s] * len(xs)):
                ufunc(x, y, out=o)
        return out

    def clone(self, xs):
        return [np.array(x) for x in xs]

    # -- fast path: elementwise updates over cache-sized blocks ---------------------------
    def run_elementwise(self, fn, params, grads, slots):
        """Run ``fn`` on flat pieces of at most ``BLOCK`` elements, several small tensors
        per call, so that each block's params, grads and slots stay in cache through the
        whole update: each parameter's bytes cross main memory once per step."""
        slot_arrays = [x for column in slots.values() for x in column]
        if not (
            set(map(type, params)) == {np.ndarray}
            and all(map(_C_CONTIGUOUS, params))
            and set(map(type, slot_arrays)) <= {np.ndarray}
            # Slots are reshaped to 1-D views: a copy (of a non-contiguous slot) would
            # take the update and lose it.
            and all(map(_C_CONTIGUOUS, slot_arrays))
            and all(map(_WRITEABLE, slot_arrays))
            and all(isinstance(g, np.ndarray) for g in grads)
        ):
            fn(params, grads, slots)
            return
        arena = self._local.__dict__.get("arena")
        if arena is None:
            arena = self._local.arena = Arena()
        arena.active = True
        try:
            self._blocks(arena, fn, params, grads, slots)
        finally:
            arena.active = False

    def _blocks(self, arena, fn, params, grads, slots):
        names = list(slots)

        def call(p, g, s):
            arena.reset()
            if len(p) > 1 and sum(x.size for x in p) < GATHER * len(p) and len({x.dtype for x in p}) == 1:
                gathered(arena, fn, p, g, s)
            else:
                fn(p, g, s)

        # Tensors of at most BLOCK elements go whole, several to a call while they fit;
        # larger ones are cut into BLOCK-sized pieces, one call each.
        batch_p, batch_g, batch_s, size = [], [], [[] for _ in names], 0
        rows = zip(*slots.values()) if names else itertools.repeat(())
        for p, g, row in zip(params, grads, rows):
            n = p.size
            if p.ndim != 1:
                p, g = p.reshape(-1), g.reshape(-1)  # g may be copied: it is only read
                row = [x.reshape(-1) for x in row]
            if n <= BLOCK:
                if size + n > BLOCK and batch_p:
                    call(batch_p, batch_g, dict(zip(names, batch_s)))
                    batch_p, batch_g, batch_s, size = [], [], [[] for _ in names], 0
                batch_p.append(p)
                batch_g.append(g)
                for column, x in zip(batch_s, row):
                    column.append(x)
                size += n
                continue
            for start in range(0, n, BLOCK):
                cut = slice(start, start + BLOCK)
                call([p[cut]], [g[cut]], {name: [x[cut]] for name, x in zip(names, row)})
        if batch_p:
            call(batch_p, batch_g, dict(zip(names, batch_s)))

    def __init__(self):
        self._local = threading.local()  # scratch arrays, per thread and dtype

    # -- per-tensor norms, ratios and matrix products (LAMB, Muon) -----------------------
    def norm(self, x):
        flat = np.ravel(x)
        if flat.dtype.itemsize == 2:  # float16, bfloat16: in float32, rounded once (as torch)
            wide = flat.astype(np.float32)
            return np.sqrt(np.dot(wide, wide)).astype(flat.dtype)
        return np.sqrt(np.dot(flat, flat)) if flat.dtype.kind == "f" else np.sqrt(np.sum(flat * flat))

    def norm_all(self, xs):
        return [np.asarray(self.norm(x)) for x in xs]

    def safe_ratio(self, n, d, default):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.divide(n, d)
        return np.where((n > 0) & (d > 0), ratio, np.asarray(default, dtype=ratio.dtype))

    def matmul(self, a, b):
        return np.matmul(a, b)

    def mean_squares_all(self, xs, axes):
        out = []
        for x, axis in zip(xs, axes):
            if axis is None:
                out.append(np.asarray(np.dot(x.ravel(), x.ravel()) / max(x.size, 1)))
            else:  # einsum sums x·x along the axis without forming x² (a read of x)
                n = x.shape[axis]
                moved = np.moveaxis(x, axis, -1)
                out.append(np.expand_dims(np.einsum("...i,...i->...", moved, moved) / n, axis))
        return out

    def mean(self, x, axis):
        if axis is None:
            return np.asarray(np.mean(x))
        return np.mean(x, axis=axis, keepdims=True)

    def transpose(self, x):
        return np.swapaxes(x, -1, -2)

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def tensor(self, array, variable=True):
        return np.array(array, copy=True)

    def from_numpy(self, array, like):
        return np.array(array, dtype=np.asarray(like).dtype, copy=True)


def _base(x):
    """The array that owns ``x``'s memory."""
    while isinstance(x.base, np.ndarray):
        x = x.base
    return x


def _sum_values(values):
    """The sum of per-tensor 0-d results in their promoted dtype (float32 and float64
    give float64, as ``+`` does)."""
    if not values:
        raise DecayError("A sum over tensors needs at least one tensor (its dtype is the result's).")
    return np.array(values).sum()


def _in_place(ufunc, xs, s):
    """x ← ufunc(x, s) for each x, ``s`` a scalar or a list."""
    if isinstance(s, list):
        for x, y in zip(xs, s):
            ufunc(x, y, out=x)
    else:
        for x in xs:
            ufunc(x, s, out=x)
