"""The vocabulary update rules are written in: list-level operations after ``torch._foreach_*``.

Every rule's math (``decay/rules/*.py``) and the placement of weight decay
(``decay/rules/_decay.py``) are written once against these operations; every backend
implements them for a list of its tensors, and knows nothing of any rule:

- NumPy: ufuncs with ``out=``, in place (over cache-sized blocks on the fast path);
- PyTorch: the ``torch._foreach_*`` functions, in place;
- TensorFlow (and any framework with immutable tensors): the arithmetic operators,
  traced into one compiled function on the fast path.

"In place" is a contract on the *list*: after ``mul_(xs, s)`` the entries of ``xs``
hold ``x·s``. Backends with mutable tensors write into the tensors; backends with
immutable ones put new tensors into the list (``xs[i] = xs[i] * s``). A rule therefore
never keeps a reference to an entry across an in-place operation on its list, and the
engine reads results back from the lists. Operations without a trailing underscore
return a new list and never write into their arguments, so a rule may not mutate the
caller's gradients: only params, slots and lists it made itself.

A scalar argument is a Python float or, inside a compiled step, a 0-d float64 tensor
that the backend casts to each tensor's dtype (:meth:`Ops.scalar`).

:class:`Ops` implements the whole vocabulary with the arithmetic operators, rebinding
list entries; that is the TensorFlow implementation, and a reference for the others.
"""

from __future__ import annotations


#: the dtypes whose products and norms are computed in float32 and rounded once
LOW_PRECISION = frozenset({"bfloat16", "float16"})


