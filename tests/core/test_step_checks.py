"""Rule.step checks what cannot change between steps once per structure (see the
comment above ``Rule._checked_params``). These tests make sure that shortcut never lets
bad input through, never leaves a half-applied update, and never updates the wrong
tensors: every case first runs good steps (so the caches are warm), then changes
something.

Expected values are the closed form of plain SGD with coupled decay,
θ ← θ − lr·(g + λθ), computed in NumPy float64.
"""

import copy
import pickle

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

LR, WD = 0.1, 0.01
SHAPES = [(3, 2), (4,), ()]


def sgd_closed_form(theta, grads):
    for g in grads:
        theta = theta - LR * (g + WD * theta)
    return theta


def start(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def grad_arrays(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s) for s in SHAPES]


def snapshot(native, params, state):
    return [native.numpy(p) for p in params], {
        k: [None if x is None else native.numpy(x) for x in v] for k, v in state.slots.items()
    }


def assert_unchanged(before, after):
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1].keys() == after[1].keys()
    for k in before[1]:
        for a, b in zip(before[1][k], after[1][k]):
            np.testing.assert_array_equal(a, b)


def warm(native, rule, params, steps=2):
    state = rule.init(params)
    for t in range(steps):
        params, state = rule.step(params, [native.grad(g, "float64") for g in grad_arrays(t)], state)
    return params, state


@pytest.mark.parametrize("bad", ["shape", "dtype", "type", "count"])
def test_bad_grads_after_good_steps_are_refused_and_change_nothing(native, bad):
    rule = decay.sgd(LR, momentum=0.9, weight_decay=WD)
    params = [native.param(x, "float64") for x in start()]
    params, state = warm(native, rule, params)
    grads = [native.grad(g, "float64") for g in grad_arrays(5)]
    if bad == "shape":
        grads[1] = native.grad(np.ones(5), "float64")
    elif bad == "dtype":
        grads[0] = native.grad(np.ones((3, 2)), "float32")
    elif bad == "type":
        grads[2] = "not a tensor"
    else:
        grads = grads[:2]
    before = snapshot(native, params, state)
    with pytest.raises(decay.DecayError):
        rule.step(params, grads, state)
    assert_unchanged(before, snapshot(native, params, state))


def test_a_slot_swapped_in_the_returned_state_is_checked_again(native):
    rule = decay.sgd(LR, momentum=0.9, weight_decay=WD)
    params = [native.param(x, "float64") for x in start()]
    params, state = warm(native, rule, params)
    wrong = tuple(native.grad(np.zeros(7), "float64") for _ in SHAPES)
    state.slots["momentum_buffer"] = wrong  # the dict the rule returned, mutated
    before = snapshot(native, params, state)
    with pytest.raises(decay.DecayError, match="does not fit"):
        rule.step(params, [native.grad(g, "float64") for g in grad_arrays(3)], state)
    assert_unchanged(before, snapshot(native, params, state))
    # A state made for other parameters (another rule's init) is refused as well.
    other = decay.sgd(LR, momentum=0.9).init([native.param(np.zeros(2), "float64")])
    with pytest.raises(decay.DecayError):
        rule.step(params, [native.grad(g, "float64") for g in grad_arrays(3)], other)


def test_other_tensors_of_the_same_shapes_are_the_ones_updated(native):
    # One rule, two models alternately (same shapes): each gets its own closed form, and
    # a list changed in place is seen as new parameters.
    rule = decay.sgd(LR, weight_decay=WD)
    a = [native.param(x, "float64") for x in start(0)]
    b = [native.param(x, "float64") for x in start(1)]
    sa, sb = rule.init(a), rule.init(b)
    for t in range(3):
        g = grad_arrays(t)
        a, sa = rule.step(a, [native.grad(x, "float64") for x in g], sa)
        b, sb = rule.step(b, [native.grad(x, "float64") for x in g], sb)
    for i in range(len(SHAPES)):
        want_a = sgd_closed_form(start(0)[i], [grad_arrays(t)[i] for t in range(3)])
        want_b = sgd_closed_form(start(1)[i], [grad_arrays(t)[i] for t in range(3)])
        assert_close(native.numpy(a[i]), want_a, "float64", steps=3)
        assert_close(native.numpy(b[i]), want_b, "float64", steps=3)
    # Replace one entry of the same list object: the new tensor is updated, not the old.
    fresh = native.param(np.full((4,), 2.0), "float64")
    old = a[1]
    old_value = native.numpy(old)
    a[1] = fresh
    a, sa = rule.step(a, [native.grad(x, "float64") for x in grad_arrays(9)], sa)
    assert_close(native.numpy(a[1]), sgd_closed_form(np.full((4,), 2.0), [grad_arrays(9)[1]]), "float64")
    np.testing.assert_array_equal(native.numpy(old), old_value)


