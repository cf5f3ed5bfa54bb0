"""A NumPy float64 reference for decay's update rules and penalties.

Written from the frameworks' documented update formulas (torch.optim, Keras 3, the
AdamW paper) and the docstrings of ``decay.sgd``/``decay.adam``/``decay.adamw`` — not
from decay's code — with plain
loops, one function per rule, so that the test suite's expected values never come
from the code under test. Adam is written in the paper/optax form
``θ ← θ − lr_t·m̂/(√v̂ + ε)`` rather than PyTorch's factoring.

Conventions (all steps 0-based, ``k = t + 1`` where a 1-based count is needed):

- ``lr`` and ``weight_decay`` are numbers or callables ``t -> value``.
- ``grad_fn(theta, t)`` is the gradient of the *unregularized* loss at ``theta``.
- Penalties in the rule (the ``regularizer=`` place): ``l2_reg`` adds 2·l2·θ
  (``L2(l2)`` is l2·Σθ², no ½), ``l1_reg`` adds l1·sign(θ) (0 at θ = 0).
- Coupled decay: g ← g + λ_t·θ (PyTorch). Decoupled: θ ← θ − s_t·λ_t·θ before the
  step, s_t = lr_t ("lr"), lr_t/lr_0 ("schedule_multiplier"), 1 ("none").
- ``decayed=False`` switches off every decay term for this tensor (a mask).

Each rule returns ``(trajectory, state)``: the list of θ after every step, and a dict
holding the step count and the slots, which can be passed back as ``state=`` to
continue a run.
"""

from __future__ import annotations

import math

import numpy as np

DECAY_SCALES = ("lr", "schedule_multiplier", "none")


def value_at(hyper, t):
    """A hyperparameter at step ``t``: a number, or a schedule called with ``t``."""
    return float(hyper(t)) if callable(hyper) else float(hyper)


def as_f64(x):
    return np.array(x, dtype=np.float64, copy=True)


# -- penalties ---------------------------------------------------------------------------


def _leaves(params):
    if isinstance(params, dict):
        return list(params.values())
    if isinstance(params, (list, tuple)):
        return list(params)
    return [params]


def _like(params, grads):
    if isinstance(params, dict):
        return dict(zip(params.keys(), grads))
    if isinstance(params, tuple):
        return tuple(grads)
    if isinstance(params, list):
        return list(grads)
    return grads[0]


def ref_l2(params, lam):
    """lam·Σθ² over every tensor, and its gradient 2·lam·θ."""
    leaves = [as_f64(x) for x in _leaves(params)]
    value = 0.0
    for x in leaves:
        for element in x.ravel():
            value += lam * element * element
    return value, _like(params, [2.0 * lam * x for x in leaves])


def ref_l1(params, lam):
    """lam·Σ|θ| over every tensor, and its subgradient lam·sign(θ) (0 at 0)."""
    leaves = [as_f64(x) for x in _leaves(params)]
    value = 0.0
    for x in leaves:
        for element in x.ravel():
            value += lam * abs(element)
    return value, _like(params, [lam * np.sign(x) for x in leaves])


def ref_elastic(params, l1, l2):
    """l1·Σ|θ| + l2·Σθ² and its gradient l1·sign(θ) + 2·l2·θ."""
    v1, g1 = ref_l1(params, l1)
    v2, g2 = ref_l2(params, l2)
    grads = [a + b for a, b in zip(_leaves(g1), _leaves(g2))]
    return v1 + v2, _like(params, grads)


# -- shared decay step -----------------------------------------------------------------


def _decay_scale(decay_scale, lr_t, lr0):
    if decay_scale == "lr":
        return lr_t
    if decay_scale == "schedule_multiplier":
        return lr_t / lr0
    if decay_scale == "none":
        return 1.0
    raise ValueError(f"unknown decay_scale {decay_scale!r}; one of {DECAY_SCALES}")


def _decay(theta, g, lr_t, wd_t, lr0, *, decoupled, l2_reg, l1_reg, decay_scale, decayed):
    """The gradient and parameters after weight decay, before the rule's own step."""
    if not decayed:
        return theta, g
    # Penalty gradients at the current θ (the regularizer= place).
    g = g + 2.0 * l2_reg * theta + l1_reg * np.sign(theta)
    if decoupled:
        theta = theta - _decay_scale(decay_scale, lr_t, lr0) * wd_t * theta
    else:
        g = g + wd_t * theta
    return theta, g


def _lr0(lr, lr0):
    return value_at(lr, 0) if lr0 is None else float(lr0)


