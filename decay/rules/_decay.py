"""Where weight decay sits — in the loss, coupled into the gradient, or decoupled — for
every rule alike, written once.

A rule's own file never mentions weight decay: the engine applies the
:class:`decay.engine.DecayPlan` made here before the rule's direction
(:func:`decay.engine.apply_decay`), with the numbers :func:`common_fields` puts into
each step's :class:`decay.engine.Hyper`.

The variants no framework ships, on every rule alike (``Rule(..., cautious_decay=,
lr_max=, decay_toward=)``):

- cautious (Chen et al., 2025): θ ← θ − f·𝟙[u⊙θ ≥ 0]⊙θ − s·u, with u the rule's own
  direction (what it steps by: AdamW m̂/(√v̂ + ε), SGD the momentum buffer or, with
  Nesterov, g + μ·b, or g without momentum; for a rule the paper does not cover, the
  same: its direction) and f the decoupled factor of the chosen scaling (η_t·λ in the
  paper). Decoupled decay only. A declared kernel cannot run it (the plan's
  ``cautious``): the engine runs the definition.
- corrected (Defazio, 2025, AdamC): ``decay_scaled_by="corrected"``, f = lr_t²/lr_max·λ_t.
- toward a reference (L2-SP, Li et al., 2018): ``decay_toward`` — coupled
  g ← g + λ_t·(θ − θ₀), decoupled θ ← θ − f·(θ − θ₀); with cautious decay the mask is
  𝟙[u⊙(θ − θ₀) ≥ 0] (the sign of the decay's own term). A regularizer's L2 part still
  pulls toward 0. θ₀ lives in the state slot ``decay.engine.REFERENCE_SLOT``
  (:mod:`decay.rules._reference`).
"""

from __future__ import annotations

import math

from ..engine import DecayPlan
from ..errors import DecayError
from ..validation import scheduled_value

#: How decoupled decay θ ← θ − s_t·λ_t·θ is scaled:
#: "lr": s_t = lr_t (PyTorch AdamW, Keras 3, optax); "schedule_multiplier":
#: s_t = lr_t / lr_0 (the AdamW paper, Composer); "none": s_t = 1 (TF-Addons);
#: "corrected": s_t = lr_t² / lr_max (Defazio, 2025, "AdamC"; no framework has it).
DECAY_SCALINGS = ("lr", "schedule_multiplier", "none", "corrected")

NO_DECAY = DecayPlan()


def decays(group: dict) -> bool:
    """Whether a group's weight decay can act: decided once, not per step, so that the
    math never branches on a step's value (it also traces into a compiled graph)."""
    wd = group["weight_decay"]
    return callable(wd) or wd > 0


def plan(rule, group: dict, decayed: bool) -> DecayPlan:
    """The decay placement for leaves of ``group`` that the mask decays (or not)."""
    if not decayed:
        return NO_DECAY
    penalty = rule.regularizer
    rest = None if penalty is None else penalty.without_l2()
    coupled_penalty = penalty is not None and penalty.l2 > 0
    if not decays(group):
        return DecayPlan(coupled=coupled_penalty, penalty=rest)
    toward = rule.decay_toward is not None
    if rule.decoupled:
        return DecayPlan(coupled=coupled_penalty, penalty=rest, decoupled=True, cautious=rule.cautious_decay,
                         toward=toward)
    return DecayPlan(coupled=True, penalty=rest, toward=toward)


def common_fields(rule, group: dict, t: int) -> dict:
    """The :class:`decay.engine.Hyper` fields every rule shares, for step ``t``, with
    ``step_size`` = lr_t (rules whose step is scaled otherwise replace it)."""
    lr = scheduled_value("lr", group["lr"], t)
    wd = scheduled_value("weight_decay", group["weight_decay"], t)
    penalty = rule.regularizer
    coupled = 0.0 if penalty is None else penalty.coupled_weight_decay()
    if not rule.decoupled:
        coupled += wd
    if rule.decay_scaled_by == "lr":
        factor = lr * wd
    elif rule.decay_scaled_by == "schedule_multiplier":
        factor = (lr / group["_lr0"]) * wd
    elif rule.decay_scaled_by == "corrected":
        factor = (lr * lr / _checked_peak(group["_lr_max"], lr, t)) * wd
    else:
        factor = wd
    return dict(lr=lr, weight_decay=wd, coupled=coupled, decay_factor=factor, step_size=lr)


def base_lr(lr) -> float:
    """lr_0 of the paper's schedule multiplier η_t = lr_t / lr_0."""
    if not callable(lr):
        base = lr
    else:
        base = getattr(lr, "base", None)
        if base is None:
            base = lr(0)
    base = float(base)
    if not (base > 0 and math.isfinite(base)):
        raise DecayError(
            "With decay_scaled_by='schedule_multiplier' the base learning rate `lr` must be > 0 "
            f"(the decay is scaled by lr_t / lr_0). Received: lr_0={base!r}. Give the schedule "
            "a positive `base` attribute (decay.schedules do) or start it above 0."
        )
    return base


