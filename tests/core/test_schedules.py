"""decay.schedules against PyTorch, Keras and optax over 1,000 steps, plus closed forms.

Expected values come from the frameworks' own schedules:

- PyTorch: a ``torch.optim.lr_scheduler`` driving a dummy SGD optimizer; the lr
  of step t is ``param_groups[0]["lr"]`` read before the t-th ``scheduler.step()``.
- Keras: ``keras.optimizers.schedules.*`` called with the step (TensorFlow backend).
- optax: the schedule called with the step under ``jax.enable_x64``.

Tolerances, per framework (|ours − theirs| ≤ atol + rtol·|theirs|):

- PyTorch, rtol 1e-12, atol 1e-14·α: float64 like us, but its chainable
  schedulers multiply the previous lr by a ratio each step, which accumulates
  round-off (measured at most 7.8e-14 relative, CosineAnnealingLR near the end).
- optax in float64, rtol 1e-12, atol 1e-14·α: the same formulas in float64
  (measured at most 2e-14 relative).
- Keras, rtol 1e-6, atol 1e-6·α: Keras computes in float32 (eps 1.2e-7). Near a
  small value (the end of a cosine) the float32 cancellation is large relative to
  the value but not to α (measured at most 4.6e-6 relative, 3.3e-7·α absolute).

The frameworks are imported inside the tests, never skipped: a missing framework
fails the run.
"""

import ast
import json
import math
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest

from decay import schedules as S
from decay.errors import DecayError

N = 1000
REPO = pathlib.Path(__file__).resolve().parents[2]  # tests/core/ -> the repo

TORCH_TOL = dict(rtol=1e-12, atol=1e-14)
OPTAX_TOL = dict(rtol=1e-12, atol=1e-14)
KERAS_TOL = dict(rtol=1e-6, atol=1e-6)


def _ours(sched, n=N):
    return np.array([sched(t) for t in range(n)])


def _assert_matches(sched, theirs, tol, upto=N):
    """Compare the first ``upto`` steps; atol is relative to the schedule's base."""
    ours = _ours(sched, upto)
    np.testing.assert_allclose(
        ours, np.asarray(theirs, dtype=np.float64)[:upto],
        rtol=tol["rtol"], atol=tol["atol"] * sched.base, err_msg=repr(sched),
    )


def _torch_lrs(make_scheduler, lr, n=N):
    torch = pytest.importorskip("torch")

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op, but keeps PyTorch's call-order check quiet
        scheduler.step()
    return lrs


def _keras_lrs(make_schedule, n=N, one_by_one=False):
    pytest.importorskip("tensorflow")  # Keras on TensorFlow, as everywhere in these tests
    keras = pytest.importorskip("keras")

    schedule = make_schedule(keras.optimizers.schedules)
    if one_by_one:  # schedules that branch with ops.cond need a scalar step
        return [float(schedule(t)) for t in range(n)]
    return np.asarray(schedule(np.arange(n)))


def _optax_lrs(make_schedule, n=N):
    import jax
    import jax.numpy as jnp
    import optax

    with jax.enable_x64(True):
        return np.asarray(make_schedule(optax)(jnp.arange(n)))


# --------------------------------------------------------------------------
# PyTorch

W, D = 100, 700  # warmup steps, decay steps after warmup

