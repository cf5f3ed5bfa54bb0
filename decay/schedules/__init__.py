r"""Learning-rate schedules, written once in pure Python.

A schedule is a callable ``sched(step) -> float``. ``step`` is the 0-based index
of the update about to be applied, the way PyTorch's schedulers count: the
learning rate PyTorch uses after ``k`` calls to ``scheduler.step()`` is
``sched(k)``; Keras and optax pass the same number (the optimizer's iteration
count before the update). Every backend calls these, so they return plain
Python floats and this package imports no framework.

Every schedule has ``base`` = α, its base (peak) learning rate. The AdamW paper's
schedule multiplier is η_t = sched(t) / sched.base.

Notation in the schedules' docstrings: α ``init_value``, t the step, T a number
of steps. Where a framework's schedule is the same function, the docstring gives
the exact argument mapping; the test suite checks each one over 1,000 steps.

Example::

    >>> from decay import schedules
    >>> sched = schedules.warmup(schedules.cosine(0.1, decay_steps=900), warmup_steps=100)
    >>> sched(0), sched(50), sched(100), sched(1000)
    (0.0, 0.05, 0.1, 0.0)
    >>> schedules.from_config(sched.get_config())(550) == sched(550)
    True
"""

from __future__ import annotations

import inspect

from decay.errors import DecayError

from ._base import Schedule
from ._compose import join, piecewise, warmup
from ._cosine import cosine, cosine_restarts
from ._decays import constant, exponential, inverse_time, multistep, polynomial, step

# The private names of the single module this package replaced stay importable
# here: pickles made before the split refer to decay.schedules._Cosine and the like.
from ._checks import _flag, _increasing_integers, _integer, _number, _rate, _step_index  # noqa: F401
from ._compose import _Join, _Piecewise, _schedule, _Warmup  # noqa: F401
from ._cosine import _Cosine, _CosineRestarts, _half_cosine  # noqa: F401
from ._decays import _Constant, _Exponential, _InverseTime, _MultiStep, _Polynomial, _Step  # noqa: F401

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
