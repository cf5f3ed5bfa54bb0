"""NumPy float64 reference loops for the weight-decay variants, written from the papers
(not from decay's code): one plain loop per optimizer, every variant a branch.

- Cautious weight decay (Chen et al., 2025, arXiv 2510.12402):
  θ ← θ − η_t·(u + λ·𝟙[u⊙θ ≥ 0]⊙θ), u the optimizer's update direction (AdamW:
  m̂/(√v̂ + ε); SGD with momentum: the buffer, Nesterov: g + μ·b). Toward a reference the
  decay term is λ·(θ − θ₀) and the mask 𝟙[u⊙(θ − θ₀) ≥ 0] (decay's documented choice).
- Corrected weight decay (Defazio, 2025, AdamC): the decoupled term γ_t·(γ_t/γ_max)·λ·θ
  instead of γ_t·λ·θ.
- Decay toward a reference (L2-SP, Li et al., 2018): coupled g ← g + λ·(θ − θ₀),
  decoupled θ ← θ − η_t·λ·(θ − θ₀).

``lr`` is a function of the 0-based step. ``decayed`` maps a name to whether it is
decayed (a mask). Parameters and gradients are dicts name -> array.
"""

from __future__ import annotations

import math

import numpy as np


#: Set to a list to have the loops append a copy of θ after every step.
RECORD = None


def cosine_lr(peak, steps, floor=0.0):
    """η_t = floor + (peak − floor)·(1 + cos(π·min(t, T)/T))/2, written out."""
    return lambda t: floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))


def _decay_term(theta, ref):
    return theta if ref is None else theta - ref


def _step_decoupled(theta, u, eta, lam, scale, cautious, ref):
    """θ − η·u − scale·λ·[mask]·(θ − θ₀)."""
    d = _decay_term(theta, ref)
    mask = (u * d >= 0).astype(np.float64) if cautious else 1.0
    return theta - eta * u - scale * lam * mask * d


def adamw(params, grads, lr, lam, *, betas=(0.9, 0.999), eps=1e-8, cautious=False, corrected_max=None,
          toward=None, decayed=None):
    """AdamW (Loshchilov & Hutter with PyTorch's lr-scaled decay) and its variants."""
    b1, b2 = betas
    theta = {n: np.array(p, dtype=np.float64) for n, p in params.items()}
    m = {n: np.zeros_like(p) for n, p in theta.items()}
    v = {n: np.zeros_like(p) for n, p in theta.items()}
    for t, g in enumerate(grads):
        eta, k = lr(t), t + 1
        scale = eta if corrected_max is None else eta * eta / corrected_max
        for n in theta:
            m[n] = b1 * m[n] + (1 - b1) * g[n]
            v[n] = b2 * v[n] + (1 - b2) * g[n] ** 2
            u = (m[n] / (1 - b1**k)) / (np.sqrt(v[n] / (1 - b2**k)) + eps)
            on = decayed is None or decayed[n]
            ref = None if toward is None else toward[n]
            theta[n] = _step_decoupled(theta[n], u, eta, _lam(lam, n) if on else 0.0, scale, cautious, ref)
        if RECORD is not None:
            RECORD.append({n: x.copy() for n, x in theta.items()})
    return theta


def _lam(lam, name):
    """λ of one parameter: a number, or a dict name -> number (groups)."""
    return lam[name] if isinstance(lam, dict) else lam


def sgd(params, grads, lr, lam, *, momentum=0.0, nesterov=False, coupled=False, cautious=False,
        corrected_max=None, toward=None, decayed=None):
    """SGD (PyTorch's buffer: b ← g at the first step, then μ·b + g) with coupled decay
    g ← g + λ·(θ − θ₀) or decoupled decay after the papers."""
    theta = {n: np.array(p, dtype=np.float64) for n, p in params.items()}
    buf = {n: None for n in theta}
    for t, g in enumerate(grads):
        eta = lr(t)
        scale = eta if corrected_max is None else eta * eta / corrected_max
        for n in theta:
            on = decayed is None or decayed[n]
            ref = None if toward is None else toward[n]
            gn = g[n] + (_lam(lam, n) * _decay_term(theta[n], ref) if coupled and on else 0.0)
            if momentum:
                buf[n] = gn.copy() if buf[n] is None else momentum * buf[n] + gn
                u = gn + momentum * buf[n] if nesterov else buf[n]
            else:
                u = gn
            if coupled:
                theta[n] = theta[n] - eta * u
            else:
                theta[n] = _step_decoupled(theta[n], u, eta, _lam(lam, n) if on else 0.0, scale, cautious, ref)
        if RECORD is not None:
            RECORD.append({n: x.copy() for n, x in theta.items()})
    return theta
