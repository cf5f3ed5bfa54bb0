"""PyTorch adapter: tensors (and nn.Parameters) are updated in place under no_grad."""

from __future__ import annotations

import numpy as np
import torch

from .base import Backend


class TorchBackend(Backend):
    name = "torch"
    aliases = ("pytorch",)
    module = "torch"
    extra = "torch"

    def __init__(self):
        self._counters = {}

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

    # -- hot path: torch's own fused kernels ------------------------------------------
    def fast_update(self, rule, params, grads, slots, hypers, decayed) -> bool:
        """SGD and Adam variants through torch's fused kernels (``fused=True`` in
        torch.optim), with coefficients from ``rule.kernel_spec``."""
        # The rule has checked that every grad matches its param's shape, dtype and device.
        if {p.dtype for p in params} - {torch.float32, torch.float64}:
            return False  # float16/bfloat16 keep float32 state: the generic path does that
        if {p.device.type for p in params} - {"cpu", "cuda"} or any(g.is_sparse for g in grads):
            return False
        # Plan every group before touching anything: False must mean nothing was written.
        groups = {}
        for i, (h, is_decayed) in enumerate(zip(hypers, decayed)):
            key = (id(h), is_decayed)
            group = groups.get(key)
            if group is None:
                spec = rule.kernel_spec(h, is_decayed)
                if spec is None:
                    return False
                group = groups[key] = (spec, [])
            group[1].append(i)
        if len(groups) == 1:  # the common case: no index lists to build
            spec = next(iter(groups.values()))[0]
            run = self._fused_sgd if spec["kind"] == "sgd" else self._fused_adam
            run(spec, list(params), list(grads), slots)
            return True
        for spec, index in groups.values():
            ps = [params[i] for i in index]
            gs = [grads[i] for i in index]
            if spec["kind"] == "sgd":
                self._fused_sgd(spec, ps, gs, [slots[i] for i in index])
            else:
                self._fused_adam(spec, ps, gs, [slots[i] for i in index])
        return True

    def _fused_sgd(self, spec, params, grads, slots):
        import torch.optim.sgd as torch_sgd

        if spec["pre_scale"] != 1.0:
            torch._foreach_mul_(params, spec["pre_scale"])
        momentum = spec["momentum"]
        buffers = None
        if momentum > 0:
            # torch starts the buffer at the first gradient when it is given none.
            buffers = [None] * len(params) if spec["first_step"] else [s["momentum_buffer"] for s in slots]
        torch_sgd.sgd(
            params, grads, buffers if buffers is not None else [None] * len(params), fused=True,
            weight_decay=spec["weight_decay"], momentum=momentum, lr=spec["lr"],
            dampening=spec["dampening"], nesterov=spec["nesterov"], maximize=False,
        )
        if buffers is not None:
            for s, buffer in zip(slots, buffers):
                s["momentum_buffer"] = buffer

    def _fused_adam(self, spec, params, grads, slots):
        import torch.optim.adam as torch_adam

        steps = self._step_counters(params, spec["step"])
        torch_adam.adam(
            params, grads, [s["exp_avg"] for s in slots], [s["exp_avg_sq"] for s in slots],
            [s["max_exp_avg_sq"] for s in slots] if spec["amsgrad"] else [], steps, fused=True,
            decoupled_weight_decay=spec["decoupled"], amsgrad=spec["amsgrad"],
            beta1=spec["beta1"], beta2=spec["beta2"], lr=spec["lr"],
            weight_decay=spec["weight_decay"], eps=spec["eps"], maximize=False,
        )

    def _step_counters(self, params, step):
        """One scalar tensor per parameter holding ``step`` (the kernel adds 1 first);
        reused across calls so that a step allocates nothing per tensor."""
        device = params[0].device
        pool = self._counters.setdefault(device, [])
        while len(pool) < len(params):
            pool.append(torch.zeros((), dtype=torch.float32, device=device))
        counters = pool[: len(params)]
        torch._foreach_zero_(counters)
        torch._foreach_add_(counters, float(step))
        return counters

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
