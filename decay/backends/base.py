"""What every backend adapter implements: inspection, conversion, the vocabulary of
:mod:`decay.ops` (inherited), and the hooks through which the engine runs a step.

The update rules and penalties are written once against these methods plus the
arithmetic operators (``+ - * /``) that NumPy arrays, torch tensors and TensorFlow
tensors all share. An adapter holds no update math and names no rule or slot: only how
to do each primitive natively.
"""

from __future__ import annotations

import contextlib
import operator

import numpy as np

from ..errors import DecayError
from ..ops import Ops


class Backend(Ops):
    """Base class of a backend adapter. One instance per framework."""

    #: canonical name used by :func:`decay.get_backend`
    name: str = ""
    #: other names accepted by :func:`decay.get_backend`
    aliases: tuple = ()
    #: the module whose presence makes the backend importable
    module: str = ""
    #: the pip extra that installs the framework
    extra: str = ""

    # -- detection ---------------------------------------------------------
    def is_tensor(self, x) -> bool:
        """True when ``x`` is a native tensor (or variable) of this backend."""
        raise NotImplementedError

    # -- inspection --------------------------------------------------------
    def dtype_name(self, x) -> str:
        """The dtype as a NumPy-style name: 'float32', 'float64', 'bfloat16', 'int64'."""
        raise NotImplementedError

    def shape(self, x) -> tuple:
        return tuple(int(d) for d in x.shape)

    def device(self, x) -> str:
        """Where the tensor lives, as a string that is equal for tensors on one device."""
        return "cpu"

    def device_key(self, x):
        """A cheap, comparable stand-in for :meth:`device` (checked per tensor per step)."""
        return self.device(x)

    def same_layout(self, a, b) -> bool:
        """Whether two tensors have the same shape, dtype and device (per tensor per
        step, so adapters override it with their framework's cheapest comparisons)."""
        return (
            self.shape(a) == self.shape(b)
            and self.dtype_name(a) == self.dtype_name(b)
            and self.device_key(a) == self.device_key(b)
        )

    def is_floating(self, x) -> bool:
        return self.dtype_name(x) in ("float16", "bfloat16", "float32", "float64")

    # -- arithmetic beyond the operators ----------------------------------
    def read(self, x):
        """The current value of a tensor, usable in arithmetic and, on backends that
        write in place, by the vocabulary's in-place operations (a copy where ``x``
        itself cannot be written)."""
        return x

    def zeros_like(self, x):
        raise NotImplementedError

    def zeros(self, shape: tuple, like):
        """A new tensor of zeros of ``shape``, with ``like``'s dtype and device (a state
        slot whose shape is not its parameter's)."""
        raise NotImplementedError

    # sqrt, sign and maximum of one tensor: declared with the vocabulary (decay/ops.py)

    def sum_squares(self, x):
        """Σx² as a 0-d native scalar of x's dtype."""
        raise NotImplementedError

    def sum_abs(self, x):
        """Σ|x| as a 0-d native scalar of x's dtype."""
        raise NotImplementedError

    def sum_squares_all(self, xs):
        """Σx² over every tensor of the non-empty list ``xs``, as one 0-d native scalar
        of their promoted dtype; differentiable by the framework's autodiff. Penalties
        call this once instead of :meth:`sum_squares` per tensor, so that adapters can
        cut the per-tensor overhead of models with many small tensors."""
        return self._sum_all(self.sum_squares, xs)

    def sum_abs_all(self, xs):
        """Σ|x| over every tensor of ``xs``, as :meth:`sum_squares_all`."""
        return self._sum_all(self.sum_abs, xs)

    def _sum_all(self, per_tensor, xs):
        if not len(xs):
            raise DecayError("A sum over tensors needs at least one tensor (its dtype is the result's).")
        values = [per_tensor(x) for x in xs]
        dtypes = {self.dtype_name(v) for v in values}
        if len(dtypes) > 1:
            # Mixed float dtypes add in the widest, as NumPy and torch promote them
            # (TensorFlow's + refuses them).
            target = "float64" if "float64" in dtypes else "float32"
            values = [self.cast(v, target) for v in values]
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def all_finite(self, x) -> bool:
        raise NotImplementedError

    def cast(self, x, dtype_name: str):
        raise NotImplementedError

    # -- writing -----------------------------------------------------------
    def write(self, param, value):
        """Write ``value`` into ``param`` in place when it is mutable and return the
        result: the same object for mutable tensors, ``value`` for immutable ones."""
        raise NotImplementedError

    def no_grad(self):
        """A context in which arithmetic is not recorded by autodiff."""
        return contextlib.nullcontext()

    # -- how the engine runs a step (see decay/engine.py) ------------------------------
    #: whether :meth:`run_fused` can run framework kernels that rules declare
    has_fused = False
    #: whether :meth:`run_compiled` compiles whole steps
    compiles = False

    def run_elementwise(self, fn, params, grads, slots) -> None:
        """Run ``fn(params, grads, slots)``, an elementwise update of lists in place.
        A backend may call it on pieces of the tensors instead (NumPy's cache-sized
        blocks); the result must be the same."""
        fn(params, grads, slots)

    def fused_ready(self, params, grads, slots, grads_fit=False):
        """Whether a declared kernel may run on these lists (dtypes, devices, memory
        layouts it reads correctly): an opaque plan for :meth:`run_fused`, or None,
        which makes the engine run the rule's definition. ``grads_fit``: this
        adapter's :meth:`grads_fit` verdict on ``grads`` (what it verified need not be
        read again)."""
        return None

    def run_fused(self, call, ready, params, grads, slots) -> None:
        """Call the framework kernel ``call`` (a :class:`decay.engine.FusedCall`) as
        planned by :meth:`fused_ready`."""
        raise NotImplementedError

    def structure_key(self, leaves):
        """For a backend whose arrays are immutable (each step returns new ones): a
        hashable summary of what the per-structure checks of ``Rule.step`` read (each
        leaf's shape, dtype and placement), so that new arrays of the last step's
        structure skip them. None (the default): the checks are cached on the tensors'
        identity instead, which in-place backends keep from step to step."""
        return None

    #: whether :meth:`traced` can ever be True (JAX): the others skip asking per step
    traces = False

    def traced(self, xs) -> bool:
        """Whether ``xs`` are being traced by the framework's own compiler (JAX's tracers
        inside ``jax.jit``): ``Rule.step`` then runs :meth:`traced_step` instead of the
        eager engine, whose numbers need a concrete step count."""
        return False

    def traced_step(self, rule, flat, grads, state, group_of, decayed, parts):
        """``rule.step`` on traced tensors: (new leaves, new state). Only backends whose
        :meth:`traced` can be True implement it."""
        raise NotImplementedError

    def run_compiled(self, owner, structure, traced, params, grads, columns, values) -> bool:
        """Run ``traced(param values, grads, slot columns, coefficients)`` compiled and
        write its results into ``params`` and the slots, returning True; or return
        False, having written nothing, when this backend does not compile. Compiled
        steps are cached on ``owner`` per ``structure`` and tensors."""
        return False

    # -- per-step checks ----------------------------------------------------------------
    def layouts(self, xs):
        """A comparable summary of every tensor's shape, dtype and device, or None when
        an entry is not a tensor of this backend. ``Rule.step`` compares the grads'
        summary with the params' (computed once) to check them in one go; adapters
        override it with their framework's cheapest attribute reads."""
        known = self.__dict__.setdefault("_known_types", set())
        for tp in set(map(type, xs)):
            if tp not in known:
                if not self.is_tensor(next(x for x in xs if type(x) is tp)):
                    return None
                known.add(tp)
        return [(self.shape(x), self.dtype_name(x), self.device_key(x)) for x in xs]

    def grads_fit(self, grads, layouts) -> bool:
        """Whether ``grads`` have exactly ``layouts`` (the parameters' :meth:`layouts`,
        computed once), told in one go: ``Rule.step`` then skips the per-tensor checks,
        and passes the verdict on to the engine. An adapter may require more (torch:
        dense, contiguous gradients, which its fused kernels and memory check then need
        not read again); False sends the caller to the per-tensor checks."""
        return layouts is not None and self.layouts(grads) == layouts

    def overlaps_itself(self, x) -> bool:
        """Whether two elements of ``x`` share one memory location (an expanded,
        stride-0 view): an in-place update of it has no meaning. Immutable tensors never do."""
        return False

    def memory_spans(self, xs):
        """``(lo, hi)``: two sequences, the byte range [lo, hi) each tensor's elements
        lie in; ``()`` when the adapter knows that no two tensors of ``xs`` share memory
        (NumPy arrays that each own theirs); None when tensors are never written in
        place (immutable tensors: only the same object twice can alias). Attribute reads
        only, no element work: :func:`decay._memory.check_disjoint` runs it every step."""
        return None

    def step_spans(self, params, grads, cache=None):
        """:meth:`memory_spans` of ``params`` then ``grads`` (one step's). ``cache`` (a
        dict the caller keeps between steps, or None) lets an adapter remember what
        it read of the same parameters last step."""
        return self.memory_spans(list(params) + list(grads))

    def step_key(self, params, grads, grads_fit=False):
        """A hashable record of everything :meth:`step_spans` reads of one step's
        tensors, or None: while it repeats, the memory check's last verdict stands.
        ``grads_fit`` as in :meth:`fused_ready`."""
        return None

    def memory_layout(self, x):
        """``(address, shape, byte strides, itemsize)`` of a tensor that
        :meth:`memory_spans` reports, for the exact overlap test."""
        raise NotImplementedError

    def is_sparse(self, x) -> bool:
        """Whether ``x`` is a sparse tensor (torch's sparse layouts)."""
        return False

    def to_dense(self, x):
        return x

    @staticmethod
    def strides_overlap(shape, strides, itemsize: int = 1) -> bool:
        """Whether a strided layout may reach one location by two indices: with the axes
        sorted by stride, each stride must clear the extent of the smaller ones. Layouts
        that fail this test are counted as overlapping even in the rare case they
        interleave without overlap (they are refused, never updated wrongly)."""
        extent = itemsize
        for stride, n in sorted((abs(s), n) for n, s in zip(shape, strides) if n > 1):
            if stride < extent:
                return True
            extent += stride * (n - 1)
        return False

    def grads_alias(self, grads, params) -> list:
        """Per pair, whether the gradient may share memory with its parameter (the same
        object, or a view of its memory): the engine then reads such a gradient as the
        value it had before the step. Adapters with views widen the identity test."""
        return list(map(operator.is_, grads, params))

    def read_all(self, xs) -> list:
        """:meth:`read` of every tensor of a list."""
        return [self.read(x) for x in xs]

    # -- conversion --------------------------------------------------------
    def to_numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def tensor(self, array, variable: bool = True):
        """A new native tensor holding a copy of ``array`` (its dtype): a parameter
        (a tf.Variable on TensorFlow) or, with ``variable=False``, a plain tensor."""
        raise NotImplementedError

    def from_numpy(self, array: np.ndarray, like):
        """A tensor holding ``array`` with ``like``'s dtype and device."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<decay backend {self.name!r}>"
