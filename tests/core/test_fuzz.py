"""Fuzzing bad input: whatever goes in, the only exception out is DecayError, and a
call that fails changes nothing."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import decay

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-3, 3),
    st.sampled_from([None, "0.1", True, [0.1], (0.9, 0.999)]),
)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def build_rule(kind, lr, weight_decay, extra, options):
    if kind == "sgd":
        return decay.sgd(lr, momentum=extra, weight_decay=weight_decay, **options)
    if kind == "adam":
        return decay.adam(lr, eps=extra, weight_decay=weight_decay, **options)
    return decay.adamw(lr, betas=(extra, 0.999) if isinstance(extra, float) else extra,
                       weight_decay=weight_decay, **options)


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "decay_scaled_by": st.sampled_from(["lr", "schedule_multiplier", "none", "bogus", 3]),
        "on_nonfinite": st.sampled_from(["apply", "skip", "raise", "nope"]),
        "mask": st.sampled_from([None, {"w": False}, {"nope": True}, decay.masks.timm_default, 5]),
    },
)


@SETTINGS
@given(kind=st.sampled_from(["sgd", "adam", "adamw"]), lr=NUMBERS, weight_decay=NUMBERS,
       extra=NUMBERS, options=OPTIONS)
def test_building_rules_raises_only_decay_error(kind, lr, weight_decay, extra, options):
    try:
        build_rule(kind, lr, weight_decay, extra, options)
    except decay.DecayError as exc:
        assert "Received" in str(exc) or "must" in str(exc) or "Nesterov" in str(exc)


SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def bad_value(native, draw_kind, shape):
    """A gradient that is wrong in one way."""
    good = np.full(shape, 0.5)
    return {
        "good": lambda: native.grad(good, "float64"),
        "shape": lambda: native.grad(np.zeros(shape + (2,)), "float64"),
        "dtype": lambda: native.grad(good, "float32"),
        "int": lambda: native.grad(np.ones(shape, dtype=np.int64), "int64"),
        "nan": lambda: native.grad(np.full(shape, math.nan), "float64"),
        "list": lambda: good.tolist(),
        "none": lambda: None,
    }[draw_kind]()


@SETTINGS
@given(
    kind=st.sampled_from(["sgd", "adam", "adamw"]),
    shape_w=SHAPES,
    shape_b=SHAPES,
    grad_w=st.sampled_from(["good", "shape", "dtype", "int", "nan", "list", "none"]),
    grad_b=st.sampled_from(["good", "shape", "dtype", "nan", "list"]),
    structure=st.sampled_from(["dict", "list", "swapped", "short"]),
    policy=st.sampled_from(["apply", "skip", "raise"]),
)
def test_bad_step_input_changes_nothing(native, kind, shape_w, shape_b, grad_w, grad_b, structure, policy):
    rule = build_rule(kind, 0.1, 0.01, 0.9 if kind != "adam" else 1e-8, {"on_nonfinite": policy})
    params = {"w": native.param(np.ones(shape_w), "float64"), "b": native.param(np.ones(shape_b), "float64")}
    state = rule.init(params)
    params, state = rule.step(params, {k: native.grad(np.full(shape_w if k == "w" else shape_b, 0.2), "float64")
                                       for k in params}, state)
    gw, gb = bad_value(native, grad_w, shape_w), bad_value(native, grad_b, shape_b)
    grads = {
        "dict": {"w": gw, "b": gb},
        "list": [gw, gb],
        "swapped": {"w": gb, "b": gw},
        "short": {"w": gw},
    }[structure]
    before_params = {k: native.numpy(v) for k, v in params.items()}
    before_slots = {k: [native.numpy(x) for x in v] for k, v in state.slots.items()}
    try:
        rule.step(params, grads, state)
    except decay.DecayError:
        for k, v in params.items():
            np.testing.assert_array_equal(native.numpy(v), before_params[k])
        for k, v in state.slots.items():
            for x, b in zip(v, before_slots[k]):
                np.testing.assert_array_equal(native.numpy(x), b)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@SETTINGS
@given(config=st.dictionaries(st.sampled_from(["rule", "count", "skipped", "slots", "x"]),
                              st.one_of(st.none(), st.integers(-2, 5), st.text(max_size=3),
                                        st.just({"exp_avg": [np.zeros(2)]}),
                                        st.just({"momentum_buffer": [np.zeros(3), None]}))))
def test_loading_garbage_state_raises_only_decay_error(kind, config):
    rule = decay.sgd(0.1, momentum=0.9) if kind == "sgd" else decay.adamw()
    params = [np.zeros(2)]
    try:
        rule.load_state_dict(config, params)
    except decay.DecayError:
        pass
