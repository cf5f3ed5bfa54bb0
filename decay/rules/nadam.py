"""NAdam (Dozat, 2016) with PyTorch's, Keras's or a constant momentum schedule."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_betas_and_eps, check_choice, check_number
from .adam import adam_moments
from .base import Rule

#: μ_k = β1·(1 − ½·0.96^(k·ψ)), k the 1-based step: "torch" ψ = momentum_decay (4e-3 by
#: default, Dozat's 1/250); "keras" ψ = 1 (Keras 3's Nadam); "constant" μ_k = β1
#: (optax.nadam, Adam with a Nesterov step).
MOMENTUM_SCHEDULES = ("torch", "keras", "constant")


@dataclass(frozen=True)
class NAdamHyper(Hyper):
    beta1: float
    beta2: float
    eps: float
    momentum_ratio: float  #: c_m/c_g: c_g = (1 − μ_k)/(1 − Π_{i≤k} μ_i), c_m = μ_{k+1}/(1 − Π_{i≤k+1} μ_i)
    bias_correction2_sqrt: float  #: √(1 − β2^k)


class _Products:
    """Π_{i≤k} μ_i, advanced from the nearest product already computed, multiplied in
    the order torch multiplies its ``mu_product`` (so the numbers are its numbers)."""

    def __init__(self):
        self._known: dict = {}
        self._lock = threading.Lock()

    def __call__(self, mu, key, k: int) -> float:
        with self._lock:
            known = self._known.setdefault(key, {0: 1.0})
            start = max(j for j in known if j <= k)
            product = known[start]
            for i in range(start + 1, k + 1):
                product *= mu(i)
            if len(known) > 64:  # keep the start and the recent ones
                for j in sorted(known)[1:-32]:
                    del known[j]
            known[k] = product
            return product


class NAdam(Rule):
    """NAdam, ``torch.optim.NAdam``'s conventions by default.

    With gradient ``g`` (after coupled decay; decoupled decay θ ← θ·(1 − lr_t·λ) first,
    which is torch's ``decoupled_weight_decay=True``), k = t + 1 and the momentum
    schedule μ_k (``momentum_schedule``)::

        μ_k = β1·(1 − ½·0.96^(k·ψ))   "torch": ψ = momentum_decay; "keras": ψ = 1
        μ_k = β1                       "constant": optax.nadam
        m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
        d = √(v/(1 − β2^k)) + ε
        θ ← θ − lr_t·[(1 − μ_k)/(1 − Π_{i≤k} μ_i)·g + μ_{k+1}/(1 − Π_{i≤k+1} μ_i)·m] / d

    The products are computed in Python float64 (torch keeps its ``mu_product`` in
    float32 unless the default dtype is float64, Keras in the variables' dtype; Keras
    also rounds the 0.96 in μ_k, not in its product, to float32: 3.4e-8 relative after
    100 float64 steps, measured).
    """

    name = "nadam"
    hyper_names = ("lr", "weight_decay", "betas", "eps", "momentum_decay")
    Hyper = NAdamHyper

    def __init__(self, *, momentum_schedule="torch", **kwargs):
        self.momentum_schedule = check_choice("momentum_schedule", momentum_schedule, MOMENTUM_SCHEDULES)
        self._products = _Products()
        super().__init__(**kwargs)
        self._kwargs.update(momentum_schedule=self.momentum_schedule)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_products", None)  # a cache (and a lock, which cannot be pickled)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._products = _Products()

    def check_group(self, hyper):
        hyper = check_betas_and_eps(super().check_group(hyper))
        psi = hyper["momentum_decay"]
        if psi is None:
            psi = 1.0 if self.momentum_schedule == "keras" else 4e-3
        hyper["momentum_decay"] = psi = check_number("momentum_decay", psi)
        if self.momentum_schedule == "keras" and psi != 1.0:
            raise DecayError(
                "momentum_schedule='keras' is μ_k = β1·(1 − ½·0.96^k), i.e. momentum_decay=1; "
                f"received momentum_decay={psi!r}. Leave it unset, or use momentum_schedule='torch'."
            )
        return hyper

    def _mu(self, group):
        beta1, psi = group["betas"][0], group["momentum_decay"]
        if self.momentum_schedule == "constant":
            return lambda k: beta1
        return lambda k: beta1 * (1.0 - 0.5 * (0.96 ** (k * psi)))

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        beta1, beta2 = group["betas"]
        k = t + 1
        mu = self._mu(group)
        product = self._products(mu, (beta1, group["momentum_decay"]), k)
        mu_k, mu_next = mu(k), mu(k + 1)
        # θ ← θ − lr·(c_g·g + c_m·m)/d = θ − (lr·c_g)·(g + (c_m/c_g)·m)/d. c_g > 0
        # (μ_k ≤ β1 < 1); c_m is 0 when β1 is.
        grad_weight = (1.0 - mu_k) / (1.0 - product)
        fields["step_size"] = fields["lr"] * grad_weight
        return NAdamHyper(
            **fields, beta1=beta1, beta2=beta2, eps=group["eps"],
            momentum_ratio=mu_next / (1.0 - product * mu_next) / grad_weight,
            bias_correction2_sqrt=math.sqrt(1.0 - beta2**k),
        )

    def slot_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def direction(self, ops, h, params, grads, slots):
        m, v = adam_moments(ops, h, grads, slots)
        d = ops.sqrt_all(v)
        ops.div_(d, h.bias_correction2_sqrt)
        ops.add_(d, h.eps)
        # u = (g + (c_m/c_g)·m) / d, as two terms: θ takes one addcdiv per term, as in
        # torch's NAdam, and no numerator is formed (a temporary the size of the weights)
        return ((grads, 1.0), (m, h.momentum_ratio)), d


def nadam(
    lr=2e-3,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    weight_decay=0.0,
    momentum_decay: float | None = None,
    decoupled: bool = False,
    regularizer=None,
    *,
    momentum_schedule: str = "torch",
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
) -> NAdam:
    """NAdam; the defaults are ``torch.optim.NAdam``'s (``momentum_decay`` 4e-3).

    - ``torch.optim.NAdam(weight_decay=λ)``: coupled, ``nadam(lr, weight_decay=λ)``;
      ``decoupled_weight_decay=True``: ``nadam(lr, weight_decay=λ, decoupled=True)``.
    - ``keras.optimizers.Nadam(learning_rate, beta_1, beta_2, epsilon,
      weight_decay=λ)``: ``nadam(lr, (beta_1, beta_2), epsilon, weight_decay=λ,
      decoupled=True, momentum_schedule="keras")``.
    - ``optax.nadam(lr, b1, b2, eps)``: ``nadam(lr, (b1, b2), eps,
      momentum_schedule="constant")``; ``optax.nadamw(..., weight_decay=λ)`` adds
      ``weight_decay=λ, decoupled=True``.

    See :class:`NAdam` for the math.
    """
    return NAdam(
        lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay, decoupled=decoupled,
        regularizer=regularizer, momentum_schedule=momentum_schedule, decay_scaled_by=decay_scaled_by, mask=mask,
        groups=groups, on_nonfinite=on_nonfinite,
    )
