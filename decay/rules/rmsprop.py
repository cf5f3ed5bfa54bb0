"""RMSprop, with momentum and centering, ε outside the root (PyTorch) or inside (Keras, optax)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_flag, check_number
from .base import Rule


@dataclass(frozen=True)
class RMSpropHyper(Hyper):
    alpha: float  #: α, the decay of the squared-gradient average (Keras's ρ)
    eps: float
    momentum: float  #: μ


class RMSprop(Rule):
    """RMSprop, ``torch.optim.RMSprop``'s conventions by default.

    With gradient ``g`` (after coupled decay; decoupled decay θ ← θ·(1 − s_t·λ_t) comes
    first, :mod:`decay.rules._decay`)::

        v ← α·v + (1 − α)·g²                       (v starts at initial_accumulator_value)
        centered:  ḡ ← α·ḡ + (1 − α)·g;  w = v − ḡ²,   else w = v
        d = √w + ε                                 (eps_inside_sqrt=False: PyTorch)
        d = √(w + ε)                               (eps_inside_sqrt=True: Keras, optax)
        momentum μ > 0:  b ← μ·b + g/d;  θ ← θ − lr_t·b
        else:            θ ← θ − lr_t·g/d

    Keras (and optax's ``trace``) keep the learning rate inside the momentum buffer,
    b' ← μ·b' + lr_t·g/d, θ ← θ − b': the same numbers while lr is constant, not under
    a schedule (b' = lr·b). Defaults: PyTorch α 0.99, ε 1e-8, lr 1e-2; Keras ρ 0.9,
    ε 1e-7, lr 1e-3; optax decay 0.9, ε 1e-8 inside the root.
    """

    name = "rmsprop"
    hyper_names = ("lr", "weight_decay", "alpha", "eps", "momentum")
    Hyper = RMSpropHyper

    def __init__(self, *, centered=False, eps_inside_sqrt=False, initial_accumulator_value=0.0, **kwargs):
        self.centered = check_flag("centered", centered)
        self.eps_inside_sqrt = check_flag("eps_inside_sqrt", eps_inside_sqrt)
        self.initial_accumulator_value = check_number("initial_accumulator_value", initial_accumulator_value)
        super().__init__(**kwargs)
        self._kwargs.update(
            centered=self.centered, eps_inside_sqrt=self.eps_inside_sqrt,
            initial_accumulator_value=self.initial_accumulator_value,
        )

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        hyper["alpha"] = alpha = check_number("alpha", hyper["alpha"])
        if alpha > 1.0:  # α = 1 is allowed, as in torch (v keeps its start)
            raise DecayError(f"`alpha` must be <= 1. Received: alpha={alpha!r}.")
        hyper["eps"] = check_number("eps", hyper["eps"])
        hyper["momentum"] = check_number("momentum", hyper["momentum"])
        return hyper

    def coefficients(self, group, t):
        return RMSpropHyper(
            **self.common_fields(group, t), alpha=group["alpha"], eps=group["eps"], momentum=group["momentum"],
        )

    def slot_names(self, group):
        names = ("square_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        if self.centered:
            names += ("grad_avg",)
        return names

    def slot_initial_values(self, group):
        return {"square_avg": self.initial_accumulator_value}

    def direction(self, ops, h, params, grads, slots):
        v = slots["square_avg"]
        ops.mul_(v, h.alpha)
        ops.addcmul_(v, grads, grads, 1.0 - h.alpha)
        if self.centered:
            mean = slots["grad_avg"]
            ops.lerp_(mean, grads, 1.0 - h.alpha)
            d = ops.clone(v)
            ops.addcmul_(d, mean, mean, -1.0)
            if self.eps_inside_sqrt:
                ops.add_(d, h.eps)
            ops.sqrt_(d)
        elif self.eps_inside_sqrt:
            d = ops.clone(v)
            ops.add_(d, h.eps)
            ops.sqrt_(d)
        else:
            d = ops.sqrt_all(v)
        if not self.eps_inside_sqrt:
            ops.add_(d, h.eps)
        buf = slots.get("momentum_buffer")
        if buf is None:
            return grads, d  # u = g / d
        ops.mul_(buf, h.momentum)
        ops.addcdiv_(buf, grads, d)
        return buf


def rmsprop(
    lr=1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay=0.0,
    momentum: float = 0.0,
    centered: bool = False,
    decoupled: bool = False,
    regularizer=None,
    *,
    eps_inside_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> RMSprop:
    """RMSprop; the defaults and argument order are ``torch.optim.RMSprop``'s
    (coupled ``weight_decay=λ`` adds λθ to the gradient).

    ``keras.optimizers.RMSprop(learning_rate, rho, momentum, epsilon, centered,
    weight_decay=λ)`` is ``rmsprop(lr, alpha=rho, eps=epsilon, momentum=momentum,
    centered=centered, weight_decay=λ, decoupled=True, eps_inside_sqrt=True)`` (its
    defaults: lr 1e-3, rho 0.9, epsilon 1e-7); with momentum, only while lr is constant.
    ``optax.rmsprop(lr, decay, eps, initial_scale)`` is ``eps_inside_sqrt=True,
    initial_accumulator_value=initial_scale``. See :class:`RMSprop` for the math.
    """
    return RMSprop(
        lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
        decoupled=decoupled, regularizer=regularizer, eps_inside_sqrt=eps_inside_sqrt,
        initial_accumulator_value=initial_accumulator_value, decay_scaled_by=decay_scaled_by, mask=mask,
        groups=groups, on_nonfinite=on_nonfinite,
    )