class Ops:
    """The vocabulary, implemented functionally with ``+ - * /`` (see the module
    docstring). In-place backends override every method."""

    def scalar(self, s, x):
        """``s`` as a number ``x`` can be combined with (a Python float as is)."""
        return s

    def _each(self, xs, s):
        """``s`` for each entry of ``xs``: a list as is, a scalar cast per dtype."""
        if isinstance(s, list):
            return s
        return [self.scalar(s, x) for x in xs]

    # -- in place ------------------------------------------------------------------
    def mul_(self, xs: list, s) -> None:
        """x ← x·s (``s`` a scalar or a list)."""
        xs[:] = [x * y for x, y in zip(xs, self._each(xs, s))]

    def div_(self, xs: list, s) -> None:
        """x ← x / s (``s`` a scalar or a list)."""
        xs[:] = [x / y for x, y in zip(xs, self._each(xs, s))]

    def add_(self, xs: list, ys, alpha=1.0) -> None:
        """x ← x + alpha·y (``ys`` a list), or x ← x + ys (``ys`` a scalar, alpha unused)."""
        if not isinstance(ys, list):
            xs[:] = [x + s for x, s in zip(xs, self._each(xs, ys))]
        elif isinstance(alpha, float) and alpha == 1.0:
            xs[:] = [x + y for x, y in zip(xs, ys)]
        else:
            xs[:] = [x + y * a for x, y, a in zip(xs, ys, self._each(xs, alpha))]

    def lerp_(self, xs: list, ys: list, weight) -> None:
        """x ← x + w·(y − x)."""
        xs[:] = [x + (y - x) * w for x, y, w in zip(xs, ys, self._each(xs, weight))]

    def addcmul_(self, xs: list, ys: list, zs: list, value=1.0) -> None:
        """x ← x + value·y·z."""
        xs[:] = [x + (y * z) * v for x, y, z, v in zip(xs, ys, zs, self._each(xs, value))]

    def addcdiv_(self, xs: list, ys: list, zs: list, value=1.0) -> None:
        """x ← x + value·y/z."""
        xs[:] = [x + (y / z) * v for x, y, z, v in zip(xs, ys, zs, self._each(xs, value))]

    def maximum_(self, xs: list, ys: list) -> None:
        """x ← max(x, y), elementwise."""
        xs[:] = [self.maximum(x, y) for x, y in zip(xs, ys)]

    def sqrt_(self, xs: list) -> None:
        """x ← √x."""
        xs[:] = [self.sqrt(x) for x in xs]

    def abs_(self, xs: list) -> None:
        """x ← |x|."""
        xs[:] = self.abs_all(xs)

    def sign_(self, xs: list) -> None:
        """x ← sign(x) (0 at 0)."""
        xs[:] = self.sign_all(xs)

    def rsqrt_(self, xs: list) -> None:
        """x ← 1/√x."""
        xs[:] = [1.0 / self.sqrt(x) for x in xs]

    def clamp_min_(self, xs: list, s) -> None:
        """x ← max(x, s), elementwise (``s`` a scalar or a list of scalars, one per x)."""
        xs[:] = [self.maximum(x, y) for x, y in zip(xs, self._each(xs, s))]

    # -- new lists -----------------------------------------------------------------------
    def add(self, xs: list, ys, alpha=1.0) -> list:
        """A new list x + alpha·y (``ys`` a list), or x + ys (``ys`` a scalar, alpha unused)."""
        out = list(xs)
        self.add_(out, ys, alpha)
        return out

    def mul(self, xs: list, s) -> list:
        """A new list x·s."""
        out = list(xs)
        self.mul_(out, s)
        return out

    def div(self, xs: list, ys) -> list:
        """A new list x / y."""
        out = list(xs)
        self.div_(out, ys)
        return out

    def sqrt_all(self, xs: list) -> list:
        """A new list √x."""
        return [self.sqrt(x) for x in xs]

    def sign_all(self, xs: list) -> list:
        """A new list sign(x) (0 at 0)."""
        return [self.sign(x) for x in xs]

    def abs_all(self, xs: list) -> list:
        """A new list |x|."""
        return [self.abs(x) for x in xs]

    def clone(self, xs: list) -> list:
        """New tensors holding the values of ``xs``."""
        return [x * 1 for x in xs]

    # -- per tensor, which backends implement ------------------------------------------
    def sqrt(self, x):
        raise NotImplementedError

    def sign(self, x):
        raise NotImplementedError

    def maximum(self, a, b):
        raise NotImplementedError

    # -- per-tensor norms, ratios and matrix products (LAMB, Muon) -----------------------
    # Added as one block; each backend overrides the per-tensor primitives below.
    def norm_all(self, xs: list) -> list:
        """A new list of 0-d tensors ‖x‖₂ = √Σx² (each tensor's own, in its dtype)."""
        return [self.norm(x) for x in xs]

    def safe_ratio_all(self, nums: list, dens: list, default=1.0) -> list:
        """A new list n/d where n > 0 and d > 0, else ``default`` (0-d entries):
        LAMB's and LARS's trust ratio ‖θ‖/‖u‖, 1 where either norm is zero."""
        return [self.safe_ratio(n, d, default) for n, d in zip(nums, dens)]

    def matmul_all(self, xs: list, ys: list) -> list:
        """A new list of matrix products x @ y (over the last two axes)."""
        return [self.matmul(x, y) for x, y in zip(xs, ys)]

    def transpose_all(self, xs: list) -> list:
        """A new list of xᵀ (the last two axes swapped). An entry may be a view: write
        only into lists a rule made itself."""
        return [self.transpose(x) for x in xs]

    def addmm_all(self, cs: list, xs: list, ys: list, beta=1.0, alpha=1.0) -> list:
        """A new list beta·c + alpha·(x @ y), rounded once for 16-bit floats: computed
        in float32 and cast back, as ``torch.addmm`` (torch's backend calls it) does in
        torch.optim.Muon's bfloat16 Newton–Schulz."""
        names = [self.dtype_name(c) for c in cs]
        low = [n in LOW_PRECISION for n in names]
        if any(low):
            wide = ["float32" if w else n for w, n in zip(low, names)]
            cs, xs, ys = (self.cast_all(v, wide) for v in (cs, xs, ys))
        out = self.mul(cs, beta)
        self.add_(out, self.matmul_all(xs, ys), alpha=alpha)
        return self.cast_all(out, names) if any(low) else out

    def cast_all(self, xs: list, dtype) -> list:
        """A new list of x in ``dtype``: a NumPy-style name ('bfloat16', 'float32', ...)
        or a list of names, one per entry. An entry already in that dtype may come back
        as itself: write only into lists made after."""
        names = dtype if isinstance(dtype, list) else [dtype] * len(xs)
        return [self.cast(x, n) for x, n in zip(xs, names)]

    def check_dtype(self, name: str) -> None:
        """Raise DecayError, naming the fix, when this backend cannot hold ``name``."""

    def norm(self, x):
        raise NotImplementedError

    def safe_ratio(self, n, d, default):
        raise NotImplementedError

    def matmul(self, a, b):
        raise NotImplementedError

    def transpose(self, x):
        raise NotImplementedError

    # -- reductions over one axis (a factored second moment's rows and columns) ---------
    # A list operation of two lists broadcasts as NumPy does (a (m, 1) by a (1, n) list
    # gives (m, n) entries); an in-place one keeps x's shape, so y must broadcast to it.
    def mean_all(self, xs: list, axes: list) -> list:
        """A new list of means: each x's over its axis ``axes[i]`` (an int, kept as a
        dimension of size 1), or over every element (``axes[i]`` None: a 0-d entry)."""
        return [self.mean(x, axis) for x, axis in zip(xs, axes)]

    def mean_squares_all(self, xs: list, axes: list) -> list:
        """A new list of the means of x² over one axis each, as :meth:`mean_all` (without
        forming x²: torch's ‖x‖²/n along the axis)."""
        return [self.mean(x * x, axis) for x, axis in zip(xs, axes)]

    def mean(self, x, axis):
        raise NotImplementedError

    def abs(self, x):
        raise NotImplementedError

    def cast(self, x, dtype_name: str):
        raise NotImplementedError
