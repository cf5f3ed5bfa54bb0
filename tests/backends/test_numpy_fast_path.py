"""NumPy's blocked fast path against the rule's definition run on whole tensors, where
its own code branches: tensors over one block, N-d and 0-d tensors, slots it must not
cut."""

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


def test_blocks_cover_every_element_once():
    # run_elementwise hands the update pieces of at most BLOCK elements per call (several
    # small tensors together), each element exactly once, slots cut like their params.
    backend = decay.get_backend("numpy")
    sizes = [3 * BLOCK + 7, 5, BLOCK, 1, BLOCK - 3, 0]
    params = [np.zeros(n) for n in sizes] + [np.zeros((4, 5)), np.zeros(())]
    grads = [np.arange(p.size, dtype=float).reshape(p.shape) for p in params]
    slots = {"s": [np.zeros(p.shape) for p in params]}
    calls = []

    def fn(p, g, s):
        calls.append(sum(x.size for x in p))
        assert [x.size for x in p] == [x.size for x in g] == [x.size for x in s["s"]]
        backend.add_(p, g)
        backend.add_(s["s"], p, alpha=2.0)

    backend.run_elementwise(fn, params, grads, slots)
    for p, g, x in zip(params, grads, slots["s"]):
        np.testing.assert_array_equal(p, g)
        np.testing.assert_array_equal(x, 2 * g)
    assert max(calls) <= BLOCK and len(calls) >= 5


def test_layouts_it_cannot_cut_run_whole():
    # A non-contiguous parameter cannot be cut into flat views: the update runs on the
    # whole tensors (ufuncs with out= write through any strides).
    backend = decay.get_backend("numpy")
    base = np.zeros((4, 6))
    params = [base[:, ::2]]
    calls = []

    def fn(p, g, s):
        calls.append([x.shape for x in p])
        backend.add_(p, g, alpha=3.0)

    backend.run_elementwise(fn, params, [np.ones((4, 3))], {})
    assert calls == [[(4, 3)]]
    np.testing.assert_array_equal(base[:, ::2], 3.0)
    np.testing.assert_array_equal(base[:, 1::2], 0.0)