TORCH_CASES = {
    "StepLR": (S.step(0.1, step_size=30, gamma=0.5),
               lambda L, o: L.StepLR(o, step_size=30, gamma=0.5), N),
    "MultiStepLR": (S.multistep(0.1, milestones=[100, 250, 600], gamma=0.3),
                    lambda L, o: L.MultiStepLR(o, milestones=[100, 250, 600], gamma=0.3), N),
    "ExponentialLR": (S.exponential(0.1, decay_rate=0.995),
                      lambda L, o: L.ExponentialLR(o, gamma=0.995), N),
    # T = 700 < 1,000 steps: also checks that both stay at 0 after T.
    "PolynomialLR-p2": (S.polynomial(0.1, decay_steps=700, power=2.0),
                        lambda L, o: L.PolynomialLR(o, total_iters=700, power=2.0), N),
    "PolynomialLR-p0.9": (S.polynomial(0.1, decay_steps=700, power=0.9),
                          lambda L, o: L.PolynomialLR(o, total_iters=700, power=0.9), N),
    "CosineAnnealingLR": (S.cosine(0.1, decay_steps=1000, floor=0.001),
                          lambda L, o: L.CosineAnnealingLR(o, T_max=1000, eta_min=0.001), N),
    "CosineAnnealingLR-floor0": (S.cosine(0.1, decay_steps=1000),
                                 lambda L, o: L.CosineAnnealingLR(o, T_max=1000), N),
    # Past T_max PyTorch climbs back up; we stay at the floor, so compare t <= T only.
    "CosineAnnealingLR-to-T": (S.cosine(0.1, decay_steps=400, floor=0.001),
                               lambda L, o: L.CosineAnnealingLR(o, T_max=400, eta_min=0.001), 401),
    "WarmRestarts-1": (S.cosine_restarts(0.1, 70, t_mul=1.0, floor=0.001),
                       lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=70, T_mult=1, eta_min=0.001), N),
    "WarmRestarts-2": (S.cosine_restarts(0.1, 70, t_mul=2.0, floor=0.001),
                       lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=70, T_mult=2, eta_min=0.001), N),
    "WarmRestarts-3": (S.cosine_restarts(0.1, 70, t_mul=3.0),
                       lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=70, T_mult=3), N),
    "SequentialLR-LinearLR": (
        S.warmup(S.cosine(0.1, D, floor=0.001), W, start_value=0.01),
        lambda L, o: L.SequentialLR(o, [
            L.LinearLR(o, start_factor=0.01 / 0.1, end_factor=1.0, total_iters=W),
            L.CosineAnnealingLR(o, T_max=D, eta_min=0.001)], milestones=[W]),
        W + D + 1),
    # LinearLR rejects start_factor=0; LambdaLR gives the warmup from 0.
    "SequentialLR-LambdaLR": (
        S.warmup(S.cosine(0.1, D), W),
        lambda L, o: L.SequentialLR(o, [
            L.LambdaLR(o, lambda t: t / W),
            L.CosineAnnealingLR(o, T_max=D)], milestones=[W]),
        W + D + 1),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_matches_torch(case):
    sched, make, upto = TORCH_CASES[case]
    _assert_matches(sched, _torch_lrs(make, sched.base), TORCH_TOL, upto)


def test_torch_cosine_keeps_going_past_t_max_but_ours_stays_at_floor():
    lrs = _torch_lrs(lambda L, o: L.CosineAnnealingLR(o, T_max=400, eta_min=0.001), 0.1, 801)
    sched = S.cosine(0.1, 400, floor=0.001)
    assert lrs[400] == pytest.approx(0.001, rel=1e-12)
    assert lrs[800] == pytest.approx(0.1, rel=1e-12)  # PyTorch: back at α after 2T
    assert sched(400) == sched(800) == 0.001


def test_torch_linear_lr_cannot_start_at_zero():
    # Documented in warmup(): start_value=0 has no LinearLR counterpart.
    torch = pytest.importorskip("torch")

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError):
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.0, total_iters=W)


# --------------------------------------------------------------------------
# Keras

