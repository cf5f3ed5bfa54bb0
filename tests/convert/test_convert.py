"""decay.convert: every claim checked by running both sides.

Each case runs decay's rule and the native object (built by ``Conversion.build``, or
given to ``from_native``) on the same problem for 100 steps and compares the weights
of *every* step, in float64:

- "exact" holds when they agree to float64 round-off, ``assert_close(..., "float64",
  steps=100)`` (1e-10 norm-wise relative);
- "not exact" holds when the closest conversion (``strict=False``) differs by more than
  that tolerance — measured differences are 1e-8 to 1e-1, listed in the cases.

The problem: linear regression ``mean((X·w + bias − y)²)`` with two parameters named
"w" (5 values) and "bias" (1 value). decay runs on NumPy with the analytic gradient;
PyTorch computes its gradient with autograd, Keras with ``tf.GradientTape`` on
``keras.Variable``s (TensorFlow backend, eager ``apply_gradients``).

Keras and float32. Keras casts python-float hyperparameters to float32 before casting
them to the variable's dtype: learning_rate (a float32 variable), weight_decay,
momentum and beta_1/beta_2 inside the bias correction (``ops.cast(0.9, "float64")``
goes through float32). So the Keras cases use hyperparameters that are exactly
representable in float32 (0.0625, 0.875, 1 − 2^-10, ...): with those, Keras agrees with
decay to float64 round-off, which checks the formulas at full precision. Keras
schedules compute lr_t itself in float32; those cases use ``KERAS_SCHEDULE_RTOL``
(below, with its measurement). ``test_keras_float32_hyperparameters`` measures what
float32 rounding costs with ordinary values (0.1, 0.9, 0.999).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import decay
from decay import schedules as S
from decay.convert import Conversion, from_native, to_native
from decay.errors import DecayError
from decay.tolerances import relative_error, rtol

from conftest import needs_backends

# What each test needs on the other side of the conversion.
NEEDS_TORCH = needs_backends("torch", why="the other side of these conversions is torch.optim")
NEEDS_KERAS = needs_backends("tensorflow", why="the other side of these conversions is Keras on TensorFlow")
NEEDS_BOTH = needs_backends("torch", "tensorflow", why="this test converts to and from both torch.optim and Keras")

STEPS = 100
TOL = rtol("float64", STEPS)  # 1e-10
# Keras computes schedules in float32: lr_t carries a relative error of a few float32
# ulps (6e-8 each; up to 4.6e-6 near a cosine's small end, test_schedules.py). The
# weights' error is Σ_t |δlr_t|·|step_t| / max|θ|: measured at most 2.0e-8 over these
# cases (restarts; cosine 1.4e-8, polynomial 1.3e-8, exponential 2.4e-9; the
# piecewise ones are exact); the bound leaves a factor 10 and stays 10× below the
# smallest "not exact" difference (ε placement, 2e-6).
KERAS_SCHEDULE_RTOL = 2e-7
# Ordinary values (lr 0.1, momentum 0.9, beta_2 0.999) rounded to float32 by Keras:
# measured 9.3e-8 (SGD, momentum 0.9) and 2.7e-6 (AdamW lr 0.01: β2 off by 1.3e-8
# changes 1 − β2^k by 1e-5 relative at k = 100; 5.4e-6 with lr 0.05) after 100 steps.
KERAS_F32_SGD = 1e-6
KERAS_F32_ADAM = 2e-5

# Float32-representable hyperparameters for the Keras cases (and used for torch too).
LR, MU, TAU, WD = 0.0625, 0.875, 0.25, 0.015625
ALR, BETAS, EPS, AWD = 0.015625, (0.875, 1 - 2**-10), 2.0**-20, 0.0078125


# ---------------------------------------------------------------------------------
# The problem and the three runners.


@functools.lru_cache(maxsize=None)
def _data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.3 * rng.normal(size=16)
    init = {"w": rng.normal(size=5), "bias": np.array([0.4])}
    return x, y, init


def _np_grads(p):
    x, y, _ = _data()
    r = x @ p["w"] + p["bias"][0] - y
    return {"w": 2.0 / len(y) * x.T @ r, "bias": np.array([2.0 / len(y) * r.sum()])}


def _flat(p):
    return np.concatenate([np.asarray(p["w"]).ravel(), np.asarray(p["bias"]).ravel()])


def run_decay(rule, steps=STEPS, poison=None):
    """decay's rule on NumPy; ``poison``: a step whose gradient is NaN."""
    params = {k: v.copy() for k, v in _data()[2].items()}
    state = rule.init(params)
    out = []
    for t in range(steps):
        grads = _np_grads(params)
        if t == poison:
            grads = {k: g * np.nan for k, g in grads.items()}
        params, state = rule.step(params, grads, state)
        out.append(_flat(params))
    return np.array(out)


def run_torch(native, steps=STEPS, penalty=None, poison=None):
    """``native``: a Conversion (built on named float64 tensors) or a function params ->
    optimizer or (optimizer, scheduler). ``penalty``: params -> tensor added to the loss."""
    import torch

    x, y, init = _data()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    built = native.build(params) if isinstance(native, Conversion) else native(params)
    opt, sched = built if isinstance(built, tuple) else (built, None)
    out = []
    for t in range(steps):
        opt.zero_grad()
        loss = torch.mean((x @ params["w"] + params["bias"] - y) ** 2)
        if penalty is not None:
            loss = loss + penalty(params)
        if t == poison:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        out.append(_flat({k: v.detach().numpy() for k, v in params.items()}))
    return np.array(out)


