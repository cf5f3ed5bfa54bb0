r"""Learning-rate schedules, written once in pure Python.

A schedule is a callable ``sched(step) -> float``. ``step`` is the 0-based index
of the update about to be applied, the way PyTorch's schedulers count: the
learning rate PyTorch uses after ``k`` calls to ``scheduler.step()`` is
``sched(k)``; Keras and optax pass the same number (the optimizer's iteration
count before the update). Every backend calls these, so they return plain
Python floats and this module imports no framework.

Every schedule has ``base`` = α, its base (peak) learning rate. The AdamW paper's
schedule multiplier is η_t = sched(t) / sched.base.

Notation below: α ``init_value``, t the step, T a number of steps. Where a
framework's schedule is the same function, the docstring gives the exact
argument mapping; the test suite checks each one over 1,000 steps.

Example::

    >>> from decay import schedules
    >>> sched = schedules.warmup(schedules.cosine(0.1, decay_steps=900), warmup_steps=100)
    >>> sched(0), sched(50), sched(100), sched(1000)
    (0.0, 0.05, 0.1, 0.0)
    >>> schedules.from_config(sched.get_config())(550) == sched(550)
    True
"""

from __future__ import annotations

import bisect
import inspect
import math
import numbers

from decay.errors import DecayError

__all__ = [
    "Schedule",
    "constant",
    "step",
    "multistep",
    "exponential",
    "inverse_time",
    "polynomial",
    "cosine",
    "cosine_restarts",
    "warmup",
    "piecewise",
    "join",
    "from_config",
]


# ---------------------------------------------------------------------------
# Argument checks. Every message: the rule, the value received, how to fix it.


def _number(name, value, *, minimum=None, positive=False, hint=""):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DecayError(
            f"`{name}` must be a real number. Received: {name}={value!r} "
            f"of type {type(value).__name__}.{hint}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise DecayError(f"`{name}` must be finite. Received: {name}={value!r}.{hint}")
    if positive and number <= 0:
        raise DecayError(f"`{name}` must be > 0. Received: {name}={value!r}.{hint}")
    if minimum is not None and number < minimum:
        raise DecayError(f"`{name}` must be >= {minimum:g}. Received: {name}={value!r}.{hint}")
    return number


def _rate(name, value):
    # Learning rates (and the floors and end values they decay to) are never
    # negative; a negative one would turn descent into ascent.
    return _number(name, value, minimum=0.0, hint=" Pass a learning rate >= 0.")


def _integer(name, value, *, positive, hint=""):
    rule = "a positive integer" if positive else "a non-negative integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DecayError(
            f"`{name}` must be {rule}. Received: {name}={value!r} "
            f"of type {type(value).__name__}.{hint}"
        )
    value = int(value)
    if value < (1 if positive else 0):
        raise DecayError(f"`{name}` must be {rule}. Received: {name}={value!r}.{hint}")
    return value


def _increasing_integers(name, values):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise DecayError(
            f"`{name}` must be a list of non-negative integers. Received: {name}={values!r}."
        )
    values = [
        _integer(f"{name}[{i}]", v, positive=False) for i, v in enumerate(values)
    ]
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise DecayError(
                f"`{name}` must be strictly increasing. Received: {name}={values!r} "
                f"({name}[{i}]={values[i]} <= {name}[{i - 1}]={values[i - 1]}). "
                "Sort them and remove duplicates."
            )
    return values


def _flag(name, value):
    if not isinstance(value, bool):
        raise DecayError(f"`{name}` must be True or False. Received: {name}={value!r}.")
    return value


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


def _step_index(step):
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise DecayError(
            "`step` must be a non-negative integer, the 0-based index of the update "
            f"about to be applied. Received: step={step!r} of type {type(step).__name__}. "
            "Convert a tensor step with int(step)."
        )
    step = int(step)
    if step < 0:
        raise DecayError(
            "`step` must be a non-negative integer, the 0-based index of the update "
            f"about to be applied. Received: step={step}."
        )
    return step


# ---------------------------------------------------------------------------
# Base class.


class Schedule:
    """A learning-rate schedule: ``sched(step) -> float``.

    Subclasses set ``name`` (the public function that builds them), ``base``
    and ``_args`` (the arguments, in signature order) and implement
    ``_value(t)`` for an already-checked step.
    """

    name = "schedule"

    def __init__(self, base, args):
        self.base = float(base)
        self._args = dict(args)

    def __call__(self, step) -> float:
        return float(self._value(_step_index(step)))

    def _value(self, t):
        raise NotImplementedError(f"{type(self).__name__} must implement `_value(t)`.")

    def get_config(self) -> dict:
        """The name and arguments as plain Python data; ``from_config`` rebuilds it."""
        config = {"name": self.name}
        for key, value in self._args.items():
            if isinstance(value, Schedule):
                value = value.get_config()
            elif isinstance(value, list):
                value = [v.get_config() if isinstance(v, Schedule) else v for v in value]
            config[key] = value
        return config

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self._args.items())
        return f"{self.name}({args})"


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


# ---------------------------------------------------------------------------
# Serialization.

_BUILDERS = {
    f.__name__: f
    for f in (constant, step, multistep, exponential, inverse_time, polynomial, cosine,
              cosine_restarts, warmup, piecewise, join)
}


def from_config(config) -> Schedule:
    """Rebuild a schedule from ``Schedule.get_config()`` output.

    >>> from_config({"name": "cosine", "init_value": 0.1, "decay_steps": 100, "floor": 0.0})
    cosine(init_value=0.1, decay_steps=100, floor=0.0)
    """
    if not isinstance(config, dict) or "name" not in config:
        raise DecayError(
            "`config` must be a dict with a 'name' key, as returned by "
            f"Schedule.get_config(). Received: config={config!r}."
        )
    kwargs = dict(config)
    name = kwargs.pop("name")
    builder = _BUILDERS.get(name)
    if builder is None:
        raise DecayError(
            f"Unknown schedule name {name!r} in `config`. Known names: {', '.join(sorted(_BUILDERS))}."
        )
    # Nested schedules (warmup, join) are stored as nested configs.
    if isinstance(kwargs.get("schedule_or_value"), dict):
        kwargs["schedule_or_value"] = from_config(kwargs["schedule_or_value"])
    if name == "join" and isinstance(kwargs.get("schedules"), list):
        kwargs["schedules"] = [from_config(s) if isinstance(s, dict) else s for s in kwargs["schedules"]]
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(inspect.signature(builder).parameters)
        raise DecayError(
            f"`config` for {name!r} has bad arguments ({exc}). Received: config={config!r}. "
            f"Accepted arguments: {accepted}."
        ) from None
    return builder(**kwargs)
