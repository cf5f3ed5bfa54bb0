"""Stochastic gradient descent with momentum, Nesterov and weight decay in any place."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import FusedCall, Hyper
from ..errors import DecayError
from ..validation import check_flag, check_number
from .base import Rule


@dataclass(frozen=True)
class SGDHyper(Hyper):
    momentum: float  #: μ
    dampening: float  #: τ, as given
    damp: float  #: the gradient's weight in the buffer this step: 1 at t = 0, else 1 − τ
    nesterov: bool


class SGD(Rule):
    """Gradient descent, PyTorch's ``torch.optim.SGD`` conventions.

    With gradient ``g`` (after coupled decay) and step ``t`` (0-based)::

        momentum μ > 0:   b ← g at t = 0, else b ← μ·b + (1 − τ)·g   (τ = dampening)
                          u ← g + μ·b if nesterov else b
        no momentum:      u ← g
        update:           θ ← θ − lr_t·u

    Weight decay is placed as for every rule (:mod:`decay.rules._decay`): coupled
    ``g ← g + λ_t·θ`` (PyTorch's ``weight_decay``) or ``g ← g + ∇penalty(θ)``
    (``regularizer=``), decoupled ``θ ← θ·(1 − s_t·λ_t)`` before the step.

    Keras's SGD keeps ``v ← μv − lr_t·g; θ ← θ + v``, which equals this only while lr is
    constant.
    """

    name = "sgd"
    hyper_names = ("lr", "weight_decay", "momentum", "dampening", "nesterov")
    Hyper = SGDHyper
    sparse_gradients = True  # as torch.optim.SGD: the step is the dense gradient's

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        hyper["momentum"] = mu = check_number("momentum", hyper["momentum"])
        hyper["dampening"] = tau = check_number("dampening", hyper["dampening"])
        hyper["nesterov"] = check_flag("nesterov", hyper["nesterov"])
        if hyper["nesterov"] and (mu <= 0 or tau != 0):
            raise DecayError(
                "Nesterov momentum requires momentum > 0 and dampening = 0. "
                f"Received: momentum={mu!r}, dampening={tau!r}."
            )
        return hyper

    def coefficients(self, group, t):
        # PyTorch starts the buffer at the first gradient, undamped: with the buffer at
        # zero, b ← μ·0 + 1·g does exactly that.
        return SGDHyper(
            **self.common_fields(group, t), momentum=group["momentum"], dampening=group["dampening"],
            damp=1.0 if t == 0 else 1.0 - group["dampening"], nesterov=group["nesterov"],
        )

    def slot_names(self, group):
        return ("momentum_buffer",) if group["momentum"] > 0 else ()

    def direction_is_gradient(self, group):
        return group["momentum"] == 0

    def direction(self, ops, h, params, grads, slots):
        buf = slots.get("momentum_buffer")
        if buf is None:
            return grads
        ops.mul_(buf, h.momentum)
        ops.add_(buf, grads, alpha=h.damp)
        return ops.add(grads, buf, alpha=h.momentum) if h.nesterov else buf

    def fused(self, h, plan, t):
        """torch.optim.SGD(fused=True)'s kernel: g ← g + wd·θ, the buffer, θ ← θ − lr·u.

        Its decay is coupled. A decoupled shrink is applied by the engine before it,
        except without momentum, where θ·(1 − f) − lr·g = θ − lr·(g + (f/lr)·θ): the
        kernel's coupled wd = f/lr is the same step (to rounding)."""
        if plan.penalty is not None:
            return None  # an L1 gradient is not in the kernel
        wd, includes_decay = (h.coupled if plan.coupled else 0.0), True
        if plan.decoupled:
            if h.momentum == 0 and not plan.coupled and h.lr > 0:
                wd = h.decay_factor / h.lr
            else:
                wd, includes_decay = 0.0, False
        return FusedCall(
            "_fused_sgd_", ("momentum_buffer",) if h.momentum > 0 else ("",),
            dict(weight_decay=wd, momentum=h.momentum, lr=h.lr, dampening=h.dampening, nesterov=h.nesterov,
                 maximize=False, is_first_step=h.momentum > 0 and t == 0, grad_scale=None, found_inf=None),
            includes_decay=includes_decay,
        )


def sgd(
    lr,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay=0.0,
    decoupled: bool = False,
    regularizer=None,
    *,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> SGD:
    """Gradient descent with weight decay in any of its three places.

    - In the loss: leave ``weight_decay=0`` and differentiate
      ``decay.regularized_loss(loss, params, decay.L2(lam))``; autodiff adds 2·lam·θ.
    - Coupled: ``weight_decay=λ`` adds λ·θ to each gradient (PyTorch), or
      ``regularizer=decay.L2(lam)`` adds 2·lam·θ (the article's "batch regularization",
      Keras's ``L2`` kernel regularizer). The two agree when λ = 2·lam.
    - Decoupled: ``decoupled=True`` shrinks θ ← θ·(1 − lr_t·λ) before the step (Keras 3
      ``weight_decay``); ``decay_scaled_by="schedule_multiplier"`` uses lr_t/lr_0 (the
      AdamW paper), ``"none"`` uses λ_t alone (TF-Addons SGDW).

    ``lr`` and ``weight_decay`` take numbers or schedules (callables step -> value);
    ``mask`` selects decayed parameters; ``groups`` gives per-group hyperparameters.

    Variants no framework has (:mod:`decay.rules._decay`): ``cautious_decay=True``
    (decoupled: decay only where u⊙θ ≥ 0, u the buffer, g + μ·b with Nesterov, or g),
    ``decay_scaled_by="corrected"`` (lr_t²/lr_max, ``lr_max`` defaulting to the lr's
    peak), ``decay_toward="init"`` or tensors θ₀ (decay toward θ₀ instead of 0).
    See :class:`SGD` for the update as math.

    Example::

        >>> import numpy as np, decay
        >>> x = np.array([1.0, 2.0, 3.0])
        >>> rule = decay.sgd(lr=0.01, regularizer=decay.L2(0.1))
        >>> state = rule.init(x)
        >>> for _ in range(100):
        ...     x, state = rule.step(x, 2 * x, state)   # loss Σx² has gradient 2x
        >>> np.allclose(x, np.array([1.0, 2.0, 3.0]) * (1 - 0.022) ** 100)
        True
    """
    return SGD(
        lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
        decoupled=decoupled, regularizer=regularizer, decay_scaled_by=decay_scaled_by, mask=mask, groups=groups,
        on_nonfinite=on_nonfinite, cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward,
    )