KERAS_CASES = {
    "ExponentialDecay-staircase": (S.step(0.1, step_size=30, gamma=0.5),
                                   lambda K: K.ExponentialDecay(0.1, decay_steps=30, decay_rate=0.5, staircase=True)),
    "ExponentialDecay": (S.exponential(0.1, decay_rate=0.5, decay_steps=200),
                         lambda K: K.ExponentialDecay(0.1, decay_steps=200, decay_rate=0.5)),
    "ExponentialDecay-staircase-exp": (S.exponential(0.1, decay_rate=0.5, decay_steps=200, staircase=True),
                                       lambda K: K.ExponentialDecay(0.1, 200, 0.5, staircase=True)),
    "InverseTimeDecay": (S.inverse_time(0.1, decay_rate=0.5, decay_steps=100),
                         lambda K: K.InverseTimeDecay(0.1, decay_steps=100, decay_rate=0.5)),
    "InverseTimeDecay-staircase": (S.inverse_time(0.1, 0.5, 100, staircase=True),
                                   lambda K: K.InverseTimeDecay(0.1, 100, 0.5, staircase=True)),
    "PolynomialDecay": (S.polynomial(0.1, decay_steps=700, end_value=0.01, power=2.0),
                        lambda K: K.PolynomialDecay(0.1, decay_steps=700, end_learning_rate=0.01, power=2.0)),
    "PolynomialDecay-cycle": (S.polynomial(0.1, 300, end_value=0.01, power=2.0, cycle=True),
                              lambda K: K.PolynomialDecay(0.1, 300, end_learning_rate=0.01, power=2.0, cycle=True)),
    "CosineDecay": (S.cosine(0.1, decay_steps=700, floor=0.001),
                    lambda K: K.CosineDecay(0.1, decay_steps=700, alpha=0.001 / 0.1)),
    "CosineDecayRestarts-1": (S.cosine_restarts(0.1, 70, t_mul=1.0, m_mul=0.8, floor=0.001),
                              lambda K: K.CosineDecayRestarts(0.1, 70, t_mul=1.0, m_mul=0.8, alpha=0.01)),
    "CosineDecayRestarts-2": (S.cosine_restarts(0.1, 70, t_mul=2.0, m_mul=0.7, floor=0.001),
                              lambda K: K.CosineDecayRestarts(0.1, 70, t_mul=2.0, m_mul=0.7, alpha=0.01)),
    "CosineDecayRestarts-1.5": (S.cosine_restarts(0.1, 70, t_mul=1.5, m_mul=0.9, floor=0.001),
                                lambda K: K.CosineDecayRestarts(0.1, 70, t_mul=1.5, m_mul=0.9, alpha=0.01)),
    "CosineDecayRestarts-3": (S.cosine_restarts(0.1, 70, t_mul=3.0),
                              lambda K: K.CosineDecayRestarts(0.1, 70, t_mul=3.0, m_mul=1.0)),
    "PiecewiseConstantDecay": (S.piecewise([100, 250, 600], [0.1, 0.05, 0.02, 0.004], switch="after"),
                               lambda K: K.PiecewiseConstantDecay([100, 250, 600], [0.1, 0.05, 0.02, 0.004])),
}


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_matches_keras(case):
    sched, make = KERAS_CASES[case]
    _assert_matches(sched, _keras_lrs(make), KERAS_TOL)


def test_matches_keras_cosine_decay_with_warmup():
    # Keras's decay_steps excludes the warmup, like warmup() here.
    sched = S.warmup(S.cosine(0.1, D, floor=0.001), W, start_value=0.01)
    theirs = _keras_lrs(
        lambda K: K.CosineDecay(0.01, decay_steps=D, alpha=0.01, warmup_target=0.1, warmup_steps=W),
        one_by_one=True)
    _assert_matches(sched, theirs, KERAS_TOL)


def test_piecewise_keras_equals_shifted_boundaries():
    keras_style = S.piecewise([100, 250, 600], [0.1, 0.05, 0.02, 0.004], switch="after")
    shifted = S.piecewise([101, 251, 601], [0.1, 0.05, 0.02, 0.004])
    assert _ours(keras_style).tolist() == _ours(shifted).tolist()


# --------------------------------------------------------------------------
# optax


def _sgdr_kwargs(peaks, lengths, end_value):
    return [dict(init_value=p, peak_value=p, warmup_steps=0, decay_steps=n, end_value=end_value)
            for p, n in zip(peaks, lengths)]


