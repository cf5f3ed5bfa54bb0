"""Every read of a rule's internals that conversion makes, and nothing else.

Conversion reads a rule's hyperparameters and kind; how a rule stores them is the
rules' business and may change. Keeping each such read here, one tiny function
apiece, leaves this module the only one to adapt when it does. Public attributes
(``rule.decoupled``, ``rule.regularizer``, ``rule.mask``, ...) are read directly.
"""

from __future__ import annotations

from ..rules._decay import base_lr as _base_lr
from ..rules.adam import AdamW
from ..rules.sgd import SGD


def hyper(rule, name: str):
    """The rule's default (group-less) value of hyperparameter ``name``: a number, or
    a schedule for ``lr`` and ``weight_decay``."""
    return rule.defaults[name]


def decays(rule) -> bool:
    """Whether weight decay is active: a schedule, or a constant > 0."""
    return rule.decays()


def base_lr(rule) -> float:
    """lr_0 of the schedule multiplier lr_t / lr_0 (``decay_scaled_by="schedule_multiplier"``)."""
    return _base_lr(rule.defaults["lr"])


def is_sgd(rule) -> bool:
    """SGD; every other rule conversion knows is Adam (or AdamW)."""
    return isinstance(rule, SGD)


def is_adamw(rule) -> bool:
    """Built by :func:`decay.adamw` (rather than ``decay.adam(decoupled=True)``)."""
    return isinstance(rule, AdamW)
