"""PyTorch adapter: tensors (and nn.Parameters) are updated in place under no_grad."""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import threading
import weakref
from typing import NamedTuple

import numpy as np
import torch

from ..errors import DecayError
from .._memory import span
from .base import Backend

# torch._foreach_norm serves these dtypes in the penalties' reductions (float16/bfloat16
# keep their per-tensor sums), on pieces of at most this many elements (see
# TorchBackend._sum_all_foreach).
_NORM_DTYPES = frozenset((torch.float32, torch.float64))
_NORM_PIECE = 1 << 18
_NORM_DEVICE = operator.attrgetter("device")
_NORM_IS_CPU = operator.attrgetter("is_cpu")
_NORM_DTYPE = operator.attrgetter("dtype")
_NORM_NEEDS_GRAD = operator.attrgetter("requires_grad")
_NORM_NUMEL = torch.Tensor.numel

_LAYOUT = operator.attrgetter("shape", "dtype", "layout", "device")
_SHAPE = operator.attrgetter("shape")
_DTYPE_DEVICE = operator.attrgetter("dtype", "device")
_DTYPE = operator.attrgetter("dtype")
_DEVICE = operator.attrgetter("device")
_IS_CPU = operator.attrgetter("is_cpu")
_IS_CUDA = operator.attrgetter("is_cuda")
_GET_DEVICE = torch.Tensor.get_device
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
_DATA_PTR = torch.Tensor.data_ptr
_NBYTES = operator.attrgetter("nbytes")
_FUSED_DTYPES = frozenset((torch.float32, torch.float64))
_DTYPE_NAMES: dict = {}  # str(dtype) per call costs more than the update of a small tensor


class _Layouts(NamedTuple):
    """The parameters' layouts, as :meth:`TorchBackend.grads_fit` compares gradients with them."""

    shapes: list  #: torch.Size per tensor
    dtype: object  #: the dtype every tensor has, or None (then ``each`` is compared)
    device: object  #: the device every tensor is on, or None
    each: tuple  #: (shape, dtype, layout, device) per tensor


class _GradOff:
    """``with``: autograd off, then back to on (only made while it is on)."""

    __slots__ = ()

    def __enter__(self):
        torch._C._set_grad_enabled(False)

    def __exit__(self, *exc):
        torch._C._set_grad_enabled(True)


_NO_GRAD_DONE = contextlib.nullcontext()


class _Table(dict):
    """A dict that weakref callbacks can hold weakly (a plain dict cannot be)."""

    __slots__ = ("__weakref__",)


def _forget(table_ref, key, _dead) -> None:
    """A weakref callback: drop ``key`` from the table (if both still exist)."""
    table = table_ref()
    if table is not None:
        table.pop(key, None)


def _all_on(device, tensors) -> bool:
    """Whether every tensor is on ``device``: ``is_cpu`` is read at half the cost of
    ``device`` (a new torch.device per read), and a CUDA index as an int."""
    if device.type == "cpu":
        return all(map(_IS_CPU, tensors))
    if device.type == "cuda":
        return all(map(_IS_CUDA, tensors)) and set(map(_GET_DEVICE, tensors)) == {device.index}
    return set(map(_DEVICE, tensors)) == {device}


def _fused_layout(tensors) -> bool:
    if not all(map(_IS_CONTIGUOUS, tensors)) or not set(map(_DTYPE, tensors)) <= _FUSED_DTYPES:
        return False
    return all(map(_IS_CPU, tensors)) or all(d.type in ("cpu", "cuda") for d in set(map(_DEVICE, tensors)))


def _split_by_kind(params) -> list:
    """Index lists of params by (dtype, device): [None] when they share one."""
    dtypes = set(map(_DTYPE, params))
    devices = {torch.device("cpu")} if all(map(_IS_CPU, params)) else set(map(_DEVICE, params))
    if len(dtypes) == 1 and len(devices) == 1:
        return [None]
    by_kind = {}
    for i, p in enumerate(params):
        by_kind.setdefault(_DTYPE_DEVICE(p), []).append(i)
    return list(by_kind.values())


