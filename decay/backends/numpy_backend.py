"""NumPy adapter: arrays are updated in place."""

from __future__ import annotations

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    aliases = ("np",)
    module = "numpy"
    extra = ""

    def is_tensor(self, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def dtype_name(self, x) -> str:
        return np.asarray(x).dtype.name

    def zeros_like(self, x):
        return np.zeros_like(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def sign(self, x):
        return np.sign(x)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def sum_squares(self, x):
        flat = np.ravel(x)
        # np.dot is the fastest exact Σx² NumPy has (BLAS); it returns x's dtype.
        return np.dot(flat, flat) if flat.dtype.kind == "f" else np.sum(flat * flat)

    def sum_abs(self, x):
        return np.sum(np.abs(x))

    def all_finite(self, x) -> bool:
        return bool(np.isfinite(x).all())

    def cast(self, x, dtype_name):
        return np.asarray(x).astype(dtype_name, copy=False)

    def assign(self, param, value):
        if isinstance(param, np.ndarray) and param.flags.writeable:
            param[...] = value
            return param
        return np.asarray(value)

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def from_numpy(self, array, like):
        return np.array(array, dtype=np.asarray(like).dtype, copy=True)