OPTAX_CASES = {
    "exponential_decay-staircase": (S.step(0.1, 30, 0.5),
                                    lambda ox: ox.exponential_decay(0.1, transition_steps=30, decay_rate=0.5, staircase=True)),
    "exponential_decay-begin-end": (S.exponential(0.1, 0.5, 200, end_value=0.01, transition_begin=50),
                                    lambda ox: ox.exponential_decay(0.1, 200, 0.5, transition_begin=50, end_value=0.01)),
    "exponential_decay-staircase-begin": (S.exponential(0.1, 0.5, 200, staircase=True, transition_begin=50),
                                          lambda ox: ox.exponential_decay(0.1, 200, 0.5, transition_begin=50, staircase=True)),
    "exponential_decay-growth-capped": (S.exponential(0.1, 2.0, 300, end_value=0.5),
                                        lambda ox: ox.exponential_decay(0.1, 300, 2.0, end_value=0.5)),
    "polynomial_schedule": (S.polynomial(0.1, 700, end_value=0.01, power=2.0),
                            lambda ox: ox.polynomial_schedule(0.1, end_value=0.01, power=2.0, transition_steps=700)),
    "linear_schedule": (S.polynomial(0.1, 700, end_value=0.01),
                        lambda ox: ox.linear_schedule(0.1, end_value=0.01, transition_steps=700)),
    "cosine_decay_schedule": (S.cosine(0.1, 700, floor=0.001),
                              lambda ox: ox.cosine_decay_schedule(0.1, decay_steps=700, alpha=0.001 / 0.1)),
    # optax's decay_steps includes the warmup: W + D.
    "warmup_cosine_decay_schedule": (
        S.warmup(S.cosine(0.1, D, floor=0.001), W, start_value=0.01),
        lambda ox: ox.warmup_cosine_decay_schedule(0.01, peak_value=0.1, warmup_steps=W,
                                                   decay_steps=W + D, end_value=0.001)),
    "warmup_exponential_decay_schedule": (
        S.warmup(S.exponential(0.1, 0.5, 200, end_value=0.01), W),
        lambda ox: ox.warmup_exponential_decay_schedule(0.0, 0.1, W, transition_steps=200,
                                                        decay_rate=0.5, end_value=0.01)),
    "warmup_constant_schedule": (S.warmup(0.1, W),
                                 lambda ox: ox.warmup_constant_schedule(0.0, 0.1, W)),
    "piecewise_constant_schedule": (
        S.piecewise([100, 250, 600], [0.1, 0.05, 0.02, 0.004]),
        lambda ox: ox.piecewise_constant_schedule(0.1, {100: 0.5, 250: 0.4, 600: 0.2})),
    "join_schedules": (
        S.join([S.polynomial(0.02, 50, end_value=0.1), S.cosine(0.1, 300), S.exponential(0.05, 0.9, 20)],
               [50, 400]),
        lambda ox: ox.join_schedules([ox.linear_schedule(0.02, 0.1, 50), ox.cosine_decay_schedule(0.1, 300),
                                      ox.exponential_decay(0.05, 20, 0.9)], [50, 400])),
    # Cycles of 70, 140, 280, 560 steps start at 0, 70, 210, 490.
    "sgdr_schedule-m_mul": (
        S.cosine_restarts(0.1, 70, t_mul=2.0, m_mul=0.8),
        lambda ox: ox.sgdr_schedule(_sgdr_kwargs([0.1 * 0.8 ** i for i in range(4)], [70, 140, 280, 560], 0.0))),
    "sgdr_schedule-floor": (
        S.cosine_restarts(0.1, 70, t_mul=2.0, floor=0.001),
        lambda ox: ox.sgdr_schedule(_sgdr_kwargs([0.1] * 4, [70, 140, 280, 560], 0.001))),
}


@pytest.mark.parametrize("case", list(OPTAX_CASES))
def test_matches_optax(case):
    sched, make = OPTAX_CASES[case]
    _assert_matches(sched, _optax_lrs(make), OPTAX_TOL)


# --------------------------------------------------------------------------
# Closed forms, by hand


