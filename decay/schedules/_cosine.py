"""Cosine schedules: ``cosine`` and ``cosine_restarts`` (SGDR)."""

from __future__ import annotations

import math

from ._base import Schedule
from ._checks import _integer, _number, _rate


def _half_cosine(fraction):
    return 0.5 * (1.0 + math.cos(math.pi * fraction))


class _Cosine(Schedule):
    name = "cosine"

    def __init__(self, init_value, decay_steps, floor=0.0):
        init_value = _rate("init_value", init_value)
        decay_steps = _integer("decay_steps", decay_steps, positive=True,
                               hint=" Pass the number of steps to decay over, e.g. decay_steps=1000.")
        floor = _rate("floor", floor)
        super().__init__(init_value, {"init_value": init_value, "decay_steps": decay_steps, "floor": floor})
        self.decay_steps, self.floor = decay_steps, floor

    def _value(self, t):
        fraction = min(t, self.decay_steps) / self.decay_steps
        return self.floor + (self.base - self.floor) * _half_cosine(fraction)


def cosine(init_value, decay_steps, floor=0.0) -> Schedule:
    r"""Cosine decay: lr_t = F + (α − F)·½(1 + cos(π·min(t, T)/T)).

    T = ``decay_steps``; F = ``floor``, an absolute learning rate (PyTorch's
    ``eta_min``). Keras and optax give the floor as a fraction ``alpha`` of α:
    F = alpha·α, alpha = F/α. After T steps the value stays at F.

    Equals:

    - Keras ``CosineDecay(initial_learning_rate=α, decay_steps=T, alpha=F/α)``
      (computed in float32).
    - optax ``cosine_decay_schedule(init_value=α, decay_steps=T, alpha=F/α)``
      (``exponent=1``).
    - PyTorch ``CosineAnnealingLR(optimizer, T_max=T, eta_min=F)`` for t ≤ T only.
      Past T PyTorch keeps following the cosine, climbing back to α at 2T
      (period 2T); here, as in Keras and optax, the value stays at F (for
      restarts use ``cosine_restarts``). PyTorch computes the cosine as a
      chain of ratios (measured 7.8e-14 relative drift at T = 1,000, F = 0,
      largest near the end where the value is small).
    """
    return _Cosine(init_value, decay_steps, floor)


class _CosineRestarts(Schedule):
    name = "cosine_restarts"

    def __init__(self, init_value, first_decay_steps, t_mul=2.0, m_mul=1.0, floor=0.0):
        init_value = _rate("init_value", init_value)
        first_decay_steps = _integer(
            "first_decay_steps", first_decay_steps, positive=True,
            hint=" Pass the length of the first cycle in steps, e.g. first_decay_steps=1000.")
        t_mul = _number("t_mul", t_mul, minimum=1.0,
                        hint=" Each cycle is t_mul times longer than the previous one; use 1.0 for equal cycles.")
        m_mul = _number("m_mul", m_mul, minimum=0.0)
        floor = _rate("floor", floor)
        super().__init__(init_value, {
            "init_value": init_value, "first_decay_steps": first_decay_steps,
            "t_mul": t_mul, "m_mul": m_mul, "floor": floor,
        })
        self.first_decay_steps, self.t_mul, self.m_mul, self.floor = first_decay_steps, t_mul, m_mul, floor

    def _cycle(self, t):
        """(cycle index i, fraction of cycle i completed at step t)."""
        length = self.first_decay_steps
        if self.t_mul == 1.0:
            i, start = divmod(t, length)
            return i, start / length
        # Walk the cycles instead of inverting the geometric sum with a log (as
        # Keras does): exact at restart steps when T and t_mul are integers.
        # It takes one iteration per completed cycle, log(1 + t(t_mul-1)/T)/log(t_mul):
        # 13 for t_mul=2, T=100, t=10**6.
        i, start = 0, 0
        while t >= start + length:
            start += length
            length *= self.t_mul
            i += 1
        return i, (t - start) / length

    def _value(self, t):
        i, fraction = self._cycle(t)
        return self.floor + (self.base - self.floor) * self.m_mul ** i * _half_cosine(fraction)


def cosine_restarts(init_value, first_decay_steps, t_mul=2.0, m_mul=1.0, floor=0.0) -> Schedule:
    r"""Cosine decay with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Cycle i (i = 0, 1, …) lasts T_i = T·t_mul^i steps and starts at
    S_i = T·(t_mul^0 + … + t_mul^(i−1)). For S_i ≤ t < S_i + T_i:

        lr_t = F + (α − F)·m_mul^i·½(1 + cos(π·(t − S_i)/T_i))

    T = ``first_decay_steps``, F = ``floor`` (absolute; Keras's
    ``alpha`` = F/α). The floor is not scaled by m_mul^i, as in Keras.
    ``t_mul`` must be ≥ 1.

    Equals:

    - Keras ``CosineDecayRestarts(initial_learning_rate=α, first_decay_steps=T,
      t_mul=…, m_mul=…, alpha=F/α)``, except at some restart steps when t_mul
      is not an integer: Keras finds i with a float32 logarithm, which can put a
      restart step at the end of the previous cycle (F instead of α·m_mul^i;
      e.g. T = 10, t_mul = 1.1 at t = 21). Here the cycle boundaries are summed
      in float64 (exact for integer T and t_mul).
    - PyTorch ``CosineAnnealingWarmRestarts(optimizer, T_0=T, T_mult=t_mul,
      eta_min=F)`` when m_mul = 1 and t_mul is an integer (PyTorch has no m_mul
      and requires an integer T_mult).
    - optax ``sgdr_schedule`` with one ``warmup_cosine_decay_schedule(init_value=p,
      peak_value=p, warmup_steps=0, decay_steps=T_i, end_value=F)`` per cycle,
      p = α·m_mul^i, boundaries at the S_i, when F = 0 or m_mul = 1 (otherwise
      optax's floor-to-peak gap p − F is not (α − F)·m_mul^i).
    """
    return _CosineRestarts(init_value, first_decay_steps, t_mul, m_mul, floor)
