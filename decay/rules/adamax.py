"""Adamax (Kingma & Ba, 2015, §7.1), ε inside the max (PyTorch, optax) or added after it (Keras)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Hyper, Scratch
from ..validation import check_betas_and_eps, check_flag
from .base import Rule


@dataclass(frozen=True)
class AdamaxHyper(Hyper):
    beta1: float
    beta2: float
    eps: float


class Adamax(Rule):
    """Adamax, ``torch.optim.Adamax``'s conventions by default.

    With gradient ``g`` (after coupled decay; decoupled decay first) and k = t + 1::

        m ← β1·m + (1 − β1)·g
        u ← max(β2·u, |g| + ε);  θ ← θ − lr_t/(1 − β1^k) · m/u      (eps_inside_max=True:
                                                                      PyTorch, optax)
        u ← max(β2·u, |g|);      θ ← θ − lr_t/(1 − β1^k) · m/(u + ε) (eps_inside_max=False:
                                                                      Keras)

    PyTorch: lr 2e-3, ε 1e-8; optax ε 1e-8; Keras lr 1e-3, ε 1e-7.
    """

    name = "adamax"
    hyper_names = ("lr", "weight_decay", "betas", "eps")
    Hyper = AdamaxHyper

    def __init__(self, *, eps_inside_max=True, **kwargs):
        self.eps_inside_max = check_flag("eps_inside_max", eps_inside_max)
        super().__init__(**kwargs)
        self._kwargs.update(eps_inside_max=self.eps_inside_max)

    def check_group(self, hyper):
        return check_betas_and_eps(super().check_group(hyper))

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        beta1, beta2 = group["betas"]
        fields["step_size"] = fields["lr"] / (1.0 - beta1 ** (t + 1))
        return AdamaxHyper(**fields, beta1=beta1, beta2=beta2, eps=group["eps"])

    def slot_names(self, group):
        return ("exp_avg", "exp_inf")  # torch's state names

    def direction(self, ops, h, params, grads, slots):
        m, u = slots["exp_avg"], slots["exp_inf"]
        ops.lerp_(m, grads, 1.0 - h.beta1)
        ops.mul_(u, h.beta2)
        if isinstance(grads, Scratch):  # the engine's g + λθ (m has read it): |g| in place
            ops.abs_(grads)
            size = grads
        else:
            size = ops.abs_all(grads)
        if self.eps_inside_max:
            ops.add_(size, h.eps)
            ops.maximum_(u, size)
            return m, u  # u = m / u
        ops.maximum_(u, size)
        d = ops.clone(u)
        ops.add_(d, h.eps)
        return m, d


def adamax(
    lr=2e-3,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    weight_decay=0.0,
    decoupled: bool = False,
    regularizer=None,
    *,
    eps_inside_max: bool = True,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> Adamax:
    """Adamax; the defaults and argument order are ``torch.optim.Adamax``'s (coupled
    ``weight_decay=λ``). ``optax.adamax(lr, b1, b2, eps)`` is ``adamax(lr, (b1, b2),
    eps)``; ``optax.adamaxw(..., weight_decay=λ)`` adds ``decoupled=True``.

    ``keras.optimizers.Adamax(learning_rate, beta_1, beta_2, epsilon,
    weight_decay=λ)`` is ``adamax(lr, (beta_1, beta_2), eps=epsilon,
    eps_inside_max=False, weight_decay=λ, decoupled=True)``. See :class:`Adamax`.
    """
    return Adamax(
        lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
        eps_inside_max=eps_inside_max, decay_scaled_by=decay_scaled_by, mask=mask, groups=groups,
        on_nonfinite=on_nonfinite,
    )
