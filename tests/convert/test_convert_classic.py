"""Conversion of RMSprop, Adagrad, Adadelta, Adamax, NAdam and RAdam, every claim run.

Each case runs decay's rule and the native optimizer (from ``from_native`` or built by
``to_native(...).build``) side by side for 30 steps on the same start, each side's
gradient g_k = noise_k + 0.1·θ from its own weights, float64:

- "exact" holds when every step agrees to ``assert_close(..., "float64", steps=k)``;
- "not exact" holds when ``strict=True`` refuses it and the closest one
  (``strict=False``) differs from decay by more than that tolerance.

The Keras cases use hyperparameters exact in float32 (Keras casts lr and weight_decay
to float32), so they are compared to float64 round-off; Nadam, whose μ_k Keras
computes with 0.96 rounded to float32, to 1e-7 (see test_parity_classic.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import decay
from decay.convert import from_native, to_native
from decay.errors import DecayError
from decay.tolerances import assert_close, relative_error, rtol

from conftest import needs_backends

NEEDS_TORCH = needs_backends("torch", why="the other side of these conversions is torch.optim")
NEEDS_KERAS = needs_backends("tensorflow", why="the other side of these conversions is Keras on TensorFlow")

STEPS = 30
RNG = np.random.default_rng(16)
START = {"w": RNG.normal(size=(3, 2)), "b": RNG.normal(size=(2,))}
NOISE = [{n: RNG.normal(size=v.shape) for n, v in START.items()} for _ in range(STEPS)]


def _grad(t, name, theta):
    return NOISE[t][name] + 0.1 * theta


def _decay_run(rule):
    params = {n: v.copy() for n, v in START.items()}
    state, out = rule.init(params), []
    for t in range(STEPS):
        params, state = rule.step(params, {n: _grad(t, n, p) for n, p in params.items()}, state)
        out.append({n: p.copy() for n, p in params.items()})
    return out


@contextlib.contextmanager
def _float64_scalars():
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # NAdam's mu_product in float64, as decay's
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _torch_params():
    import torch

    return {n: torch.tensor(v, requires_grad=True) for n, v in START.items()}


def _torch_run(params, opt):
    import torch

    out = []
    for t in range(STEPS):
        for n, p in params.items():
            p.grad = torch.from_numpy(_grad(t, n, p.detach().numpy()))
        opt.step()
        out.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return out


def _keras_run(variables, opt):
    import keras

    out = []
    for t in range(STEPS):
        grads = [keras.ops.convert_to_tensor(_grad(t, n, np.asarray(v.numpy()))) for n, v in variables.items()]
        opt.apply_gradients(zip(grads, variables.values()))
        out.append({n: np.array(v.numpy()) for n, v in variables.items()})
    return out


def _keras_variables():
    import keras

    return {n: keras.Variable(v, dtype="float64", name=n) for n, v in START.items()}


def _worst(a_run, b_run):
    return max(relative_error(a[n], b[n]) for a, b in zip(a_run, b_run) for n in START)


def _same(got, want, what, bound=None):
    if bound is not None:
        assert _worst(got, want) < bound, what
        return
    for k, (a, b) in enumerate(zip(got, want), start=1):
        for n in START:
            assert_close(a[n], b[n], "float64", steps=k, what=f"{what}: step {k} {n}")


def _torch_optimizers():
    O = pytest.importorskip("torch").optim
    return {
        "RMSprop": lambda p: O.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.02),
        "Adagrad": lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.02),
        "Adadelta": lambda p: O.Adadelta(p, rho=0.8, weight_decay=0.02),
        "Adamax": lambda p: O.Adamax(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.02),
        "NAdam": lambda p: O.NAdam(p, lr=0.01, momentum_decay=0.01, weight_decay=0.02, decoupled_weight_decay=True),
        "RAdam": lambda p: O.RAdam(p, lr=0.01, weight_decay=0.02),
    }


@NEEDS_TORCH
@pytest.mark.parametrize("name", ["RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"])
def test_torch_round_trip_is_exact(name):
    # torch -> decay (from_native) -> torch (to_native(...).build): all three runs equal.
    make = _torch_optimizers()[name]
    with _float64_scalars():
        params = _torch_params()
        native = make(list(params.values()))
        rule = from_native(native)
        want = _torch_run(params, native)
        conversion = to_native(rule, "torch")
        assert conversion.exact and conversion.extra is None
        params = _torch_params()
        rebuilt = _torch_run(params, conversion.build(list(params.values())))
    _same(_decay_run(rule), want, f"from_native(torch {name})")
    _same(rebuilt, want, f"to_native(from_native(torch {name}))")


@NEEDS_TORCH
@pytest.mark.parametrize("rule, why", [
    (lambda: decay.rmsprop(0.01, eps=1e-3, eps_inside_sqrt=True), "eps_inside_sqrt"),
    (lambda: decay.adagrad(0.1, weight_decay=0.05, decoupled=True), "only coupled"),
    (lambda: decay.adamax(0.01, eps=1e-3, eps_inside_max=False), "eps_inside_max"),
    (lambda: decay.nadam(0.01, momentum_schedule="constant"), "momentum_schedule='constant'"),
])
def test_torch_refusals_are_real(rule, why):
    rule = rule()
    with pytest.raises(DecayError, match=why):
        to_native(rule, "torch")
    conversion = to_native(rule, "torch", strict=False)
    assert not conversion.exact and why in conversion.reason
    with _float64_scalars():
        params = _torch_params()
        closest = _torch_run(params, conversion.build(list(params.values())))
    assert _worst(_decay_run(rule), closest) > rtol("float64", STEPS)


LR, WD, RHO, EPS, B2 = 2.0**-6, 2.0**-5, 0.875, 2.0**-20, 1.0 - 2.0**-10


def _keras_optimizers():
    K = pytest.importorskip("keras").optimizers
    return {
        "RMSprop": lambda: K.RMSprop(LR, rho=RHO, momentum=RHO, epsilon=EPS, centered=True, weight_decay=WD),
        "Adagrad": lambda: K.Adagrad(4 * LR, initial_accumulator_value=0.125, epsilon=EPS, weight_decay=WD),
        "Adadelta": lambda: K.Adadelta(0.5, rho=RHO, epsilon=EPS, weight_decay=WD),
        "Adamax": lambda: K.Adamax(LR, beta_1=RHO, beta_2=B2, epsilon=EPS, weight_decay=WD),
        "Nadam": lambda: K.Nadam(LR, beta_1=RHO, beta_2=B2, epsilon=EPS, weight_decay=WD),
    }


@NEEDS_KERAS
@pytest.mark.parametrize("name", ["RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam"])
def test_keras_round_trip_is_exact(name):
    native = _keras_optimizers()[name]()
    rule = from_native(native)
    want = _keras_run(_keras_variables(), native)
    conversion = to_native(rule, "keras")
    assert conversion.exact and conversion.extra is None
    rebuilt = _keras_run(_keras_variables(), conversion.build())
    bound = 1e-7 if name == "Nadam" else None  # Keras's float32 0.96 (module docstring)
    _same(_decay_run(rule), want, f"from_native(keras {name})", bound)
    _same(rebuilt, want, f"to_native(from_native(keras {name}))")


@NEEDS_KERAS
def test_keras_coupled_decay_goes_into_the_loss_exactly():
    # A coupled λ is an L2(λ/2) penalty in the loss, which Keras differentiates before its
    # optimizer: the conversion adds it as `extra`, and running it with the penalty's
    # gradient (λθ) equals decay's coupled rule.
    rule = decay.adadelta(0.5, rho=RHO, eps=EPS, weight_decay=WD)
    conversion = to_native(rule, "keras")
    assert conversion.exact and "L2(" in conversion.extra
    import keras

    variables, opt, out = _keras_variables(), conversion.build(), []
    for t in range(STEPS):
        grads = [keras.ops.convert_to_tensor(_grad(t, n, np.asarray(v.numpy())) + WD * np.asarray(v.numpy()))
                 for n, v in variables.items()]
        opt.apply_gradients(zip(grads, variables.values()))
        out.append({n: np.array(v.numpy()) for n, v in variables.items()})
    _same(_decay_run(rule), out, "keras adadelta + L2 in the loss")


@NEEDS_KERAS
@pytest.mark.parametrize("rule, why", [
    (lambda: decay.rmsprop(LR, alpha=RHO, eps=2.0**-8), "PyTorch's placement"),
    (lambda: decay.adamax(LR, eps=2.0**-8), "max"),
    (lambda: decay.nadam(LR, betas=(RHO, B2)), "momentum_schedule='torch'"),
    (lambda: decay.radam(LR), "no RAdam"),
])
def test_keras_refusals_are_real(rule, why):
    rule = rule()
    with pytest.raises(DecayError, match=why):
        to_native(rule, "keras")
    conversion = to_native(rule, "keras", strict=False)
    assert not conversion.exact
    closest = _keras_run(_keras_variables(), conversion.build())
    assert _worst(_decay_run(rule), closest) > 1e-7


@NEEDS_KERAS
def test_keras_rmsprop_momentum_under_a_schedule_is_refused():
    keras = pytest.importorskip("keras")
    sched = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)
    with pytest.raises(DecayError, match="inside its momentum"):
        from_native(keras.optimizers.RMSprop(sched, momentum=0.5))
    rule = decay.rmsprop(decay.schedules.exponential(0.01, decay_rate=0.5, decay_steps=10), momentum=0.5,
                         eps_inside_sqrt=True)
    assert "inside its momentum" in to_native(rule, "keras", strict=False).reason
