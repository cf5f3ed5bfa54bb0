"""Where weight decay sits — in the loss, coupled into the gradient, or decoupled — for
every rule alike, written once.

A rule's own file never mentions weight decay: the engine applies the
:class:`decay.engine.DecayPlan` made here before the rule's direction
(:func:`decay.engine.apply_decay`), with the numbers :func:`common_fields` puts into
each step's :class:`decay.engine.Hyper`.
"""

from __future__ import annotations

import math

from ..engine import DecayPlan
from ..errors import DecayError
from ..validation import scheduled_value

#: How decoupled decay θ ← θ − s_t·λ_t·θ is scaled:
#: "lr": s_t = lr_t (PyTorch AdamW, Keras 3, optax); "schedule_multiplier":
#: s_t = lr_t / lr_0 (the AdamW paper, Composer); "none": s_t = 1 (TF-Addons).
DECAY_SCALINGS = ("lr", "schedule_multiplier", "none")

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
    if rule.decoupled:
        return DecayPlan(coupled=coupled_penalty, penalty=rest, decoupled=True)
    return DecayPlan(coupled=True, penalty=rest)


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
