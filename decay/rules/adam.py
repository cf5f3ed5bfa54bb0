"""Adam and AdamW, with PyTorch's or Keras's placement of ε."""

from __future__ import annotations

import math

from ..errors import DecayError
from ..validation import check_number
from .base import Rule


class Adam(Rule):
    """Adam, PyTorch's ``torch.optim.Adam``/``AdamW`` conventions by default.

    With gradient ``g`` (after coupled decay, as in :class:`decay.rules.sgd.SGD`),
    k = t + 1 the 1-based step, and decoupled decay θ ← θ·(1 − s_t·λ_t) applied first::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        v_max ← max(v_max, v); use v_max for v           (amsgrad: max of v, not of v̂)
        θ ← θ − lr_t·m̂ / (√v̂ + ε),   m̂ = m/(1 − β1^k), v̂ = v/(1 − β2^k)   (PyTorch, optax)

    With ``epsilon_hat=True`` ε is added outside the bias correction, as Keras and
    TF-Addons do (Kingma & Ba's "ε̂")::

        θ ← θ − lr_t·√(1 − β2^k)/(1 − β1^k) · m / (√v + ε)

    No constant ε makes the two placements equal; they differ most in early steps and
    where √v is small.
    """

    name = "adam"
    hyper_names = ("lr", "weight_decay", "betas", "eps")
    step_keys = Rule.step_keys + ("step_size", "correction2_sqrt", "alpha")

    def __init__(self, *, amsgrad=False, epsilon_hat=False, **kwargs):
        self.amsgrad = bool(amsgrad)
        self.epsilon_hat = bool(epsilon_hat)
        super().__init__(**kwargs)
        self._kwargs.update(amsgrad=self.amsgrad, epsilon_hat=self.epsilon_hat)

    def _check_hyper(self, hyper):
        hyper = super()._check_hyper(hyper)
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise DecayError(f"`betas` must be a pair (beta1, beta2). Received: betas={betas!r}.")
        hyper["betas"] = (
            check_number("betas[0]", betas[0], below=1.0),
            check_number("betas[1]", betas[1], below=1.0),
        )
        hyper["eps"] = check_number("eps", hyper["eps"])
        return hyper

    def hyper_at(self, hyper, t):
        h = super().hyper_at(hyper, t)
        beta1, beta2 = hyper["betas"]
        k = t + 1
        correction1 = 1.0 - beta1**k
        correction2 = 1.0 - beta2**k
        h["step_size"] = h["lr"] / correction1
        h["correction2_sqrt"] = math.sqrt(correction2)
        h["alpha"] = h["lr"] * math.sqrt(correction2) / correction1  # for epsilon_hat
        return h

    def slots_for(self, hyper):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def _update(self, backend, p, g, slots, h):
        beta1, beta2 = h["betas"]
        m = slots["exp_avg"] * beta1 + g * (1.0 - beta1)
        v = slots["exp_avg_sq"] * beta2 + (g * g) * (1.0 - beta2)
        new_slots = {"exp_avg": m, "exp_avg_sq": v}
        if self.amsgrad:
            v = new_slots["max_exp_avg_sq"] = backend.maximum(slots["max_exp_avg_sq"], v)
        if self.epsilon_hat:
            return p - (m * h["alpha"]) / (backend.sqrt(v) + h["eps"]), new_slots
        denom = backend.sqrt(v) / h["correction2_sqrt"] + h["eps"]
        return p - (m / denom) * h["step_size"], new_slots


    def kernel_spec(self, h, decayed):
        coupled = self._coupled_penalty_coefficient(decayed)
        if coupled is None:
            return None
        decoupled = 0.0
        if decayed and h["_decays"]:
            if not self.decoupled:
                coupled += h["weight_decay"]
            elif h["lr"] > 0:
                decoupled = h["decoupled_factor"] / h["lr"]  # kernels shrink by lr·λ
            elif h["decoupled_factor"] != 0:
                return None
        if coupled and decoupled:
            return None  # one kernel call takes one kind of decay
        beta1, beta2 = h["betas"]
        # ε-hat: lr·√bc2/bc1 · m/(√v + ε̂) = lr/bc1 · m/(√v/√bc2 + ε̂/√bc2)
        eps = h["eps"] / h["correction2_sqrt"] if self.epsilon_hat else h["eps"]
        return {
            "kind": "adam",
            "lr": h["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": eps,
            "weight_decay": decoupled or coupled,
            "decoupled": bool(decoupled),
            "amsgrad": self.amsgrad,
            "step": h["step"],
        }


def adam(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    weight_decay=0.0,
    decoupled: bool = False,
    amsgrad: bool = False,
    regularizer=None,
    *,
    epsilon_hat: bool = False,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> Adam:
    """Adam with weight decay coupled (``weight_decay=λ`` adds λθ to the gradient before
    the moments, as ``torch.optim.Adam``) or decoupled (``decoupled=True``, as
    ``torch.optim.AdamW``). ``epsilon_hat=True`` reproduces Keras/TF-Addons' ε placement
    (pass ``eps=1e-7`` for Keras's default). See :class:`Adam` for the math.

    Example::

        >>> import numpy as np, decay
        >>> w = np.zeros(3)
        >>> rule = decay.adam(lr=0.1, weight_decay=1e-2)
        >>> state = rule.init(w)
        >>> w, state = rule.step(w, np.array([1.0, -2.0, 0.5]), state)
        >>> np.allclose(w, [-0.1, 0.1, -0.1])     # first Adam step moves by lr·sign(g)
        True
    """
    return Adam(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled=decoupled,
        amsgrad=amsgrad,
        regularizer=regularizer,
        epsilon_hat=epsilon_hat,
        decay_scaled_by=decay_scaled_by,
        mask=mask,
        groups=groups,
        on_nonfinite=on_nonfinite,
    )


def adamw(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    weight_decay=1e-2,
    amsgrad: bool = False,
    regularizer=None,
    *,
    epsilon_hat: bool = False,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> Adam:
    """AdamW: Adam with decoupled decay θ ← θ·(1 − lr_t·λ) before the step.

    Defaults equal ``torch.optim.AdamW`` (weight_decay 1e-2). For
    ``keras.optimizers.AdamW`` use ``weight_decay=0.004, eps=1e-7, epsilon_hat=True``;
    for ``optax.adamw`` ``weight_decay=1e-4``; for the paper's rule
    ``decay_scaled_by="schedule_multiplier"``; for TF-Addons ``decay_scaled_by="none"``.
    """
    rule = adam(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled=True,
        amsgrad=amsgrad,
        regularizer=regularizer,
        epsilon_hat=epsilon_hat,
        decay_scaled_by=decay_scaled_by,
        mask=mask,
        groups=groups,
        on_nonfinite=on_nonfinite,
    )
    rule.name = "adamw"
    return rule
