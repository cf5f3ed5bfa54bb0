"""Adam and AdamW, with PyTorch's or Keras's placement of ε."""

from __future__ import annotations

import math

from dataclasses import dataclass

from ..engine import FusedCall, Hyper
from ..errors import DecayError
from ..validation import check_betas_and_eps, check_flag
from .base import Rule


@dataclass(frozen=True)
class AdamHyper(Hyper):
    beta1: float
    beta2: float
    eps: float
    bias_correction2_sqrt: float  #: √(1 − β2^k), k = t + 1


class Adam(Rule):
    """Adam, PyTorch's ``torch.optim.Adam``/``AdamW`` conventions by default.

    With gradient ``g`` (after coupled decay), k = t + 1 the 1-based step, and
    decoupled decay θ ← θ·(1 − s_t·λ_t) applied first (:mod:`decay.rules._decay`)::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        v_max ← max(v_max, v); use v_max for v           (amsgrad: max of v, not of v̂)
        θ ← θ − lr_t/(1 − β1^k) · m / (√v/√(1 − β2^k) + ε)       (PyTorch, optax)

    With ``epsilon_hat=True`` ε is added outside the bias correction, as Keras and
    TF-Addons do (Kingma & Ba's "ε̂")::

        θ ← θ − lr_t·√(1 − β2^k)/(1 − β1^k) · m / (√v + ε)

    No constant ε makes the two placements equal; they differ most in early steps and
    where √v is small.
    """

    name = "adam"
    hyper_names = ("lr", "weight_decay", "betas", "eps")
    Hyper = AdamHyper

    def __init__(self, *, amsgrad=False, epsilon_hat=False, **kwargs):
        self.amsgrad = check_flag("amsgrad", amsgrad)
        self.epsilon_hat = check_flag("epsilon_hat", epsilon_hat)
        super().__init__(**kwargs)
        self._kwargs.update(amsgrad=self.amsgrad, epsilon_hat=self.epsilon_hat)

    def check_group(self, hyper):
        return check_betas_and_eps(super().check_group(hyper))

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        beta1, beta2 = group["betas"]
        k = t + 1
        correction1, correction2_sqrt = 1.0 - beta1**k, math.sqrt(1.0 - beta2**k)
        scale = correction2_sqrt / correction1 if self.epsilon_hat else 1.0 / correction1
        fields["step_size"] = fields["lr"] * scale
        return AdamHyper(**fields, beta1=beta1, beta2=beta2, eps=group["eps"], bias_correction2_sqrt=correction2_sqrt)

    def slot_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def direction(self, ops, h, params, grads, slots):
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        ops.mul_(m, h.beta1)
        ops.add_(m, grads, alpha=1.0 - h.beta1)
        ops.mul_(v, h.beta2)
        ops.addcmul_(v, grads, grads, 1.0 - h.beta2)
        if self.amsgrad:
            ops.maximum_(slots["max_exp_avg_sq"], v)
            v = slots["max_exp_avg_sq"]
        denom = ops.sqrt_all(v)
        if not self.epsilon_hat:
            ops.div_(denom, h.bias_correction2_sqrt)
        ops.add_(denom, h.eps)
        return m, denom  # u = m / denom

    def fused(self, h, plan, t):
        """torch.optim.Adam/AdamW(fused=True)'s kernels. ``_fused_adamw_`` shrinks θ by
        lr·wd (decay_scaled_by="lr"); ``_fused_adam_`` adds wd·θ to g. Other decoupled
        scalings are applied by the engine before ``_fused_adam_``. ε-hat maps to ε/√bc2:
        lr·√bc2/bc1 · m/(√v + ε̂) = lr/bc1 · m/(√v/√bc2 + ε̂/√bc2)."""
        if plan.penalty is not None:
            return None  # an L1 gradient is not in the kernels
        kernel, wd, includes_decay = "_fused_adam_", (h.coupled if plan.coupled else 0.0), True
        if plan.decoupled:
            if not plan.coupled and self.decay_scaled_by == "lr":
                kernel, wd = "_fused_adamw_", h.weight_decay
            else:
                wd, includes_decay = 0.0, False
        eps = h.eps / h.bias_correction2_sqrt if self.epsilon_hat else h.eps
        return FusedCall(
            kernel, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if self.amsgrad else ""),
            dict(amsgrad=self.amsgrad, lr=h.lr, beta1=h.beta1, beta2=h.beta2, weight_decay=wd, eps=eps,
                 maximize=False, grad_scale=None, found_inf=None),
            step=t + 1, includes_decay=includes_decay,
        )


def adam_moments(ops, h, grads, slots) -> tuple:
    """m ← m + (1 − β1)·(g − m) (torch's lerp), v ← β2·v + (1 − β2)·g², in place; the
    moments NAdam and RAdam share. Returns (m, v)."""
    m, v = slots["exp_avg"], slots["exp_avg_sq"]
    ops.lerp_(m, grads, 1.0 - h.beta1)
    ops.mul_(v, h.beta2)
    ops.addcmul_(v, grads, grads, 1.0 - h.beta2)
    return m, v


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: :func:`decay.adamw`."""

    name = "adamw"

    def __init__(self, **kwargs):
        if "decoupled" in kwargs and kwargs.pop("decoupled") is not True:
            raise DecayError("AdamW's weight decay is decoupled; use decay.adam for coupled decay.")
        super().__init__(decoupled=True, **kwargs)


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
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
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
        cautious_decay=cautious_decay,
        lr_max=lr_max,
        decay_toward=decay_toward,
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
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> "AdamW":
    """AdamW: Adam with decoupled decay θ ← θ·(1 − lr_t·λ) before the step.

    Defaults equal ``torch.optim.AdamW`` (weight_decay 1e-2). For
    ``keras.optimizers.AdamW`` use ``weight_decay=0.004, eps=1e-7, epsilon_hat=True``;
    for ``optax.adamw`` ``weight_decay=1e-4``; for the paper's rule
    ``decay_scaled_by="schedule_multiplier"``; for TF-Addons ``decay_scaled_by="none"``.

    Variants no framework has (:mod:`decay.rules._decay`): ``cautious_decay=True``
    (Chen et al., 2025: decay only where u⊙θ ≥ 0, u = m̂/(√v̂ + ε)),
    ``decay_scaled_by="corrected"`` (Defazio's AdamC: lr_t²/lr_max, ``lr_max`` defaulting
    to the lr's peak), ``decay_toward="init"`` or tensors θ₀ (L2-SP: toward θ₀).
    """
    return AdamW(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        regularizer=regularizer,
        epsilon_hat=epsilon_hat,
        decay_scaled_by=decay_scaled_by,
        mask=mask,
        groups=groups,
        on_nonfinite=on_nonfinite,
        cautious_decay=cautious_decay,
        lr_max=lr_max,
        decay_toward=decay_toward,
    )