def run_keras(native, steps=STEPS, penalty=None):
    """``native``: a Conversion or a function variables -> optimizer. ``penalty``: a
    Keras regularizer added to the loss for every variable."""
    import keras
    import tensorflow as tf

    x, y, init = _data()
    x, y = tf.constant(x), tf.constant(y)
    variables = {k: keras.Variable(v, dtype="float64", name=k) for k, v in init.items()}
    opt = native.build(variables) if isinstance(native, Conversion) else native(variables)
    out = []
    for _ in range(steps):
        if penalty is None:  # the tape costs a quarter of a step: skip it when it adds nothing
            grads = [tf.constant(g) for g in _np_grads({k: v.numpy() for k, v in variables.items()}).values()]
        else:
            with tf.GradientTape() as tape:
                w, b = variables["w"].value, variables["bias"].value
                loss = tf.reduce_mean((tf.linalg.matvec(x, w) + b - y) ** 2) + penalty(w) + penalty(b)
            grads = tape.gradient(loss, [variables["w"].value, variables["bias"].value])
        opt.apply_gradients(zip(grads, [variables["w"], variables["bias"]]))
        out.append(_flat({k: v.numpy() for k, v in variables.items()}))
    return np.array(out)


def _torch_penalty(conversion, rule):
    """The conversion's extra loss term, over the parameters the rule's mask decays."""
    extra = conversion.build_extra()
    if extra is None:
        return None

    def penalty(params):
        keep = decay.masks.resolve_mask(rule.mask, list(params), list(params.values()))
        return extra([p for p, k in zip(params.values(), keep) if k])

    return penalty


def _keras_penalty(conversion):
    return conversion.build_extra()


def assert_same(theirs, ours, tol=TOL, what=""):
    error = relative_error(theirs, ours)
    assert error <= tol, f"{what}: expected exact, relative error {error:.3e} > {tol:.1e}"
    return error


def assert_differs(theirs, ours, tol=TOL, what=""):
    error = relative_error(theirs, ours)
    assert error > tol, f"{what}: expected a difference, relative error {error:.3e} <= {tol:.1e}"
    return error


def check_torch(rule, exact, **kw):
    if not exact:
        with pytest.raises(DecayError, match="no exact torch equivalent"):
            to_native(rule, "torch")
    conv = to_native(rule, "torch", strict=False)
    assert conv.exact is exact, conv.reason
    assert (conv.reason is None) is exact
    theirs = run_torch(conv, penalty=_torch_penalty(conv, rule), **kw)
    ours = run_decay(rule, **kw)
    (assert_same if exact else assert_differs)(theirs, ours, what=f"{rule!r} -> {conv.code}")
    return conv


def check_keras(rule, exact, tol=TOL):
    if not exact:
        with pytest.raises(DecayError, match="no exact keras equivalent"):
            to_native(rule, "keras")
    conv = to_native(rule, "keras", strict=False)
    assert conv.exact is exact, conv.reason
    theirs = run_keras(conv, penalty=_keras_penalty(conv))
    ours = run_decay(rule)
    (assert_same if exact else assert_differs)(theirs, ours, tol, what=f"{rule!r} -> {conv.code}")
    return conv


# ---------------------------------------------------------------------------------
# decay -> PyTorch.

