"""optax, both ways: decay.optax.transformation(rule) in optax chains, to_native(rule,
"optax") and from_native(optax transformation). Every claim runs both sides for 100
steps in float64 (x64 is on for the suite, tests/conftest.py); the decay side of the
conversions runs on NumPy, independently of JAX."""

from __future__ import annotations

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

from conftest import needs_backends

pytestmark = needs_backends("jax", why="optax runs on JAX")

STEPS = 100
RNG = np.random.default_rng(17)
START = {"b": RNG.normal(size=3), "w": RNG.normal(size=(3, 2))}  # sorted keys: jit keeps the order
TARGET = {k: RNG.normal(size=v.shape) for k, v in START.items()}
# optax's float32 schedules: lr_t is off by <= 2^-23 relative per step (see decay.convert.optax).
SCHEDULE_BOUND = STEPS * 2.0**-23 * 2


def grad_np(p, t):
    """Gradient of Σ ½(p − target)²·(1 + t mod 3): a changing, deterministic gradient."""
    return {k: (p[k] - TARGET[k]) * (1 + t % 3) for k in p}


def run_numpy(rule, steps=STEPS):
    params = {k: v.copy() for k, v in START.items()}
    state = rule.init(params)
    for t in range(steps):
        params, state = rule.step(params, grad_np(params, t), state)
    return params


def run_optax(tx, steps=STEPS, poison=None):
    """``steps`` jitted optax updates; ``poison`` = a step whose gradient is nan."""
    import jax
    import jax.numpy as jnp
    import optax

    @jax.jit
    def update(params, state, t):
        grads = jax.tree_util.tree_map(lambda p, y: (p - y) * (1 + t % 3), params, target)
        if poison is not None:
            grads = jax.tree_util.tree_map(lambda g: jnp.where(t == poison, jnp.nan, g), grads)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    target = {k: jnp.asarray(v) for k, v in TARGET.items()}
    params = {k: jnp.asarray(v) for k, v in START.items()}
    state = tx.init(params)
    for t in range(steps):
        params, state = update(params, state, jnp.asarray(t))
    return {k: np.asarray(v) for k, v in params.items()}, state


def check(got, want, bound=None):
    for k in want:
        if bound is None:
            assert_close(got[k], want[k], "float64", steps=STEPS, what=k)
        else:
            err = np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k]))
            assert err <= bound, f"{k}: relative error {err:.3g} > {bound:.3g}"


# -- decay.optax.transformation ------------------------------------------------------------


def test_transformation_in_a_chain_equals_optax_adamw_and_the_rule():
    import optax

    rule = decay.adamw(1e-2, weight_decay=0.1)
    ours, state = run_optax(optax.chain(optax.clip_by_global_norm(1.0), decay.optax.transformation(rule)))
    theirs, _ = run_optax(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1)))
    check(ours, theirs)
    assert int(state[1].count) == STEPS
    # and without clipping, decay's own rule on NumPy gives the same weights
    ours, _ = run_optax(decay.optax.transformation(decay.adamw(1e-2, weight_decay=0.1)))
    check(ours, run_numpy(decay.adamw(1e-2, weight_decay=0.1)))


def test_transformation_under_multisteps_equals_optax_sgd():
    import optax

    make = lambda inner: optax.MultiSteps(inner, every_k_schedule=2)  # noqa: E731
    ours, _ = run_optax(make(decay.optax.transformation(decay.sgd(0.1, momentum=0.9, nesterov=True))))
    theirs, _ = run_optax(make(optax.sgd(0.1, momentum=0.9, nesterov=True)))
    check(ours, theirs)


def test_transformation_under_apply_if_finite_skips_like_optax():
    import optax

    ours, state = run_optax(optax.apply_if_finite(decay.optax.transformation(decay.adam(1e-2)), 5), poison=7)
    theirs, _ = run_optax(optax.apply_if_finite(optax.adam(1e-2), 5), poison=7)
    check(ours, theirs)
    assert int(state.total_notfinite) == 1 and int(state.inner_state.count) == STEPS - 1


def test_transformation_needs_params_and_a_rule():
    import jax.numpy as jnp

    tx = decay.optax.transformation(decay.sgd(0.1))
    params = {"w": jnp.zeros(2)}
    with pytest.raises(decay.DecayError, match="needs `params`"):
        tx.update(params, tx.init(params))
    with pytest.raises(decay.DecayError, match="must be a decay rule"):
        decay.optax.transformation("adamw")


# -- to_native(rule, "optax") ----------------------------------------------------------------

S = decay.schedules
TO_OPTAX = {
    "sgd-coupled-nesterov": (decay.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.01), None),
    # decoupled decay with momentum: exact in optax (trace, then add_decayed_weights)
    "sgd-decoupled-momentum": (decay.sgd(0.1, momentum=0.9, weight_decay=0.05, decoupled=True), None),
    "adam-coupled-L2": (decay.adam(1e-2, weight_decay=0.01, regularizer=decay.L2(0.02)), None),
    "adamw-mask": (decay.adamw(1e-2, weight_decay=0.1, mask=decay.masks.exclude_names("b")), None),
    "adamw-warmup-cosine": (decay.adamw(S.warmup(S.cosine(1e-2, 80, floor=1e-4), 10), weight_decay=0.1),
                            SCHEDULE_BOUND),
}


@pytest.mark.parametrize("case", list(TO_OPTAX))
def test_to_native_optax_is_exact(case):
    rule, bound = TO_OPTAX[case]
    conversion = decay.to_native(rule, "optax")
    assert conversion.exact and conversion.code.startswith("optax.")
    got, _ = run_optax(conversion.build())
    check(got, run_numpy(rule), bound)


def test_to_native_optax_refuses_what_optax_cannot_say():
    with pytest.raises(decay.DecayError, match="no dampening"):
        decay.to_native(decay.sgd(0.1, momentum=0.9, dampening=0.5), "optax")
    closest = decay.to_native(decay.adam(1e-2, amsgrad=True), "optax", strict=False)
    assert not closest.exact and "bias-corrected" in closest.reason


# -- from_native(optax) -----------------------------------------------------------------------


def test_from_native_reads_inject_hyperparams():
    import optax

    for factory, kwargs in [
        (optax.adamw, dict(learning_rate=1e-2, b1=0.8, weight_decay=0.05)),
        (optax.sgd, dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ]:
        tx = optax.inject_hyperparams(factory)(**kwargs)
        rule = decay.from_native(tx)
        theirs, _ = run_optax(tx)
        check(run_numpy(rule), theirs)


def test_from_native_explains_opaque_optax():
    import optax

    with pytest.raises(decay.DecayError, match="inject_hyperparams"):
        decay.from_native(optax.adamw(1e-3))
    with pytest.raises(decay.DecayError, match="schedule"):
        decay.from_native(optax.inject_hyperparams(optax.adam)(learning_rate=optax.cosine_decay_schedule(0.1, 10)))


def test_optax_settings_read_as_optax_means_them():
    # `decay convert --from optax`: optax.adamw's defaults (weight_decay 1e-4, eps 1e-8)
    import optax

    from decay.convert import rule_from_settings

    rule = rule_from_settings("optax", "adamw", lr=1e-2)
    theirs, _ = run_optax(optax.adamw(1e-2))
    check(run_numpy(rule), theirs)
    with pytest.raises(decay.DecayError, match="no dampening"):
        rule_from_settings("optax", "sgd", lr=0.1, momentum=0.9, dampening=0.1)
