"""The checks ``Rule.step`` and ``Rule.state_dict`` run before anything is written: the
gradients against the parameters, and a state against the rule and its parameters."""

from __future__ import annotations

from .._memory import check_disjoint
from ..backends import backend_of_tensors
from ..errors import DecayError
from ..validation import check_slot_fits
from ._state import RuleState, _check_count, _check_made_by


def check_grads(backend, flat, g_leaves) -> None:
    """Gradients of the parameters' backend, shapes, dtypes and devices; the first
    mismatch is named."""
    grads_backend = backend_of_tensors([(f"grads[{n!r}]", g) for n, g in zip(flat.names, g_leaves)], "grads")
    if grads_backend is not backend:
        raise DecayError(
            f"`params` are {backend.name} tensors but `grads` are {grads_backend.name} tensors. "
            "Convert them to one framework before calling decay."
        )
    for name, p, g in zip(flat.names, flat.leaves, g_leaves):
        if backend.same_layout(p, g):
            continue
        if backend.shape(p) != backend.shape(g):
            raise DecayError(
                f"The gradient of parameter {name!r} has shape {backend.shape(g)} but the "
                f"parameter has shape {backend.shape(p)}. Pass grads in the same order and "
                "shapes as params."
            )
        if backend.dtype_name(p) != backend.dtype_name(g):
            raise DecayError(
                f"The gradient of parameter {name!r} is {backend.dtype_name(g)} but the "
                f"parameter is {backend.dtype_name(p)}. Cast the gradient to the parameter's dtype."
            )
        if backend.device(p) != backend.device(g):
            raise DecayError(
                f"The gradient of parameter {name!r} is on {backend.device(g)} but the "
                f"parameter is on {backend.device(p)}. Move them to one device."
            )

def check_state_fits_rule(rule, state) -> None:
    """A RuleState this rule could have made: its slots, a valid count (no params needed)."""
    if not isinstance(state, RuleState):
        raise DecayError(
            f"`state` must be the RuleState returned by init() or step(). Received a {type(state).__name__}."
        )
    _check_count(state)
    _check_made_by(rule, state)
    needed = {s for h in rule.hyper_sets() for s in rule.state_slot_names(h)}
    if not isinstance(state.slots, dict) or set(state.slots) != needed:
        got = sorted(state.slots) if isinstance(state.slots, dict) else state.slots
        raise DecayError(
            f"`state` holds slots {got!r} but {rule.name} needs {sorted(needed)}. "
            "Was it made by another rule? Save the state with the rule that made it."
        )
    if len({len(per_leaf) for per_leaf in state.slots.values()}) > 1:
        raise DecayError("`state` holds slots of different lengths: it is damaged. Call init() again.")

def check_state(rule, state, flat, backend) -> None:
    """The state must be one this rule made for these params: same slots, one
    tensor per parameter of its shape and backend, a valid count."""
    if not isinstance(state, RuleState):
        raise DecayError(
            f"`state` must be the RuleState returned by init() or step(). "
            f"Received a {type(state).__name__}."
        )
    _check_count(state)
    _check_made_by(rule, state)
    hypers = rule.hyper_sets()
    group_of, _ = rule.resolve(flat.names, flat.leaves)
    needed = {s for h in hypers for s in rule.state_slot_names(h)}
    if set(state.slots) != needed:
        raise DecayError(
            f"`state` holds slots {sorted(state.slots)} but {rule.name} needs {sorted(needed)}. "
            "Was it made by another rule? Call init() with this rule."
        )
    for slot, per_leaf in state.slots.items():
        if len(per_leaf) != len(flat.leaves):
            raise DecayError(
                f"`state` was made for {len(per_leaf)} parameters but {len(flat.leaves)} were "
                "passed. Call init() with these params."
            )
    for i, (name, p, g) in enumerate(zip(flat.names, flat.leaves, group_of)):
        shapes = rule.state_slot_shapes(hypers[g], backend.shape(p))
        for slot, per_leaf in state.slots.items():
            x = per_leaf[i]
            if (slot in shapes) != (x is not None) or (
                x is not None and (not backend.is_tensor(x) or backend.shape(x) != shapes[slot])
            ):
                expected = f"a {backend.name} tensor of shape {shapes[slot]}" if slot in shapes else "None"
                raise DecayError(
                    f"`state` slot {slot!r} does not fit parameter {name!r} (expected {expected}). "
                    "Call init() with these params."
                )
            if x is not None:
                check_slot_fits(backend, slot, name, p, x)
    # No slot may share memory with a parameter or another slot (once per new state).
    held = [(f"`state` slot {slot!r} of {name!r}", x) for slot, per_leaf in state.slots.items()
            for name, x in zip(flat.names, per_leaf) if x is not None]
    check_disjoint(backend, [f"parameter {n!r}" for n in flat.names] + [label for label, _ in held],
                   list(flat.leaves) + [x for _, x in held])

