"""RAdam (Liu et al., 2020): Adam with its variance rectified, SGD with momentum while it cannot be."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..engine import Hyper
from ..validation import check_betas_and_eps
from .adam import adam_moments
from .base import Rule


@dataclass(frozen=True)
class RAdamHyper(Hyper):
    beta1: float
    beta2: float
    root_weight: float  #: 1 while rectified, else 0: d = root_weight·√v + floor
    floor: float  #: ε while rectified, else 1


class RAdam(Rule):
    """RAdam, as ``torch.optim.RAdam`` and ``optax.radam``.

    With gradient ``g`` (after coupled decay; decoupled decay θ ← θ·(1 − lr_t·λ) first,
    which is torch's ``decoupled_weight_decay=True``) and k = t + 1::

        m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
        ρ∞ = 2/(1 − β2) − 1;     ρ_k = ρ∞ − 2k·β2^k/(1 − β2^k)
        ρ_k > 5:  r = √((ρ_k − 4)(ρ_k − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_k))
                  θ ← θ − lr_t·r·√(1 − β2^k)/(1 − β1^k) · m/(√v + ε)
        else:     θ ← θ − lr_t/(1 − β1^k) · m

    The two cases are one computation, m/(a·√v + b) with (a, b) = (1, ε) or (0, 1), so
    that the step never branches on k (it is traced once into a compiled graph).
    optax rectifies from ρ_k ≥ 5 (torch > 5); ρ_k never equals 5 for the usual β2.
    """

    name = "radam"
    hyper_names = ("lr", "weight_decay", "betas", "eps")
    Hyper = RAdamHyper

    def check_group(self, hyper):
        return check_betas_and_eps(super().check_group(hyper))

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        beta1, beta2 = group["betas"]
        k = t + 1
        correction1, correction2 = 1.0 - beta1**k, 1.0 - beta2**k
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho = rho_inf - 2.0 * k * beta2**k / correction2 if beta2 > 0 else rho_inf
        if rho > 5.0:
            rect = math.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
            fields["step_size"] = fields["lr"] * rect * math.sqrt(correction2) / correction1
            root_weight, floor = 1.0, group["eps"]
        else:
            fields["step_size"] = fields["lr"] / correction1
            root_weight, floor = 0.0, 1.0
        return RAdamHyper(**fields, beta1=beta1, beta2=beta2, root_weight=root_weight, floor=floor)

    def slot_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def direction(self, ops, h, params, grads, slots):
        m, v = adam_moments(ops, h, grads, slots)
        d = ops.sqrt_all(v)
        ops.mul_(d, h.root_weight)
        ops.add_(d, h.floor)
        return m, d  # u = m / d


def radam(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    weight_decay=0.0,
    decoupled: bool = False,
    regularizer=None,
    *,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> RAdam:
    """RAdam; the defaults are ``torch.optim.RAdam``'s and ``optax.radam``'s.
    ``torch.optim.RAdam(weight_decay=λ)`` is coupled decay; with
    ``decoupled_weight_decay=True`` it is ``radam(lr, weight_decay=λ, decoupled=True)``.
    Keras 3 has no RAdam. See :class:`RAdam` for the math.
    """
    return RAdam(
        lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
        decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite,
    )
