"""PyTorch adapter: tensors (and nn.Parameters) are updated in place under no_grad."""

from __future__ import annotations

import operator
import threading

import numpy as np
import torch

from ..errors import DecayError
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
_DTYPE_DEVICE = operator.attrgetter("dtype", "device")
_DTYPE = operator.attrgetter("dtype")
_DEVICE = operator.attrgetter("device")
_IS_CPU = operator.attrgetter("is_cpu")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")
_IS_SPARSE = operator.attrgetter("is_sparse")
_FUSED_DTYPES = frozenset((torch.float32, torch.float64))


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
        return str(x.dtype).replace("torch.", "")

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

    def sqrt(self, x):
        return torch.sqrt(x)

    def sign(self, x):
        return torch.sign(x)

    def maximum(self, a, b):
        return torch.maximum(a, b)

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

    def assign(self, param, value):
        with torch.no_grad():
            param.copy_(value)
        return param

    def no_grad(self):
        return torch.no_grad()

    # -- per-step checks, made cheap ---------------------------------------------------
    def layouts(self, xs):
        # One C-level pass per attribute instead of a Python call per tensor.
        if not all(issubclass(tp, torch.Tensor) for tp in set(map(type, xs))):
            return None
        return tuple(map(_LAYOUT, xs))

    def read_all(self, xs):
        if any(map(_REQUIRES_GRAD, xs)):
            return [x.detach() if x.requires_grad else x for x in xs]
        return list(xs)

    # -- hot path: torch's own fused kernels ------------------------------------------
    def fast_update(self, rule, params, grads, slots, hypers, decayed) -> bool:
        # Per-parameter dicts come from callers that have not compared the grads' layouts
        # with the params' (Rule.step has): sparse grads have no fused kernel.
        if any(map(_IS_SPARSE, grads)):
            return False
        return super().fast_update(rule, params, grads, slots, hypers, decayed)

    def fast_update_columns(self, rule, params, grads, columns, hypers, decayed) -> bool:
        """SGD and Adam variants through torch's fused kernels (what ``fused=True`` in
        torch.optim runs), with coefficients from ``rule.kernel_spec``, called directly
        once per (dtype, device) and kernel spec: no per-tensor Python beyond reading
        each tensor's dtype and device. Slot columns are read by torch's slot names;
        others (decay.torch.Optimizer's "step") are ignored."""
        # Reading .device makes a torch.device per tensor (3x a dtype read): CPU-only
        # lists, the common case on CPU, are recognised without it.
        dtypes = set(map(_DTYPE, params))
        devices = {torch.device("cpu")} if all(map(_IS_CPU, params)) else set(map(_DEVICE, params))
        if not dtypes <= _FUSED_DTYPES or any(d.type not in ("cpu", "cuda") for d in devices):
            return False  # float16/bfloat16 keep float32 state: the generic path does that
        # Plan every part before touching anything: False must mean nothing was written.
        if len(set(map(id, hypers))) == 1 and (all(decayed) or not any(decayed)):
            spec = rule.kernel_spec(hypers[0], bool(decayed[0]))
            if spec is None:
                return False
            parts = [(spec, None)]
        else:
            by_key = {}
            for i, (h, is_decayed) in enumerate(zip(hypers, decayed)):
                by_key.setdefault((id(h), bool(is_decayed)), (h, bool(is_decayed), []))[2].append(i)
            parts = []
            for h, is_decayed, index in by_key.values():
                spec = rule.kernel_spec(h, is_decayed)
                if spec is None:
                    return False
                parts.append((spec, index))
        if len(dtypes) > 1 or len(devices) > 1:  # torch's kernels take one dtype and device per call
            split = []
            for spec, index in parts:
                by_kind = {}
                for i in range(len(params)) if index is None else index:
                    by_kind.setdefault(_DTYPE_DEVICE(params[i]), []).append(i)
                split.extend((spec, i) for i in by_kind.values())
            parts = split
        for spec, index in parts:
            run = self._fused_sgd if spec["kind"] == "sgd" else self._fused_adam
            run(spec, params, grads, columns, index)
        return True

    @staticmethod
    def _pick(values, index):
        return values if index is None else [values[i] for i in index]

    def _fused_sgd(self, spec, params, grads, columns, index):
        params, grads = self._pick(params, index), self._pick(grads, index)
        if spec["pre_scale"] != 1.0:
            torch._foreach_mul_(params, spec["pre_scale"])
        momentum = spec["momentum"]
        buffers = []
        if momentum > 0:
            column = columns["momentum_buffer"]
            buffers = self._pick(column, index)
            if spec["first_step"]:
                # The kernel sets the buffer to the first (decayed) gradient; reuse the
                # zeros init() made, allocate where there are none.
                buffers = [torch.empty_like(g) if b is None else b for b, g in zip(buffers, grads)]
                for j, i in enumerate(range(len(column)) if index is None else index):
                    column[i] = buffers[j]
        torch._fused_sgd_(
            params, grads, buffers, weight_decay=spec["weight_decay"], momentum=momentum,
            lr=spec["lr"], dampening=spec["dampening"], nesterov=spec["nesterov"], maximize=False,
            is_first_step=bool(momentum > 0 and spec["first_step"]), grad_scale=None, found_inf=None,
        )

    def _fused_adam(self, spec, params, grads, columns, index):
        params, grads = self._pick(params, index), self._pick(grads, index)
        kernel = torch._fused_adamw_ if spec["decoupled"] else torch._fused_adam_
        kernel(
            params, grads, self._pick(columns["exp_avg"], index), self._pick(columns["exp_avg_sq"], index),
            self._pick(columns["max_exp_avg_sq"], index) if spec["amsgrad"] else [],
            [self._step_count(params[0].device, spec["step"] + 1)] * len(params),
            amsgrad=spec["amsgrad"], lr=spec["lr"], beta1=spec["beta1"], beta2=spec["beta2"],
            weight_decay=spec["weight_decay"], eps=spec["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )

    def _step_count(self, device, count):
        """The kernel reads the (1-based) step from a float32 tensor per parameter; one
        tensor per device and thread, shared by all parameters, set once per call."""
        counters = self._local.__dict__
        counter = counters.get(device)
        if counter is None:
            counter = counters[device] = torch.zeros((), dtype=torch.float32, device=device)
        counter.fill_(float(count))
        return counter

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
