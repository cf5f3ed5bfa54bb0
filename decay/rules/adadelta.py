"""Adadelta (Zeiler, 2012), as PyTorch, Keras and optax compute it."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_number
from .base import Rule


@dataclass(frozen=True)
class AdadeltaHyper(Hyper):
    rho: float
    eps: float


class Adadelta(Rule):
    """Adadelta. With gradient ``g`` (after coupled decay; decoupled decay first)::

        v ← ρ·v + (1 − ρ)·g²
        δ ← √(a + ε) / √(v + ε) · g
        a ← ρ·a + (1 − ρ)·δ²
        θ ← θ − lr_t·δ

    ``torch.optim.Adadelta``, ``keras.optimizers.Adadelta`` and ``optax.adadelta`` all
    compute this, ε inside both roots. Defaults differ: PyTorch lr 1.0, ρ 0.9, ε 1e-6
    (this factory's); Keras lr 1e-3, ρ 0.95, ε 1e-7; optax ρ 0.9, ε 1e-6.
    """

    name = "adadelta"
    hyper_names = ("lr", "weight_decay", "rho", "eps")
    Hyper = AdadeltaHyper

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        hyper["rho"] = rho = check_number("rho", hyper["rho"])
        if rho > 1.0:
            raise DecayError(f"`rho` must be in [0, 1]. Received: rho={rho!r}.")
        hyper["eps"] = check_number("eps", hyper["eps"])
        return hyper

    def coefficients(self, group, t):
        return AdadeltaHyper(**self.common_fields(group, t), rho=group["rho"], eps=group["eps"])

    def slot_names(self, group):
        return ("square_avg", "acc_delta")  # torch's state names

    def direction(self, ops, h, params, grads, slots):
        v, a = slots["square_avg"], slots["acc_delta"]
        ops.mul_(v, h.rho)
        ops.addcmul_(v, grads, grads, 1.0 - h.rho)
        std = ops.add(v, h.eps)  # new lists: one pass each, as torch's foreach Adadelta
        ops.sqrt_(std)
        delta = ops.add(a, h.eps)
        ops.sqrt_(delta)
        ops.div_(delta, std)
        ops.mul_(delta, grads)
        ops.mul_(a, h.rho)
        ops.addcmul_(a, delta, delta, 1.0 - h.rho)
        return delta


def adadelta(
    lr=1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay=0.0,
    decoupled: bool = False,
    regularizer=None,
    *,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> Adadelta:
    """Adadelta; the defaults and argument order are ``torch.optim.Adadelta``'s
    (coupled ``weight_decay=λ``, as ``optax.adadelta(weight_decay=λ)`` too).

    ``keras.optimizers.Adadelta(learning_rate, rho, epsilon, weight_decay=λ)`` is
    ``adadelta(lr, rho, eps, weight_decay=λ, decoupled=True)`` (Keras's defaults: lr
    1e-3, rho 0.95, epsilon 1e-7). See :class:`Adadelta` for the math.
    """
    return Adadelta(
        lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
        decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite,
    )
