"""LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning: Training BERT in
76 minutes"): Adam's step rescaled per tensor by the trust ratio ‖θ‖/‖u‖."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_betas_and_eps, check_choice, check_flag
from .base import Rule

#: convention -> (ε, weight decay inside the trust ratio)
CONVENTIONS = {"optax": (1e-6, True), "paper": (1e-6, True), "keras": (1e-7, False)}


@dataclass(frozen=True)
class LambHyper(Hyper):
    beta1: float
    beta2: float
    eps: float
    bias_correction1: float  #: 1 − β1^k, k = t + 1
    bias_correction2_sqrt: float  #: √(1 − β2^k)
    trust_decay: float  #: κ_t: u ← r + κ_t·θ inside the trust ratio (= λ_t when scaled by lr)


class Lamb(Rule):
    """LAMB. With gradient ``g`` (after coupled decay), k = t + 1::

        m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
        r ← (m/(1 − β1^k)) / (√(v/(1 − β2^k)) + ε)              (Adam's step, ε inside)
        u ← r + λ_t·θ                      (decay_in_trust_ratio: the paper, optax)
        θ ← θ − lr_t · φ(‖θ‖/‖u‖) · u,     φ(x) = x, and 1 where ‖θ‖ or ‖u‖ is 0

    Where the decoupled decay enters is the difference between the versions:

    - ``decay_in_trust_ratio=True`` (the paper's Algorithm 2 and ``optax.lamb``): λθ is
      part of u, so the ratio ‖θ‖/‖r + λθ‖ scales the decay too;
    - ``decay_in_trust_ratio=False`` (``keras.optimizers.Lamb``): θ ← θ·(1 − lr_t·λ)
      first, as every Keras 3 optimizer decays, then the ratio ‖θ‖/‖r‖ of the shrunk θ
      scales r alone.

    The ratio is taken per tensor, on every tensor (Keras and optax exclude none from
    it; a mask chooses which tensors are decayed only). A coupled decay
    (``decoupled=False``) adds λθ to g before the moments.
    """

    name = "lamb"
    hyper_names = ("lr", "weight_decay", "betas", "eps")
    Hyper = LambHyper
    elementwise = False  # per-tensor norms

    def __init__(self, *, decay_in_trust_ratio=True, **kwargs):
        self.decay_in_trust_ratio = check_flag("decay_in_trust_ratio", decay_in_trust_ratio)
        super().__init__(**kwargs)
        self._kwargs.update(decay_in_trust_ratio=self.decay_in_trust_ratio)
        if self.decoupled and self.decay_in_trust_ratio and (self.cautious_decay or self.decay_toward is not None):
            # Inside the trust ratio the decay is part of u itself: neither a mask on the
            # shrink (cautious) nor a pull toward θ₀ has a definition there.
            raise DecayError(
                "cautious_decay and decay_toward apply a decoupled shrink outside the step; LAMB with "
                "decay_in_trust_ratio=True puts the decay inside it. Pass decay_in_trust_ratio=False "
                "(convention='keras') to combine them."
            )

    def check_group(self, hyper):
        return check_betas_and_eps(super().check_group(hyper))

    def decay_plan(self, group, decayed):
        plan = super().decay_plan(group, decayed)
        if plan.decoupled and self.decay_in_trust_ratio:
            return plan._replace(in_direction=True)
        return plan

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, decay_in_trust_ratio={self.decay_in_trust_ratio!r})"

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        beta1, beta2 = group["betas"]
        k = t + 1
        # θ − lr·ratio·(r + κθ) shrinks θ by lr·ratio·κ: κ = s_t·λ_t / lr_t, which is
        # λ_t itself for the usual scaling by lr (optax's, the paper's).
        if self.decay_scaled_by == "lr":
            kappa = fields["weight_decay"]
        else:
            kappa = fields["decay_factor"] / fields["lr"] if fields["lr"] > 0 else 0.0
        return LambHyper(
            **fields, beta1=beta1, beta2=beta2, eps=group["eps"], bias_correction1=1.0 - beta1**k,
            bias_correction2_sqrt=math.sqrt(1.0 - beta2**k), trust_decay=kappa,
        )

    def slot_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def direction(self, ops, h, params, grads, slots, decay=False):
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        ops.mul_(m, h.beta1)
        ops.add_(m, grads, alpha=1.0 - h.beta1)
        ops.mul_(v, h.beta2)
        ops.addcmul_(v, grads, grads, 1.0 - h.beta2)
        denom = ops.sqrt_all(v)
        ops.div_(denom, h.bias_correction2_sqrt)
        ops.add_(denom, h.eps)
        u = ops.div(m, denom)
        ops.div_(u, h.bias_correction1)
        if decay:  # the decoupled decay inside the trust ratio (engine: plan.in_direction)
            ops.add_(u, params, alpha=h.trust_decay)
        ratio = ops.safe_ratio_all(ops.norm_all(params), ops.norm_all(u), 1.0)
        ops.mul_(u, ratio)
        return u


def lamb(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=None,
    weight_decay=0.0,
    decoupled: bool = True,
    regularizer=None,
    *,
    convention: str = "optax",
    decay_in_trust_ratio=None,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> Lamb:
    """LAMB: Adam's step r scaled per tensor by the trust ratio ‖θ‖/‖u‖ (see :class:`Lamb`).

    ``convention`` sets what the versions differ in, the place of the decoupled decay
    and ε's default:

    - ``"optax"`` (the default) or ``"paper"``: u = r + λθ inside the ratio, ε = 1e-6 —
      ``optax.lamb(lr, b1, b2, eps, weight_decay=λ, mask=...)`` is
      ``decay.lamb(lr, (b1, b2), eps, λ, mask=...)`` (optax's ``eps_root`` is 0 here);
    - ``"keras"``: θ ← θ·(1 − lr_t·λ) before the step, ratio of r alone, ε = 1e-7 —
      ``keras.optimizers.Lamb(learning_rate, beta_1, beta_2, epsilon, weight_decay=λ)``
      is ``decay.lamb(learning_rate, (beta_1, beta_2), epsilon, λ, convention="keras")``
      (Keras casts lr, λ, β to float32: pick values exact there for equal numbers).

    ``eps`` and ``decay_in_trust_ratio`` override the convention's. Weight decay is
    decoupled by default, as in every framework's LAMB; ``decoupled=False`` adds λθ to
    the gradient instead.
    """
    check_choice("convention", convention, tuple(CONVENTIONS))
    default_eps, default_inside = CONVENTIONS[convention]
    return Lamb(
        lr=lr, betas=betas, eps=default_eps if eps is None else eps, weight_decay=weight_decay,
        decoupled=decoupled, regularizer=regularizer,
        decay_in_trust_ratio=default_inside if decay_in_trust_ratio is None else decay_in_trust_ratio,
        decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite,
        cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward,
    )
