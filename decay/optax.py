"""decay's rules as optax transformations: ``decay.optax.transformation(rule)``.

``import decay`` does not load this module (nor JAX): ``decay.optax`` is loaded when
first touched, like ``decay.torch`` and ``decay.keras``. Inside it, ``import optax`` is
the optax package (imports are absolute), never this module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from .errors import DecayError
from .rules import Rule, RuleState


def transformation(rule: Rule) -> optax.GradientTransformation:
    """``rule`` as an ``optax.GradientTransformation``, for ``optax.chain``,
    ``optax.MultiSteps``, ``optax.apply_if_finite``, ``optax.masked`` and ``jax.jit``.

    ``update(grads, state, params)`` returns ``updates = θ_new − θ`` where
    ``θ_new, state' = rule.step(params, grads, state)``, so that
    ``optax.apply_updates(params, updates)`` is decay's step (to one rounding of θ per
    step: (θ_new − θ) + θ may differ from θ_new by half an ulp of θ). The rule's whole
    update, weight decay included, happens inside: put transformations that change the
    gradient (clipping) before it in a chain, and none that change the update after it
    (the update is already scaled by the learning rate, as ``optax.adamw``'s is).

    ``params`` are required (decay's rules decay the weights and keep per-parameter
    state). The state is decay's :class:`decay.RuleState`, a pytree whose ``count`` is
    an int32 array, as optax's counts are.

    Example::

        tx = optax.chain(optax.clip_by_global_norm(1.0),
                         decay.optax.transformation(decay.adamw(1e-3, weight_decay=0.05)))
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    """
    if not isinstance(rule, Rule):
        raise DecayError(
            f"`rule` must be a decay rule (decay.sgd, decay.adam, decay.adamw, ...). "
            f"Received: rule={rule!r}."
        )

    def init_fn(params):
        state = rule.init(params)
        zero = jnp.zeros([], jnp.int32)
        return state._replace(count=zero, skipped=zero)

    def update_fn(updates, state, params=None):
        if params is None:
            raise DecayError(
                f"decay.optax.transformation({rule.name}) needs `params` in update(grads, state, params): "
                "the rule decays the weights. Pass params, as optax.adamw requires too."
            )
        if not isinstance(state, RuleState):
            raise DecayError(
                f"`state` must be the state this transformation's init() returned. Received a "
                f"{type(state).__name__}."
            )
        new_params, new_state = rule.step(params, updates, state)
        deltas = jax.tree_util.tree_map(lambda new, old: new - old, new_params, params)
        count = jnp.asarray(new_state.count, jnp.int32)
        skipped = jnp.asarray(new_state.skipped, jnp.int32)
        return deltas, new_state._replace(count=count, skipped=skipped)

    return optax.GradientTransformation(init_fn, update_fn)


__all__ = ["transformation"]
