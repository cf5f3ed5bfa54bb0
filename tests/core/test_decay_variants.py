"""The weight-decay variants no framework ships — cautious, corrected (AdamC), toward a
reference (L2-SP) — against NumPy float64 loops written from the papers
(tests/variant_reference.py), every step of 100, on every backend; each fast path
against the one definition; checkpoints, configs and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

import decay
import variant_reference as ref
from decay.tolerances import assert_close, relative_error

STEPS, PEAK, LAM = 100, 0.05, 0.5
SHAPES = {"w": (4, 3), "b": (3,)}
LR = ref.cosine_lr(PEAK, STEPS)


def _problem(seed=3, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(size=s) for n, s in SHAPES.items()} for _ in range(steps)]
    center = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    return params, grads, center


def _sched():
    return decay.schedules.cosine(PEAK, STEPS)


NO_BIAS = {"w": True, "b": False}

# name -> (decay rule from (params, center), reference from (params, grads, center), the
# same reference without the variant: the test checks that the variant changes the result)
CASES = {
    "adamw-cautious-masked": (
        lambda p, c: decay.adamw(_sched(), weight_decay=LAM, cautious_decay=True, mask=decay.masks.exclude_names("b")),
        lambda p, g, c, on=True: ref.adamw(p, g, LR, LAM, cautious=on, decayed=NO_BIAS),
    ),
    "adamw-corrected-groups": (
        lambda p, c: decay.adamw(_sched(), weight_decay=LAM, decay_scaled_by="corrected",
                                 groups=[{"params": ["b"], "weight_decay": 0.1}]),
        lambda p, g, c, on=True: ref.adamw(p, g, LR, {"w": LAM, "b": 0.1}, corrected_max=PEAK if on else None),
    ),
    "adamw-all-three-init": (
        lambda p, c: decay.adamw(_sched(), weight_decay=LAM, cautious_decay=True, decay_scaled_by="corrected",
                                 decay_toward="init"),
        lambda p, g, c, on=True: ref.adamw(p, g, LR, LAM, cautious=on, corrected_max=PEAK if on else None,
                                           toward=p if on else None),
    ),
    "sgd-momentum-cautious": (
        lambda p, c: decay.sgd(_sched(), momentum=0.9, weight_decay=LAM, decoupled=True, cautious_decay=True),
        lambda p, g, c, on=True: ref.sgd(p, g, LR, LAM, momentum=0.9, cautious=on),
    ),
    "sgd-nesterov-coupled-toward": (
        lambda p, c: decay.sgd(_sched(), momentum=0.9, nesterov=True, weight_decay=LAM, decay_toward=[c["w"], c["b"]]),
        lambda p, g, c, on=True: ref.sgd(p, g, LR, LAM, momentum=0.9, nesterov=True, coupled=True,
                                         toward=c if on else None),
    ),
    "sgd-plain-decoupled-toward-cautious": (
        lambda p, c: decay.sgd(_sched(), weight_decay=LAM, decoupled=True, cautious_decay=True, decay_toward=c),
        lambda p, g, c, on=True: ref.sgd(p, g, LR, LAM, cautious=on, toward=c if on else None),
    ),
}


def _run(native, rule, params, grads, dtype="float64"):
    p = {n: native.param(v, dtype) for n, v in params.items()}
    state = rule.init(p)
    for g in grads:
        p, state = rule.step(p, {n: native.grad(v, dtype) for n, v in g.items()}, state)
    return {n: native.numpy(x) for n, x in p.items()}, state


@pytest.mark.parametrize("case", list(CASES))
def test_equals_the_paper_every_step_of_100(native, case):
    make, reference = CASES[case]
    params, grads, center = _problem()
    # Every step compared: the reference's prefix of k steps against decay after k.
    rule = make(params, center)
    p = {n: native.param(v, "float64") for n, v in params.items()}
    state = rule.init(p)
    want = _reference_trajectory(reference, params, grads, center)
    for k, g in enumerate(grads, start=1):
        p, state = rule.step(p, {n: native.grad(v, "float64") for n, v in g.items()}, state)
        if k in (1, 10, 50, 100) or k % 7 == 0:
            for n in SHAPES:
                assert_close(native.numpy(p[n]), want[k - 1][n], "float64", steps=k, what=f"{case} step {k} {n}")
    # The variant matters: without it the paper's loop ends elsewhere.
    plain = reference(params, grads, center, on=False)
    assert max(relative_error(want[-1][n], plain[n]) for n in SHAPES) > 1e-4


_TRAJECTORIES: dict = {}


def _reference_trajectory(reference, params, grads, center):
    """θ after each of the steps (recorded by the loop, cached per reference)."""
    key = id(reference)
    if key not in _TRAJECTORIES:
        ref.RECORD = []
        try:
            reference(params, grads, center)
            _TRAJECTORIES[key] = ref.RECORD
        finally:
            ref.RECORD = None
    return _TRAJECTORIES[key]


# -- every fast path is the definition -----------------------------------------------------
FAST_CASES = {
    "sgd-momentum-cautious-L2": dict(rule="sgd", lr=0.05, momentum=0.9, weight_decay=LAM, decoupled=True,
                                     cautious_decay=True, regularizer=decay.L2(0.01)),
    "sgd-plain-cautious-coupled-L2": dict(rule="sgd", lr=0.05, weight_decay=LAM, decoupled=True, cautious_decay=True,
                                          regularizer=decay.L2(0.01)),
    "sgd-plain-coupled-toward": dict(rule="sgd", lr=0.05, weight_decay=LAM, decay_toward="init"),
    "sgd-momentum-decoupled-toward": dict(rule="sgd", lr=0.05, momentum=0.9, weight_decay=LAM, decoupled=True,
                                          decay_toward="init"),
    "adam-coupled-toward-amsgrad": dict(rule="adam", lr=0.05, weight_decay=LAM, amsgrad=True, decay_toward="init"),
    "adamw-toward-masked": dict(rule="adamw", lr=0.05, weight_decay=LAM, decay_toward="init",
                                mask=decay.masks.exclude_names("b")),
    "adamw-cautious-corrected-epshat": dict(rule="adamw", lr=ref.cosine_lr(0.05, 8), lr_max=0.05, weight_decay=LAM,
                                            cautious_decay=True, decay_scaled_by="corrected", epsilon_hat=True),
}


@pytest.mark.parametrize("case", list(FAST_CASES))
def test_fast_path_equals_the_definition(native, case):
    kwargs = dict(FAST_CASES[case])
    name = kwargs.pop("rule")
    params, grads, _ = _problem(seed=11, steps=8)
    fast, plain = getattr(decay, name)(**kwargs), getattr(decay, name)(**kwargs)
    plain.use_fast_path = False
    p_fast, s_fast = _run(native, fast, params, grads)
    p_plain, s_plain = _run(native, plain, params, grads)
    for n in SHAPES:
        assert_close(p_fast[n], p_plain[n], "float64", steps=8, what=n)
    for slot in s_fast.slots:
        for a, b in zip(s_fast.slots[slot], s_plain.slots[slot]):
            assert_close(native.numpy(a), native.numpy(b), "float64", steps=8, what=slot)


def test_torch_kernels_run_toward_a_reference_but_not_cautious():
    # The plan says which: toward θ₀ the engine applies the decay and torch's fused
    # kernel runs without any; cautious decay needs u before the shrink, so the
    # definition runs.
    torch = pytest.importorskip("torch")
    backend = decay.get_backend("torch")
    calls, real = [], backend.run_fused
    backend.run_fused = lambda call, *args: (calls.append(call.kernel), real(call, *args))[1]
    try:
        for kwargs, expected in (({"decay_toward": "init"}, ["_fused_adam_"]), ({"cautious_decay": True}, [])):
            calls.clear()
            rule = decay.adamw(1e-2, weight_decay=0.1, **kwargs)
            p = [torch.randn(4, 3, dtype=torch.float64)]
            rule.step(p, [torch.randn(4, 3, dtype=torch.float64)], rule.init(p))
            assert calls == expected
    finally:
        backend.run_fused = real


# -- state, configs, checkpoints ----------------------------------------------------------------
def test_reference_moves_with_the_state_between_backends_and_configs_round_trip():
    from conftest import Native, backend_or_skip

    params, grads, center = _problem(steps=10)
    rule = decay.adamw(_sched(), weight_decay=LAM, decay_toward=center, cautious_decay=True,
                       decay_scaled_by="corrected")
    expected = ref.adamw(params, grads, LR, LAM, cautious=True, corrected_max=PEAK, toward=center)
    numpy = Native(decay.get_backend("numpy"))
    p, state = _run(numpy, rule, params, grads[:5])
    saved = rule.state_dict(state)
    assert np.array_equal(saved["slots"]["decay_toward"][1], center["b"])  # in the params' order: w, b
    for name in decay.available_backends():
        native = Native(backend_or_skip(name))
        again = decay.rules.from_config(rule.get_config())  # the reference saved as data
        q = {n: native.param(v, "float64") for n, v in p.items()}
        s = again.load_state_dict(saved, q)
        for g in grads[5:]:
            q, s = again.step(q, {n: native.grad(v, "float64") for n, v in g.items()}, s)
        for n in SHAPES:
            assert_close(native.numpy(q[n]), expected[n], "float64", steps=10, what=f"{name} {n}")


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(weight_decay=0.1, cautious_decay=True), "decoupled=True"),
    (dict(weight_decay=0.1, decay_scaled_by="corrected"), "decoupled=True"),
    (dict(weight_decay=0.1, decoupled=True, cautious_decay="yes"), "cautious_decay"),
    (dict(weight_decay=0.1, decoupled=True, lr_max=0.1), "lr_max"),
    (dict(weight_decay=0.1, decoupled=True, decay_scaled_by="corrected", lr_max=-1.0), "lr_max"),
    (dict(lr=lambda t: 0.1, weight_decay=0.1, decoupled=True, decay_scaled_by="corrected"), "lr_max"),
    (dict(weight_decay=0.1, decay_toward="start"), "decay_toward"),
    (dict(weight_decay=0.1, decay_toward=[1.0, 2.0]), "decay_toward"),
    (dict(regularizer=decay.L2(0.1, center=np.zeros(3))), "decay_toward=center"),
])
def test_bad_options_are_refused(kwargs, words):
    kwargs.setdefault("lr", 0.1)
    with pytest.raises(decay.DecayError, match=words.replace("(", r"\(")):
        decay.sgd(**kwargs)


@pytest.mark.parametrize("toward, words", [
    ({"w": np.zeros((4, 3))}, "no reference for parameter"),
    ([np.zeros((4, 3))], "holds 1 tensor"),
    ({"w": np.zeros((3, 4)), "b": np.zeros(3)}, "shape"),
])
def test_references_that_do_not_fit_are_refused(toward, words):
    rule = decay.adamw(0.1, decay_toward=toward)
    with pytest.raises(decay.DecayError, match=words):
        rule.init({"w": np.zeros((4, 3)), "b": np.zeros(3)})


def test_lr_above_lr_max_stops_the_step_and_changes_nothing():
    rule = decay.adamw(decay.schedules.exponential(0.1, decay_rate=2.0, decay_steps=1), decay_scaled_by="corrected")
    x = np.ones(3)
    state = rule.init(x)
    x, state = rule.step(x, np.ones(3), state)  # step 0: lr 0.1 = its peak as given
    before, slots = x.copy(), {k: [a.copy() for a in v] for k, v in state.slots.items()}
    with pytest.raises(decay.DecayError, match="lr_max"):
        rule.step(x, np.ones(3), state)
    assert np.array_equal(x, before)
    assert all(np.array_equal(a, b) for k in slots for a, b in zip(state.slots[k], slots[k]))


def test_corrected_peak_of_a_warmup_and_a_piecewise_schedule():
    # lr_max defaults to the peak, not the first value, where the schedule rises.
    rule = decay.adamw(decay.schedules.piecewise([10], [0.01, 0.1]), decay_scaled_by="corrected")
    assert rule.defaults["_lr_max"] == 0.1
    rule = decay.adamw(decay.schedules.warmup(decay.schedules.cosine(0.3, 50), 5), decay_scaled_by="corrected")
    assert rule.defaults["_lr_max"] == 0.3


# -- the penalty and the timescale -------------------------------------------------------------------
def test_l2_center_value_and_gradient(native):
    x = {"a": native.param([1.0, 2.0, 3.0], "float64"), "b": native.param([[1.0, -1.0]], "float64")}
    center = {"a": np.array([1.0, 1.0, 1.0]), "b": np.array([[0.0, 1.0]])}
    pen = decay.L2(0.5, center=center)
    # 0.5·((0 + 1 + 4) + (1 + 4)) = 5; gradient 2·0.5·(θ − θ₀).
    # (torch sums squares as a norm, squared: 1 ulp)
    assert float(native.numpy(pen(x))) == pytest.approx(5.0, rel=1e-15)
    grads = pen.grad(x)
    np.testing.assert_array_equal(native.numpy(grads["a"]), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(native.numpy(grads["b"]), [[1.0, -2.0]])
    again = decay.penalties.penalty_from_config(pen.get_config())
    assert float(native.numpy(again(x))) == pytest.approx(5.0, rel=1e-15)
    with pytest.raises(decay.DecayError, match="L2-SP"):
        decay.to_native(pen, "keras")


def test_weight_decay_for_timescale():
    # λ = 1/(lr·τ): τ = 1,000 steps at lr 1e-3 is λ = 1; τ = 2 epochs of 250 steps the same.
    assert decay.weight_decay_for_timescale(1000, 1e-3) == pytest.approx(1.0, rel=1e-15)
    assert decay.weight_decay_for_timescale(2, 1e-3, steps_per_epoch=250) == pytest.approx(2.0, rel=1e-15)
    # The paper's reading: (1 − lr·λ)^τ ≈ 1/e after τ steps.
    lam = decay.weight_decay_for_timescale(5000, 1e-3)
    assert (1 - 1e-3 * lam) ** 5000 == pytest.approx(np.exp(-1), rel=1e-3)
    for bad in (dict(tau=0, lr=1e-3), dict(tau=10, lr=0.0), dict(tau=10, lr=1e-3, steps_per_epoch=-1)):
        with pytest.raises(decay.DecayError):
            decay.weight_decay_for_timescale(**bad)


def test_conversion_refuses_each_variant():
    for rule in (decay.adamw(0.1, cautious_decay=True), decay.adamw(_sched(), decay_scaled_by="corrected"),
                 decay.adamw(0.1, decay_toward="init"), decay.sgd(0.1, weight_decay=0.1, decay_toward="init")):
        for framework in ("torch", "keras"):
            with pytest.raises(decay.DecayError, match="no exact"):
                decay.to_native(rule, framework)
            closest = decay.to_native(rule, framework, strict=False)
            assert not closest.exact and ("cautious" in closest.reason or "corrected" in closest.reason
                                          or "decay_toward" in closest.reason)


def test_one_tensor_reference_odd_layouts_and_aliasing(native):
    # One tensor as the reference (not a list), transposed (non-contiguous) and the very
    # object being optimized: θ₀ is copied at init, so it keeps its value while θ moves.
    start = np.arange(12.0).reshape(4, 3).T
    x = native.param(start, "float64")
    rule = decay.sgd(0.1, weight_decay=0.5, decoupled=True, decay_toward=x)
    state = rule.init(x)
    for _ in range(3):
        x, state = rule.step(x, native.grad(np.ones((3, 4)), "float64"), state)
    # Each step: θ ← θ − 0.05·(θ − θ₀) − 0.1·1; so d = θ − θ₀ follows d ← 0.95·d − 0.1.
    d = 0.0
    for _ in range(3):
        d = 0.95 * d - 0.1
    assert_close(native.numpy(x), start + d, "float64", steps=3)
    assert_close(native.numpy(state.slots["decay_toward"][0]), start, "float64")
