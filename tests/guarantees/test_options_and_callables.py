"""Classes 3 and 4 of the guarantees: options and values, user callables.

Boolean options and mask values take booleans only; a 0-d array or tensor as lr or
weight decay counts as its number (torch.optim takes a tensor lr), constants and what
schedules return alike; a user's callable (mask, group selector, schedule) that raises
or answers the wrong type gives a DecayError naming it, the step where there is one,
chained to the original exception, with params and state bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest

import decay
from guarantees.helpers import assert_unchanged, snapshot


@pytest.mark.parametrize("value", ["no", "False", "True", 1, 0, None, 1.0])
@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda v: decay.sgd(0.1, momentum=0.9, nesterov=v), "nesterov"),
        (lambda v: decay.sgd(0.1, weight_decay=0.1, decoupled=v), "decoupled"),
        (lambda v: decay.adam(0.1, amsgrad=v), "amsgrad"),
        (lambda v: decay.adam(0.1, epsilon_hat=v), "epsilon_hat"),
    ],
)
def test_boolean_options_take_booleans_only(build, argument, value):
    with pytest.raises(decay.DecayError, match=f"`{argument}` must be True or False. Received: {argument}={value!r}"):
        build(value)


def test_numpy_booleans_are_booleans():
    assert decay.adam(0.1, amsgrad=np.bool_(True), epsilon_hat=np.bool_(False)).amsgrad is True


def test_boolean_in_a_torch_param_group_is_checked():
    torch = pytest.importorskip("torch")
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(decay.DecayError, match="`nesterov` must be True or False"):
        decay.torch.Optimizer([{"params": [p], "nesterov": "no"}], decay.sgd(0.1, momentum=0.9))


PARAMS = {"w": np.ones((2, 2)), "b": np.ones(2)}


def _step(rule, params=None):
    params = {k: v.copy() for k, v in (params or PARAMS).items()}
    state = rule.init(params)
    before = snapshot(params, state)
    return params, state, before


@pytest.mark.parametrize(
    "mask",
    [{"b": "no"}, {"b": 0}, {"b": None}, lambda name, x: "no", lambda name, x: 1],
    ids=["dict-str", "dict-int", "dict-none", "callable-str", "callable-int"],
)
def test_mask_values_must_be_booleans(mask):
    rule = decay.sgd(0.1, weight_decay=0.1, mask=mask)
    with pytest.raises(decay.DecayError, match="must be True or False"):
        rule.init(dict(PARAMS))


def test_group_selector_must_answer_a_boolean():
    rule = decay.sgd(0.1, groups=[{"params": lambda name, x: "yes", "lr": 0.2}])
    with pytest.raises(decay.DecayError, match=r"groups\[0\].*must be True or False"):
        rule.init(dict(PARAMS))


def _torch_scalar(value):
    torch = pytest.importorskip("torch")
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("make", [np.array, np.float64, _torch_scalar], ids=["ndarray-0d", "np.float64", "torch-0d"])
def test_zero_d_numbers_count_as_their_value(make):
    """As constants and as what a schedule returns: the same step as the float."""
    grads = {k: np.full_like(v, 0.5) for k, v in PARAMS.items()}
    # θ − lr·(g + λθ), written out: 1 − 0.1·(0.5 + 0.01).
    want = {k: np.full_like(v, 1 - 0.1 * (0.5 + 0.01)) for k, v in PARAMS.items()}
    for rule in (decay.sgd(make(0.1), weight_decay=make(0.01)), decay.sgd(lambda t: make(0.1), weight_decay=lambda t: make(0.01))):
        params, state, _ = _step(rule)
        out, _ = rule.step(params, grads, state)
        for k in PARAMS:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-15)


@pytest.mark.parametrize("value", [np.array([0.1]), "0.1", True, np.bool_(True)], ids=["1-d", "str", "bool", "np.bool"])
def test_numbers_that_are_not_numbers_are_refused(value):
    with pytest.raises(decay.DecayError, match="`lr` must be a real number.*Received"):
        decay.sgd(value)


@pytest.mark.parametrize("value", [True, "0.01", np.array([0.1]), None], ids=["bool", "str", "1-d", "none"])
@pytest.mark.parametrize("argument", ["lr", "weight_decay"])
def test_schedule_returning_a_non_number_is_refused_and_changes_nothing(argument, value):
    kwargs = {"lr": 0.1, "weight_decay": 0.01, argument: lambda t: value if t == 1 else 0.1}
    rule = decay.adam(**kwargs)
    params, state, _ = _step(rule)
    grads = {k: np.ones_like(v) for k, v in PARAMS.items()}
    params, state = rule.step(params, grads, state)
    before = snapshot(params, state)
    with pytest.raises(decay.DecayError, match=f"schedule given as `{argument}` must return a number; at step 1"):
        rule.step(params, grads, state)
    assert_unchanged(before, snapshot(params, state))


class Boom(Exception):
    pass


def _raise(*args):
    raise Boom("user code failed")


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: decay.sgd(0.1, weight_decay=0.1, mask=_raise), "The mask"),
        (lambda: decay.sgd(0.1, groups=[{"params": _raise, "lr": 0.2}]), r"groups\[0\]"),
        (lambda: decay.sgd(lambda t: _raise() if t == 1 else 0.1), "schedule given as `lr` failed at step 1"),
        (lambda: decay.sgd(0.1, weight_decay=lambda t: _raise() if t == 1 else 0.1), "`weight_decay` failed at step 1"),
    ],
    ids=["mask", "group", "lr", "weight_decay"],
)
def test_a_callable_that_raises_is_named_and_chained(build, words):
    rule = build()
    grads = {k: np.ones_like(v) for k, v in PARAMS.items()}
    try:
        params, state, _ = _step(rule)
    except decay.DecayError as exc:  # masks and groups are resolved with the params
        assert isinstance(exc.__cause__, Boom)
        assert __import__("re").search(words, str(exc)) and "Boom" in str(exc)
        return
    params, state = rule.step(params, grads, state)
    before = snapshot(params, state)
    with pytest.raises(decay.DecayError, match=words) as info:
        rule.step(params, grads, state)
    assert isinstance(info.value.__cause__, Boom)
    assert_unchanged(before, snapshot(params, state))


def test_torch_lr_callable_that_raises_changes_nothing():
    torch = pytest.importorskip("torch")
    from guarantees.helpers import assert_torch_state_unchanged, torch_state_snapshot

    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = decay.torch.Optimizer([p], decay.adam(lambda t: _raise() if t == 1 else 0.1))
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    before, value = torch_state_snapshot(opt), p.detach().clone()
    with pytest.raises(decay.DecayError, match="at step 1") as info:
        opt.step()
    assert isinstance(info.value.__cause__, Boom)
    assert torch.equal(p.detach(), value)
    assert_torch_state_unchanged(before, opt)
