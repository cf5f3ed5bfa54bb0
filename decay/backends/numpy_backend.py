"""NumPy adapter: arrays are updated in place."""

from __future__ import annotations

import threading

import numpy as np

from .base import Backend

# Elements per block of the in-place fast path: two scratch blocks of this size stay in
# the L2 cache, so each parameter's bytes cross main memory once per step.
BLOCK = 16384
# dtype.name is a slow property; rules ask for it per tensor per step.
_DTYPE_NAMES = {np.dtype(n): n for n in ("float16", "float32", "float64", "int32", "int64", "bool")}


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

    # -- hot path: in place, block by block, no per-step allocation ----------------------
    def fast_update(self, rule, params, grads, slots, hypers, decayed) -> bool:
        """SGD and Adam variants (``rule.kernel_spec``) computed in place block by block
        with two reused scratch blocks, in the same operation order as the generic path."""
        for p, g in zip(params, grads):
            if not (
                type(p) is np.ndarray and p.dtype in (np.float32, np.float64) and p.flags.c_contiguous
                and p.flags.writeable and isinstance(g, np.ndarray) and g.dtype == p.dtype and g.shape == p.shape
            ):
                return False
        specs = {}
        for h, is_decayed in zip(hypers, decayed):
            key = (id(h), is_decayed)
            if key not in specs:
                specs[key] = rule.kernel_spec(h, is_decayed)
                if specs[key] is None:
                    return False
        scratch = {}
        for p, g, leaf_slots, h, is_decayed in zip(params, grads, slots, hypers, decayed):
            spec = specs[(id(h), is_decayed)]
            run = _sgd_block if spec["kind"] == "sgd" else _adam_block
            pair = scratch.get(p.dtype) or scratch.setdefault(p.dtype, self._scratch(p.dtype))
            if p.size <= BLOCK:  # one block: no views to make
                n = p.size
                run(spec, p.reshape(-1), g.reshape(-1), {k: v.reshape(-1) for k, v in leaf_slots.items()},
                    pair[0][:n], pair[1][:n])
                continue
            flat = {name: x.reshape(-1) for name, x in leaf_slots.items()}
            pf, gf = p.reshape(-1), np.ascontiguousarray(g).reshape(-1)
            s1, s2 = pair
            for start in range(0, pf.size, BLOCK):
                stop = min(start + BLOCK, pf.size)
                n = stop - start
                run(spec, pf[start:stop], gf[start:stop], {k: v[start:stop] for k, v in flat.items()}, s1[:n], s2[:n])
        return True

    def _scratch(self, dtype):
        local = self._local.__dict__
        key = np.dtype(dtype).name
        if key not in local:
            local[key] = (np.empty(BLOCK, dtype=dtype), np.empty(BLOCK, dtype=dtype))
        return local[key]

    def __init__(self):
        self._local = threading.local()  # scratch blocks, one pair per thread

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def tensor(self, array, variable=True):
        return np.array(array, copy=True)

    def from_numpy(self, array, like):
        return np.array(array, dtype=np.asarray(like).dtype, copy=True)


def _sgd_block(spec, p, g, slots, s1, s2):
    """One block of the canonical SGD (see Rule.kernel_spec), in place."""
    if spec["pre_scale"] != 1.0:
        p *= spec["pre_scale"]
    if spec["momentum"] == 0:
        # θ − lr·(g + λθ) = θ·(1 − lr·λ) − lr·g: three passes over the block instead of four.
        if spec["weight_decay"]:
            p *= 1.0 - spec["lr"] * spec["weight_decay"]
        np.multiply(g, spec["lr"], out=s2)
        p -= s2
        return
    if spec["weight_decay"]:
        np.multiply(p, spec["weight_decay"], out=s1)
        np.add(g, s1, out=s1)  # d = g + λθ
        d = s1
    else:
        d = g
    mu = spec["momentum"]
    if mu > 0:
        buf = slots["momentum_buffer"]
        buf *= mu  # zero at the first step: b ← g exactly
        damp = 1.0 if spec["first_step"] else 1.0 - spec["dampening"]
        if damp != 1.0:
            np.multiply(d, damp, out=s2)
            buf += s2
        else:
            buf += d
        if spec["nesterov"]:
            np.multiply(buf, mu, out=s2)
            np.add(d, s2, out=s1)
            d = s1
        else:
            d = buf
    np.multiply(d, spec["lr"], out=s2)
    p -= s2


def _adam_block(spec, p, g, slots, s1, s2):
    """One block of the canonical Adam (see Rule.kernel_spec), in place."""
    wd = spec["weight_decay"]
    if wd and spec["decoupled"]:
        p *= 1.0 - spec["lr"] * wd
    if wd and not spec["decoupled"]:
        np.multiply(p, wd, out=s1)
        np.add(g, s1, out=s1)
        g = s1
    beta1, beta2, k = spec["beta1"], spec["beta2"], spec["step"] + 1
    m, v = slots["exp_avg"], slots["exp_avg_sq"]
    m *= beta1
    np.multiply(g, 1.0 - beta1, out=s2)
    m += s2
    v *= beta2
    np.multiply(g, g, out=s2)
    s2 *= 1.0 - beta2
    v += s2
    if spec["amsgrad"]:
        np.maximum(slots["max_exp_avg_sq"], v, out=slots["max_exp_avg_sq"])
        v = slots["max_exp_avg_sq"]
    np.sqrt(v, out=s2)
    s2 /= (1.0 - beta2**k) ** 0.5
    s2 += spec["eps"]
    np.divide(m, s2, out=s2)
    s2 *= spec["lr"] / (1.0 - beta1**k)
    p -= s2