def _checked_peak(lr_max: float, lr: float, t: int) -> float:
    """lr_max, checked against lr_t: the correction assumes lr_t ≤ lr_max."""
    if lr > lr_max * (1.0 + 1e-12):
        raise DecayError(
            f"With decay_scaled_by='corrected' the decay is scaled by lr_t² / lr_max, which "
            f"assumes lr_t <= lr_max; at step {t} lr_t={lr!r} > lr_max={lr_max!r}. Nothing was "
            "updated. Pass the schedule's true peak as `lr_max`."
        )
    return lr_max


def peak_lr(lr):
    """The peak of an lr: a number itself; a ``decay.schedules`` schedule's largest value
    as its arguments give it (its base, a piecewise schedule's largest value, a warmup's
    start or a floor above the base); None for any other callable."""
    from ..schedules import Schedule

    if not callable(lr):
        return float(lr)
    if not isinstance(lr, Schedule):
        return None
    peaks = [lr.base]
    for key, value in lr._args.items():
        if isinstance(value, Schedule):
            peaks.append(peak_lr(value))
        elif key == "values":
            peaks.extend(float(v) for v in value)
        elif key == "schedules":
            peaks.extend(peak_lr(v) for v in value)
        elif key in ("start_value", "floor", "end_value") and value is not None:
            peaks.append(float(value))
    return max(peaks)


def check_decay_options(rule, hyper: dict, lr_max) -> None:
    """The group entries the scalings need: ``_lr0`` (schedule multiplier) and
    ``_lr_max`` (corrected: ``lr_max`` if given, else the peak of the group's lr)."""
    if rule.decay_scaled_by == "schedule_multiplier":
        hyper["_lr0"] = base_lr(hyper["lr"])
    if rule.decay_scaled_by != "corrected":
        return
    peak = lr_max if lr_max is not None else peak_lr(hyper["lr"])
    if peak is None:
        raise DecayError(
            "With decay_scaled_by='corrected' the decay is scaled by lr_t² / lr_max, and the peak "
            f"of a plain callable lr ({hyper['lr']!r}) is not known. Pass `lr_max`=its peak, or use "
            "a decay.schedules schedule."
        )
    if not (peak > 0 and math.isfinite(peak)):
        raise DecayError(
            f"With decay_scaled_by='corrected' `lr_max` must be a finite number > 0. Received: lr_max={peak!r}."
        )
    hyper["_lr_max"] = float(peak)


def check_variants(rule, cautious_decay, lr_max, decay_toward) -> None:
    """The decay variants no framework ships, checked when a rule is built."""
    from ..validation import check_flag, check_number

    rule.cautious_decay = check_flag("cautious_decay", cautious_decay)
    if rule.cautious_decay and not rule.decoupled:
        raise DecayError(
            "cautious_decay=True masks a decoupled decay (θ ← θ − η_t·(u + λ·𝟙[u⊙θ ≥ 0]⊙θ)); this "
            "rule's decay is coupled. Pass decoupled=True (or use decay.adamw)."
        )
    if rule.decay_scaled_by == "corrected" and not rule.decoupled:
        raise DecayError(
            "decay_scaled_by='corrected' scales a decoupled decay; this rule's decay is coupled. "
            "Pass decoupled=True (or use decay.adamw)."
        )
    if lr_max is not None:
        if rule.decay_scaled_by != "corrected":
            raise DecayError(
                f"`lr_max` is used by decay_scaled_by='corrected' only. Received: lr_max={lr_max!r} "
                f"with decay_scaled_by={rule.decay_scaled_by!r}."
            )
        lr_max = check_number("lr_max", lr_max)
    rule.lr_max = lr_max
    if rule.regularizer is not None and getattr(rule.regularizer, "center", None) is not None:
        raise DecayError(
            f"A rule's `regularizer` is applied to every parameter and cannot hold a center "
            f"({rule.regularizer!r}). Use decay_toward=center with weight_decay=2·lam (the same "
            "gradient 2·lam·(θ − θ₀)), or put the penalty in the loss."
        )


def weight_decay_for_timescale(tau, lr, steps_per_epoch=None) -> float:
    """λ = 1 / (lr·τ_iter): the weight decay whose AdamW averaging timescale is ``tau``.

    Wang and Aitchison (2024, "How to set AdamW's weight decay as you scale model and
    dataset size") read AdamW's θ ← (1 − lr·λ)·θ − lr·u as an exponential moving average
    of the updates over τ_iter = 1/(lr·λ) steps, and keep that timescale fixed *in
    epochs* as the data set grows. ``tau`` is in steps, or in epochs when
    ``steps_per_epoch`` is given (τ_iter = tau·steps_per_epoch). ``lr`` is the peak
    learning rate, a number. Pass the result as ``weight_decay`` with the default
    ``decay_scaled_by="lr"``."""
    from ..validation import check_number

    tau = check_number("tau", tau)
    lr = check_number("lr", lr)
    steps = tau
    if steps_per_epoch is not None:
        steps = tau * check_number("steps_per_epoch", steps_per_epoch)
    if not (steps > 0 and lr > 0):
        raise DecayError(
            f"`tau` (in steps: {steps!r}) and `lr` must be > 0: λ = 1/(lr·τ). Received: tau={tau!r}, lr={lr!r}, "
            f"steps_per_epoch={steps_per_epoch!r}."
        )
    return 1.0 / (lr * steps)
