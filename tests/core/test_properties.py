"""Property tests: random shapes (0-d to 3-d), values and hyperparameters; on every
backend and dtype the rules agree with tests/core/reference.py over a few steps.

Gradients are a fixed random sequence (not a function of θ), so float32 runs see the
same inputs as the float64 reference. Values are drawn so that the comparison is well
conditioned, which is what makes a float32 bound of a few ulp meaningful:

- no subnormal or tiny nonzero values (subnormal float32 arithmetic loses precision);
- with L1 in play, |θ| starts in [2, 4] and lr is small, so no entry crosses 0,
  where sign(θ) jumps and float32 and float64 could pick different sides;
- Adam's gradients have |g| ≥ 0.1 and coupled decay stays small against them, so
  √v̂ is bounded away from 0: where g ≈ 0 Adam's first step is lr·sign(g) and a
  1-ulp difference in g flips it.

Trajectories are compared stacked with θ₀, so the norm-wise scale of
:func:`decay.tolerances.assert_close` is the largest |θ| of the run.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import decay
from decay.tolerances import assert_close
from reference import ref_adam, ref_elastic, ref_l1, ref_l2, ref_sgd

# DECAY_HYPOTHESIS_EXAMPLES=2000 for a deeper search than the default run's.
SETTINGS = settings(
    max_examples=int(os.environ.get("DECAY_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


def magnitudes(low, high):
    """float32-representable floats in [low, high] (bounds rounded to float32)."""
    return st.floats(float(np.float32(low)), float(np.float32(high)), width=32, allow_subnormal=False)


def signed(low, high, zero=True):
    """Floats with |x| in [low, high], either sign, and 0 when ``zero``."""
    values = st.tuples(st.sampled_from([-1.0, 1.0]), magnitudes(low, high)).map(lambda p: p[0] * p[1])
    return st.one_of(st.just(0.0), values) if zero else values


def zero_or(low, high):
    return st.one_of(st.just(0.0), magnitudes(low, high))


def tensors(shape, elements):
    return arrays(np.float64, shape, elements=elements)


PLACEMENTS = ["none", "coupled", "decoupled-lr", "decoupled-schedule_multiplier", "decoupled-none", "L2", "L1", "ElasticNet"]


@st.composite
def decay_choice(draw, *, adam):
    """A placement and its coefficients: rule kwargs and reference kwargs."""
    placement = draw(st.sampled_from(PLACEMENTS))
    # Adam's coupled terms stay small next to |g| >= 0.1 (see the module docstring).
    wd_max, l1_max, l2_max = (0.003, 0.01, 0.0015) if adam else (0.5, 0.1, 0.1)
    if placement == "coupled":
        wd = draw(zero_or(1e-4, wd_max))
        return placement, dict(weight_decay=wd), dict(weight_decay=wd)
    if placement.startswith("decoupled"):
        scale = placement.split("-", 1)[1]
        wd = draw(zero_or(1e-4, 0.2 if scale == "none" else 0.5))
        return (
            placement,
            dict(weight_decay=wd, decoupled=True, decay_scaled_by=scale),
            dict(weight_decay=wd, decoupled=True, decay_scale=scale),
        )
    l1 = draw(zero_or(1e-4, l1_max)) if placement in ("L1", "ElasticNet") else 0.0
    l2 = draw(zero_or(1e-4, l2_max)) if placement in ("L2", "ElasticNet") else 0.0
    penalty = {"none": None, "L2": decay.L2(l2), "L1": decay.L1(l1), "ElasticNet": decay.ElasticNet(l1, l2)}[placement]
    return placement, dict(regularizer=penalty), dict(l1_reg=l1, l2_reg=l2)


@st.composite
def learning_rates(draw, low, high):
    """A constant lr or an exponential schedule lr·γ^t, as (value-or-callable, description)."""
    lr = draw(st.one_of(st.just(0.0), magnitudes(low, high)))
    if draw(st.booleans()):
        gamma = draw(st.floats(0.5, 1.0))
        return (lambda t: lr * gamma**t), f"{lr}*{gamma}**t"
    return lr, repr(lr)


def run_rule(native, dtype, rule, theta0, grads):
    """Steps on the backend; the stacked trajectory θ₀, θ₁, … as float64."""
    x = native.param(theta0, dtype)
    state = rule.init(x)
    seen = [native.numpy(x)]
    for g in grads:
        x, state = rule.step(x, native.grad(g, dtype), state)
        assert native.backend.shape(x) == theta0.shape
        assert native.backend.dtype_name(x) == dtype
        seen.append(native.numpy(x))
    return np.stack(seen).astype(np.float64)


def run_reference(ref, dtype, theta0, grads, **kwargs):
    exact = lambda a: np.asarray(a).astype(dtype).astype(np.float64)
    theta0 = exact(theta0)
    sequence = [exact(g) for g in grads]
    trajectory, _ = ref(theta0, lambda theta, t: sequence[t], len(sequence), **kwargs)
    return np.stack([theta0] + trajectory)


@st.composite
def sgd_cases(draw):
    shape = draw(shapes)
    steps = draw(st.integers(1, 4))
    placement, rule_kw, ref_kw = draw(decay_choice(adam=False))
    crosses_zero_matters = placement in ("L1", "ElasticNet")
    low = 1e-4 if placement != "decoupled-schedule_multiplier" else 1e-3
    lr, lr_text = draw(learning_rates(low, 0.02 if crosses_zero_matters else 0.5))
    if placement == "decoupled-schedule_multiplier" and (lr(0) if callable(lr) else lr) == 0:
        lr = 0.1  # lr_0 = 0 has no schedule multiplier (decay refuses it)
    momentum = draw(zero_or(0.01, 0.95))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov or momentum == 0 else draw(zero_or(0.01, 1.0))
    theta_elements = signed(2.0, 4.0, zero=False) if crosses_zero_matters else signed(1e-3, 4.0)
    theta0 = draw(tensors(shape, theta_elements))
    grads = [draw(tensors(shape, signed(1e-3, 1.0))) for _ in range(steps)]
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov)
    return dict(
        theta0=theta0, grads=grads, hyper=hyper, rule_kw=rule_kw, ref_kw=ref_kw, lr=lr_text,
        placement=placement, fast=draw(st.booleans()),
    )


@SETTINGS
@given(case=sgd_cases())
def test_sgd_agrees_with_reference(native, dtype, case):
    rule = decay.sgd(**case["hyper"], **case["rule_kw"])
    rule.use_fast_path = case["fast"]  # a backend's fused path where it has one, or the generic one
    got = run_rule(native, dtype, rule, case["theta0"], case["grads"])
    want = run_reference(ref_sgd, dtype, case["theta0"], case["grads"], **case["hyper"], **case["ref_kw"])
    assert_close(got, want, dtype, steps=len(case["grads"]), what=f"sgd {case['placement']} lr={case['lr']}")


@st.composite
def adam_cases(draw):
    shape = draw(shapes)
    steps = draw(st.integers(1, 4))
    placement, rule_kw, ref_kw = draw(decay_choice(adam=True))
    crosses_zero_matters = placement in ("L1", "ElasticNet")
    low = 1e-4 if placement != "decoupled-schedule_multiplier" else 1e-3
    lr, lr_text = draw(learning_rates(low, 0.01 if crosses_zero_matters else 0.1))
    if placement == "decoupled-schedule_multiplier" and (lr(0) if callable(lr) else lr) == 0:
        lr = 0.05
    beta1 = draw(zero_or(0.01, 0.9))
    beta2 = draw(magnitudes(0.9, 0.9999))
    eps = 10.0 ** -draw(st.floats(2.0, 8.0))
    theta_elements = signed(2.0, 4.0, zero=False) if crosses_zero_matters else signed(1e-3, 4.0)
    theta0 = draw(tensors(shape, theta_elements))
    grads = [draw(tensors(shape, signed(0.1, 1.0, zero=False))) for _ in range(steps)]
    flags = dict(amsgrad=draw(st.booleans()), epsilon_hat=draw(st.booleans()))
    return dict(
        theta0=theta0, grads=grads, lr=lr, lr_text=lr_text, betas=(beta1, beta2), eps=eps,
        flags=flags, rule_kw=rule_kw, ref_kw=ref_kw, placement=placement, fast=draw(st.booleans()),
    )


@SETTINGS
@given(case=adam_cases())
def test_adam_agrees_with_reference(native, dtype, case):
    rule = decay.adam(case["lr"], betas=case["betas"], eps=case["eps"], **case["flags"], **case["rule_kw"])
    rule.use_fast_path = case["fast"]
    got = run_rule(native, dtype, rule, case["theta0"], case["grads"])
    beta1, beta2 = case["betas"]
    want = run_reference(
        ref_adam, dtype, case["theta0"], case["grads"],
        lr=case["lr"], beta1=beta1, beta2=beta2, eps=case["eps"], **case["flags"], **case["ref_kw"],
    )
    what = f"adam {case['placement']} {case['flags']} lr={case['lr_text']}"
    assert_close(got, want, dtype, steps=len(case["grads"]), what=what)


@st.composite
def masked_dicts(draw):
    names = draw(st.lists(st.sampled_from(["w", "b", "head.w", "head.bias", "s"]), min_size=1, max_size=4, unique=True))
    params = {n: draw(tensors(draw(shapes), signed(1e-3, 4.0))) for n in names}
    mask = {n: draw(st.booleans()) for n in names if draw(st.booleans())}
    grouped = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    group = dict(lr=draw(magnitudes(1e-3, 0.5)), weight_decay=draw(zero_or(1e-3, 0.5)), momentum=draw(zero_or(0.1, 0.9)))
    steps = draw(st.integers(1, 3))
    grads = [{n: draw(tensors(p.shape, signed(1e-3, 1.0))) for n, p in params.items()} for _ in range(steps)]
    return dict(params=params, mask=mask, grouped=grouped, group=group, grads=grads)


@SETTINGS
@given(case=masked_dicts())
def test_masks_and_groups_on_dicts(native, dtype, case):
    defaults = dict(lr=0.1, weight_decay=0.2, momentum=0.5)
    rule = decay.sgd(**defaults, decoupled=True, mask=case["mask"], groups=[{"params": case["grouped"], **case["group"]}])
    params = {n: native.param(v, dtype) for n, v in case["params"].items()}
    state = rule.init(params)
    seen = {n: [native.numpy(x)] for n, x in params.items()}
    for g in case["grads"]:
        params, state = rule.step(params, {n: native.grad(v, dtype) for n, v in g.items()}, state)
        assert list(params) == list(case["params"])
        for n, x in params.items():
            seen[n].append(native.numpy(x))
    for name, theta0 in case["params"].items():
        hyper = case["group"] if name in case["grouped"] else defaults
        want = run_reference(
            ref_sgd, dtype, theta0, [g[name] for g in case["grads"]],
            **hyper, decoupled=True, decayed=case["mask"].get(name, True),
        )
        assert_close(np.stack(seen[name]), want, dtype, steps=len(case["grads"]), what=name)


@SETTINGS
@given(
    values=st.lists(shapes, min_size=1, max_size=3).flatmap(
        lambda ss: st.tuples(*[tensors(s, signed(1e-3, 4.0)) for s in ss])
    ),
    l1=zero_or(1e-3, 1.0),
    l2=zero_or(1e-3, 1.0),
)
def test_penalties_agree_with_reference(native, dtype, values, l1, l2):
    params = [native.param(v, dtype) for v in values]
    exact = [v.astype(dtype).astype(np.float64) for v in values]
    size = sum(v.size for v in values)
    for penalty, (value, grads) in [
        (decay.L2(l2), ref_l2(exact, l2)),
        (decay.L1(l1), ref_l1(exact, l1)),
        (decay.ElasticNet(l1, l2), ref_elastic(exact, l1, l2)),
    ]:
        total = penalty(params)
        assert native.backend.shape(total) == ()
        # A sum of n terms: round-off grows with n, as with n steps.
        assert_close(native.numpy(total), value, dtype, steps=size + 1, what=repr(penalty))
        got = penalty.grad(params)
        assert isinstance(got, list) and len(got) == len(values)
        for g, want in zip(got, grads):
            assert_close(native.numpy(g), want, dtype, what=f"grad of {penalty!r}")
