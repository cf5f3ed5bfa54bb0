"""Adagrad, with PyTorch's lr decay, and the accumulator's start and ε's place as an option."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import FusedCall, Hyper
from ..validation import check_flag, check_number
from .base import Rule


@dataclass(frozen=True)
class AdagradHyper(Hyper):
    lr_decay: float
    eps: float


class Adagrad(Rule):
    """Adagrad, ``torch.optim.Adagrad``'s conventions by default.

    With gradient ``g`` (after coupled decay; decoupled decay first, as for every rule)
    and t the 0-based step::

        s ← s + g²                          (s starts at initial_accumulator_value)
        d = √s + ε                          (eps_inside_sqrt=False: PyTorch)
        d = √(s + ε)                        (eps_inside_sqrt=True: Keras, optax)
        θ ← θ − lr_t/(1 + t·lr_decay) · g/d

    PyTorch's defaults: lr 1e-2, initial accumulator 0, ε 1e-10. Keras's and optax's:
    initial accumulator 0.1, ε 1e-7 inside the root, no lr decay (Keras lr 1e-3).
    optax skips elements whose accumulator is 0 (update 0), which differs from this
    only when the accumulator starts at 0 and a gradient element is exactly 0 for all
    steps so far (then ``g/√ε = 0`` here too).
    """

    name = "adagrad"
    hyper_names = ("lr", "weight_decay", "lr_decay", "eps")
    Hyper = AdagradHyper
    sparse_gradients = True  # as torch.optim.Adagrad: its sparse step is the dense gradient's, bit for bit

    def __init__(self, *, initial_accumulator_value=0.0, eps_inside_sqrt=False, **kwargs):
        self.initial_accumulator_value = check_number("initial_accumulator_value", initial_accumulator_value)
        self.eps_inside_sqrt = check_flag("eps_inside_sqrt", eps_inside_sqrt)
        super().__init__(**kwargs)
        self._kwargs.update(initial_accumulator_value=self.initial_accumulator_value,
                            eps_inside_sqrt=self.eps_inside_sqrt)

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        hyper["lr_decay"] = check_number("lr_decay", hyper["lr_decay"])
        hyper["eps"] = check_number("eps", hyper["eps"])
        return hyper

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        fields["step_size"] = fields["lr"] / (1.0 + t * group["lr_decay"])
        return AdagradHyper(**fields, lr_decay=group["lr_decay"], eps=group["eps"])

    def slot_names(self, group):
        return ("sum",)

    def slot_initial_values(self, group):
        return {"sum": self.initial_accumulator_value}

    def direction(self, ops, h, params, grads, slots):
        s = slots["sum"]
        ops.addcmul_(s, grads, grads, 1.0)
        if self.eps_inside_sqrt:
            d = ops.clone(s)
            ops.add_(d, h.eps)
            ops.sqrt_(d)
        else:
            d = ops.sqrt_all(s)
            ops.add_(d, h.eps)
        return grads, d  # u = g / d

    def fused(self, h, plan, t):
        """torch.optim.Adagrad(fused=True)'s kernel ``_fused_adagrad_``: g ← g + wd·θ,
        s ← s + g², θ ← θ − lr/(1 + (k − 1)·lr_decay)·g/(√s + ε), k the 1-based step.
        It has ε outside the root only; a decoupled decay is applied by the engine
        before it."""
        if plan.penalty is not None or self.eps_inside_sqrt:
            return None
        wd, includes_decay = (h.coupled if plan.coupled else 0.0), True
        if plan.decoupled:
            wd, includes_decay = 0.0, False
        return FusedCall(
            "_fused_adagrad_", ("sum",),
            dict(lr=h.lr, lr_decay=h.lr_decay, weight_decay=wd, eps=h.eps, maximize=False,
                 grad_scale=None, found_inf=None),
            step=t + 1, includes_decay=includes_decay,
        )


def adagrad(
    lr=1e-2,
    lr_decay: float = 0.0,
    weight_decay=0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    decoupled: bool = False,
    regularizer=None,
    *,
    eps_inside_sqrt: bool = False,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> Adagrad:
    """Adagrad; the defaults and argument order are ``torch.optim.Adagrad``'s
    (coupled ``weight_decay=λ``).

    ``keras.optimizers.Adagrad(learning_rate, initial_accumulator_value=0.1,
    epsilon=1e-7, weight_decay=λ)`` is ``adagrad(lr, initial_accumulator_value=0.1,
    eps=1e-7, eps_inside_sqrt=True, weight_decay=λ, decoupled=True)``;
    ``optax.adagrad(lr)`` the same without decay. See :class:`Adagrad` for the math.
    """
    return Adagrad(
        lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value,
        eps=eps, decoupled=decoupled, regularizer=regularizer, eps_inside_sqrt=eps_inside_sqrt,
        decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite,
    )