TORCH_EXACT = {
    "sgd": decay.sgd(0.1, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov": decay.sgd(LR, momentum=MU, nesterov=True, weight_decay=WD),
    "sgd-dampening-steplr": decay.sgd(S.step(LR, 30, 0.5), momentum=MU, dampening=TAU, weight_decay=WD),
    "sgd-decoupled-no-momentum-cosine": decay.sgd(S.cosine(LR, 80, floor=0.001), weight_decay=WD, decoupled=True),
    "sgd-decoupled-multiplier-schedule": decay.sgd(
        S.exponential(LR, 0.98), weight_decay=0.5, decoupled=True, decay_scaled_by="schedule_multiplier"),
    "sgd-decoupled-none-constant": decay.sgd(LR, weight_decay=1e-3, decoupled=True, decay_scaled_by="none"),
    "sgd-L2-regularizer-momentum": decay.sgd(LR, momentum=MU, weight_decay=WD, regularizer=decay.L2(0.01)),
    "sgd-L1-regularizer": decay.sgd(LR, momentum=MU, regularizer=decay.L1(0.01)),
    "sgd-elasticnet-decoupled": decay.sgd(LR, weight_decay=WD, decoupled=True, regularizer=decay.ElasticNet(0.01, 0.02)),
    "adam-coupled-amsgrad": decay.adam(ALR, betas=BETAS, weight_decay=AWD, amsgrad=True),
    "adam-coupled-L2": decay.adam(ALR, weight_decay=AWD, regularizer=decay.L2(0.003)),
    "adamw": decay.adamw(0.01, weight_decay=0.01),
    "adamw-multistep": decay.adamw(S.multistep(ALR, [20, 50], 0.3), weight_decay=0.05),
    "adamw-multiplier-cosine": decay.adamw(S.cosine(ALR, 60, floor=1e-4), weight_decay=0.05,
                                           decay_scaled_by="schedule_multiplier"),
    "adamw-none-constant": decay.adamw(ALR, weight_decay=1e-3, decay_scaled_by="none"),
    "adamw-L2-regularizer": decay.adamw(ALR, weight_decay=0.01, regularizer=decay.L2(0.004)),
    "adamw-mask": decay.adamw(ALR, weight_decay=0.5, mask=decay.masks.exclude_names("bias")),
    "adamw-dict-mask-L1": decay.adamw(ALR, weight_decay=0.5, mask={"bias": False}, regularizer=decay.L1(0.01)),
    "adam-decoupled": decay.adam(ALR, weight_decay=0.05, decoupled=True),
}

TORCH_NOT_EXACT = {
    # measured relative differences of the closest conversion after 100 steps
    "sgd-decoupled-momentum": decay.sgd(LR, momentum=MU, weight_decay=0.05, decoupled=True),  # 6.2e-2
    "adamw-none-schedule": decay.adamw(S.step(ALR, 20, 0.5), weight_decay=1e-3, decay_scaled_by="none"),  # 4.8e-2
    "adam-epsilon-hat": decay.adam(ALR, eps=1e-7, epsilon_hat=True),  # 2.3e-7
    "adamw-epsilon-hat": decay.adamw(ALR, weight_decay=0.01, eps=1e-7, epsilon_hat=True),  # 2.3e-7
    "weight-decay-schedule": decay.adamw(ALR, weight_decay=S.step(0.1, 10, 0.5)),  # 5.8e-2
    "groups": decay.sgd(LR, weight_decay=WD, groups=[{"params": ["bias"], "lr": 0.01}]),  # 4.2e-2
}


@NEEDS_TORCH
@pytest.mark.parametrize("case", list(TORCH_EXACT))
def test_to_torch_exact(case):
    check_torch(TORCH_EXACT[case], exact=True)


@NEEDS_TORCH
@pytest.mark.parametrize("case", list(TORCH_NOT_EXACT))
def test_to_torch_not_exact(case):
    check_torch(TORCH_NOT_EXACT[case], exact=False)


@NEEDS_TORCH
def test_to_torch_on_nonfinite_skip_is_not_exact():
    # decay skips the step with a NaN gradient; PyTorch applies it and the weights turn NaN.
    rule = decay.sgd(LR, on_nonfinite="skip")
    conv = check_torch(rule, exact=False, poison=3)
    assert "on_nonfinite" in conv.reason


def test_to_torch_codes():
    conv = to_native(decay.sgd(0.1, momentum=0.9, weight_decay=5e-4), "torch")
    assert conv.code == "torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.0005)"
    assert conv.extra is None and conv.reason is None
    conv = to_native(decay.adamw(1e-3, weight_decay=0.1, decay_scaled_by="schedule_multiplier"), "torch")
    assert "torch.optim.AdamW(params, lr=0.001" in conv.code and "weight_decay=100.0" in conv.code
    conv = to_native(decay.sgd(0.1, regularizer=decay.L1(1e-4)), "torch")
    assert conv.extra == "add to the loss: loss = loss + 0.0001 * sum(p.abs().sum() for p in params) (params: all parameters)"
    conv = to_native(decay.sgd(0.1, momentum=0.9, weight_decay=1e-2, decoupled=True), "torch", strict=False)
    assert "10×" in conv.reason and "coupled" in conv.reason
    conv = to_native(decay.adam(eps=1e-7, epsilon_hat=True), "torch", strict=False)
    assert "31.6·ε" in conv.reason
    with pytest.raises(DecayError, match="needs `params`"):
        to_native(decay.sgd(0.1), "torch").build()


SCHEDULES_TORCH = {
    # schedule: the scheduler class the code must name
    "step": (S.step(LR, 15, 0.5), "StepLR"),
    "multistep": (S.multistep(LR, [10, 40, 70], 0.5), "MultiStepLR"),
    "exponential": (S.exponential(LR, 0.97), "ExponentialLR"),
    "polynomial": (S.polynomial(LR, 70, power=2.0), "PolynomialLR"),
    "restarts": (S.cosine_restarts(LR, 10, t_mul=2.0, floor=0.001), "CosineAnnealingWarmRestarts"),
    "cosine": (S.cosine(LR, 60, floor=0.001), "LambdaLR"),  # CosineAnnealingLR differs past T
    "warmup-cosine": (S.warmup(S.cosine(LR, 70), 10), "LambdaLR"),
    "inverse-time": (S.inverse_time(LR, 0.5, 10), "LambdaLR"),
    "piecewise": (S.piecewise([10, 30], [LR, 0.03, 0.0]), "LambdaLR"),
    "join": (S.join([S.constant(LR), S.exponential(LR, 0.9)], [25]), "LambdaLR"),
}


@NEEDS_TORCH
@pytest.mark.parametrize("case", list(SCHEDULES_TORCH))
def test_to_torch_schedules(case):
    sched, name = SCHEDULES_TORCH[case]
    conv = check_torch(decay.sgd(sched, momentum=0.5, weight_decay=WD), exact=True)
    assert f"torch.optim.lr_scheduler.{name}(optimizer" in conv.code
    alone = to_native(sched, "torch")
    assert alone.code.startswith(f"torch.optim.lr_scheduler.{name}(optimizer")


@NEEDS_TORCH
def test_torch_cosine_annealing_differs_past_t_max():
    # Why cosine goes to LambdaLR: CosineAnnealingLR climbs back after T_max.
    rule = decay.sgd(S.cosine(LR, 40, floor=0.001), weight_decay=WD)
    ours = run_decay(rule)

    def native(params):
        import torch

        opt = torch.optim.SGD(params.values(), lr=LR, weight_decay=WD)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0.001)

    theirs = run_torch(native)
    assert_same(theirs[:41], ours[:41], rtol("float64", 41))
    assert_differs(theirs, ours)
    with pytest.raises(DecayError, match="climbs back"):
        from_native(native({"w": _torch_param()}))


