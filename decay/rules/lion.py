"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): the sign
of an interpolation between the momentum and the gradient."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_number
from .base import Rule


@dataclass(frozen=True)
class LionHyper(Hyper):
    beta1: float  #: weight of the momentum in the sign's argument
    beta2: float  #: decay of the momentum


class Lion(Rule):
    """Lion, as Keras's ``keras.optimizers.Lion`` and optax's ``optax.lion``.

    With gradient ``g`` (after coupled decay) and decoupled decay θ ← θ·(1 − s_t·λ_t)
    applied first (:mod:`decay.rules._decay`)::

        c ← β1·m + (1 − β1)·g
        θ ← θ − lr_t·sign(c)
        m ← β2·m + (1 − β2)·g

    Every version computes this step: the paper's Algorithm 1, Keras 3 (its
    ``weight_decay`` shrinks θ by lr_t·λ before the step) and optax
    (``u = −lr_t·(sign(c) + λθ)``, the same θ·(1 − lr_t·λ) − lr_t·sign(c)) — the decay
    is outside the sign in all of them. They differ in their defaults (Keras lr 1e-3, no
    decay; optax decay 1e-3; the paper lr 1e-4) and in rounding: Keras casts lr, λ, β1
    and β2 to float32 (:func:`decay.lion` says how to pick values exact there).
    """

    name = "lion"
    hyper_names = ("lr", "weight_decay", "betas")
    Hyper = LionHyper

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise DecayError(f"`betas` must be a pair (beta1, beta2). Received: betas={betas!r}.")
        beta1, beta2 = check_number("betas[0]", betas[0]), check_number("betas[1]", betas[1])
        if not (0.0 < beta1 <= 1.0 and beta2 <= 1.0):
            # β1 = 0 is signSGD (Keras refuses it too); β > 1 makes the momentum grow.
            raise DecayError(
                f"Lion's `betas` must satisfy 0 < beta1 <= 1 and 0 <= beta2 <= 1. Received: betas={betas!r}."
            )
        hyper["betas"] = (beta1, beta2)
        return hyper

    def coefficients(self, group, t):
        beta1, beta2 = group["betas"]
        return LionHyper(**self.common_fields(group, t), beta1=beta1, beta2=beta2)

    def slot_names(self, group):
        return ("exp_avg",)

    def direction(self, ops, h, params, grads, slots):
        m = slots["exp_avg"]
        c = ops.mul(m, h.beta1)  # β1·m + (1 − β1)·g, in Keras's and optax's order
        ops.add_(c, grads, alpha=1.0 - h.beta1)
        ops.sign_(c)  # in place: a second fresh list the size of the weights costs its page faults
        ops.mul_(m, h.beta2)
        ops.add_(m, grads, alpha=1.0 - h.beta2)
        return c


def lion(
    lr=1e-4,
    betas=(0.9, 0.99),
    weight_decay=0.0,
    decoupled: bool = True,
    regularizer=None,
    *,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> Lion:
    """Lion: θ ← θ·(1 − lr_t·λ) − lr_t·sign(β1·m + (1 − β1)·g), m ← β2·m + (1 − β2)·g.

    Weight decay is decoupled by default, as in every framework's Lion; pass
    ``decoupled=False`` to add λθ to the gradient instead (inside the sign), or
    ``regularizer=`` for a penalty's gradient. The defaults are the paper's (lr 1e-4,
    β = (0.9, 0.99)). To reproduce:

    - ``keras.optimizers.Lion(learning_rate, beta_1, beta_2, weight_decay)``:
      ``decay.lion(learning_rate, (beta_1, beta_2), weight_decay or 0.0)``; Keras
      casts these to float32, so they agree to float64 round-off when they are exact in
      float32 (0.875, 2⁻¹⁰), else to float32 rounding.
    - ``optax.lion(learning_rate, b1, b2, weight_decay=1e-3, mask=...)``:
      ``decay.lion(learning_rate, (b1, b2), weight_decay, mask=...)``.

    See :class:`Lion` for the update as math. A suitable lr is 3–10× smaller than
    AdamW's, and λ 3–10× larger (the paper).
    """
    return Lion(
        lr=lr, betas=betas, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
        decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite,
        cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward,
    )
