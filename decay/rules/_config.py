"""A rule as plain data: ``Rule.get_config`` and ``decay.rules.from_config``, and the
AdamW paper's normalized weight decay."""

from __future__ import annotations

import math

from .. import schedules
from ..errors import DecayError
from ..masks import mask_from_config, mask_to_config
from ..penalties import penalty_from_config
from ._reference import from_config as reference_from_config
from ._reference import to_config as reference_to_config


def rule_to_config(name: str, kwargs: dict) -> dict:
    """The constructor arguments of a rule as plain data."""
    config = {"rule": name}
    for key, value in kwargs.items():
        if key == "regularizer":
            value = None if value is None else value.get_config()
        elif key == "mask":
            value = mask_to_config(value)
        elif key == "groups":
            value = None if not value else [_group_to_config(g) for g in value]
        elif key == "decay_toward":
            value = reference_to_config(value)
        else:
            value = _value_to_config(key, value)
        config[key] = value
    return config


def _value_to_config(key, value):
    if isinstance(value, schedules.Schedule):
        return {"schedule": value.get_config()}
    if callable(value):
        raise DecayError(
            f"Cannot save `{key}`={value!r}: a plain callable has no config. Use a "
            "decay.schedules schedule, which can be saved."
        )
    return _plain(value)


def _plain(value):
    """JSON-able: a 0-d array or tensor, or a NumPy scalar (lr=np.float32(0.1),
    torch.tensor(0.1)), as its Python number; tuples as lists."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if not isinstance(value, (bool, int, float, str)) and getattr(value, "shape", None) == () and hasattr(value, "item"):
        return value.item()
    return value


def _group_to_config(group):
    if callable(group["params"]):
        raise DecayError("Cannot save a group selected by a callable; select it by a list of names.")
    return {k: (list(v) if k == "params" else _value_to_config(k, v)) for k, v in group.items()}


def value_from_config(value):
    if isinstance(value, dict) and set(value) == {"schedule"}:
        return schedules.from_config(value["schedule"])
    return value


def rule_kwargs_from_config(config: dict) -> dict:
    kwargs = {k: value_from_config(v) for k, v in config.items() if k != "rule"}
    if kwargs.get("regularizer") is not None:
        kwargs["regularizer"] = penalty_from_config(kwargs["regularizer"])
    kwargs["mask"] = mask_from_config(kwargs.get("mask"))
    if kwargs.get("groups"):
        kwargs["groups"] = [{k: value_from_config(v) for k, v in g.items()} for g in kwargs["groups"]]
    if "decay_toward" in kwargs:
        kwargs["decay_toward"] = reference_from_config(kwargs["decay_toward"])
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return kwargs


def normalized_weight_decay(lam_norm: float, batch_size: int, train_size: int, epochs: float) -> float:
    """The AdamW paper's normalized weight decay: λ = λ_norm · √(b / (B·T)).

    ``b`` is the batch size, ``B`` the number of training examples and ``T`` the number
    of epochs of the run (or of one restart period with warm restarts). It makes the
    best λ independent of how long one trains (Loshchilov & Hutter, ICLR 2019, §B.1)."""
    from ..validation import check_number

    lam_norm = check_number("lam_norm", lam_norm)
    b = check_number("batch_size", batch_size, minimum=1)
    big_b = check_number("train_size", train_size, minimum=1)
    t = check_number("epochs", epochs)
    if t <= 0:
        raise DecayError(f"`epochs` must be > 0. Received: epochs={epochs!r}.")
    return lam_norm * math.sqrt(b / (big_b * t))