def _torch_param():
    import torch

    return torch.zeros(2, dtype=torch.float64, requires_grad=True)


# ---------------------------------------------------------------------------------
# decay -> Keras.

KERAS_EXACT = {
    "sgd-decoupled-momentum": decay.sgd(LR, momentum=MU, weight_decay=WD, decoupled=True),
    "sgd-decoupled-nesterov": decay.sgd(LR, momentum=MU, nesterov=True, weight_decay=WD, decoupled=True),
    "sgd-coupled-momentum-via-L2": decay.sgd(LR, momentum=MU, weight_decay=WD),
    "sgd-coupled-plain": decay.sgd(LR, weight_decay=WD),
    "sgd-decoupled-multiplier": decay.sgd(LR, momentum=MU, weight_decay=WD, decoupled=True,
                                          decay_scaled_by="schedule_multiplier"),
    "sgd-decoupled-none-constant": decay.sgd(LR, weight_decay=WD, decoupled=True, decay_scaled_by="none"),
    "sgd-L1-regularizer": decay.sgd(LR, momentum=MU, regularizer=decay.L1(0.0078125)),
    "adam-coupled-via-L2": decay.adam(ALR, betas=BETAS, eps=EPS, weight_decay=AWD, epsilon_hat=True),
    "adam-decoupled-amsgrad": decay.adam(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, decoupled=True,
                                         amsgrad=True, epsilon_hat=True),
    "adamw": decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True),
    "adamw-multiplier": decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=AWD, epsilon_hat=True,
                                    decay_scaled_by="schedule_multiplier"),
    "adamw-mask-names": decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True,
                                    mask=decay.masks.exclude_names("bias")),
    "adamw-dict-mask": decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True,
                                   mask={"bias": False}),
}

KERAS_NOT_EXACT = {
    # measured relative differences of the closest conversion after 100 steps
    "sgd-momentum-schedule": decay.sgd(S.step(LR, 20, 0.5), momentum=MU, weight_decay=WD, decoupled=True),  # 9.3e-2
    "sgd-dampening": decay.sgd(LR, momentum=MU, dampening=TAU, weight_decay=WD, decoupled=True),  # 2.3e-1
    "sgd-decoupled-none-schedule": decay.sgd(S.step(LR, 20, 0.5), weight_decay=WD, decoupled=True,
                                             decay_scaled_by="none"),  # 5.0e-1
    "adam-no-epsilon-hat": decay.adam(ALR, betas=BETAS, eps=EPS, weight_decay=AWD),  # 2.2e-6
    "adamw-no-epsilon-hat": decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5),  # 2.0e-6
    "weight-decay-schedule": decay.adamw(ALR, betas=BETAS, eps=EPS, epsilon_hat=True,
                                         weight_decay=S.step(0.5, 10, 0.5)),  # 1.8e-1
    "join-schedule": decay.sgd(S.join([S.constant(LR), S.constant(0.03125)], [30])),  # 9.2e-2
}


@NEEDS_KERAS
@pytest.mark.parametrize("case", list(KERAS_EXACT))
def test_to_keras_exact(case):
    check_keras(KERAS_EXACT[case], exact=True)


@NEEDS_KERAS
@pytest.mark.parametrize("case", list(KERAS_NOT_EXACT))
def test_to_keras_not_exact(case):
    check_keras(KERAS_NOT_EXACT[case], exact=False)


def test_to_keras_codes():
    conv = to_native(decay.sgd(0.1, momentum=0.9, weight_decay=5e-4), "keras")
    assert conv.exact and conv.code == "keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)"
    assert conv.extra.startswith("add kernel_regularizer=keras.regularizers.L2(0.00025) to every decayed layer")
    assert isinstance(conv.penalty, decay.L2) and conv.penalty.lam == 2.5e-4
    conv = to_native(decay.sgd(0.1, weight_decay=5e-4), "keras")  # plain SGD: coupled = decoupled
    assert conv.code == "keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.0005)"
    assert conv.extra is None
    conv = to_native(decay.adamw(weight_decay=0.004, eps=1e-7, epsilon_hat=True), "keras")
    assert conv.code == ("keras.optimizers.AdamW(learning_rate=0.001, beta_1=0.9, beta_2=0.999, "
                         "epsilon=1e-07, weight_decay=0.004)")
    assert "float32" in conv.note
    conv = to_native(decay.adamw(), "keras", strict=False)
    assert "epsilon_hat=True" in conv.reason and "0.0316·ε" in conv.reason
    conv = to_native(decay.sgd(0.1, momentum=0.9, dampening=0.1), "keras", strict=False)
    assert "dampening" in conv.reason


