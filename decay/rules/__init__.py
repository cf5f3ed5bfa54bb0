"""Update rules: each a pair ``init(params) -> state``, ``step(params, grads, state)``,
one file per rule (see the README's "Adding an update rule")."""

from ..errors import DecayError
from ._config import normalized_weight_decay, rule_kwargs_from_config
from ._decay import DECAY_SCALINGS, weight_decay_for_timescale
from .adafactor import Adafactor, adafactor
from .adam import Adam, AdamW, adam, adamw
from .base import Rule, RuleState
from .lamb import Lamb, lamb
from .lion import Lion, lion
from .muon import Muon, muon
from .sgd import SGD, sgd
# The classic optimizers (issue 15): one file each.
from .adadelta import Adadelta, adadelta
from .adagrad import Adagrad, adagrad
from .adamax import Adamax, adamax
from .nadam import NAdam, nadam
from .radam import RAdam, radam
from .rmsprop import RMSprop, rmsprop

#: rule name (as in get_config) -> class
RULES = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
# The modern rules, added as one block.
RULES.update({"lion": Lion, "lamb": Lamb, "muon": Muon, "adafactor": Adafactor})
RULES.update(rmsprop=RMSprop, adagrad=Adagrad, adadelta=Adadelta, adamax=Adamax, nadam=NAdam, radam=RAdam)


def from_config(config: dict) -> Rule:
    """Rebuild a rule from :meth:`Rule.get_config` output."""
    if not isinstance(config, dict) or config.get("rule") not in RULES:
        got = config.get("rule") if isinstance(config, dict) else config
        raise DecayError(f"Unknown rule {got!r} in config. Known rules: {sorted(RULES)}.")
    return RULES[config["rule"]](**rule_kwargs_from_config(config))


__all__ = [
    "Rule", "RuleState", "SGD", "Adam", "AdamW", "sgd", "adam", "adamw", "from_config", "RULES",
    "normalized_weight_decay", "weight_decay_for_timescale", "DECAY_SCALINGS",
    "Lion", "lion", "Lamb", "lamb", "Muon", "muon", "Adafactor", "adafactor",
    "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam",
    "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam",
]
