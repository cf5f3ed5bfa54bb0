"""Stochastic gradient descent with momentum, Nesterov and weight decay in any place."""

from __future__ import annotations

from ..errors import DecayError
from ..validation import check_number
from .base import Rule


class SGD(Rule):
    """Gradient descent, PyTorch's ``torch.optim.SGD`` conventions.

    With gradient ``g`` of the (possibly regularized) loss and step ``t`` (0-based)::

        coupled decay:    g ← g + λ_t·θ            (weight_decay=λ, PyTorch's convention)
                          g ← g + ∇penalty(θ)      (regularizer=, e.g. L2(lam): g + 2·lam·θ)
        decoupled decay:  θ ← θ·(1 − s_t·λ_t)      (decoupled=True; s_t from decay_scaled_by)
        momentum μ > 0:   b ← g at t = 0, else b ← μ·b + (1 − τ)·g   (τ = dampening)
                          d ← g + μ·b if nesterov else b
        no momentum:      d ← g
        update:           θ ← θ − lr_t·d

    Keras's SGD keeps ``v ← μv − lr_t·g; θ ← θ + v``, which equals this only while lr is
    constant.
    """

    name = "sgd"
    hyper_names = ("lr", "weight_decay", "momentum", "dampening", "nesterov")
    step_keys = Rule.step_keys + ("damp",)

    def _check_hyper(self, hyper):
        hyper = super()._check_hyper(hyper)
        hyper["momentum"] = mu = check_number("momentum", hyper["momentum"])
        hyper["dampening"] = tau = check_number("dampening", hyper["dampening"])
        hyper["nesterov"] = bool(hyper["nesterov"])
        if hyper["nesterov"] and (mu <= 0 or tau != 0):
            raise DecayError(
                "Nesterov momentum requires momentum > 0 and dampening = 0. "
                f"Received: momentum={mu!r}, dampening={tau!r}."
            )
        return hyper

    def hyper_at(self, hyper, t):
        h = super().hyper_at(hyper, t)
        # PyTorch starts the buffer at the first gradient, undamped: with the buffer at
        # zero, b ← μ·0 + 1·g does exactly that.
        h["damp"] = 1.0 if t == 0 else 1.0 - hyper["dampening"]
        return h

    def slots_for(self, hyper):
        return ("momentum_buffer",) if hyper["momentum"] > 0 else ()

    def _update(self, backend, p, g, slots, h):
        mu = h["momentum"]
        if mu > 0:
            buf = slots["momentum_buffer"] * mu + g * h["damp"]
            slots = {"momentum_buffer": buf}
            g = g + buf * mu if h["nesterov"] else buf
        return p - g * h["lr"], slots


    def kernel_spec(self, h, decayed):
        coupled = self._coupled_penalty_coefficient(decayed)
        if coupled is None:
            return None
        pre_scale = 1.0
        if decayed and h["_decays"]:
            if not self.decoupled:
                coupled += h["weight_decay"]
            elif h["momentum"] == 0 and h["lr"] > 0:
                # Plain SGD: θ(1 − f) − lr·g = θ − lr·(g + (f/lr)·θ), decoupled is coupled.
                coupled += h["decoupled_factor"] / h["lr"]
            elif self.regularizer is None:
                pre_scale = h["decoupled_keep"]  # shrink θ first, then the momentum step
            else:
                return None  # the penalty's gradient is taken before the shrink
        return {
            "kind": "sgd",
            "lr": h["lr"],
            "weight_decay": coupled,
            "momentum": h["momentum"],
            "dampening": h["dampening"],
            "nesterov": h["nesterov"],
            "first_step": h["step"] == 0,
            "pre_scale": pre_scale,
        }


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
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
        decoupled=decoupled,
        regularizer=regularizer,
        decay_scaled_by=decay_scaled_by,
        mask=mask,
        groups=groups,
        on_nonfinite=on_nonfinite,
    )