SCHEDULES_KERAS = {
    # schedule: the Keras schedule class the code must name (None: a float)
    "constant": (S.constant(LR), None),
    "step": (S.step(LR, 15, 0.5), "ExponentialDecay"),
    "exponential": (S.exponential(LR, 0.5, decay_steps=30), "ExponentialDecay"),
    "inverse-time": (S.inverse_time(LR, 0.5, 10, staircase=True), "InverseTimeDecay"),
    "polynomial": (S.polynomial(LR, 70, end_value=0.001, power=2.0), "PolynomialDecay"),
    "polynomial-cycle": (S.polynomial(LR, 30, end_value=0.001, cycle=True), "PolynomialDecay"),
    "cosine": (S.cosine(LR, 60, floor=0.001), "CosineDecay"),
    "restarts": (S.cosine_restarts(LR, 10, t_mul=2.0, m_mul=0.5, floor=0.001), "CosineDecayRestarts"),
    "warmup-cosine": (S.warmup(S.cosine(LR, 70, floor=0.001), 10, start_value=0.001), "CosineDecay"),
    "warmup-constant": (S.warmup(LR, 20), "CosineDecay"),
    "piecewise-after": (S.piecewise([10, 30], [LR, 0.03125, 0.0078125], switch="after"), "PiecewiseConstantDecay"),
    "piecewise-at": (S.piecewise([10, 30], [LR, 0.03125, 0.0078125]), "PiecewiseConstantDecay"),
    "multistep": (S.multistep(LR, [10, 40], 0.5), "PiecewiseConstantDecay"),
}


@NEEDS_KERAS
@pytest.mark.parametrize("case", list(SCHEDULES_KERAS))
def test_to_keras_schedules(case):
    sched, name = SCHEDULES_KERAS[case]
    conv = check_keras(decay.sgd(sched, weight_decay=WD), exact=True, tol=KERAS_SCHEDULE_RTOL)
    alone = to_native(sched, "keras")
    if name is None:
        assert "schedules" not in conv.code and isinstance(alone.build(), float)
    else:
        assert f"keras.optimizers.schedules.{name}(" in conv.code
        assert type(alone.build()).__name__ == name


@NEEDS_KERAS
@pytest.mark.parametrize("case", ["cosine", "warmup-cosine"])
def test_to_keras_schedules_adamw(case):
    # Adam's step and the decoupled decay are linear in lr_t too.
    sched, _ = SCHEDULES_KERAS[case]
    check_keras(decay.adamw(sched, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True),
                exact=True, tol=KERAS_SCHEDULE_RTOL)


def test_keras_schedule_not_exact():
    for sched in (S.join([LR, 0.03125], [30]), S.exponential(LR, 0.5, 30, transition_begin=10),
                  S.warmup(S.step(LR, 10, 0.5), 5), S.cosine_restarts(LR, 10, t_mul=1.5)):
        with pytest.raises(DecayError, match="no exact keras equivalent"):
            to_native(sched, "keras")
        assert not to_native(sched, "keras", strict=False).exact


@NEEDS_KERAS
def test_keras_float32_hyperparameters():
    """What Keras's float32 casts cost with ordinary, non-representable values."""
    sgd = decay.sgd(0.1, momentum=0.9, weight_decay=5e-4, decoupled=True)
    err_sgd = relative_error(run_keras(to_native(sgd, "keras")), run_decay(sgd))
    adam = decay.adamw(0.01, weight_decay=0.004, eps=1e-7, epsilon_hat=True)
    err_adam = relative_error(run_keras(to_native(adam, "keras")), run_decay(adam))
    # More than float64 round-off (it is float32 rounding), less than the bounds.
    assert TOL < err_sgd <= KERAS_F32_SGD, err_sgd
    assert TOL < err_adam <= KERAS_F32_ADAM, err_adam
    # With Keras's ε = 1e-7 the ε placement (2.7e-6 here) hides in the float32 rounding of
    # β2; with a larger ε it does not.
    no_hat = decay.adamw(0.01, weight_decay=0.004, eps=1e-3)
    assert relative_error(run_keras(to_native(no_hat, "keras", strict=False)), run_decay(no_hat)) > 10 * KERAS_F32_ADAM


# ---------------------------------------------------------------------------------
# Penalties.

PENALTIES = {"L2": decay.L2(0.015625), "L1": decay.L1(0.0625), "ElasticNet": decay.ElasticNet(0.0625, 0.015625)}


@NEEDS_TORCH
@pytest.mark.parametrize("case", list(PENALTIES))
def test_penalty_to_torch(case):
    pen = PENALTIES[case]
    conv = to_native(pen, "torch")
    assert conv.exact and conv.code.startswith("loss = loss + ")
    penalty = conv.build()
    theirs = run_torch(lambda p: __import__("torch").optim.SGD(p.values(), lr=LR),
                       penalty=lambda p: penalty(p.values()))
    assert_same(theirs, run_decay(decay.sgd(LR, regularizer=pen)))
    assert from_native(penalty).get_config() == pen.get_config()


