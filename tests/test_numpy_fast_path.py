"""NumPy's in-place fast path against the generic path, where its own code branches:
tensors over one block, N-d and 0-d tensors, slots it must not take, the dict API."""

import numpy as np
import pytest

import decay
from decay.backends.numpy_backend import BLOCK
from decay.tolerances import assert_close

RULES = {
    "sgd": lambda: decay.sgd(0.01, weight_decay=1e-3),
    "sgd-nesterov": lambda: decay.sgd(0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-momentum-decoupled": lambda: decay.sgd(0.01, momentum=0.9, dampening=0.1, weight_decay=1e-3, decoupled=True),
    "adam-amsgrad": lambda: decay.adam(1e-2, weight_decay=1e-3, amsgrad=True),
    "adamw": lambda: decay.adamw(1e-2, weight_decay=1e-2),
}
SHAPES = {"long": (2 * BLOCK + 5,), "matrix": (300, 7), "scalar": (), "vector": (9,)}
STEPS = 3


def _run(make, dtype, fast, state_hook=None):
    rng = np.random.default_rng(0)
    params = {n: rng.normal(size=s).astype(dtype) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(size=s).astype(dtype) for n, s in SHAPES.items()} for _ in range(STEPS)]
    rule = make()
    rule.use_fast_path = fast
    state = rule.init(params)
    if state_hook is not None:
        state = state_hook(state)
    for g in grads:
        params, state = rule.step(params, g, state)
    return params, state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(RULES))
def test_fast_matches_generic_over_blocks_and_shapes(name, dtype):
    fast, fast_state = _run(RULES[name], dtype, True)
    generic, generic_state = _run(RULES[name], dtype, False)
    for n in SHAPES:
        assert fast[n].shape == SHAPES[n]
        assert_close(fast[n], generic[n], dtype, steps=STEPS, what=n)
    for slot, per_leaf in fast_state.slots.items():
        for a, b in zip(per_leaf, generic_state.slots[slot]):
            assert_close(a, b, dtype, steps=STEPS, what=slot)


def test_a_non_contiguous_slot_goes_to_the_generic_path():
    # A 1-d view of a Fortran-order slot would be a copy: the fast path must refuse it
    # (before writing anything) instead of updating the copy.
    def fortran_slots(state):
        slots = {s: tuple(x if x is None else np.array(x, order="F") for x in per_leaf) for s, per_leaf in state.slots.items()}
        return state._replace(slots=slots)

    make = RULES["adamw"]
    got, _ = _run(make, "float64", True, fortran_slots)
    want, _ = _run(make, "float64", False)
    for n in SHAPES:
        assert_close(got[n], want[n], "float64", steps=STEPS, what=n)


def test_refusal_writes_nothing():
    backend = decay.get_backend("numpy")
    rule = decay.adamw(1e-2, weight_decay=1e-2)
    params = [np.ones(5), np.ones(5)[::2]]  # the second is not contiguous
    before = [p.copy() for p in params]
    columns = {"exp_avg": [np.zeros(5), np.zeros(3)], "exp_avg_sq": [np.zeros(5), np.zeros(3)]}
    hypers = [rule.hyper_at(rule.defaults, 0)] * 2
    assert not backend.fast_update_columns(rule, params, [np.ones(5), np.ones(3)], columns, hypers, [True, True])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert not any(x.any() for column in columns.values() for x in column)


def test_dict_slots_api_updates_in_place():
    backend = decay.get_backend("numpy")
    rule = decay.sgd(0.1, momentum=0.9)
    p, g = np.ones((2, 3)), np.full((2, 3), 0.5)
    slots = [{"momentum_buffer": np.zeros((2, 3))}]
    hypers = [rule.hyper_at(rule.defaults, 0)]
    assert backend.fast_update(rule, [p], [g], slots, hypers, [True])
    np.testing.assert_allclose(slots[0]["momentum_buffer"], 0.5)
    np.testing.assert_allclose(p, 1 - 0.1 * 0.5)
