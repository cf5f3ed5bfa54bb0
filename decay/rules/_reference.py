"""``decay_toward``: the reference θ₀ a decay pulls toward (L2-SP, Li, Grandvalet and
Davoine, 2018), kept in the state like a slot.

The reference is given as ``"init"`` (the parameters' values when the state is made:
``Rule.init``, a torch optimizer's first step, a Keras optimizer's ``build``) or as a
structure of tensors like the parameters (any backend's, or NumPy arrays): a dict
name -> tensor, a list/tuple in the parameters' order, or one tensor. It is copied into
the state slot :data:`decay.engine.REFERENCE_SLOT` on the parameters' backend, dtype and
device (float32 for float16/bfloat16 parameters, as every slot), so checkpoints,
``state_dict`` and moves between backends carry it as they carry momentum.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..backends import backend_of_tensors
from ..errors import DecayError

INIT = "init"


def check_decay_toward(value):
    """``value`` as given (None, "init" or a structure of tensors), checked for its kind."""
    if value is None or (isinstance(value, str) and value == INIT):
        return value
    if isinstance(value, str):
        raise DecayError(
            f"`decay_toward` must be 'init', or tensors like the parameters (a dict name -> tensor, a "
            f"list, or one tensor). Received: decay_toward={value!r}."
        )
    leaves = list(value.values()) if isinstance(value, Mapping) else (
        list(value) if isinstance(value, (list, tuple)) else [value])
    if not leaves or not all(hasattr(x, "shape") for x in leaves):
        raise DecayError(
            "`decay_toward` must be 'init', or tensors like the parameters (a dict name -> tensor, a "
            f"list, or one tensor); it holds {[type(x).__name__ for x in leaves][:5]}."
        )
    return value


def _as_numpy(name, x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    return backend_of_tensors([(f"decay_toward[{name!r}]", x)], "decay_toward").to_numpy(x)


def _pick(toward, names, count: int) -> list:
    """The reference entry of each of ``count`` leaves named ``names``."""
    if isinstance(toward, Mapping):
        missing = [n for n in names if n not in toward]
        if missing:
            raise DecayError(
                f"`decay_toward` has no reference for parameter(s) {missing[:5]}; its keys are "
                f"{sorted(map(str, toward))[:5]}... Give one tensor per parameter name."
            )
        return [toward[n] for n in names]
    entries = list(toward) if isinstance(toward, (list, tuple)) else [toward]
    if len(entries) != count:
        raise DecayError(
            f"`decay_toward` holds {len(entries)} tensor(s) but there are {count} parameters. "
            "Give one tensor per parameter, in the parameters' order (or a dict by name)."
        )
    return entries


def pick_reference(toward, names, count: int, index: int):
    """The ``decay_toward`` of leaf ``index`` alone (of ``count`` leaves named ``names``),
    for callers that make one parameter's state at a time."""
    if isinstance(toward, str):  # "init" (checked when the rule was built)
        return INIT
    return [_pick(toward, list(names), count)[index]]


def checked_arrays(toward, names, shapes) -> list | None:
    """θ₀ of each leaf as a NumPy array, checked against the leaves' names and shapes
    before anything is made (None for "init")."""
    if isinstance(toward, str):  # "init" (checked when the rule was built)
        return None
    arrays = []
    for name, shape, ref in zip(names, shapes, _pick(toward, list(names), len(shapes))):
        array = _as_numpy(name, ref)
        if tuple(array.shape) != tuple(shape) or array.dtype.kind != "f":
            raise DecayError(
                f"`decay_toward` for parameter {name!r} is a {array.dtype} array of shape "
                f"{tuple(array.shape)}; expected floats of the parameter's shape {tuple(shape)}."
            )
        arrays.append(array)
    return arrays


def reference_slots(toward, backend, names, leaves, likes) -> list:
    """The reference slot of each leaf: a tensor like ``likes[i]`` (the slot's dtype and
    device) holding θ₀, checked to have the leaf's shape."""
    arrays = checked_arrays(toward, names, [backend.shape(x) for x in leaves])
    if arrays is None:
        return [backend.cast(backend.clone([backend.read(x)])[0], backend.dtype_name(like))
                for x, like in zip(leaves, likes)]
    return [backend.from_numpy(array, like) for array, like in zip(arrays, likes)]


def to_config(toward):
    """Plain data: "init" as is, tensors as nested lists of floats (exact in float64)."""
    if toward is None or isinstance(toward, str):
        return toward
    if isinstance(toward, Mapping):
        return {"arrays": {str(k): _as_numpy(k, v).astype(np.float64).tolist() for k, v in toward.items()}}
    if isinstance(toward, (list, tuple)):
        return {"arrays": [_as_numpy(i, v).astype(np.float64).tolist() for i, v in enumerate(toward)]}
    return {"array": _as_numpy(0, toward).astype(np.float64).tolist()}


def from_config(value):
    if isinstance(value, dict) and "arrays" in value:
        arrays = value["arrays"]
        if isinstance(arrays, dict):
            return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        return [np.asarray(v, dtype=np.float64) for v in arrays]
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=np.float64)
    return value
