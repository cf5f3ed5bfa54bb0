"""Bad input gets a DecayError naming the argument and value, and changes nothing."""

import math

import numpy as np
import pytest

import decay

RULES = {
    "sgd": lambda **kw: decay.sgd(0.1, **kw),
    "momentum": lambda **kw: decay.sgd(0.1, momentum=0.9, weight_decay=0.01, **kw),
    "adam": lambda **kw: decay.adam(0.01, weight_decay=0.01, amsgrad=True, **kw),
    "adamw": lambda **kw: decay.adamw(0.01, **kw),
}
BAD_NUMBERS = [-0.1, math.nan, math.inf, -math.inf]


# -- hyperparameters: refused when the rule is built -------------------------------------
@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda v: decay.sgd(v), "lr"),
        (lambda v: decay.sgd(0.1, weight_decay=v), "weight_decay"),
        (lambda v: decay.sgd(0.1, momentum=v), "momentum"),
        (lambda v: decay.adam(v), "lr"),
        (lambda v: decay.adam(eps=v), "eps"),
        (lambda v: decay.adamw(weight_decay=v), "weight_decay"),
        (lambda v: decay.L2(v), "lam"),
        (lambda v: decay.L1(v), "lam"),
        (lambda v: decay.ElasticNet(v, 0.1), "l1"),
        (lambda v: decay.sgd(0.1, groups=[{"params": ["0"], "lr": v}]), "lr"),
    ],
)
def test_bad_numbers_are_refused(build, argument, value):
    with pytest.raises(decay.DecayError) as info:
        build(value)
    message = str(info.value)
    assert f"`{argument}`" in message and "Received" in message and repr(value) in message


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9, math.nan), (0.9,), "0.9"])
def test_betas_outside_unit_interval(betas):
    with pytest.raises(decay.DecayError, match="betas"):
        decay.adam(betas=betas)


@pytest.mark.parametrize("kwargs", [dict(nesterov=True), dict(nesterov=True, momentum=0.9, dampening=0.1)])
def test_nesterov_needs_momentum_without_dampening(kwargs):
    with pytest.raises(decay.DecayError, match="Nesterov.*Received"):
        decay.sgd(0.1, **kwargs)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(decay_scaled_by="epoch"), "decay_scaled_by"),
        (dict(on_nonfinite="ignore"), "on_nonfinite"),
        (dict(regularizer=0.1), "regularizer"),
        (dict(groups=[{"lr": 0.1}]), "groups"),
        (dict(groups=[{"params": ["0"], "betas": (0.9, 0.9)}]), "betas"),
    ],
)
def test_bad_options(kwargs, argument):
    with pytest.raises(decay.DecayError, match=argument):
        decay.sgd(0.1, **kwargs)


# -- at step time: refused before anything is written ----------------------------------------
def snapshot(native, params, state):
    leaves = params.values() if isinstance(params, dict) else params
    slots = {k: [None if x is None else native.numpy(x) for x in v] for k, v in state.slots.items()}
    return [native.numpy(p) for p in leaves], slots, state.count, state.skipped


def assert_unchanged(before, after):
    params_b, slots_b, count_b, skipped_b = before
    params_a, slots_a, count_a, skipped_a = after
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
    assert slots_a.keys() == slots_b.keys()
    for k in slots_a:
        for a, b in zip(slots_a[k], slots_b[k]):
            np.testing.assert_array_equal(a, b)
    assert (count_a, skipped_a) == (count_b, skipped_b)


def started(native, rule, dtype="float64", steps=2):
    params = {"w": native.param([[1.0, -2.0], [0.5, 3.0]], dtype), "b": native.param([0.1, -0.2], dtype)}
    state = rule.init(params)
    for _ in range(steps):
        params, state = rule.step(params, grads_for(native, dtype), state)
    return params, state


def grads_for(native, dtype, w=((0.3, -0.1), (0.2, 0.4)), b=(0.5, -0.5)):
    return {"w": native.grad(w, dtype), "b": native.grad(b, dtype)}


@pytest.mark.parametrize("rule_name", list(RULES))
def test_bad_grads_change_nothing(native, rule_name):
    rule = RULES[rule_name]()
    params, state = started(native, rule)
    good = grads_for(native, "float64")
    bad_cases = {
        "missing name": {"w": good["w"]},
        "extra name": {**good, "c": good["b"]},
        "list for dict": [good["w"], good["b"]],
        "shape": {"w": native.grad([1.0, 2.0, 3.0, 4.0], "float64"), "b": good["b"]},
        "dtype": grads_for(native, "float32"),
        "integer": {"w": native.grad([[1, 2], [3, 4]], "int64"), "b": good["b"]},
        "boolean": {"w": native.grad([[1, 0], [0, 1]], "bool"), "b": good["b"]},
        "python list": {"w": [[0.1, 0.1], [0.1, 0.1]], "b": good["b"]},
        "another backend": {"w": np.zeros((2, 2)) if native.name != "numpy" else _torch_zeros(), "b": good["b"]},
    }
    for case, grads in bad_cases.items():
        before = snapshot(native, params, state)
        with pytest.raises(decay.DecayError) as info:
            rule.step(params, grads, state)
        assert str(info.value), case
        assert_unchanged(before, snapshot(native, params, state))


