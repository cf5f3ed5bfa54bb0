"""Update rules: each a pair ``init(params) -> state``, ``step(params, grads, state)``."""

from ..errors import DecayError
from .adam import Adam, adam, adamw
from .base import DECAY_SCALINGS, Rule, RuleState, normalized_weight_decay, rule_kwargs_from_config
from .sgd import SGD, sgd


def from_config(config: dict) -> Rule:
    """Rebuild a rule from :meth:`Rule.get_config` output."""
    kinds = {"sgd": SGD, "adam": Adam, "adamw": Adam}
    if not isinstance(config, dict) or config.get("rule") not in kinds:
        got = config.get("rule") if isinstance(config, dict) else config
        raise DecayError(f"Unknown rule {got!r} in config. Known rules: {sorted(kinds)}.")
    rule = kinds[config["rule"]](**rule_kwargs_from_config(config))
    rule.name = config["rule"]
    return rule


__all__ = [
    "Rule", "RuleState", "SGD", "Adam", "sgd", "adam", "adamw", "from_config",
    "normalized_weight_decay", "DECAY_SCALINGS",
]
