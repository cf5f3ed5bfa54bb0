"""Schedules that decay from ``init_value`` by a formula of the step alone.

``constant``, ``step``, ``multistep``, ``exponential``, ``inverse_time``,
``polynomial``. The cosine schedules are in ``_cosine``; schedules built from
other schedules (``warmup``, ``piecewise``, ``join``) in ``_compose``.
"""

from __future__ import annotations

import bisect
import math

from ._base import Schedule
from ._checks import _flag, _increasing_integers, _integer, _number, _rate


class _Constant(Schedule):
    name = "constant"

    def __init__(self, value):
        value = _rate("value", value)
        super().__init__(value, {"value": value})

    def _value(self, t):
        return self.base


def constant(value) -> Schedule:
    r"""lr_t = value.

    Equals ``torch.optim.lr_scheduler.ConstantLR(factor=1.0)`` (or no scheduler),
    a float ``learning_rate`` in Keras, ``optax.constant_schedule(value)``.
    """
    return _Constant(value)


class _Step(Schedule):
    name = "step"

    def __init__(self, init_value, step_size, gamma):
        init_value = _rate("init_value", init_value)
        step_size = _integer("step_size", step_size, positive=True,
                             hint=" Pass the number of steps between decays, e.g. step_size=100.")
        gamma = _number("gamma", gamma, minimum=0.0)
        super().__init__(init_value, {"init_value": init_value, "step_size": step_size, "gamma": gamma})
        self.step_size, self.gamma = step_size, gamma

    def _value(self, t):
        return self.base * self.gamma ** (t // self.step_size)


def step(init_value, step_size, gamma) -> Schedule:
    r"""Staircase decay: lr_t = α·γ^⌊t/s⌋, with s = ``step_size``.

    Equals:

    - PyTorch ``StepLR(optimizer, step_size=s, gamma=γ)`` with the optimizer's lr α.
      PyTorch multiplies the previous lr by γ at each multiple of s instead of
      evaluating the power; over 1,000 steps the two were bit-identical.
    - Keras ``ExponentialDecay(initial_learning_rate=α, decay_steps=s, decay_rate=γ,
      staircase=True)`` (computed in float32).
    - optax ``exponential_decay(init_value=α, transition_steps=s, decay_rate=γ,
      staircase=True)``.
    """
    return _Step(init_value, step_size, gamma)


class _MultiStep(Schedule):
    name = "multistep"

    def __init__(self, init_value, milestones, gamma):
        init_value = _rate("init_value", init_value)
        milestones = _increasing_integers("milestones", milestones)
        gamma = _number("gamma", gamma, minimum=0.0)
        super().__init__(init_value, {"init_value": init_value, "milestones": milestones, "gamma": gamma})
        self.milestones, self.gamma = milestones, gamma

    def _value(self, t):
        return self.base * self.gamma ** bisect.bisect_right(self.milestones, t)


def multistep(init_value, milestones, gamma) -> Schedule:
    r"""lr_t = α·γ^k, k = #{m ∈ milestones : m ≤ t} (the lr changes *at* step m).

    Equals PyTorch ``MultiStepLR(optimizer, milestones, gamma=γ)`` with the
    optimizer's lr α, for strictly increasing milestones (PyTorch also accepts a
    repeated milestone and applies γ once per repeat; here pass γ² instead).
    optax ``piecewise_constant_schedule(α, {m: γ for m in milestones})`` switches
    at the same steps. Keras ``PiecewiseConstantDecay`` switches one step later;
    see ``piecewise``.
    """
    return _MultiStep(init_value, milestones, gamma)


class _Exponential(Schedule):
    name = "exponential"

    def __init__(self, init_value, decay_rate, decay_steps=1, staircase=False,
                 end_value=None, transition_begin=0):
        init_value = _rate("init_value", init_value)
        decay_rate = _number("decay_rate", decay_rate, positive=True,
                             hint=" The lr is multiplied by decay_rate every decay_steps steps, e.g. 0.96.")
        decay_steps = _integer("decay_steps", decay_steps, positive=True,
                               hint=" Pass the number of steps per factor of decay_rate, e.g. decay_steps=1000.")
        staircase = _flag("staircase", staircase)
        if end_value is not None:
            end_value = _rate("end_value", end_value)
        transition_begin = _integer("transition_begin", transition_begin, positive=False)
        super().__init__(init_value, {
            "init_value": init_value, "decay_rate": decay_rate, "decay_steps": decay_steps,
            "staircase": staircase, "end_value": end_value, "transition_begin": transition_begin,
        })
        self.decay_rate, self.decay_steps, self.staircase = decay_rate, decay_steps, staircase
        self.end_value, self.transition_begin = end_value, transition_begin

    def _value(self, t):
        elapsed = t - self.transition_begin
        if elapsed <= 0:
            value = self.base
        else:
            p = elapsed // self.decay_steps if self.staircase else elapsed / self.decay_steps
            try:
                value = self.base * self.decay_rate ** p
            except OverflowError:  # decay_rate > 1 for very many steps; end_value may cap it
                value = math.inf
        if self.end_value is not None:
            value = max(value, self.end_value) if self.decay_rate < 1 else min(value, self.end_value)
        return value


def exponential(init_value, decay_rate, decay_steps=1, staircase=False, end_value=None,
                transition_begin=0) -> Schedule:
    r"""Exponential decay: lr_t = α·r^(p), p = (t − B)/T, for t > B; lr_t = α for t ≤ B.

    r = ``decay_rate`` (> 0), T = ``decay_steps``, B = ``transition_begin``. With
    ``staircase=True``, p = ⌊(t − B)/T⌋. With ``end_value`` E the result is
    clipped: max(lr_t, E) when r < 1, min(lr_t, E) when r ≥ 1.

    Equals:

    - Keras ``ExponentialDecay(initial_learning_rate=α, decay_steps=T, decay_rate=r,
      staircase=…)`` when B = 0 and E is None (Keras has neither; it computes in
      float32).
    - optax ``exponential_decay(init_value=α, transition_steps=T, decay_rate=r,
      transition_begin=B, staircase=…, end_value=E)`` (optax treats r = 0 as
      "no decay"; here r must be > 0).
    - PyTorch ``ExponentialLR(optimizer, gamma=r)`` when T = 1, B = 0, no E.
      PyTorch multiplies the previous lr by r each step, so its value drifts by
      round-off from α·r^t (measured 2.1e-15 relative over 1,000 steps, r = 0.995).
    """
    return _Exponential(init_value, decay_rate, decay_steps, staircase, end_value, transition_begin)


class _InverseTime(Schedule):
    name = "inverse_time"

    def __init__(self, init_value, decay_rate, decay_steps, staircase=False):
        init_value = _rate("init_value", init_value)
        decay_rate = _number("decay_rate", decay_rate, minimum=0.0)
        decay_steps = _integer("decay_steps", decay_steps, positive=True,
                               hint=" Pass the number of steps per unit of decay, e.g. decay_steps=1000.")
        staircase = _flag("staircase", staircase)
        super().__init__(init_value, {
            "init_value": init_value, "decay_rate": decay_rate,
            "decay_steps": decay_steps, "staircase": staircase,
        })
        self.decay_rate, self.decay_steps, self.staircase = decay_rate, decay_steps, staircase

    def _value(self, t):
        p = t // self.decay_steps if self.staircase else t / self.decay_steps
        return self.base / (1.0 + self.decay_rate * p)


def inverse_time(init_value, decay_rate, decay_steps, staircase=False) -> Schedule:
    r"""Inverse-time decay: lr_t = α / (1 + r·p), p = t/T (⌊t/T⌋ with ``staircase``).

    Equals Keras ``InverseTimeDecay(initial_learning_rate=α, decay_steps=T,
    decay_rate=r, staircase=…)`` (computed in float32). PyTorch and optax have no
    such schedule (PyTorch: ``LambdaLR(optimizer, lambda t: 1 / (1 + r * t / T))``).
    """
    return _InverseTime(init_value, decay_rate, decay_steps, staircase)


class _Polynomial(Schedule):
    name = "polynomial"

    def __init__(self, init_value, decay_steps, end_value=0.0, power=1.0, cycle=False):
        init_value = _rate("init_value", init_value)
        decay_steps = _integer("decay_steps", decay_steps, positive=True,
                               hint=" Pass the number of steps to decay over, e.g. decay_steps=1000.")
        end_value = _rate("end_value", end_value)
        power = _number("power", power, positive=True)
        cycle = _flag("cycle", cycle)
        super().__init__(init_value, {
            "init_value": init_value, "decay_steps": decay_steps, "end_value": end_value,
            "power": power, "cycle": cycle,
        })
        self.decay_steps, self.end_value, self.power, self.cycle = decay_steps, end_value, power, cycle

    def _value(self, t):
        if self.cycle:
            # Keras: decay over the first multiple of T that is >= t (T itself at t = 0).
            length = self.decay_steps * max(1, -(-t // self.decay_steps))
        else:
            length = self.decay_steps
            t = min(t, length)
        return (self.base - self.end_value) * (1.0 - t / length) ** self.power + self.end_value


def polynomial(init_value, decay_steps, end_value=0.0, power=1.0, cycle=False) -> Schedule:
    r"""Polynomial decay: lr_t = (α − E)·(1 − min(t, T)/T)^p + E.

    E = ``end_value``, T = ``decay_steps``, p = ``power`` (> 0). With
    ``cycle=True`` (Keras), t is not clamped and T is replaced by T·⌈t/T⌉
    (T at t = 0), so the schedule jumps back up after each multiple of T.

    Equals:

    - Keras ``PolynomialDecay(initial_learning_rate=α, decay_steps=T,
      end_learning_rate=E, power=p, cycle=…)`` (computed in float32).
    - optax ``polynomial_schedule(init_value=α, end_value=E, power=p,
      transition_steps=T)`` (no ``cycle``); ``linear_schedule`` when p = 1.
    - PyTorch ``PolynomialLR(optimizer, total_iters=T, power=p)`` when E = 0 and
      ``cycle=False``. PyTorch applies it as a chain of ratios
      ((1 − t/T)/(1 − (t−1)/T))^p; the product telescopes to the closed form
      (measured 3.1e-15 relative drift, T = 700), and it stays at 0 after T.
    """
    return _Polynomial(init_value, decay_steps, end_value, power, cycle)