# -- SGD ---------------------------------------------------------------------------------


def ref_sgd(
    theta0,
    grad_fn,
    steps,
    lr,
    momentum=0.0,
    dampening=0.0,
    nesterov=False,
    weight_decay=0.0,
    decoupled=False,
    l2_reg=0.0,
    l1_reg=0.0,
    decay_scale="lr",
    lr0=None,
    decayed=True,
    state=None,
):
    """SGD as ``torch.optim.SGD``: first step b ← g, then b ← μb + (1 − τ)g;
    Nesterov d = g + μb, else d = b (d = g without momentum); θ ← θ − lr_t·d."""
    theta = as_f64(theta0)
    start = 0 if state is None else state["count"]
    buf = None if state is None or state.get("momentum_buffer") is None else as_f64(state["momentum_buffer"])
    base = _lr0(lr, lr0)
    trajectory = []
    for t in range(start, start + steps):
        lr_t = value_at(lr, t)
        wd_t = value_at(weight_decay, t)
        g = as_f64(grad_fn(theta.copy(), t))
        theta, g = _decay(
            theta, g, lr_t, wd_t, base, decoupled=decoupled, l2_reg=l2_reg, l1_reg=l1_reg,
            decay_scale=decay_scale, decayed=decayed,
        )
        if momentum != 0:
            if buf is None:
                buf = g.copy()
            else:
                buf = momentum * buf + (1.0 - dampening) * g
            direction = g + momentum * buf if nesterov else buf
        else:
            direction = g
        theta = theta - lr_t * direction
        trajectory.append(theta.copy())
    return trajectory, {"count": start + steps, "momentum_buffer": buf}


# -- Adam --------------------------------------------------------------------------------


def ref_adam(
    theta0,
    grad_fn,
    steps,
    lr,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    decoupled=False,
    amsgrad=False,
    epsilon_hat=False,
    l2_reg=0.0,
    l1_reg=0.0,
    decay_scale="lr",
    lr0=None,
    decayed=True,
    state=None,
):
    """Adam (Kingma & Ba), optax's form::

        m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²,  v_max ← max(v_max, v)
        m̂ = m/(1 − β1^k),  v̂ = v/(1 − β2^k)    (v_max in place of v with amsgrad)
        θ ← θ − lr_t·m̂/(√v̂ + ε)

    ``epsilon_hat=True`` is the paper's last-paragraph form (Keras, TF-Addons)::

        θ ← θ − lr_t·√(1 − β2^k)/(1 − β1^k)·m/(√v + ε̂)
    """
    theta = as_f64(theta0)
    if state is None:
        start = 0
        m = np.zeros_like(theta)
        v = np.zeros_like(theta)
        v_max = np.zeros_like(theta)
    else:
        start = state["count"]
        m, v = as_f64(state["exp_avg"]), as_f64(state["exp_avg_sq"])
        v_max = as_f64(state["max_exp_avg_sq"]) if state.get("max_exp_avg_sq") is not None else np.zeros_like(theta)
    base = _lr0(lr, lr0)
    trajectory = []
    for t in range(start, start + steps):
        k = t + 1
        lr_t = value_at(lr, t)
        wd_t = value_at(weight_decay, t)
        g = as_f64(grad_fn(theta.copy(), t))
        theta, g = _decay(
            theta, g, lr_t, wd_t, base, decoupled=decoupled, l2_reg=l2_reg, l1_reg=l1_reg,
            decay_scale=decay_scale, decayed=decayed,
        )
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        if amsgrad:
            v_max = np.maximum(v_max, v)
            second = v_max
        else:
            second = v
        if epsilon_hat:
            alpha_k = lr_t * math.sqrt(1.0 - beta2**k) / (1.0 - beta1**k)
            theta = theta - alpha_k * m / (np.sqrt(second) + eps)
        else:
            m_hat = m / (1.0 - beta1**k)
            v_hat = second / (1.0 - beta2**k)
            theta = theta - lr_t * m_hat / (np.sqrt(v_hat) + eps)
        trajectory.append(theta.copy())
    final = {"count": start + steps, "exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        final["max_exp_avg_sq"] = v_max
    return trajectory, final


def ref_adamw(theta0, grad_fn, steps, lr, weight_decay=1e-2, **kwargs):
    """AdamW: Adam with decoupled decay θ ← θ − s_t·λ_t·θ first (torch default λ = 1e-2)."""
    return ref_adam(theta0, grad_fn, steps, lr, weight_decay=weight_decay, decoupled=True, **kwargs)