@pytest.mark.parametrize("sched, t, expected", [
    (S.constant(0.3), 10**9, 0.3),
    (S.step(1.0, 10, 0.5), 9, 1.0),
    (S.step(1.0, 10, 0.5), 10, 0.5),
    (S.step(1.0, 10, 0.5), 25, 0.25),
    (S.multistep(1.0, [3, 7], 0.1), 2, 1.0),
    (S.multistep(1.0, [3, 7], 0.1), 3, 0.1),
    (S.multistep(1.0, [3, 7], 0.1), 7, 0.01),
    (S.exponential(2.0, 0.5, 10), 5, math.sqrt(2.0)),
    (S.exponential(2.0, 0.5, 10), 10, 1.0),
    (S.exponential(2.0, 0.5, 10, staircase=True), 19, 1.0),
    (S.exponential(2.0, 0.5, 10, transition_begin=5), 5, 2.0),
    (S.exponential(2.0, 0.5, 10, transition_begin=5), 15, 1.0),
    (S.exponential(2.0, 0.5, 10, end_value=0.5), 100, 0.5),
    (S.exponential(1.0, 2.0, 1, end_value=4.0), 10**6, 4.0),  # overflow capped by end_value
    (S.inverse_time(1.0, 1.0, 10), 10, 0.5),
    (S.inverse_time(1.0, 1.0, 10), 30, 0.25),
    (S.inverse_time(1.0, 1.0, 10, staircase=True), 19, 0.5),
    (S.polynomial(1.0, 10, power=2.0), 5, 0.25),
    (S.polynomial(1.0, 10, power=2.0), 10, 0.0),
    (S.polynomial(1.0, 10, power=2.0), 20, 0.0),
    (S.polynomial(1.0, 10, end_value=0.1), 5, 0.55),
    (S.polynomial(1.0, 10, cycle=True), 0, 1.0),
    (S.polynomial(1.0, 10, cycle=True), 10, 0.0),
    (S.polynomial(1.0, 10, cycle=True), 11, 1.0 - 11 / 20),
    (S.cosine(1.0, 10, floor=0.2), 0, 1.0),
    (S.cosine(1.0, 10, floor=0.2), 5, 0.6),
    (S.cosine(1.0, 10, floor=0.2), 10, 0.2),
    # Documented: past decay_steps the value stays at the floor (Keras, optax), not PyTorch's climb.
    (S.cosine(1.0, 10, floor=0.2), 11, 0.2),
    (S.cosine(1.0, 10, floor=0.2), 20, 0.2),
    (S.cosine(1.0, 10, floor=0.2), 10**9, 0.2),
    (S.cosine_restarts(1.0, 10, t_mul=1.0), 15, 0.5),
    (S.cosine_restarts(1.0, 10, t_mul=1.0), 20, 1.0),
    (S.cosine_restarts(1.0, 10, t_mul=2.0, m_mul=0.5), 10, 0.5),
    (S.cosine_restarts(1.0, 10, t_mul=2.0, m_mul=0.5), 20, 0.25),
    (S.cosine_restarts(1.0, 10, t_mul=2.0, m_mul=0.5), 30, 0.25),
    (S.cosine_restarts(1.0, 10, t_mul=2.0, m_mul=0.5, floor=0.2), 20, 0.2 + 0.8 * 0.5 * 0.5),
    (S.cosine_restarts(1.0, 10, t_mul=1.1), 21, 1.0),  # restart at 10 + 11; Keras gives 0 here
    (S.warmup(S.cosine(1.0, 10), 4, start_value=0.2), 0, 0.2),
    (S.warmup(S.cosine(1.0, 10), 4, start_value=0.2), 2, 0.6),
    (S.warmup(S.cosine(1.0, 10), 4, start_value=0.2), 4, 1.0),
    (S.warmup(S.cosine(1.0, 10), 4, start_value=0.2), 9, 0.5),
    (S.warmup(S.cosine(1.0, 10), 4, start_value=0.2), 14, 0.0),
    (S.warmup(0.3, 3), 1, 0.1),
    (S.warmup(0.3, 3), 3, 0.3),
    (S.warmup(S.cosine(1.0, 10), 0), 5, 0.5),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25]), 2, 1.0),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25]), 3, 0.5),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25]), 7, 0.25),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25], switch="after"), 3, 1.0),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25], switch="after"), 4, 0.5),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25], switch="after"), 7, 0.5),
    (S.piecewise([3, 7], [1.0, 0.5, 0.25], switch="after"), 8, 0.25),
    (S.join([S.constant(1.0), S.cosine(1.0, 10), 0.5], [5, 15]), 4, 1.0),
    (S.join([S.constant(1.0), S.cosine(1.0, 10), 0.5], [5, 15]), 5, 1.0),
    (S.join([S.constant(1.0), S.cosine(1.0, 10), 0.5], [5, 15]), 10, 0.5),
    (S.join([S.constant(1.0), S.cosine(1.0, 10), 0.5], [5, 15]), 15, 0.5),
])
def test_closed_form(sched, t, expected):
    value = sched(t)
    assert type(value) is float
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("sched, base", [
    (S.constant(0.3), 0.3),
    (S.step(0.1, 10, 0.5), 0.1),
    (S.cosine(0.2, 10, floor=0.01), 0.2),
    (S.warmup(S.cosine(0.2, 10), 5, start_value=0.01), 0.2),  # the peak, not start_value
    (S.warmup(0.4, 5), 0.4),
    (S.piecewise([5], [0.3, 0.1]), 0.3),
    (S.join([S.cosine(0.2, 10), S.constant(0.9)], [10]), 0.2),
])
def test_base_is_the_peak(sched, base):
    assert sched.base == base
    assert type(sched.base) is float


def test_int_arguments_give_floats():
    assert type(S.constant(1)(0)) is float
    assert type(S.step(1, 2, 1)(5)) is float


def test_step_accepts_integer_likes():
    sched = S.cosine(1.0, 10)
    assert sched(np.int64(5)) == sched(5) == 0.5


# --------------------------------------------------------------------------
# Validation: DecayError naming the argument and the value