@NEEDS_KERAS
@pytest.mark.parametrize("case", list(PENALTIES))
def test_penalty_to_keras(case):
    import keras

    pen = PENALTIES[case]
    conv = to_native(pen, "keras")
    native = conv.build()
    assert conv.exact and isinstance(native, keras.regularizers.Regularizer)
    theirs = run_keras(lambda v: keras.optimizers.SGD(LR), penalty=native)
    assert_same(theirs, run_decay(decay.sgd(LR, regularizer=pen)))
    assert from_native(native).get_config() == pen.get_config()


def test_penalty_codes():
    assert to_native(decay.L2(5e-4), "torch").code == "loss = loss + 0.0005 * sum(p.pow(2).sum() for p in params)"
    assert to_native(decay.L2(5e-4), "keras").code == "keras.regularizers.L2(0.0005)"
    assert to_native(decay.L1(1e-3), "keras").code == "keras.regularizers.L1(0.001)"
    assert to_native(decay.ElasticNet(1e-3, 2e-3), "keras").code == "keras.regularizers.L1L2(l1=0.001, l2=0.002)"


# ---------------------------------------------------------------------------------
# From native objects: each supported type, run against decay's rule.


def _torch_natives():
    import torch

    O, L = torch.optim, torch.optim.lr_scheduler

    def named(p):
        return [{"params": [p["w"]], "param_names": ["w"]},
                {"params": [p["bias"]], "param_names": ["bias"], "weight_decay": 0.0}]

    return {
        "SGD": lambda p: O.SGD(p.values(), lr=LR, momentum=MU, dampening=TAU, weight_decay=WD),
        "SGD-nesterov-StepLR": lambda p: _with(O.SGD(p.values(), lr=LR, momentum=MU, nesterov=True, weight_decay=WD),
                                               lambda o: L.StepLR(o, 20, gamma=0.5)),
        "Adam": lambda p: O.Adam(p.values(), lr=ALR, betas=BETAS, weight_decay=AWD, amsgrad=True),
        "Adam-decoupled": lambda p: O.Adam(p.values(), lr=ALR, weight_decay=0.05, decoupled_weight_decay=True),
        "AdamW-MultiStepLR": lambda p: _with(O.AdamW(p.values(), lr=ALR, weight_decay=0.05),
                                             lambda o: L.MultiStepLR(o, [10, 10, 30], gamma=0.5)),
        "AdamW-ExponentialLR": lambda p: _with(O.AdamW(p.values(), lr=ALR), lambda o: L.ExponentialLR(o, 0.98)),
        "AdamW-PolynomialLR": lambda p: _with(O.AdamW(p.values(), lr=ALR), lambda o: L.PolynomialLR(o, 60, 2.0)),
        "AdamW-WarmRestarts": lambda p: _with(O.AdamW(p.values(), lr=ALR),
                                              lambda o: L.CosineAnnealingWarmRestarts(o, 10, 2, eta_min=1e-4)),
        "AdamW-no-decay-group": lambda p: O.AdamW(named(p), lr=ALR, weight_decay=0.5),
    }


def _with(opt, make_scheduler):
    return opt, make_scheduler(opt)


@NEEDS_TORCH
def test_from_torch_each_type():
    for case, make in _torch_natives().items():
        native = make({"w": _torch_param(), "bias": _torch_param()})
        rule = from_native(native)
        assert isinstance(rule, decay.Rule), case
        assert_same(run_torch(make), run_decay(rule), what=case)
    assert from_native(_torch_natives()["AdamW-no-decay-group"]({"w": _torch_param(), "bias": _torch_param()})).mask == {
        "w": True, "bias": False}


def _keras_natives():
    import keras

    K = keras.optimizers
    return {
        "SGD": lambda v: K.SGD(LR, momentum=MU, weight_decay=WD),
        "SGD-nesterov": lambda v: K.SGD(LR, momentum=MU, nesterov=True),
        "Adam": lambda v: K.Adam(ALR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, amsgrad=True),
        "Adam-wd": lambda v: K.Adam(ALR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, weight_decay=0.5),
        "AdamW": lambda v: K.AdamW(ALR, weight_decay=0.5, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS),
        "AdamW-exclude": lambda v: _exclude(K.AdamW(ALR, weight_decay=0.5, beta_1=BETAS[0], beta_2=BETAS[1],
                                                    epsilon=EPS), ["bias"]),
        "SGD-CosineDecay": lambda v: K.SGD(K.schedules.CosineDecay(LR, 60, alpha=0.125), weight_decay=WD),
    }


def _keras_schedules():
    import keras

    Sch = keras.optimizers.schedules
    return [
        Sch.ExponentialDecay(LR, 10, 0.5),
        Sch.ExponentialDecay(LR, 10, 0.5, staircase=True),
        Sch.PiecewiseConstantDecay([10, 30], [LR, 0.03125, 0.0078125]),
        Sch.CosineDecay(LR, 60, alpha=0.125),
        Sch.CosineDecay(0.0, 60, alpha=0.125, warmup_target=LR, warmup_steps=10),
        Sch.CosineDecayRestarts(LR, 10, t_mul=2.0, m_mul=0.5, alpha=0.125),
        Sch.InverseTimeDecay(LR, 10, 0.5),
        Sch.PolynomialDecay(LR, 60, end_learning_rate=0.001, power=2.0),
        Sch.PolynomialDecay(LR, 30, end_learning_rate=0.001, cycle=True),
    ]


