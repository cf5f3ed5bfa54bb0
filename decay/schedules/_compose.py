"""Schedules built from other schedules or from given values.

``warmup`` (a linear ramp before a schedule), ``piecewise`` (constant values
between boundaries) and ``join`` (schedules one after another).
"""

from __future__ import annotations

import bisect
import numbers

from decay.errors import DecayError

from ._base import Schedule
from ._checks import _increasing_integers, _integer, _rate
from ._decays import constant


# Lives here rather than in _checks: it needs Schedule and constant, and
# _base imports _checks, so _checks cannot import them back.
def _schedule(name, value):
    """A Schedule, or a number taken as ``constant(number)``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return constant(value)
    raise DecayError(
        f"`{name}` must be a schedule from `decay.schedules` or a number. "
        f"Received: {name}={value!r} of type {type(value).__name__}."
    )


class _Warmup(Schedule):
    name = "warmup"

    def __init__(self, schedule_or_value, warmup_steps, start_value=0.0):
        schedule = _schedule("schedule_or_value", schedule_or_value)
        warmup_steps = _integer("warmup_steps", warmup_steps, positive=False,
                                hint=" Pass the number of warmup steps, e.g. warmup_steps=100.")
        start_value = _rate("start_value", start_value)
        super().__init__(schedule.base, {
            "schedule_or_value": schedule, "warmup_steps": warmup_steps, "start_value": start_value,
        })
        self.schedule, self.warmup_steps, self.start_value = schedule, warmup_steps, start_value

    def _value(self, t):
        if t < self.warmup_steps:
            return self.start_value + (self.base - self.start_value) * t / self.warmup_steps
        return self.schedule._value(t - self.warmup_steps)


def warmup(schedule_or_value, warmup_steps, start_value=0.0) -> Schedule:
    r"""Linear warmup to the peak, then the wrapped schedule shifted by the warmup.

    With W = ``warmup_steps``, S = ``start_value``, s the wrapped schedule and
    P = s.base its peak (a number v is taken as ``constant(v)``):

        lr_t = S + (P − S)·t/W     for t < W
        lr_t = s(t − W)            for t ≥ W

    So the wrapped schedule's own length excludes the warmup: a warmup of 100
    around ``cosine(α, 900)`` ends at step 1,000. ``base`` is P. W = 0 gives s.

    Equals:

    - Keras ``CosineDecay(initial_learning_rate=S, decay_steps=D, alpha=F/P,
      warmup_target=P, warmup_steps=W)`` for ``warmup(cosine(P, D, floor=F), W, S)``
      (Keras's ``decay_steps`` excludes warmup too; float32).
    - optax ``warmup_cosine_decay_schedule(init_value=S, peak_value=P,
      warmup_steps=W, decay_steps=W + D, end_value=F)`` — optax's
      ``decay_steps`` *includes* the warmup. Likewise
      ``warmup_exponential_decay_schedule`` and ``warmup_constant_schedule``
      for ``exponential`` and ``constant``.
    - PyTorch ``SequentialLR(optimizer, [LinearLR(optimizer, start_factor=S/P,
      end_factor=1.0, total_iters=W), CosineAnnealingLR(optimizer, T_max=D,
      eta_min=F)], milestones=[W])`` with the optimizer's lr P. ``LinearLR``
      rejects start_factor = 0, so S = 0 (this function's default) has no exact
      PyTorch counterpart; use ``LambdaLR(optimizer, lambda t: t / W)`` for the
      warmup part, or a tiny S.
    """
    return _Warmup(schedule_or_value, warmup_steps, start_value)


class _Piecewise(Schedule):
    name = "piecewise"

    def __init__(self, boundaries, values, switch="at"):
        boundaries = _increasing_integers("boundaries", boundaries)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise DecayError(f"`values` must be a list of learning rates. Received: values={values!r}.")
        values = [_rate(f"values[{i}]", v) for i, v in enumerate(values)]
        if len(values) != len(boundaries) + 1:
            raise DecayError(
                "`values` must have one more element than `boundaries`. Received: "
                f"len(values)={len(values)}, len(boundaries)={len(boundaries)} "
                f"(values={values!r}, boundaries={boundaries!r}). values[0] is used "
                "before boundaries[0], values[i] from boundaries[i-1] on."
            )
        if switch not in ("at", "after"):
            raise DecayError(
                f"`switch` must be 'at' (the new value is used at step b, as in PyTorch "
                f"and optax) or 'after' (from step b + 1, as in Keras). Received: switch={switch!r}."
            )
        super().__init__(values[0], {"boundaries": boundaries, "values": values, "switch": switch})
        self.boundaries, self.values, self.switch = boundaries, values, switch

    def _value(self, t):
        find = bisect.bisect_right if self.switch == "at" else bisect.bisect_left
        return self.values[find(self.boundaries, t)]


def piecewise(boundaries, values, switch="at") -> Schedule:
    r"""Piecewise constant: values[i] between boundaries.

    With b = ``boundaries`` (strictly increasing) and v = ``values``
    (len(v) = len(b) + 1):

    - ``switch="at"`` (default): lr_t = v[k], k = #{i : b[i] ≤ t}; the new value
      is used *at* step b[i]. PyTorch ``MultiStepLR`` and optax
      ``piecewise_constant_schedule(v[0], {b[i]: v[i+1]/v[i]})`` (optax takes
      ratios, so it cannot express a value after a 0) switch here.
    - ``switch="after"``: lr_t = v[k], k = #{i : b[i] < t}; the new value is
      used from step b[i] + 1. This is Keras
      ``PiecewiseConstantDecay(boundaries=b, values=v)``, and equals
      ``piecewise([x + 1 for x in b], v)``.

    ``base`` is v[0].
    """
    return _Piecewise(boundaries, values, switch)


class _Join(Schedule):
    name = "join"

    def __init__(self, schedules, boundaries):
        if isinstance(schedules, (str, bytes)) or not hasattr(schedules, "__iter__"):
            raise DecayError(f"`schedules` must be a list of schedules. Received: schedules={schedules!r}.")
        schedules = [_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules)]
        if not schedules:
            raise DecayError("`schedules` must hold at least one schedule. Received: schedules=[].")
        boundaries = _increasing_integers("boundaries", boundaries)
        if len(schedules) != len(boundaries) + 1:
            raise DecayError(
                "`schedules` must have one more element than `boundaries`. Received: "
                f"len(schedules)={len(schedules)}, len(boundaries)={len(boundaries)}. "
                "schedules[i+1] starts at boundaries[i]."
            )
        super().__init__(schedules[0].base, {"schedules": schedules, "boundaries": boundaries})
        self.schedules, self.boundaries = schedules, boundaries

    def _value(self, t):
        k = bisect.bisect_right(self.boundaries, t)
        start = self.boundaries[k - 1] if k else 0
        return self.schedules[k]._value(t - start)


def join(schedules, boundaries) -> Schedule:
    r"""Schedules one after another.

    lr_t = s_0(t) for t < b_0, and s_{i+1}(t − b_i) for b_i ≤ t < b_{i+1}: each
    schedule counts its steps from its own start. A number is taken as
    ``constant(number)``. ``base`` is s_0.base.

    Equals optax ``join_schedules(schedules, boundaries)``. PyTorch
    ``SequentialLR(optimizer, schedulers, milestones=boundaries)`` behaves the
    same for schedulers that all start from the optimizer's lr.
    """
    return _Join(schedules, boundaries)
