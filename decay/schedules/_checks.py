"""Argument checks shared by the schedules.

Every message: the rule, the value received, how to fix it.
"""

from __future__ import annotations

import math
import numbers

from decay.errors import DecayError


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
