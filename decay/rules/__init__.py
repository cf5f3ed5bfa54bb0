"""Update rules: each a pair ``init(params) -> state``, ``step(params, grads, state)``."""

from .adam import Adam, adam, adamw
from .base import DECAY_SCALINGS, Rule, RuleState
from .sgd import SGD, sgd

__all__ = ["Rule", "RuleState", "SGD", "Adam", "sgd", "adam", "adamw", "DECAY_SCALINGS"]
