"""Which parameters are decayed, and which hyperparameter group each belongs to.

A mask is ``None`` (decay everything, PyTorch's default), a dict name -> bool, or a
callable ``(name, tensor) -> bool``. True means *decayed* (optax's convention). Names
are the dict keys of the params (``dict(model.named_parameters())`` gives PyTorch's
dotted names), or the list index as a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import DecayError
from .validation import check_bool_result, user_callable


def _ndim(tensor) -> int:
    return len(getattr(tensor, "shape", ()))


def timm_default(name: str, tensor) -> bool:
    """timm's default (``timm.optim.param_groups_weight_decay``): no decay for tensors with
    ndim <= 1 (biases, norm scales) or names ending in ".bias" — timm tests
    ``name.endswith(".bias")``, so a 2-D parameter named ``attn_bias`` is decayed. A
    DTensor (FSDP2's ``fully_shard``) is judged by its full shape (its ``.shape``),
    whatever this rank's shard holds."""
    return not (_ndim(tensor) <= 1 or name.endswith(".bias"))


class exclude_names:  # noqa: N801 - used like the function it replaces
    """Keras-style ``optimizer.exclude_from_weight_decay(var_names=[...])``: a parameter
    is not decayed when any substring occurs in its name (``re.search`` of the
    substrings joined into one pattern, as Keras does).

    The names are the ones decay is given: dict keys, ``named_parameters()`` names, or a
    Keras variable's *path* (``"dense/kernel"``) in :mod:`decay.keras`. Keras itself
    searches the TensorFlow variable name (``"dense_kernel:0"`` on TF), so a plain
    substring behaves the same in both while an anchored pattern such as ``"kernel$"``
    does not."""

    # A class, not a closure: a mask must pickle (ZeroRedundancyOptimizer copies the
    # rule into its param groups and pickles them into checkpoints).
    def __init__(self, *substrings: str):
        if not substrings or not all(isinstance(s, str) and s for s in substrings):
            raise DecayError(
                f"exclude_names() needs one or more non-empty strings. Received: {substrings!r}."
            )
        self.substrings = substrings
        self._pattern = re.compile("|".join(substrings))

    def __call__(self, name: str, tensor) -> bool:
        return self._pattern.search(name) is None

    def __repr__(self):
        return f"exclude_names{self.substrings!r}"

    def __eq__(self, other):
        return isinstance(other, exclude_names) and other.substrings == self.substrings

    def __hash__(self):
        return hash(self.substrings)


def resolve_mask(mask, names, leaves) -> list:
    """One bool per parameter: is it decayed?"""
    if mask is None:
        return [True] * len(names)
    if isinstance(mask, Mapping):
        unknown = sorted(set(mask) - set(names))
        if unknown:
            raise DecayError(
                f"`mask` names parameters that do not exist: {unknown}. Known names: {list(names)}."
            )
        return [check_bool_result(f"`mask[{n!r}]`", mask.get(n, True)) for n in names]
    if callable(mask):
        return [
            check_bool_result(f"The mask {mask!r} called on {n!r}", user_callable(f"The mask {mask!r} called on {n!r}", mask, n, x))
            for n, x in zip(names, leaves)
        ]
    raise DecayError(
        f"`mask` must be None, a dict name -> bool or a callable (name, tensor) -> bool. "
        f"Received: mask={mask!r}."
    )


def resolve_groups(selectors, names, leaves) -> list:
    """Per parameter, 1 + the index of the first group that selects it, or 0 (the
    defaults). A selector is a list of names or a callable (name, tensor) -> bool."""
    group_of = [0] * len(names)
    claimed = [False] * len(names)
    for index, selector in enumerate(selectors):
        if callable(selector):
            what = f"The selector of `groups[{index}]['params']` called on"
            chosen = [check_bool_result(f"{what} {n!r}", user_callable(f"{what} {n!r}", selector, n, x))
                      for n, x in zip(names, leaves)]
        elif isinstance(selector, (list, tuple, set, frozenset)):
            unknown = sorted(set(map(str, selector)) - set(names))
            if unknown:
                raise DecayError(
                    f"`groups[{index}]['params']` names parameters that do not exist: {unknown}. "
                    f"Known names: {list(names)}."
                )
            wanted = set(map(str, selector))
            chosen = [n in wanted for n in names]
        else:
            raise DecayError(
                f"`groups[{index}]['params']` must be a list of parameter names or a callable "
                f"(name, tensor) -> bool. Received: {selector!r}."
            )
        for i, take in enumerate(chosen):
            if take and not claimed[i]:
                group_of[i], claimed[i] = index + 1, True
    return group_of


def mask_to_config(mask):
    """Plain data for a mask, or an error for a mask that cannot be saved."""
    if mask is None or isinstance(mask, Mapping):
        return None if mask is None else {str(k): bool(v) for k, v in mask.items()}
    if mask is timm_default:
        return "timm_default"
    if hasattr(mask, "substrings"):
        return {"exclude_names": list(mask.substrings)}
    raise DecayError(
        f"Cannot save the mask {mask!r}: only None, a dict, decay.masks.timm_default and "
        "decay.masks.exclude_names(...) can be serialized. Use one of those."
    )


def mask_from_config(config):
    if config == "timm_default":
        return timm_default
    if isinstance(config, Mapping) and set(config) == {"exclude_names"}:
        return exclude_names(*config["exclude_names"])
    return config
