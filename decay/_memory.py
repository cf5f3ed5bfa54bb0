"""Tensors that share memory with one another, found once for every backend.

An in-place step is defined only when no tensor it writes shares an element with
another tensor of the step, except the cases every framework defines:

- a gradient that *is* its parameter's memory, laid out the same (``p.detach()``,
  ``p[:]``, ``step(x, x, ...)``): torch.optim reads it as the value it had before the
  step (``p.add_(p)`` is a full overlap, which torch allows); so does decay on every
  backend (the engine clones it first);
- gradients sharing memory with each other: they are only read.

Everything else is refused with a DecayError naming both tensors: two parameters that
are overlapping views of one storage (torch.optim's for-loop and foreach paths give
different numbers for them, measured with momentum and Adam), a gradient overlapping
another parameter (its value depends on which parameter is written first), a gradient
overlapping its own parameter only partly (``x[:, 1:4]`` for ``x[:, :3]``, ``p.t()``:
torch.optim.SGD raises "unsupported operation: some elements of the input tensor and
the written-to tensor refer to a single memory location" where it can tell, and gives
element-order-dependent numbers where it cannot), and a state slot overlapping anything.

The check costs no element work: each backend reports every tensor's byte range
(:meth:`decay.backends.base.Backend.memory_spans`: data pointers, strides, sizes); the
ranges are sorted once (NumPy, vectorized) and only ranges that intersect — never the
case for tensors that own their memory, or for views of disjoint chunks of one flat
buffer (DDP's gradient buckets) — are compared exactly (:func:`shares_memory`, on the
layouts' numbers alone). Immutable tensors (TensorFlow, JAX) share nothing to write:
there only the same object given as another parameter's gradient is refused, as on
every backend, so that the three backends refuse the same inputs.
"""

from __future__ import annotations

import operator

import numpy as np

from .errors import DecayError

# np.shares_memory's bound on its exact (integer-programming) search; past it the pair
# counts as overlapping: refused, never updated wrongly.
_MAX_WORK = 1 << 16


def span(address: int, shape, strides, itemsize: int) -> tuple:
    """The byte range [lo, hi) a strided layout reaches; (0, 0) when it holds nothing."""
    if address == 0 or any(n == 0 for n in shape):
        return 0, 0
    lo = hi = address
    for n, s in zip(shape, strides):
        if s < 0:
            lo += s * (n - 1)
        else:
            hi += s * (n - 1)
    return lo, hi + itemsize


class _Surrogate:
    """An array interface over an address that is never dereferenced: NumPy's exact
    overlap test reads only addresses and strides (the memory may be a GPU's)."""

    def __init__(self, layout):
        address, shape, strides, itemsize = layout
        self.__array_interface__ = {"data": (address, True), "shape": tuple(shape), "strides": tuple(strides),
                                    "typestr": f"|V{itemsize}", "version": 3}


def shares_memory(layout_a, layout_b) -> bool:
    """Whether two layouts ``(address, shape, byte strides, itemsize)`` reach a common
    byte (exact; a search past ``_MAX_WORK`` counts as yes)."""
    a, b = np.asarray(_Surrogate(layout_a)), np.asarray(_Surrogate(layout_b))
    try:
        return bool(np.shares_memory(a, b, max_work=_MAX_WORK))
    except np.exceptions.TooHardError:
        return True


def _refuse(first: str, second: str, how: str = "views of one storage that overlap"):
    raise DecayError(
        f"{first} and {second} share memory ({how}): an in-place step of one changes the other "
        "halfway, so the result would depend on the order of the writes (torch.optim gives no "
        "defined result for it). Nothing was updated. Pass a copy of one of them: x.clone() "
        "(torch), x.copy() (NumPy), tf.identity(x) (TensorFlow)."
    )


def check_disjoint(backend, labels, tensors, allowed=None, ranges=False) -> bool:
    """Refuse tensors that share memory, except pairs ``allowed(i, j)`` (indices into
    ``tensors``, i < j) accepts. ``labels`` name each tensor in the error: a list, or a
    function of the index (made only for the error: the check runs every step).
    ``ranges``: the tensors' :meth:`memory_spans` where the caller has them. Returns
    False when the backend has no ranges (immutable tensors)."""
    label = labels if callable(labels) else labels.__getitem__
    if ranges is False:
        ranges = backend.memory_spans(tensors)
    if ranges is None:
        return False
    if not len(ranges):  # the adapter knows: nothing shared
        return True
    lo, hi = np.asarray(ranges[0], dtype=np.int64), np.asarray(ranges[1], dtype=np.int64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    hits = np.flatnonzero((lo[1:] < reach[:-1]) & (hi[1:] > lo[1:])) + 1
    for k in hits.tolist():  # rare: ranges that intersect, compared exactly
        for m in range(k):
            if hi[m] <= lo[k] or lo[m] == hi[m]:
                continue
            i, j = sorted((int(order[m]), int(order[k])))
            if allowed is not None and allowed(i, j):
                continue
            if shares_memory(backend.memory_layout(tensors[i]), backend.memory_layout(tensors[j])):
                _refuse(label(i), label(j))
    return True


def check_step_inputs(backend, names, params, given, grads, cache=None, grads_fit=False):
    """The per-step check of one step's parameters and gradients (see the module's
    docstring for what is accepted): ``given`` as the caller passed them, ``grads`` as
    the backend reads them (:meth:`Backend.read_all`). ``cache``: a dict the caller
    keeps between steps (:meth:`Backend.step_spans`); ``grads_fit``: the backend's
    :meth:`Backend.grads_fit` verdict on ``grads``, where the caller has it. Returns,
    per gradient, whether it is its own parameter's memory (the engine then reads it as
    the value it had), or None where the backend has no memory ranges (immutable
    tensors)."""
    n = len(params)
    # A training loop passes tensors at the same addresses step after step (the same
    # parameters; gradients from torch's caching allocator): the last verdict holds
    # while every pointer the check reads is the same (the entry holds the parameters,
    # so that their ids stay theirs). Looked up first: it is the per-step cost.
    key = None if cache is None else backend.step_key(params, grads, grads_fit)
    if key is not None:
        passed = cache.get("passed")
        if (passed is not None and passed[0] == key and len(passed[2]) == n
                and all(map(operator.is_, passed[2], params))):
            return passed[1]

    def label(i):
        name = repr(names[i % n]) if len(names) == n else f"'param {i % n}'"
        return f"parameter {name}" if i < n else f"the gradient of {name}"

    tensors = list(params) + list(grads)
    aliased = [False] * n

    def allowed(i, j):
        if i >= n:  # two gradients: only read
            return True
        if j != i + n:
            return False
        aliased[i] = backend.memory_layout(tensors[i]) == backend.memory_layout(tensors[j])
        return aliased[i]

    if check_disjoint(backend, label, tensors, allowed, backend.step_spans(params, grads, cache)):
        if key is not None:
            cache["passed"] = (key, aliased, list(params))
        return aliased
    # Immutable tensors: only the same object given as another parameter's gradient
    # aliases it, refused as on every backend.
    if not set(map(id, params)).isdisjoint(map(id, given)):
        position = {id(p): i for i, p in enumerate(params)}
        for j, g in enumerate(given):
            i = position.get(id(g))
            if i is not None and i != j:
                _refuse(label(i), label(n + j), "the same tensor")
    return None
