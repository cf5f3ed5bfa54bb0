"""The JAX backend beyond the shared suite: rule.step inside jax.jit with the state as a
pytree, nested params, the non-finite policy under jit, x64 off, and sharded arrays.
Expected values come from the NumPy backend (float64) on the same numbers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

from conftest import needs_backends

pytestmark = needs_backends("jax", why="these test the JAX backend")

STEPS = 20
RNG = np.random.default_rng(3)
# Flat names as decay gives them to a nested pytree: the path joined by "/".
FLAT = {"enc/w": RNG.normal(size=(3, 2)), "enc/b": RNG.normal(size=2), "head/0": RNG.normal(size=(2,))}
GRADS = [{k: RNG.normal(size=v.shape) for k, v in FLAT.items()} for _ in range(STEPS)]


def nested(flat, to=None):
    to = to or (lambda x: x)
    # insertion order w, b: not sorted, so jit's sorted rebuild of the dict must be followed by name
    return {"enc": {"w": to(flat["enc/w"]), "b": to(flat["enc/b"])}, "head": [to(flat["head/0"])]}


def make_rule():
    return decay.adamw(1e-2, weight_decay=0.1, mask=decay.masks.exclude_names("b"))


def numpy_run(rule, grads=GRADS):
    params = {k: v.copy() for k, v in FLAT.items()}
    state = rule.init(params)
    for g in grads:
        params, state = rule.step(params, g, state)
    return params, state


def test_step_inside_jit_on_a_nested_pytree_equals_numpy():
    import jax
    import jax.numpy as jnp

    rule = make_rule()
    params = nested(FLAT, jnp.asarray)
    start = jax.tree_util.tree_map(np.asarray, params)
    state = rule.init(params)  # eager init; then the state goes through jit as a pytree
    step = jax.jit(rule.step)
    for i, g in enumerate(GRADS):
        new, state = step(params, nested(g, jnp.asarray), state)
        if i == 0:  # functional: the caller's arrays are untouched
            jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, params), start)
        params = new
    want, want_state = numpy_run(make_rule())
    flat = {"enc/w": params["enc"]["w"], "enc/b": params["enc"]["b"], "head/0": params["head"][0]}
    for k in want:
        assert_close(np.asarray(flat[k]), want[k], "float64", steps=STEPS, what=k)
    assert int(state.count) == STEPS and int(state.skipped) == 0
    # an eager step after jit continues from the jitted state (count is now an array)
    g = nested(GRADS[0], jnp.asarray)
    eager, _ = rule.step(params, g, state)
    again, _ = step(params, g, state)
    jax.tree_util.tree_map(lambda a, b: assert_close(np.asarray(a), np.asarray(b), "float64"), eager, again)


def test_nonfinite_policies_under_jit():
    import jax
    import jax.numpy as jnp

    rule = decay.adam(1e-2, on_nonfinite="skip")
    params = nested(FLAT, jnp.asarray)
    state = rule.init(params)
    step = jax.jit(rule.step)
    params, state = step(params, nested(GRADS[0], jnp.asarray), state)
    bad = nested({**GRADS[1], "enc/b": np.full(2, np.nan)}, jnp.asarray)
    kept, kept_state = step(params, bad, state)
    jax.tree_util.tree_map(np.testing.assert_array_equal, kept, params)
    for before, after in zip(jax.tree_util.tree_leaves(state.slots), jax.tree_util.tree_leaves(kept_state.slots)):
        np.testing.assert_array_equal(before, after)
    assert int(kept_state.count) == 1 and int(kept_state.skipped) == 1
    raising = decay.sgd(0.1, on_nonfinite="raise")
    with pytest.raises(decay.DecayError, match="cannot raise inside jax.jit"):
        jax.jit(raising.step)(params, params, raising.init(params))


def test_eager_steps_share_one_compiled_function_per_structure():
    import jax.numpy as jnp

    backend = decay.get_backend("jnp")
    params = {k: jnp.asarray(v) for k, v in FLAT.items()}
    grads = {k: jnp.asarray(v) for k, v in GRADS[0].items()}
    for lr in (0.1, 0.2):  # a second rule with other numbers but the same structure
        rule = decay.sgd(lr, momentum=0.9)
        out, state = rule.step(params, grads, rule.init(params))
        if lr == 0.1:
            entries = len(backend._compiled)
    assert len(backend._compiled) == entries
    want, _ = decay.sgd(0.2, momentum=0.9).step({k: v.copy() for k, v in FLAT.items()}, GRADS[0],
                                                 decay.sgd(0.2, momentum=0.9).init(FLAT))
    for k in want:
        assert_close(np.asarray(out[k]), want[k], "float64")


_SUBPROCESS = textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp, decay
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from decay.tolerances import assert_close

    assert not jax.config.read("jax_enable_x64") and len(jax.devices()) == 2
    rng = np.random.default_rng(5)
    start = {"w": rng.normal(size=(4, 6)).astype(np.float32), "b": rng.normal(size=6).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()} for _ in range(10)]
    make = lambda: decay.adamw(1e-2, weight_decay=0.1)

    def run(params, jit):
        rule = make()
        state = rule.init(params)
        step = jax.jit(rule.step) if jit else rule.step
        for g in grads:
            g = {k: jax.device_put(jnp.asarray(v), params[k].sharding) for k, v in g.items()}
            params, state = step(params, g, state)
        return params, state

    # x64 off: float32 arrays, coefficients rounded once to float32, as the NumPy float32 run
    rule = make()
    want, s = {k: v.copy() for k, v in start.items()}, rule.init(start)
    for g in grads:
        want, s = rule.step(want, g, s)
    plain, _ = run({k: jnp.asarray(v) for k, v in start.items()}, jit=False)
    for k in want:
        assert plain[k].dtype == jnp.float32
        assert_close(np.asarray(plain[k]), want[k], "float32", steps=10, what=k)

    # sharded over 2 devices: the same weights, and the state keeps the params' sharding
    mesh = Mesh(np.array(jax.devices()), ("x",))
    spec = {"w": NamedSharding(mesh, P(None, "x")), "b": NamedSharding(mesh, P("x"))}
    for jit in (False, True):
        sharded = {k: jax.device_put(jnp.asarray(v), spec[k]) for k, v in start.items()}
        out, state = run(sharded, jit)
        for k in want:
            assert out[k].sharding.is_equivalent_to(spec[k], out[k].ndim), (k, out[k].sharding)
            assert_close(np.asarray(out[k]), np.asarray(plain[k]), "float32", what=k)
        for name, per_leaf in state.slots.items():
            for k, x in zip(state.names, per_leaf):
                assert x.sharding.is_equivalent_to(spec[k], x.ndim), (name, k, x.sharding)
    print("ok")
    """
)


def test_x64_off_and_sharded_over_two_devices():
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