@pytest.mark.parametrize("build, fragments", [
    (lambda: S.cosine(0.1, 0), ["`decay_steps` must be a positive integer", "Received: decay_steps=0"]),
    (lambda: S.cosine(0.1, -5), ["`decay_steps`", "decay_steps=-5"]),
    (lambda: S.cosine(0.1, 10.5), ["`decay_steps` must be a positive integer", "decay_steps=10.5"]),
    (lambda: S.exponential(0.1, 0.9, decay_steps=0), ["`decay_steps`", "decay_steps=0"]),
    (lambda: S.polynomial(0.1, 0), ["`decay_steps`", "decay_steps=0"]),
    (lambda: S.inverse_time(0.1, 0.5, 0), ["`decay_steps`", "decay_steps=0"]),
    (lambda: S.step(0.1, 0, 0.5), ["`step_size` must be a positive integer", "step_size=0"]),
    (lambda: S.cosine_restarts(0.1, 0), ["`first_decay_steps`", "first_decay_steps=0"]),
    (lambda: S.cosine(float("nan"), 10), ["`init_value` must be finite", "init_value=nan"]),
    (lambda: S.cosine(float("inf"), 10), ["`init_value` must be finite", "init_value=inf"]),
    (lambda: S.cosine(-0.1, 10), ["`init_value` must be >= 0", "init_value=-0.1"]),
    (lambda: S.cosine(0.1, 10, floor=float("nan")), ["`floor` must be finite"]),
    (lambda: S.constant("0.1"), ["`value` must be a real number", "value='0.1'"]),
    (lambda: S.step(0.1, 10, float("inf")), ["`gamma` must be finite", "gamma=inf"]),
    (lambda: S.exponential(0.1, 0.0), ["`decay_rate` must be > 0", "decay_rate=0.0"]),
    (lambda: S.exponential(0.1, 0.9, transition_begin=-1),
     ["`transition_begin` must be a non-negative integer", "transition_begin=-1"]),
    (lambda: S.exponential(0.1, 0.9, staircase=1), ["`staircase` must be True or False"]),
    (lambda: S.polynomial(0.1, 10, power=0.0), ["`power` must be > 0", "power=0.0"]),
    (lambda: S.cosine_restarts(0.1, 10, t_mul=0.5), ["`t_mul` must be >= 1", "t_mul=0.5"]),
    (lambda: S.warmup(S.cosine(0.1, 10), -1), ["`warmup_steps` must be a non-negative integer", "warmup_steps=-1"]),
    (lambda: S.warmup("cosine", 10), ["`schedule_or_value` must be a schedule", "schedule_or_value='cosine'"]),
    (lambda: S.multistep(0.1, [10, 5], 0.1), ["`milestones` must be strictly increasing", "[10, 5]"]),
    (lambda: S.multistep(0.1, [-1], 0.1), ["`milestones[0]` must be a non-negative integer", "milestones[0]=-1"]),
    (lambda: S.piecewise([5, 3], [1.0, 0.5, 0.1]), ["`boundaries` must be strictly increasing", "[5, 3]"]),
    (lambda: S.piecewise([5, 5], [1.0, 0.5, 0.1]), ["`boundaries` must be strictly increasing"]),
    (lambda: S.piecewise([3], [1.0]), ["one more element than `boundaries`", "len(values)=1, len(boundaries)=1"]),
    (lambda: S.piecewise([3], [1.0, 0.5], switch="before"), ["`switch` must be 'at'", "switch='before'"]),
    (lambda: S.piecewise(3, [1.0, 0.5]), ["`boundaries` must be a list", "boundaries=3"]),
    (lambda: S.join([0.1, 0.2], []), ["one more element than `boundaries`", "len(schedules)=2, len(boundaries)=0"]),
    (lambda: S.join([0.1, 0.2, 0.3], [10, 5]), ["`boundaries` must be strictly increasing"]),
    (lambda: S.join([], []), ["`schedules` must hold at least one"]),
    (lambda: S.cosine(0.1, 10)(-1), ["`step` must be a non-negative integer", "step=-1"]),
    (lambda: S.cosine(0.1, 10)(1.5), ["`step` must be a non-negative integer", "step=1.5"]),
    (lambda: S.cosine(0.1, 10)(True), ["`step` must be a non-negative integer", "step=True"]),
    (lambda: S.from_config({"name": "nope"}), ["Unknown schedule name 'nope'", "Known names:", "cosine"]),
    (lambda: S.from_config({"init_value": 0.1}), ["'name' key"]),
    (lambda: S.from_config({"name": "cosine", "init_value": 0.1, "decay_steps": 10, "bogus": 1}),
     ["Accepted arguments: init_value, decay_steps, floor"]),
])
def test_bad_arguments_raise_decay_error(build, fragments):
    with pytest.raises(DecayError) as info:
        build()
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------
# Config and repr