def _torch_zeros():
    # NumPy params' "another backend" gradient is a torch tensor.
    torch = pytest.importorskip("torch")

    return torch.zeros((2, 2), dtype=torch.float64)


def test_tensors_on_different_devices():
    torch = pytest.importorskip("torch")

    rule = decay.sgd(0.1)
    params = [torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64, device="meta")]
    with pytest.raises(decay.DecayError, match="devices"):
        rule.init(params)
    p = torch.ones(2, dtype=torch.float64)
    state = rule.init(p)
    with pytest.raises(decay.DecayError, match="meta"):
        rule.step(p, torch.zeros(2, dtype=torch.float64, device="meta"), state)
    assert torch.equal(p, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("params", [[], {}, ()])
def test_empty_params(params):
    with pytest.raises(decay.DecayError, match="empty"):
        decay.sgd(0.1).init(params)


def test_integer_and_boolean_params(native):
    for dtype in ("int32", "bool"):
        with pytest.raises(decay.DecayError, match=dtype):
            decay.sgd(0.1).init(native.param([1, 0], dtype))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
@pytest.mark.parametrize("argument", ["lr", "weight_decay"])
def test_schedule_going_bad_is_caught_at_that_step(native, argument, bad):
    def schedule(t):
        return bad if t == 3 else 0.05

    kwargs = {"lr": 0.05, "weight_decay": 0.01, argument: schedule}
    rule = decay.sgd(momentum=0.9, **kwargs)
    params, state = started(native, rule, steps=3)
    before = snapshot(native, params, state)
    with pytest.raises(decay.DecayError) as info:
        rule.step(params, grads_for(native, "float64"), state)
    assert f"`{argument}`" in str(info.value) and "step 3" in str(info.value)
    assert_unchanged(before, snapshot(native, params, state))


def test_mask_naming_missing_parameters(native):
    rule = decay.sgd(0.1, weight_decay=0.1, mask={"w": True, "bias": False})
    params = {"w": native.param([1.0], "float64"), "b": native.param([1.0], "float64")}
    with pytest.raises(decay.DecayError, match="'bias'"):
        rule.init(params)
    group_rule = decay.sgd(0.1, groups=[{"params": ["nope"], "lr": 0.2}])
    with pytest.raises(decay.DecayError, match="'nope'"):
        group_rule.init(params)


@pytest.mark.parametrize("rule_name", list(RULES))
def test_state_of_another_rule_or_params(native, rule_name):
    rule = RULES[rule_name]()
    params, state = started(native, rule)
    other_rule = decay.sgd(0.1, momentum=0.5) if rule_name != "momentum" else decay.adam()
    other_params = {"w": native.param([1.0], "float64"), "b": native.param([1.0], "float64")}
    before = snapshot(native, params, state)
    calls = [
        lambda: rule.step(params, grads_for(native, "float64"), other_rule.init(params)),
        lambda: rule.step(params, grads_for(native, "float64"), "state"),
        lambda: rule.step(params, grads_for(native, "float64"), state._replace(count=-1)),
    ]
    if state.slots:  # plain SGD keeps no per-parameter state to mismatch
        calls.append(lambda: rule.step(params, grads_for(native, "float64"), rule.init(other_params)))
    for call in calls:
        with pytest.raises(decay.DecayError):
            call()
        assert_unchanged(before, snapshot(native, params, state))


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_nonfinite_gradients(native, rule_name, bad):
    grads = lambda: grads_for(native, "float64", b=(0.5, bad))  # noqa: E731

    raising = RULES[rule_name](on_nonfinite="raise")
    params, state = started(native, raising)
    before = snapshot(native, params, state)
    with pytest.raises(decay.DecayError, match="'b'"):
        raising.step(params, grads(), state)
    assert_unchanged(before, snapshot(native, params, state))

    skipping = RULES[rule_name](on_nonfinite="skip")
    params, state = started(native, skipping)
    before = snapshot(native, params, state)
    params, new_state = skipping.step(params, grads(), state)
    params_b, slots_b, count_b, skipped_b = before
    assert_unchanged((params_b, slots_b, count_b, skipped_b + 1), snapshot(native, params, new_state))
    # and training goes on from there exactly as if the bad batch had not come
    continued, _ = skipping.step(params, grads_for(native, "float64"), new_state)
    reference = RULES[rule_name]()
    ref_params, ref_state = started(native, reference)
    expected, _ = reference.step(ref_params, grads_for(native, "float64"), ref_state)
    for k in ("w", "b"):
        np.testing.assert_array_equal(native.numpy(continued[k]), native.numpy(expected[k]))

    applying = RULES[rule_name](on_nonfinite="apply")
    params, state = started(native, applying)
    params, state = applying.step(params, grads(), state)
    assert not np.isfinite(native.numpy(params["b"])).all()
