"""Argument checks shared by rules, penalties and schedules.

Messages follow one pattern: what must hold, the value received, and how to fix it.
"""

from __future__ import annotations

import math
import numbers

from .errors import DecayError


def check_number(name: str, value, *, minimum: float = 0.0, below: float | None = None) -> float:
    """A finite real number >= minimum (and < below when given), returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DecayError(f"`{name}` must be a real number. Received: {name}={value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise DecayError(f"`{name}` must be finite. Received: {name}={value!r}.")
    if number < minimum:
        raise DecayError(f"`{name}` must be >= {minimum:g}. Received: {name}={value!r}.")
    if below is not None and number >= below:
        raise DecayError(f"`{name}` must be < {below:g}. Received: {name}={value!r}.")
    return number


def check_number_or_schedule(name: str, value):
    """A number >= 0, or a callable step -> number checked each time it is used."""
    if callable(value):
        return value
    return check_number(name, value)


def scheduled_value(name: str, value, step: int) -> float:
    """The value of a number-or-schedule at ``step``, checked before it is used."""
    if not callable(value):
        return value
    try:
        result = value(step)
    except DecayError:
        raise
    except Exception as exc:  # a user's callable: report which argument and step failed
        raise DecayError(f"The schedule given as `{name}` failed at step {step}: {exc!r}.") from exc
    if isinstance(result, bool) or not isinstance(result, numbers.Real):
        try:
            result = float(result)  # 0-d arrays and tensors
        except Exception:
            raise DecayError(
                f"The schedule given as `{name}` must return a number; at step {step} it "
                f"returned {result!r}."
            ) from None
    result = float(result)
    if not math.isfinite(result) or result < 0:
        raise DecayError(
            f"The schedule given as `{name}` returned {result!r} at step {step}; it must return "
            "a finite number >= 0. Nothing was updated."
        )
    return result


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise DecayError(f"`{name}` must be one of {listed}. Received: {name}={value!r}.")
    return value


def check_flag(name: str, value) -> bool:
    """A boolean option: True or False (NumPy's bool too), never a string or a number
    that Python would read as one (``"False"`` is true)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise DecayError(f"`{name}` must be True or False. Received: {name}={value!r}.")