def _exclude(opt, names):
    opt.exclude_from_weight_decay(var_names=names)
    return opt


@NEEDS_KERAS
def test_from_keras_each_type():
    for case, make in _keras_natives().items():
        rule = from_native(make(None))
        assert isinstance(rule, decay.Rule), case
        tol = KERAS_SCHEDULE_RTOL if "Decay" in case else TOL
        assert_same(run_keras(make), run_decay(rule), tol, what=case)


@NEEDS_KERAS
def test_from_keras_schedules():
    # A schedule alone: its values over the 100 steps, Keras's (float32) against decay's.
    # In an optimizer the same mapping is run in test_to_keras_schedules.
    for native in _keras_schedules():
        ours = from_native(native)
        theirs = [float(native(t)) for t in range(STEPS)]
        np.testing.assert_allclose([ours(t) for t in range(STEPS)], theirs, rtol=1e-6, atol=1e-6 * ours.base,
                                   err_msg=repr(native.get_config()))


@NEEDS_KERAS
def test_from_keras_details():
    import keras

    rule = from_native(keras.optimizers.AdamW())
    assert rule.name == "adamw" and rule.epsilon_hat and rule.decoupled
    assert rule.defaults["lr"] == 0.001 and rule.defaults["eps"] == 1e-7 and rule.defaults["weight_decay"] == 0.004
    rule = from_native(keras.optimizers.SGD(0.1, weight_decay=0.01))  # float32 0.1 comes back as 0.1
    assert rule.defaults["lr"] == 0.1 and rule.decoupled and rule.defaults["weight_decay"] == 0.01
    assert from_native(keras.optimizers.SGD(0.1)).get_config() == decay.sgd(0.1).get_config()


# ---------------------------------------------------------------------------------
# Round trips: from_native(to_native(x).build(...)) gives x's config back.

ROUND_TRIP_TORCH = [
    decay.sgd(0.1, momentum=0.9, weight_decay=5e-4),
    decay.sgd(S.multistep(0.1, [30, 60], 0.1), momentum=0.9, nesterov=True, weight_decay=1e-4),
    decay.sgd(S.cosine_restarts(0.1, 10, t_mul=2.0, floor=1e-3), momentum=0.9, dampening=0.1),
    decay.adam(1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-4, amsgrad=True),
    decay.adamw(3e-4, weight_decay=0.05),
    decay.adamw(S.warmup(S.cosine(1e-3, 900), 100), weight_decay=0.1),
    decay.adamw(S.step(1e-3, 10, 0.5), weight_decay=0.1, mask={"w": True, "bias": False}),
]

ROUND_TRIP_KERAS = [
    decay.sgd(0.1, momentum=0.9, weight_decay=5e-4, decoupled=True),
    decay.sgd(S.exponential(0.1, 0.96, decay_steps=1000), momentum=0.0, weight_decay=1e-4, decoupled=True),
    decay.adam(1e-3, eps=1e-7, epsilon_hat=True),
    decay.adam(1e-3, eps=1e-7, weight_decay=0.01, decoupled=True, amsgrad=True, epsilon_hat=True),
    decay.adamw(S.piecewise([100, 200], [1e-3, 5e-4, 1e-4], switch="after"), weight_decay=0.004, eps=1e-7,
                epsilon_hat=True),
    decay.adamw(S.polynomial(1e-3, 500, end_value=1e-5, power=0.5), eps=1e-7, epsilon_hat=True),
    decay.adamw(S.inverse_time(1e-3, 0.5, 100), eps=1e-7, epsilon_hat=True, mask=decay.masks.exclude_names("bias")),
    decay.adamw(S.warmup(S.cosine(1e-3, 900, floor=1e-5), 100, start_value=1e-5), eps=1e-7, epsilon_hat=True),
]


