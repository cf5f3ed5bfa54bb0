"""``Schedule``, the base class every schedule derives from."""

from __future__ import annotations

from ._checks import _step_index


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