class TorchBackend(Backend):
    name = "torch"
    aliases = ("pytorch",)
    module = "torch"
    extra = "torch"

    def __init__(self):
        self._local = threading.local()  # step-count tensors, per thread and device

    def is_tensor(self, x) -> bool:
        return isinstance(x, torch.Tensor)

    def dtype_name(self, x) -> str:
        name = _DTYPE_NAMES.get(x.dtype)
        if name is None:
            name = _DTYPE_NAMES[x.dtype] = str(x.dtype).replace("torch.", "")
        return name

    def device(self, x) -> str:
        return str(x.device)

    def device_key(self, x):
        return x.device

    def same_layout(self, a, b) -> bool:
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device

    def is_floating(self, x) -> bool:
        return x.is_floating_point()

    def read(self, x):
        # .detach() so that reading a parameter never records an autograd graph.
        return x.detach() if x.requires_grad else x

    def zeros_like(self, x):
        return torch.zeros_like(x, memory_format=torch.preserve_format)

    def zeros(self, shape, like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def sqrt(self, x):
        return torch.sqrt(x)

    def sign(self, x):
        return torch.sign(x)

    def maximum(self, a, b):
        return torch.maximum(a, b)

    def abs(self, x):
        return torch.abs(x)

    def sum_squares(self, x):
        flat = x.reshape(-1)
        if x.dtype in (torch.float32, torch.float64):
            return torch.dot(flat, flat)
        return torch.sum(flat * flat)

    def sum_abs(self, x):
        return torch.sum(torch.abs(x))

    def sum_squares_all(self, xs):
        return self._sum_all_foreach(xs, 2, self.sum_squares)

    def sum_abs_all(self, xs):
        return self._sum_all_foreach(xs, 1, self.sum_abs)

    def _sum_all_foreach(self, xs, ord, per_tensor):
        """Σ|x|^ord over ``xs`` (ord 1 or 2) as one 0-d tensor of their promoted dtype.

        The checks run over ``xs`` in C (map), not in a Python loop: for 1,000 small
        tensors a Python loop costs as much as the reduction."""
        if not len(xs):
            raise DecayError("A sum over tensors needs at least one tensor (its dtype is the result's).")
        if not all(map(_NORM_IS_CPU, xs)) and len(set(map(_NORM_DEVICE, xs))) > 1:
            # Several devices: stack refuses them, and torch._foreach_norm returns garbage
            # for a CPU tensor listed with a meta one (torch 2.13). 0-d sums add instead.
            return super()._sum_all(per_tensor, xs)
        if (torch.is_grad_enabled() and any(map(_NORM_NEEDS_GRAD, xs))) or not set(map(_NORM_DTYPE, xs)) <= _NORM_DTYPES:
            # Exact per-tensor reductions, stacked: one autograd node rather than one per +.
            return torch.stack([per_tensor(x) for x in xs]).sum()
        # One torch._foreach_norm call: single-threaded, so steady on a busy machine
        # (BLAS dot's threads are not), and as fast as dot on an idle one. Its float32
        # accumulation is plain, so its error grows with the length reduced (2e-5
        # relative at 1M elements, 7e-4 at 10M, vs 2e-6 and 9e-5 for dot); pieces of at
        # most _NORM_PIECE elements keep it under ~5e-6 at any size. Squaring adds ~2 ulp.
        if max(map(_NORM_NUMEL, xs)) > _NORM_PIECE:
            xs = [piece for x in xs for piece in (x.reshape(-1).split(_NORM_PIECE) if x.numel() > _NORM_PIECE else (x,))]
        norms = torch.stack(torch._foreach_norm(xs, ord))
        return (norms.square() if ord == 2 else norms).sum()

    def all_finite(self, x) -> bool:
        return bool(torch.isfinite(x).all())

    def cast(self, x, dtype_name):
        return x.to(getattr(torch, dtype_name))

    def write(self, param, value):
        with torch.no_grad():
            param.copy_(value)
        return param

    def no_grad(self):
        # torch.no_grad() costs ~3 µs a step, as much as a small fused kernel's launch:
        # the same switch, set directly (and nothing when it is already off, as inside
        # decay.torch.Optimizer.step).
        return _NO_GRAD_DONE if not torch.is_grad_enabled() else _GradOff()

    # -- per-step checks, made cheap ---------------------------------------------------
    def layouts(self, xs):
        # Read once per structure (the parameters'): every tensor's layout, and the one
        # dtype and device they share where they do (the usual model).
        if not all(map(isinstance, xs, itertools.repeat(torch.Tensor))):
            return None
        each = tuple(map(_LAYOUT, xs))
        dtypes, devices = {e[1] for e in each}, {e[3] for e in each}
        one = len(dtypes) == 1 and len(devices) == 1
        return _Layouts([e[0] for e in each], dtypes.pop() if one else None, devices.pop() if one else None, each)

    def grads_fit(self, grads, layouts):
        # Per step, one C-level pass per attribute, cheapest first: contiguity (which also
        # refuses anything that is not a torch tensor, and sparse gradients), shapes, then
        # the shared dtype and device as sets. Fit means dense and contiguous too: the
        # memory check and the fused kernels rely on it without reading it again.
        if layouts is None:
            return False
        try:
            if not all(map(_IS_CONTIGUOUS, grads)):
                return False
        except (TypeError, RuntimeError):  # not a torch tensor; a sparse layout (no contiguity)
            return False
        if layouts.dtype is None:
            return tuple(map(_LAYOUT, grads)) == layouts.each
        return (list(map(_SHAPE, grads)) == layouts.shapes and set(map(_DTYPE, grads)) == {layouts.dtype}
                and _all_on(layouts.device, grads))

    def is_sparse(self, x) -> bool:
        return isinstance(x, torch.Tensor) and x.layout != torch.strided

    def to_dense(self, x):
        return x.to_dense()

    def overlaps_itself(self, x) -> bool:
        # 0: no, 1: an element is reached by two indices (expand); 2: torch cannot tell
        # (as_strided), and its in-place operations then write regardless: the stride test.
        overlap = torch._debug_has_internal_overlap(x)
        return overlap == 1 or (overlap == 2 and self.strides_overlap(x.shape, x.stride()))

    def memory_spans(self, xs):
        # Contiguous tensors (the usual case): [data_ptr, data_ptr + nbytes), three C-level
        # passes. A null pointer (the meta device, empty tensors) holds nothing.
        ptrs = np.fromiter(map(_DATA_PTR, xs), np.int64, len(xs))
        if all(map(_IS_CONTIGUOUS, xs)) and ptrs.all():
            return ptrs, ptrs + np.fromiter(map(_NBYTES, xs), np.int64, len(xs))
        spans = [span(*self.memory_layout(x)) for x in xs]
        return [a for a, _ in spans], [b for _, b in spans]

    def step_spans(self, params, grads, cache=None):
        # The parameters' ranges are remembered while the same tensors come back at the
        # same addresses (held in ``cache``, so their ids cannot be reused; a .data swap
        # moves the pointer); each step reads the parameters' data pointers and the
        # gradients' pointers and contiguity only: a contiguous gradient has its
        # parameter's shape and dtype (both callers check it), so its byte count.
        ptrs = np.fromiter(map(_DATA_PTR, params), np.int64, len(params))
        held = None if cache is None else cache.get("params")
        if (held is None or len(held[0]) != len(params) or not all(map(operator.is_, held[0], params))
                or not np.array_equal(held[4], ptrs)):
            lo, hi = self.memory_spans(params)
            held = (list(params), np.asarray(lo), np.asarray(hi),
                    np.fromiter(map(_NBYTES, params), np.int64, len(params)), ptrs)
            if cache is not None:
                cache["params"] = held
        g_lo = np.fromiter(map(_DATA_PTR, grads), np.int64, len(grads))
        if all(map(_IS_CONTIGUOUS, grads)) and g_lo.all():
            g_hi = g_lo + held[3]
        else:
            g_lo, g_hi = self.memory_spans(grads)
        return np.concatenate([held[1], g_lo]), np.concatenate([held[2], g_hi])

    def step_key(self, params, grads, grads_fit=False):
        # Contiguous tensors only: then a pointer and a byte count give the range (the
        # gradients' counts are their parameters': the callers check shapes and dtypes).
        # (A parameter's byte count is read where its pointer changes, as step_spans does.)
        if not grads_fit and not all(map(_IS_CONTIGUOUS, grads)):
            return None
        return tuple(map(_DATA_PTR, params)), tuple(map(_DATA_PTR, grads))

    def memory_layout(self, x):
        size = x.element_size()
        return x.data_ptr(), tuple(x.shape), tuple(s * size for s in x.stride()), size

    def grads_alias(self, grads, params):
        # The same tensor, or a view that starts where the parameter starts (p.detach(),
        # p.data, p.view(...), p.t()): one pointer comparison per pair, in C.
        return list(map(operator.eq, map(_DATA_PTR, grads), map(_DATA_PTR, params)))

    def read_all(self, xs):
        # The engine calls this under no_grad, where torch (like torch.optim) lets the
        # vocabulary write into leaves that require grad: the tensors themselves.
        return list(xs)

    # -- the vocabulary: torch's multi-tensor (foreach) functions, in place --------------
    def mul_(self, xs, s):
        torch._foreach_mul_(xs, s)

    def div_(self, xs, s):
        torch._foreach_div_(xs, s)

    def add_(self, xs, ys, alpha=1.0):
        if isinstance(ys, list):
            torch._foreach_add_(xs, ys, alpha=alpha)
        else:
            torch._foreach_add_(xs, ys)

    def lerp_(self, xs, ys, weight):
        torch._foreach_lerp_(xs, ys, weight)

    def addcmul_(self, xs, ys, zs, value=1.0):
        torch._foreach_addcmul_(xs, ys, zs, value=value)

    def addcdiv_(self, xs, ys, zs, value=1.0):
        torch._foreach_addcdiv_(xs, ys, zs, value=value)

    def maximum_(self, xs, ys):
        torch._foreach_maximum_(xs, ys)

    def sqrt_(self, xs):
        torch._foreach_sqrt_(xs)

    def abs_(self, xs):
        torch._foreach_abs_(xs)

    def sign_(self, xs):
        torch._foreach_sign_(xs)

    def rsqrt_(self, xs):
        torch._foreach_rsqrt_(xs)

    def clamp_min_(self, xs, s):
        torch._foreach_clamp_min_(xs, s)

    def add(self, xs, ys, alpha=1.0):
        if not isinstance(ys, list):
            return list(torch._foreach_add(xs, ys))
        return list(torch._foreach_add(xs, ys, alpha=alpha))

    def mul(self, xs, s):
        return list(torch._foreach_mul(xs, s))

    def div(self, xs, ys):
        return list(torch._foreach_div(xs, ys))

    def sqrt_all(self, xs):
        return list(torch._foreach_sqrt(xs))

    def sign_all(self, xs):
        return list(torch._foreach_sign(xs))

    def abs_all(self, xs):
        return list(torch._foreach_abs(xs))

    def clone(self, xs):
        # One multi-tensor call (x·1 is x exactly, -0.0 and nan included), not a kernel
        # launch per tensor: on CUDA, 200 launches cost more than the update itself.
        return list(torch._foreach_mul(xs, 1.0)) if len(xs) > 1 else [x.clone() for x in xs]

    # -- declared kernels: torch's fused optimizer kernels -------------------------------
    has_fused = True

    def fused_ready(self, params, grads, slots, grads_fit=False):
        """The fused kernels read memory in order: every tensor must be dense and
        contiguous (a transposed gradient would be read as another element's), on CPU
        or CUDA, float32/float64 (float16/bfloat16 keep float32 state, which the kernels
        do not). Params and slots that passed before (the same objects, as in a
        training loop) are not checked again; grads, whose shape, dtype and device the
        callers have matched with the params', are checked for layout every step.
        Returns how to split the lists into calls (one per dtype and device), or None."""
        kept = list(itertools.chain(params, *slots.values()))
        # A few recent lists, found by their tensors' ids (one C-level pass) and held
        # weakly: a model freed is not kept alive here, and its entry goes with the
        # first of its tensors freed, before a new tensor can take that id.
        trusted = self._local.__dict__.get("trusted")
        if trusted is None:
            trusted = self._local.trusted = _Table()
        ids = tuple(map(id, kept))
        entry = trusted.get(ids)
        if entry is None:
            if not _fused_layout(kept):
                return None
            forget = functools.partial(_forget, weakref.ref(trusted), ids)
            entry = trusted[ids] = ([weakref.ref(x, forget) for x in kept], _split_by_kind(params))
            while len(trusted) > 4:
                del trusted[next(iter(trusted))]
        split = entry[1]
        # (a sparse gradient reports itself not contiguous: no kernel for it either)
        return split if grads_fit or all(map(_IS_CONTIGUOUS, grads)) else None

    def run_fused(self, call, ready, params, grads, slots) -> None:
        """``torch.<call.kernel>(params, grads, *slot lists, [steps], **scalars)``, once
        per (dtype, device) as ``ready`` (from :meth:`fused_ready`) splits them."""
        kernel = getattr(torch, call.kernel)
        for index in ready:
            if index is None:  # one dtype and device: the lists as they are
                ps, gs, lists = params, grads, [slots[name] if name else [] for name in call.slots]
            else:
                ps, gs = [params[i] for i in index], [grads[i] for i in index]
                lists = [[slots[name][i] for i in index] if name else [] for name in call.slots]
            if call.step is not None:
                lists.append([self._step_count(ps[0].device, call.step)] * len(ps))
            kernel(ps, gs, *lists, **call.scalars)

    def _step_count(self, device, count):
        """A kernel reads the (1-based) step from a float32 tensor per parameter; one
        tensor per device and thread, shared by all parameters, set once per call."""
        counters = self._local.__dict__
        counter = counters.get(device)
        if counter is None:
            counter = counters[device] = torch.zeros((), dtype=torch.float32, device=device)
        counter.fill_(float(count))
        return counter

    # -- per-tensor norms, ratios and matrix products (LAMB, Muon) -----------------------
    def norm(self, x):
        return torch.linalg.vector_norm(x)

    def norm_all(self, xs):
        # One multi-tensor call, as torch's own foreach optimizers take their norms.
        return list(torch._foreach_norm(xs)) if xs else []

    def safe_ratio(self, n, d, default):
        return torch.where((n > 0) & (d > 0), n / d, torch.full_like(n, default))

    def matmul(self, a, b):
        return torch.matmul(a, b)

    def mean_squares_all(self, xs, axes):
        # the mean of x·x along an axis without forming x·x: ‖x‖² along it / n (as torch.optim computes it)
        out = []
        for x, axis in zip(xs, axes):
            norm = torch.linalg.vector_norm(x, dim=axis, keepdim=axis is not None)
            out.append(norm.square_().div_(max(x.numel(), 1) if axis is None else x.shape[axis]))
        return out

    def mean(self, x, axis):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=True)

    def transpose(self, x):
        return x.transpose(-2, -1)

    def addmm_all(self, cs, xs, ys, beta=1.0, alpha=1.0):
        # One torch.addmm, rounded once, as torch.optim.Muon's bfloat16 Newton–Schulz.
        if isinstance(beta, torch.Tensor) or isinstance(alpha, torch.Tensor) or any(c.dim() != 2 for c in cs):
            return super().addmm_all(cs, xs, ys, beta, alpha)
        return [torch.addmm(c, x, y, beta=beta, alpha=alpha) for c, x, y in zip(cs, xs, ys)]

    def to_numpy(self, x):
        x = x.detach()
        if x.dtype in (torch.bfloat16,):
            # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
            x = x.float()
        return x.cpu().numpy().copy()

    def tensor(self, array, variable=True):
        return torch.from_numpy(np.array(array, copy=True))

    def from_numpy(self, array, like):
        # np.array, not np.ascontiguousarray: the latter turns 0-d arrays into shape (1,).
        return torch.from_numpy(np.array(array, copy=True)).to(dtype=like.dtype, device=like.device)
