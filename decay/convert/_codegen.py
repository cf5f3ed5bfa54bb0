"""Native constructions as data, and the :class:`Conversion` they end up in.

A :class:`_Call` is the same object for both halves of a conversion: ``source()``
writes the code a user reads and ``build(env)`` constructs it, so the two cannot
drift apart. Frameworks are imported by ``build`` only (through :func:`_resolve`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from .. import schedules
from ..penalties import Penalty


class _Name:
    """A variable in generated code (``params``, ``optimizer``) filled in at build time."""

    def __init__(self, name):
        self.name = name


class _Call:
    """``path(*args, **kwargs)`` where path is a dotted name such as torch.optim.SGD."""

    def __init__(self, path, *args, **kwargs):
        self.path, self.args, self.kwargs = path, args, kwargs

    def source(self) -> str:
        parts = [_source(a) for a in self.args]
        parts += [f"{k}={_source(v)}" for k, v in self.kwargs.items()]
        return f"{self.path}({', '.join(parts)})"

    def build(self, env: dict):
        target = _resolve(self.path)
        args = [_build_value(a, env) for a in self.args]
        kwargs = {k: _build_value(v, env) for k, v in self.kwargs.items()}
        return target(*args, **kwargs)


def _resolve(path: str):
    root, *rest = path.split(".")
    obj = importlib.import_module(root)
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _source(value) -> str:
    if isinstance(value, _Call):
        return value.source()
    if isinstance(value, _Name):
        return value.name
    if isinstance(value, schedules.Schedule):
        return _schedule_source(value)
    if isinstance(value, _Multiplier):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_source(v) for v in value)
        if isinstance(value, tuple):
            return f"({inner}{',' if len(value) == 1 else ''})"
        return f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_source(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _build_value(value, env):
    if isinstance(value, _Call):
        return value.build(env)
    if isinstance(value, _Name):
        return env[value.name]
    if isinstance(value, list):
        return [_build_value(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_build_value(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _build_value(v, env) for k, v in value.items()}
    return value


def _schedule_source(sched) -> str:
    """``decay.schedules.name(arg=..., ...)``, nested schedules included."""
    config = sched.get_config()
    return _schedule_config_source(config)


def _schedule_config_source(config) -> str:
    def value_source(v):
        if isinstance(v, dict) and "name" in v:
            return _schedule_config_source(v)
        if isinstance(v, list):
            return "[" + ", ".join(value_source(x) for x in v) + "]"
        return repr(v)

    args = ", ".join(f"{k}={value_source(v)}" for k, v in config.items() if k != "name")
    return f"decay.schedules.{config['name']}({args})"


class _Multiplier:
    """``t -> sched(t) / base``: the factor PyTorch's ``LambdaLR`` multiplies the base
    lr by. A class rather than a lambda so that :func:`from_native` can read the
    schedule back and the scheduler can be pickled."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.base = schedule.base

    def __call__(self, t):
        return self.schedule(int(t)) / self.base

    def __repr__(self):
        return f"lambda t: {_schedule_source(self.schedule)}(t) / {self.base!r}"


def _reason(issues) -> str | None:
    """A conversion's ``reason``: its issues, or None when there are none (exact)."""
    return "; ".join(issues) or None


@dataclass(frozen=True)
class Conversion:
    """A decay object in another framework.

    - ``exact``: whether ``code`` (with ``extra``, when given) updates the weights as
      decay does, to the framework's round-off (see ``note``).
    - ``reason``: why it is not exact, quantitatively where possible; None when exact.
    - ``code``: the native construction as Python source. ``params`` stands for your
      parameters (``model.parameters()``; a dict name -> tensor where the code says so,
      for a mask) and ``optimizer`` for the optimizer; needs ``import torch``/``keras``
      and, where it names decay, ``import decay``.
    - ``extra``: what else the conversion needs, e.g. a kernel regularizer on every
      decayed layer; part of the conversion when not None.
    - ``note``: caveats of an exact conversion (float32 hyperparameters, call order).
    - ``penalty``: the decay penalty that ``extra`` adds to the loss, or None.

    ``build(params)`` constructs what ``code`` constructs: a torch optimizer (which needs
    ``params``), or ``(optimizer, scheduler)`` when the lr is a schedule; a Keras
    optimizer (``params``, a dict name -> variable, only needed to resolve a mask); a
    torch lr scheduler (pass the optimizer); a Keras schedule, regularizer, or the
    torch penalty callable ``params -> tensor``. ``build_extra()`` builds ``extra``'s
    penalty (a Keras regularizer or a torch callable), or returns None.
    """

    framework: str
    exact: bool
    reason: str | None
    code: str
    extra: str | None = None
    note: str | None = None
    penalty: Penalty | None = None
    _builder: Callable = field(default=None, repr=False, compare=False)

    def build(self, params=None):
        return self._builder(params)

    def build_extra(self):
        if self.penalty is None:
            return None
        # Imported here: _penalty builds Conversions, so it imports this module.
        from ._penalty import penalty_conversion

        return penalty_conversion(self.penalty, self.framework).build()

    def __str__(self):
        lines = [self.code]
        if self.extra:
            lines.append(f"# and: {self.extra}")
        if self.note:
            lines.append(f"# note: {self.note}")
        if not self.exact:
            lines.append(f"# NOT EXACT: {self.reason}")
        return "\n".join(lines)
