"""The article's worked example, done right, on any backend.

x₀ = [1, 2, 3], loss Σx², L2 penalty λΣx² with λ = 0.1, lr = 0.01, 100 steps. The
gradient is 2x + 2λx, so every step multiplies x by 1 − lr·(2 + 2λ) = 0.978 and
x₁₀₀ = x₀ · 0.978¹⁰⁰ — whether the penalty sits in the loss, is added to each
gradient (coupled, PyTorch ``weight_decay = 2λ``), or shrinks x directly (decoupled).
"""

from __future__ import annotations

import numpy as np

from .. import L2, get_backend, sgd

X0 = (1.0, 2.0, 3.0)
LAM = 0.1
LR = 0.01
STEPS = 100
PLACEMENTS = ("loss", "coupled", "decoupled")


def closed_form(x0=X0, lam=LAM, lr=LR, steps=STEPS) -> np.ndarray:
    # The article's arithmetic, written out rather than asked of decay's L2: this is
    # what decay's result is checked against.
    return np.asarray(x0, dtype=np.float64) * (1.0 - lr * (2.0 + 2.0 * lam)) ** steps


def run(backend_name: str, placement: str = "loss", dtype: str = "float64", steps: int = STEPS):
    """Train Σx² from x₀ with the penalty in ``placement``; returns x as NumPy."""
    backend = get_backend(backend_name)
    x = backend.tensor(np.asarray(X0, dtype=dtype))
    penalty = L2(LAM)
    if placement == "loss":
        rule = sgd(LR)
    else:
        # Out of the loss, the same decay is the coupled weight decay the penalty equals.
        decoupled = placement == "decoupled"
        rule, penalty = sgd(LR, weight_decay=penalty.coupled_weight_decay(), decoupled=decoupled), None
    state = rule.init(x)
    for _ in range(steps):
        value = backend.read(x)
        grad = value * 2.0  # d(Σx²)/dx
        if penalty is not None:
            grad = grad + penalty.grad(value)  # the loss's penalty, 2λx
        x, state = rule.step(x, grad, state)
    return backend.to_numpy(x)
