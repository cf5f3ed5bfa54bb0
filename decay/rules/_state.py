"""A rule's state (:class:`RuleState`) and its plain-data form (``Rule.state_dict``,
``Rule.load_state_dict``), checked entry by entry before any tensor is made."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backends import backend_of_tensors
from ..errors import DecayError
from ..tree import saved_by_name


class RuleState(NamedTuple):
    """A rule's state: plain data. ``step`` returns the next one; its tensors may be
    those of the state passed in, updated in place (see :meth:`Rule.step`).

    ``count`` is the number of updates applied so far (the 0-based index of the next
    one, which is the step schedules are evaluated at); ``slots`` maps a slot name
    (``momentum_buffer``, ``exp_avg``, ...) to one tensor per parameter (None where
    that parameter has no such slot); ``skipped`` counts steps skipped for non-finite
    gradients; ``names`` are the parameters' names in the slots' order (None in a state
    built by hand), so that a state follows its parameters by name when a structure comes
    back reordered (``jax.jit`` rebuilds dicts with sorted keys) or moves between
    backends. With JAX, ``RuleState`` is a pytree whose ``names`` are static."""

    count: int
    slots: dict
    skipped: int = 0
    #: a dict of params' names in the slots' order: matched by name, not position
    names: tuple | None = None
    #: the rule that made it: another rule's is refused, even with the same slots
    rule: str | None = None


def _check_count(state) -> None:
    count = state.count
    if not isinstance(count, (int, np.integer)) and getattr(count, "shape", None) == ():
        # A framework's 0-d integer: JAX's count after jax.jit (an int32 array), or a
        # tracer inside it, whose value cannot be checked while tracing.
        if np.dtype(count.dtype).kind not in "iu":
            raise DecayError(f"`state.count` must be an integer >= 0. Received: {count!r}.")
        if type(count).__module__.startswith("jax.") and "Tracer" in type(count).__name__:
            return
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise DecayError(f"`state.count` must be an integer >= 0. Received: {state.count!r}.")


def _check_made_by(rule, state) -> None:
    if state.rule is not None and state.rule != rule.name:
        raise DecayError(
            f"`state` was made by rule {state.rule!r}, not {rule.name!r}. Call init() with this rule, or "
            "load a saved state with load_state_dict() (it checks what it loads)."
        )


def _names_of(flat):
    """The names a state records: a dict's keys or a pytree's paths (matched by name when
    the caller, or jax.jit, lists them in another order); None for lists and tuples."""
    return flat.names if flat.kind in ("dict", "pytree") else None


def state_dict(rule, state) -> dict:
    """``state`` as plain NumPy arrays and numbers (the caller checked it fits ``rule``)."""
    slots = {}
    for slot, per_leaf in state.slots.items():
        arrays = []
        for x in per_leaf:
            arrays.append(None if x is None else backend_of_tensors([(slot, x)], "state").to_numpy(x))
        slots[slot] = arrays
    names = None if state.names is None else list(state.names)
    return {"rule": rule.name, "count": int(state.count), "skipped": int(state.skipped), "slots": slots,
            "names": names}


def load_state_dict(rule, saved, template, flat, backend) -> RuleState:
    """A state like ``template`` (``rule.init`` of the params ``flat`` holds) from
    ``saved``, every entry checked before a tensor is made."""
    if not isinstance(saved, dict):
        raise DecayError(f"Saved state must be the dict from state_dict(). Received a {type(saved).__name__}.")
    if saved.get("rule") != rule.name:
        raise DecayError(
            f"This state was saved by rule {saved.get('rule')!r}, not {rule.name!r}. Load it "
            "into the rule that saved it."
        )
    saved_slots = saved.get("slots")
    if not isinstance(saved_slots, dict) or set(saved_slots) != set(template.slots):
        got = sorted(saved_slots) if isinstance(saved_slots, dict) else saved_slots
        raise DecayError(
            f"Saved state has slots {got!r} but this rule needs {sorted(template.slots)}. "
            "Were momentum/amsgrad settings changed?"
        )
    count, skipped = saved.get("count"), saved.get("skipped", 0)
    for key, value in (("count", count), ("skipped", skipped)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DecayError(f"Saved state has an invalid `{key}`: {value!r}. It must be an integer >= 0.")
    saved_slots = saved_by_name(saved, saved_slots, flat)
    checked = {}
    for slot, per_leaf in template.slots.items():
        arrays = saved_slots[slot]
        if not isinstance(arrays, (list, tuple)) or len(arrays) != len(per_leaf):
            size = len(arrays) if isinstance(arrays, (list, tuple)) else type(arrays).__name__
            raise DecayError(
                f"Saved slot {slot!r} holds {size} tensors but params has {len(per_leaf)}."
            )
        checked[slot] = []
        for name, like, array in zip(flat.names, per_leaf, arrays):
            if (like is None) != (array is None):
                raise DecayError(f"Saved slot {slot!r} does not match parameter {name!r}.")
            if like is not None:
                array = np.asarray(array)
                if array.dtype.kind != "f" or tuple(array.shape) != backend.shape(like):
                    raise DecayError(
                        f"Saved slot {slot!r} for parameter {name!r} is a {array.dtype} array of "
                        f"shape {tuple(array.shape)}; expected floats of shape {backend.shape(like)}."
                    )
            checked[slot].append((like, array))
    slots = {
        slot: tuple(None if like is None else backend.from_numpy(array, like) for like, array in pairs)
        for slot, pairs in checked.items()
    }
    return RuleState(int(count), slots, int(skipped), _names_of(flat), rule.name)