def _same_config(a, b):
    """Equal configs; floats equal to 2 ulp (Keras's alpha = floor/base comes back as
    alpha·base)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_config(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_config(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 4.5e-16 * max(abs(a), abs(b))
    return a == b


@NEEDS_TORCH
@pytest.mark.parametrize("index", range(len(ROUND_TRIP_TORCH)))
def test_round_trip_torch(index):
    rule = ROUND_TRIP_TORCH[index]
    native = to_native(rule, "torch").build({"w": _torch_param(), "bias": _torch_param()})
    back = from_native(native)
    assert _same_config(back.get_config(), rule.get_config()), (back.get_config(), rule.get_config())


@NEEDS_KERAS
@pytest.mark.parametrize("index", range(len(ROUND_TRIP_KERAS)))
def test_round_trip_keras(index):
    rule = ROUND_TRIP_KERAS[index]
    back = from_native(to_native(rule, "keras").build())
    assert _same_config(back.get_config(), rule.get_config()), (back.get_config(), rule.get_config())


@NEEDS_BOTH
def test_round_trip_schedules():
    import torch

    opt = torch.optim.SGD([_torch_param()], lr=0.1)
    for sched, _ in SCHEDULES_TORCH.values():
        opt = torch.optim.SGD([_torch_param()], lr=sched.base)
        assert from_native(to_native(sched, "torch").build(opt)).get_config() == sched.get_config()
    for sched, name in SCHEDULES_KERAS.values():
        if name is None:
            continue
        back = from_native(to_native(sched, "keras").build())
        values = [sched(t) for t in range(120)]
        assert np.allclose([back(t) for t in range(120)], values, rtol=1e-15, atol=0), sched


# ---------------------------------------------------------------------------------
# Errors.


@NEEDS_BOTH
def test_unknown_objects_raise():
    import keras
    import torch

    p = [_torch_param()]
    for obj in (object(), torch.optim.Rprop(p), keras.optimizers.Ftrl(), keras.regularizers.OrthogonalRegularizer(),
                torch.optim.lr_scheduler.LinearLR(torch.optim.SGD(p, lr=0.1)), 0.1):
        with pytest.raises(DecayError, match="cannot convert an object of type") as info:
            from_native(obj)
        assert type(obj).__qualname__ in str(info.value) and "torch.optim.SGD" in str(info.value)
    with pytest.raises(DecayError, match="already a decay object"):
        from_native(decay.sgd(0.1))
    with pytest.raises(DecayError, match="framework"):
        to_native(decay.sgd(0.1), "jax")
    with pytest.raises(DecayError, match="converts decay rules"):
        to_native(object(), "torch")


@NEEDS_BOTH
def test_unsupported_native_settings_raise():
    import keras
    import torch

    p = [_torch_param()]
    with pytest.raises(DecayError, match="maximize"):
        from_native(torch.optim.SGD(p, lr=0.1, maximize=True))
    with pytest.raises(DecayError, match="clipnorm"):
        from_native(keras.optimizers.SGD(0.1, clipnorm=1.0))
    with pytest.raises(DecayError, match="no names"):
        from_native(torch.optim.AdamW([{"params": p}, {"params": [_torch_param()], "weight_decay": 0.0}]))
    with pytest.raises(DecayError, match="different hyperparameters"):
        from_native(torch.optim.SGD([{"params": p}, {"params": [_torch_param()], "lr": 0.5}], lr=0.1))
    opt = torch.optim.SGD(p, lr=0.1)
    torch.optim.lr_scheduler.StepLR(opt, 10)
    with pytest.raises(DecayError, match="driven by an lr scheduler"):
        from_native(opt)
    with pytest.raises(DecayError, match="float32 logarithm"):
        from_native(keras.optimizers.schedules.CosineDecayRestarts(0.1, 10, t_mul=1.5))


def test_strict_error_names_the_closest():
    with pytest.raises(DecayError) as info:
        to_native(decay.sgd(0.1, momentum=0.9, weight_decay=1e-2, decoupled=True), "torch")
    message = str(info.value)
    assert "torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)" in message
    assert "strict=False" in message


# ---------------------------------------------------------------------------------
# Housekeeping.


CODE_CASES = {
    "torch": [
        decay.sgd(0.1, momentum=0.9, weight_decay=5e-4),
        decay.sgd(S.step(LR, 20, 0.5), momentum=MU, weight_decay=WD),
        decay.adamw(S.warmup(S.cosine(ALR, 70), 10), weight_decay=0.05, mask=decay.masks.exclude_names("bias")),
    ],
    "keras": [
        decay.sgd(LR, momentum=MU, weight_decay=WD, decoupled=True),
        decay.sgd(S.cosine(LR, 60), weight_decay=WD),
        decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True, mask=decay.masks.exclude_names("bias")),
        decay.adamw(ALR, betas=BETAS, eps=EPS, weight_decay=0.5, epsilon_hat=True, mask={"bias": False}),
    ],
}


@NEEDS_BOTH
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_code_runs_and_matches(framework):
    """``code`` is what the CLI prints: executed as written it must do what build() does."""
    import keras
    import torch

    for rule in CODE_CASES[framework]:
        conv = to_native(rule, framework)

        def from_code(params, conv=conv):
            if framework == "torch" and "resolve_mask" not in conv.code:
                params = list(params.values())  # model.parameters()
            namespace = {"torch": torch, "keras": keras, "decay": decay, "params": params}
            if "\n" not in conv.code and not conv.code.startswith("optimizer ="):
                return eval(conv.code, namespace)
            exec(conv.code, namespace)
            if "scheduler" in namespace:
                return namespace["optimizer"], namespace["scheduler"]
            return namespace["optimizer"]

        run = run_torch if framework == "torch" else run_keras
        assert_same(run(from_code), run_decay(rule), KERAS_SCHEDULE_RTOL if callable(rule.defaults["lr"]) else TOL,
                    what=conv.code)


def test_import_loads_no_framework():
    # Importing, converting to source and rejecting unknown objects load no framework.
    code = (
        "import sys, decay, decay.convert as c\n"
        "c.to_native(decay.adamw(decay.schedules.cosine(1e-3, 100)), 'torch', strict=False)\n"
        "c.to_native(decay.sgd(0.1, momentum=0.9, weight_decay=5e-4), 'keras')\n"
        "try:\n    c.from_native(object())\nexcept decay.DecayError:\n    pass\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_module_docstring_example():
    import doctest

    import decay.convert

    result = doctest.testmod(decay.convert)
    assert result.failed == 0 and result.attempted > 0
