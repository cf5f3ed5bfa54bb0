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

    def is_tensor(self, x) -> bool:
        return isinstance(x, torch.Tensor)

    def dtype_name(self, x) -> str:
        return str(x.dtype).replace("torch.", "")

    def device(self, x) -> str:
        return str(x.device)

    def read(self, x):
        # .detach() so that reading a parameter never records an autograd graph.
        return x.detach()

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

    def to_numpy(self, x):
        x = x.detach()
        if x.dtype in (torch.bfloat16,):
            # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
            x = x.float()
        return x.cpu().numpy().copy()

    def from_numpy(self, array, like):
        return torch.from_numpy(np.ascontiguousarray(array)).to(dtype=like.dtype, device=like.device)
