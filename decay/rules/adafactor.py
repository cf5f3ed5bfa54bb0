"""Adafactor (Shazeer and Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear
Memory Cost"): Adam's second moment factored into a row and a column average for
matrices, the step scaled by the parameter's RMS and clipped by the update's own RMS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_choice, check_flag, check_number
from .base import Rule

#: ε₁ = None ("the dtype's"): torch's machine epsilon of the tensor's (compute) dtype
_MACHINE_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}
FACTORINGS = ("last_two", "largest_two")
#: convention -> its defaults (every other option is the same in the three versions)
CONVENTIONS = {
    "torch": dict(lr=1e-2, eps=None, eps_added_to_squares=False, relative_step=True, param_rms_after_decay=False,
                  factored_dims="last_two", min_dim_size_to_factor=1, decay_scaled_by="lr"),
    "keras": dict(lr=1e-3, eps=1e-30, eps_added_to_squares=True, relative_step=True, param_rms_after_decay=True,
                  factored_dims="last_two", min_dim_size_to_factor=1, decay_scaled_by="lr"),
    "optax": dict(lr=1.0, eps=1e-30, eps_added_to_squares=True, relative_step=False, param_rms_after_decay=False,
                  factored_dims="largest_two", min_dim_size_to_factor=128, decay_scaled_by="none"),
}


@dataclass(frozen=True)
class AdafactorHyper(Hyper):
    beta2: float  #: β̂_t = 1 − k^c (c = beta2_decay, k the 1-based step less decay_offset)
    one_minus_beta2: float  #: k^c, computed as such (no cancellation)
    eps1: float  #: ε₁ (0 when it is the dtype's machine epsilon)
    min_scale: float  #: ε₂: the parameter scale is max(ε₂, RMS(θ))
    rho: float  #: ρ_t = min(lr_t, 1/√(t+1)) with relative_step, else lr_t
    momentum: float  #: μ of the optional average of the updates (optax), else 0
    momentum_weight: float  #: (1 − μ)·ρ_t: m ← μ·m + (1 − μ)·ρ_t·u


class Adafactor(Rule):
    """Adafactor. With gradient ``g`` (after coupled decay), k = t + 1 − decay_offset,
    β̂ = 1 − k^c (c = ``beta2_decay``, −0.8), for a parameter whose two factored axes
    are (a, b) (``factored_dims``) and s = g² (+ ε₁ with ``eps_added_to_squares``)::

        R ← β̂·R + (1 − β̂)·mean_b(s)       C ← β̂·C + (1 − β̂)·mean_a(s)
        V = R·C / mean_a(R)                 (factored: R, C have size 1 along b, a)
        V ← β̂·V + (1 − β̂)·s                (not factored: a full accumulator)
        u = g / √V                          (torch: g / max(√V, ε₁), mean_a(R) ≥ ε₁)
        u ← u / max(1, RMS(u)/d)            (d = clip_threshold; None: no clipping)
        θ ← θ − ρ_t·max(ε₂, RMS(θ))·u       (ρ_t = min(lr_t, 1/√(t+1)) with relative_step)

    The versions differ in:

    - which axes are factored: torch and Keras the last two of any parameter of rank
      ≥ 2; optax the two largest, and only when both have ≥ ``min_dim_size_to_factor``
      (128) elements (``factored_dims="largest_two"``), else a full accumulator;
    - where ε₁ enters: the paper, Keras and optax add it to g² before averaging
      (``eps_added_to_squares=True``, ε₁ = 1e-30); torch floors mean_a(R) at ε₁ and
      √V at ε₁ (ε₁ = None: the machine epsilon of the tensor's dtype, as torch; float16
      and bfloat16 parameters are computed in float32 and take float32's);
    - the relative step: torch and Keras take ρ_t = min(lr_t, 1/√(t+1))
      (``relative_step=True``; Keras's own ``relative_step`` flag changes nothing in
      Keras 3: its step is this min either way), optax ρ_t = lr_t;
    - the parameter scale max(ε₂, RMS(θ)): every version has it (optax's
      ``multiply_by_parameter_scale``, ``scale_by_param_rms`` here); torch and optax read
      RMS(θ) before the weight decay shrinks θ, Keras after it
      (``param_rms_after_decay=True``: its base optimizer decays first);
    - weight decay, decoupled in all three: torch and Keras θ·(1 − lr_t·λ), optax
      θ·(1 − λ) (its ``weight_decay_rate`` is added to the update after the lr:
      ``decay_scaled_by="none"``);
    - optax's ``momentum``: m ← μ·m + (1 − μ)·ρ_t·scale·u, θ ← θ − m (the decay stays
      outside it).

    Clipping (``clip_threshold``, torch's ``d``) is the same in the three.
    """

    name = "adafactor"
    hyper_names = ("lr", "weight_decay", "beta2_decay")
    Hyper = AdafactorHyper
    elementwise = False  # per-tensor RMS, means over rows and columns

    def __init__(self, *, eps=None, eps_added_to_squares=False, min_param_scale=1e-3, clip_threshold=1.0,
                 relative_step=True, scale_by_param_rms=True, param_rms_after_decay=False, factored_dims="last_two",
                 min_dim_size_to_factor=1, decay_offset=0, momentum=None, **kwargs):
        self.eps = None if eps is None else check_number("eps", eps)
        self.eps_added_to_squares = check_flag("eps_added_to_squares", eps_added_to_squares)
        if self.eps is None and self.eps_added_to_squares:
            raise DecayError("eps=None (the dtype's machine epsilon) is torch's floor; with eps_added_to_squares=True "
                             "pass a number (Keras and optax: 1e-30).")
        self.min_param_scale = check_number("min_param_scale", min_param_scale)
        self.clip_threshold = None if clip_threshold is None else check_number("clip_threshold", clip_threshold)
        if self.clip_threshold is not None and self.clip_threshold <= 0:
            raise DecayError(f"`clip_threshold` must be > 0 (or None: no clipping). Received: {clip_threshold!r}.")
        self.relative_step = check_flag("relative_step", relative_step)
        self.scale_by_param_rms = check_flag("scale_by_param_rms", scale_by_param_rms)
        self.param_rms_after_decay = check_flag("param_rms_after_decay", param_rms_after_decay)
        self.factored_dims = None if factored_dims is None else check_choice("factored_dims", factored_dims, FACTORINGS)
        for key, value in (("min_dim_size_to_factor", min_dim_size_to_factor), ("decay_offset", decay_offset)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise DecayError(f"`{key}` must be an integer >= 0. Received: {key}={value!r}.")
        self.min_dim_size_to_factor, self.decay_offset = int(min_dim_size_to_factor), int(decay_offset)
        self.momentum = None if momentum is None else check_number("momentum", momentum, below=1.0)
        self._axes_cache: dict = {}
        super().__init__(**kwargs)
        self._kwargs.update(
            eps=self.eps, eps_added_to_squares=self.eps_added_to_squares, min_param_scale=self.min_param_scale,
            clip_threshold=self.clip_threshold, relative_step=self.relative_step,
            scale_by_param_rms=self.scale_by_param_rms, param_rms_after_decay=self.param_rms_after_decay,
            factored_dims=self.factored_dims, min_dim_size_to_factor=self.min_dim_size_to_factor,
            decay_offset=self.decay_offset, momentum=self.momentum,
        )
        if self._decays_in_direction() and (self.cautious_decay or self.decay_toward is not None):
            raise DecayError(
                "cautious_decay and decay_toward shrink θ outside the step; Adafactor reading RMS(θ) before the "
                "decay (torch, optax) shrinks it inside. Pass param_rms_after_decay=True (Keras's order) or "
                "scale_by_param_rms=False to combine them."
            )

    def _decays_in_direction(self) -> bool:
        # RMS(θ) is read before the decoupled shrink: the rule applies the shrink itself.
        return self.decoupled and self.scale_by_param_rms and not self.param_rms_after_decay

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        value = _number(hyper["beta2_decay"])
        if not (math.isfinite(value) and value <= 0):
            raise DecayError(f"`beta2_decay` must be a finite number <= 0 (β̂_t = 1 − t^c). Received: "
                             f"beta2_decay={hyper['beta2_decay']!r}.")
        hyper["beta2_decay"] = value
        return hyper

    def decay_plan(self, group, decayed):
        plan = super().decay_plan(group, decayed)
        if plan.decoupled and self._decays_in_direction():
            return plan._replace(in_direction=True)
        return plan

    def coefficients(self, group, t):
        fields = self.common_fields(group, t)
        k = t + 1 - self.decay_offset
        if k < 1:
            raise DecayError(f"Step {t} comes before decay_offset={self.decay_offset}: β̂_t = 1 − (t + 1 − offset)^c "
                             "has no value there. Nothing was updated. Lower decay_offset.")
        weight = float(k) ** group["beta2_decay"]
        lr = fields["lr"]
        rho = min(lr, 1.0 / math.sqrt(t + 1)) if self.relative_step else lr
        mu = 0.0 if self.momentum is None else self.momentum
        if self.momentum is not None:
            fields["step_size"] = 1.0  # ρ_t is inside the average: θ ← θ − m
        return AdafactorHyper(
            **fields, beta2=1.0 - weight, one_minus_beta2=weight, eps1=0.0 if self.eps is None else self.eps,
            min_scale=self.min_param_scale, rho=rho, momentum=mu, momentum_weight=(1.0 - mu) * rho,
        )

    # -- the slots: a row and a column for a factored parameter ------------------------
    def factored_axes(self, shape: tuple):
        """(a, b): the axes whose means are kept (R is averaged over b, C over a), or None
        for a full accumulator."""
        shape = tuple(shape)
        axes = self._axes_cache.get(shape, False)
        if axes is False:
            axes = None
            if self.factored_dims is not None and len(shape) >= 2:
                if self.factored_dims == "last_two":
                    a, b = len(shape) - 2, len(shape) - 1
                else:  # optax's _factored_dims: np.argsort of the shape, ties as it breaks them
                    order = np.argsort(shape)
                    a, b = int(order[-2]), int(order[-1])
                if min(shape[a], shape[b]) >= max(self.min_dim_size_to_factor, 1):
                    axes = (a, b)
            self._axes_cache[shape] = axes
        return axes

    def slot_names(self, group):
        return ("row_var", "col_var", "variance") + (() if self.momentum is None else ("momentum",))

    def slot_shapes(self, group, shape):
        axes = self.factored_axes(shape)
        if axes is None:
            out = {"variance": tuple(shape)}
        else:
            row, col = list(shape), list(shape)
            row[axes[1]], col[axes[0]] = 1, 1
            out = {"row_var": tuple(row), "col_var": tuple(col)}  # torch's shapes for the last two
        if self.momentum is not None:
            out["momentum"] = tuple(shape)
        return out

    # -- the math -----------------------------------------------------------------------
    def direction(self, ops, h, params, grads, slots, decay=False):
        shapes = [tuple(ops.shape(p)) for p in params]
        scale = None
        if self.scale_by_param_rms:
            scale = _rms(ops, params, shapes)
            ops.clamp_min_(scale, h.min_scale)
        if decay:  # the decoupled shrink, after RMS(θ) was read (engine: plan.in_direction)
            ops.mul_(params, 1.0 - h.decay_factor)
        floors = self.eps is None or not self.eps_added_to_squares
        eps = h.eps1 if self.eps is not None else [_MACHINE_EPS[ops.dtype_name(p)] for p in params]
        if "row_var" in slots:  # a part holds factored leaves only (engine.partition)
            v = self._factored(ops, h, grads, slots, shapes, eps)
        else:
            squares = ops.mul(grads, grads)
            if self.eps_added_to_squares:
                ops.add_(squares, h.eps1)
            _average(ops, h, slots["variance"], squares)
            v = ops.mul(slots["variance"], 1.0)  # a copy the step may write
        if floors:  # torch: 1/√max(V, ε₁²)
            ops.clamp_min_(v, [e * e for e in eps] if isinstance(eps, list) else eps * eps)
        ops.rsqrt_(v)
        ops.mul_(v, grads)  # u = g/√V, written into V's list
        factor = scale
        if self.clip_threshold is not None:  # u / max(1, RMS(u)/d), one pass with the scale
            excess = _rms(ops, v, shapes)
            ops.div_(excess, self.clip_threshold)
            ops.clamp_min_(excess, 1.0)
            if factor is None:
                ops.div_(v, excess)
            else:
                ops.div_(factor, excess)
        if factor is not None:
            ops.mul_(v, factor)
        if self.momentum is None:
            return v
        m = slots["momentum"]
        ops.mul_(m, h.momentum)
        ops.add_(m, v, alpha=h.momentum_weight)
        return m

    def _factored(self, ops, h, grads, slots, shapes, eps) -> list:
        """R, C updated in place; returns V = R·C/mean_a(R) (a new list, broadcast to the
        parameters' shapes)."""
        first, second = map(list, zip(*(self.factored_axes(s) for s in shapes)))
        row, col = slots["row_var"], slots["col_var"]
        row_new, col_new = ops.mean_squares_all(grads, second), ops.mean_squares_all(grads, first)
        if self.eps_added_to_squares:  # mean(g² + ε) = mean(g²) + ε
            ops.add_(row_new, h.eps1)
            ops.add_(col_new, h.eps1)
        _average(ops, h, row, row_new)
        _average(ops, h, col, col_new)
        v = ops.mul(row, col)
        norm = ops.mean_all(row, first)
        if self.eps is None or not self.eps_added_to_squares:
            ops.clamp_min_(norm, eps)
        ops.div_(v, norm)
        return v

    def __repr__(self):
        options = ", ".join(f"{k}={self._kwargs[k]!r}" for k in (
            "eps", "eps_added_to_squares", "min_param_scale", "clip_threshold", "relative_step",
            "scale_by_param_rms", "param_rms_after_decay", "factored_dims", "min_dim_size_to_factor",
            "decay_offset", "momentum"))
        return f"{super().__repr__()[:-1]}, {options})"


def _average(ops, h, x: list, new: list) -> None:
    """x ← β̂·x + (1 − β̂)·new."""
    ops.mul_(x, h.beta2)
    ops.add_(x, new, alpha=h.one_minus_beta2)


def _rms(ops, xs: list, shapes: list) -> list:
    """A new list of 0-d RMS(x) = ‖x‖/√n (torch's order: the norm, then the division)."""
    out = ops.norm_all(xs)
    ops.div_(out, [math.sqrt(max(math.prod(s), 1)) for s in shapes])
    return out


def _number(value) -> float:
    """``beta2_decay`` as a float (it may be negative: check_number takes numbers >= 0)."""
    if isinstance(value, (bool, str)) or callable(value):
        raise DecayError(f"`beta2_decay` must be a real number <= 0. Received: beta2_decay={value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DecayError(f"`beta2_decay` must be a real number <= 0. Received: beta2_decay={value!r}.") from None


def adafactor(
    lr=None,
    beta2_decay=-0.8,
    eps=False,
    clip_threshold=1.0,
    weight_decay=0.0,
    decoupled: bool = True,
    regularizer=None,
    *,
    convention: str = "torch",
    min_param_scale=1e-3,
    eps_added_to_squares=None,
    relative_step=None,
    scale_by_param_rms: bool = True,
    param_rms_after_decay=None,
    factored_dims=False,
    min_dim_size_to_factor=None,
    decay_offset: int = 0,
    momentum=None,
    decay_scaled_by=None,
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> Adafactor:
    """Adafactor (see :class:`Adafactor` for the math and where the versions differ).
    ``convention`` picks a framework's version; every option left unset takes its value:

    - ``"torch"`` — ``torch.optim.Adafactor(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3),
      d=1.0, weight_decay)`` is ``decay.adafactor(lr, beta2_decay, eps=eps[0],
      clip_threshold=d, weight_decay=weight_decay, min_param_scale=eps[1])``: last two
      axes factored, ε₁ as floors (None: the dtype's machine epsilon), relative step,
      RMS(θ) before the decay θ·(1 − lr_t·λ).
    - ``"keras"`` — ``keras.optimizers.Adafactor(learning_rate=1e-3, beta_2_decay,
      epsilon_1=1e-30, epsilon_2, clip_threshold, weight_decay)`` is
      ``decay.adafactor(learning_rate, beta_2_decay, epsilon_1, clip_threshold,
      weight_decay or 0.0, min_param_scale=epsilon_2, convention="keras")``: ε₁ added to
      g², RMS(θ) after the decay. Keras computes in float32 and casts its
      hyperparameters there: pick values exact in float32 for equal numbers.
    - ``"optax"`` — ``optax.adafactor(learning_rate=None, min_dim_size_to_factor=128,
      decay_rate=0.8, decay_offset=0, multiply_by_parameter_scale=True,
      clipping_threshold=1.0, momentum=None, weight_decay_rate=None, eps=1e-30,
      factored=True, weight_decay_mask)`` is ``decay.adafactor(learning_rate or 1.0,
      -decay_rate, eps, clipping_threshold, weight_decay_rate or 0.0,
      convention="optax", min_dim_size_to_factor=..., decay_offset=...,
      scale_by_param_rms=multiply_by_parameter_scale, momentum=momentum,
      factored_dims=None if not factored else "largest_two", mask=weight_decay_mask)``:
      the two largest axes factored when both have ≥ 128 elements, no relative step,
      decay θ·(1 − λ) (``decay_scaled_by="none"``). optax keeps β̂_t in float32 and, by
      default, its momentum in float32 (``dtype_momentum``).

    ``clip_threshold=None`` turns clipping off; ``decoupled=False`` adds λθ to the
    gradient instead (``regularizer=`` a penalty's gradient).
    """
    check_choice("convention", convention, tuple(CONVENTIONS))
    d = CONVENTIONS[convention]

    def pick(value, key, unset=None):
        return d[key] if value is unset else value

    return Adafactor(
        lr=pick(lr, "lr"), beta2_decay=beta2_decay, eps=pick(eps, "eps", False), clip_threshold=clip_threshold,
        weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer, min_param_scale=min_param_scale,
        eps_added_to_squares=pick(eps_added_to_squares, "eps_added_to_squares"),
        relative_step=pick(relative_step, "relative_step"), scale_by_param_rms=scale_by_param_rms,
        param_rms_after_decay=pick(param_rms_after_decay, "param_rms_after_decay"),
        factored_dims=pick(factored_dims, "factored_dims", False),
        min_dim_size_to_factor=pick(min_dim_size_to_factor, "min_dim_size_to_factor"), decay_offset=decay_offset,
        momentum=momentum, decay_scaled_by=pick(decay_scaled_by, "decay_scaled_by"), mask=mask, groups=groups,
        on_nonfinite=on_nonfinite, cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward,
    )
