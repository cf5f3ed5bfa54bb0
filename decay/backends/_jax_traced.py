"""``rule.step`` inside ``jax.jit`` (or any JAX transformation): the state is a pytree.

The step's numbers (learning rate, bias corrections, schedules) are decay's Python
float64 ones, computed on the host from the traced step count by ``jax.pure_callback``:
one definition of every schedule and rule coefficient, the same values as an eager step
(rounded once to float32 where JAX runs without x64). The structural fields of the
numbers (the ``bool`` fields of a rule's Hyper record) are fixed per group, so they are
read at trace time. The update itself is the rule's definition, traced.

``RuleState`` is registered as a pytree (:func:`register_state`): ``count`` and
``skipped`` become int32 arrays under ``jit``, the slots arrays (``None`` where a
parameter has no such slot, an empty subtree), and ``names`` is static (part of the
tree's structure), so a state follows its parameters by name when ``jit`` rebuilds a
dict of params with sorted keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import engine
from ..errors import DecayError


def _numbers(rule, groups, count, template_key, size, dtype):
    """The per-step numbers as a traced vector, computed on the host from ``count``."""

    def host(t):
        hypers = engine.coefficients(rule, groups, int(t))
        key, values = engine.flatten_hypers(hypers)
        if key != template_key:  # a rule whose structural fields change with the step
            raise DecayError(
                f"{rule.name}: the structural (bool) fields of its numbers changed at step {int(t)}; "
                "they must be fixed per group to run inside jax.jit."
            )
        return np.asarray(values, dtype=dtype)

    return jax.pure_callback(host, jax.ShapeDtypeStruct((size,), dtype), count)


def traced_step(backend, rule, flat, grads, state, group_of, decayed, parts):
    """One step on traced arrays. Returns (new leaves, new RuleState)."""
    from ..rules.base import RuleState

    if rule.on_nonfinite == "raise":
        raise DecayError(
            "on_nonfinite='raise' cannot raise inside jax.jit (the values are not known while "
            "tracing). Use on_nonfinite='skip' (the step is then skipped, as optax.apply_if_finite "
            "does), or step outside jit."
        )
    groups = rule.hyper_sets()
    if parts is None:
        dtypes = [backend.dtype_name(x) for x in flat.leaves]
        parts, _ = engine.partition(rule, groups, group_of, decayed, dtypes,
                                    shapes=[backend.shape(x) for x in flat.leaves])
    count = state.count
    if isinstance(count, jax.core.Tracer):
        template = engine.coefficients(rule, groups, 0)
        key, values = engine.flatten_hypers(template)
        dtype = np.float64 if jax.config.read("jax_enable_x64") else np.float32
        vector = _numbers(rule, groups, count, key, len(values), dtype)
        hypers = engine.rebuild_hypers(template, [vector[i] for i in range(len(values))])
    else:  # a concrete count (closed over by the caller): the numbers are constants
        hypers = engine.coefficients(rule, groups, int(count))
    params = list(flat.leaves)
    columns = {name: list(col) for name, col in state.slots.items()}
    engine._body(rule, backend, parts, hypers, 0, params, list(grads), columns, False)
    slots = {name: tuple(col) for name, col in columns.items()}
    if rule.on_nonfinite != "skip":
        return params, RuleState(count + 1, slots, state.skipped, state.names, state.rule)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in grads]))
    params = [jnp.where(finite, new, old) for new, old in zip(params, flat.leaves)]
    slots = {
        name: tuple(None if new is None else jnp.where(finite, new, old) for new, old in zip(col, state.slots[name]))
        for name, col in slots.items()
    }
    ok = finite.astype(jnp.int32)
    return params, RuleState(count + ok, slots, state.skipped + 1 - ok, state.names, state.rule)


def register_state():
    """Register ``RuleState`` as a pytree node with ``names`` and ``rule`` as static data (JAX would
    otherwise flatten the NamedTuple's ``names`` strings as leaves)."""
    from ..rules.base import RuleState

    try:
        jax.tree_util.register_pytree_node(
            RuleState,
            lambda s: ((s.count, s.slots, s.skipped), (s.names, s.rule)),
            lambda static, children: RuleState(*children, *static),
        )
    except ValueError:  # registered already (a reloaded module)
        pass