@pytest.mark.parametrize("kind", ["list", "tuple", "dict"])
def test_the_structure_given_is_the_structure_returned(native, kind):
    rule = decay.sgd(LR, weight_decay=WD)
    leaves = [native.param(x, "float64") for x in start()]
    names = ["w", "b", "s"]
    as_list, as_kind = list(leaves), {"list": list, "tuple": tuple}.get(kind)  # warm on a list
    state = rule.init(as_list)
    as_list, state = rule.step(as_list, [native.grad(g, "float64") for g in grad_arrays(0)], state)
    grads = [native.grad(g, "float64") for g in grad_arrays(1)]
    if kind == "dict":
        params, grads = dict(zip(names, leaves)), dict(zip(names, grads))
    else:
        params, grads = as_kind(leaves), as_kind(grads)
    out, _ = rule.step(params, grads, rule.init(params))
    assert type(out) is type(params)
    if kind == "dict":
        assert list(out) == names
        # Same tensors, other order of keys: the names, not the positions, decide.
        flipped = {k: params[k] for k in reversed(names)}
        out, _ = rule.step(flipped, {k: grads[k] for k in reversed(names)}, rule.init(flipped))
        assert list(out) == list(reversed(names))


def test_a_rule_pickles_and_copies_without_its_caches(native):
    rule = decay.adamw(1e-2, weight_decay=WD)
    params = [native.param(x, "float64") for x in start()]
    params, state = warm(native, rule, params)
    for twin in (pickle.loads(pickle.dumps(rule)), copy.deepcopy(rule)):
        assert twin._step_cache is None and twin._trusted_slots is None
        assert "_xla_steps" not in twin.__dict__ and "_memory_cache" not in twin.__dict__
        # The copy works on its own: same numbers as the original from the same state.
        p1 = [native.param(native.numpy(p), "float64") for p in params]
        p2 = [native.param(native.numpy(p), "float64") for p in params]
        s1 = rule.load_state_dict(rule.state_dict(state), p1)
        s2 = twin.load_state_dict(rule.state_dict(state), p2)
        g = grad_arrays(7)
        p1, _ = rule.step(p1, [native.grad(x, "float64") for x in g], s1)
        p2, _ = twin.step(p2, [native.grad(x, "float64") for x in g], s2)
        for x, y in zip(p1, p2):
            np.testing.assert_array_equal(native.numpy(x), native.numpy(y))


@pytest.mark.parametrize("make", [
    lambda **k: decay.sgd(LR, momentum=0.9, weight_decay=WD, **k),
    lambda **k: decay.sgd(LR, momentum=0.9, weight_decay=WD, decoupled=True, **k),
    lambda **k: decay.adamw(1e-2, weight_decay=WD, amsgrad=True, **k),
], ids=["sgd-momentum", "sgd-momentum-decoupled", "adamw-amsgrad"])
def test_mixed_dtypes_and_masks_in_one_call(native, make):
    # Fused kernels take one dtype per call: a float32/float64 mix with a mask that
    # decays some tensors must give the generic path's numbers.
    dtypes = ["float64", "float32", "float64"]
    mask = {"0": True, "1": False, "2": True}
    results = []
    for fast in (True, False):
        rule = make(mask=mask)
        rule.use_fast_path = fast
        params = {str(i): native.param(x, d) for i, (x, d) in enumerate(zip(start(), dtypes))}
        state = rule.init(params)
        for t in range(5):
            grads = {str(i): native.grad(g, d) for i, (g, d) in enumerate(zip(grad_arrays(t), dtypes))}
            params, state = rule.step(params, grads, state)
        results.append({k: native.numpy(v) for k, v in params.items()})
    for i, d in enumerate(dtypes):
        assert_close(results[0][str(i)], results[1][str(i)], d, steps=5, what=f"fast vs generic, {d}")


def test_a_gradient_that_is_its_parameter_is_read_before_the_update(native, dtype):
    # step(x, x, state): the update is written into x in place on NumPy and torch; the
    # gradient must still be the value x had. Closed form of plain decoupled SGD with
    # g = θ: θ ← θ·(1 − lr·λ) − lr·θ.
    lr, lam = 0.1, 0.2
    start = np.array([[1.0, -2.0], [3.0, 0.5]])
    x = native.param(start, dtype)
    rule = decay.sgd(lr, weight_decay=lam, decoupled=True)
    state = rule.init(x)
    x, state = rule.step(x, x, state)
    assert_close(native.numpy(x), start * (1 - lr * lam - lr), dtype)