ALL = [
    S.constant(0.3),
    S.step(0.1, 30, 0.5),
    S.multistep(0.1, [10, 20], 0.1),
    S.exponential(0.1, 0.9, 10, staircase=True, end_value=0.01, transition_begin=5),
    S.exponential(0.1, 0.9),
    S.inverse_time(0.1, 0.5, 10, staircase=True),
    S.polynomial(0.1, 100, end_value=0.01, power=2.0, cycle=True),
    S.cosine(0.1, 100, floor=0.001),
    S.cosine_restarts(0.1, 10, t_mul=1.5, m_mul=0.9, floor=0.001),
    S.warmup(S.cosine(0.1, 100), 10, start_value=0.01),
    S.warmup(0.2, 10),
    S.piecewise([10, 20], [0.1, 0.05, 0.01], switch="after"),
    S.join([S.warmup(S.constant(0.1), 5), S.cosine(0.1, 50), 0.01], [20, 70]),
]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: s.name)
def test_config_round_trip(sched):
    config = sched.get_config()
    assert json.loads(json.dumps(config)) == config  # plain data only
    rebuilt = S.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert [rebuilt(t) for t in range(0, 200, 7)] == [sched(t) for t in range(0, 200, 7)]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: s.name)
def test_repr_is_a_call_that_rebuilds_it(sched):
    assert repr(sched).startswith(sched.name + "(")
    assert eval(repr(sched), vars(S)).get_config() == sched.get_config()


def test_repr_example():
    assert repr(S.cosine(0.1, 100)) == "cosine(init_value=0.1, decay_steps=100, floor=0.0)"
    assert repr(S.warmup(S.cosine(0.1, 100), 10)) == (
        "warmup(schedule_or_value=cosine(init_value=0.1, decay_steps=100, floor=0.0), "
        "warmup_steps=10, start_value=0.0)")


# --------------------------------------------------------------------------
# Stays pure Python


SCHEDULES_DIR = REPO / "decay" / "schedules"
STDLIB_IMPORTS = {"__future__", "bisect", "inspect", "math", "numbers"}


def _imported_modules(source, package=("decay", "schedules")):
    """Absolute names of the modules a file of ``package`` imports.

    Relative imports are resolved against the package, so ``from ._checks import x``
    reads as ``decay.schedules._checks``, ``from . import _checks`` likewise, and
    ``from ..errors import x`` as ``decay.errors``; one that climbs above ``decay``
    is returned as written.
    """
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                imported.add(node.module)
            elif node.level > len(package):
                imported.add("." * node.level + (node.module or ""))
            else:
                parent = ".".join(package[:len(package) - node.level + 1])
                if node.module:
                    imported.add(f"{parent}.{node.module}")
                else:
                    imported.update(f"{parent}.{alias.name}" for alias in node.names)
    return imported


def _allowed_imports():
    own = {f"decay.schedules.{p.stem}" for p in SCHEDULES_DIR.glob("*.py") if p.stem != "__init__"}
    return STDLIB_IMPORTS | {"decay.errors", "decay.schedules"} | own


def test_imports_only_the_standard_library():
    files = sorted(SCHEDULES_DIR.glob("*.py"))
    assert files, f"no modules found under {SCHEDULES_DIR}"
    allowed = _allowed_imports()
    for path in files:
        imported = _imported_modules(path.read_text())
        assert imported <= allowed, (path.name, imported - allowed)


@pytest.mark.parametrize("source", [
    "import numpy",
    "from torch import nn",
    "from ..backends import numpy_backend",
    "from . import _nowhere",
    "from .._nowhere import x",
    "from ... import x",
])
def test_import_check_flags_other_modules(source):
    # The check above must be able to fail: each of these is a module outside the
    # standard library and the package.
    assert not _imported_modules(source) <= _allowed_imports()


def test_import_loads_no_framework():
    code = (
        "import sys; import decay.schedules; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax', 'optax') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
