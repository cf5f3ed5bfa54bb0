"""decay's rules against PyTorch's own optimizers, side by side, in float64.

Every expected value comes from ``torch.optim`` (with ``torch.optim.lr_scheduler``
driving the learning rate) or from a closed form written here; none from decay.

The problem: a 2-layer tanh MLP regressing a fixed random data set. Each side (torch's
optimizer, and decay on NumPy, PyTorch and TensorFlow tensors) holds its own copy of
the same initial weights, and each step's gradient is recomputed from that side's own
weights: torch autograd for torch and NumPy weights, ``tf.GradientTape`` for
TensorFlow weights. Every step's weights are compared, not only the last, with
``decay.tolerances.assert_close(..., "float64")`` (1e-12 norm-wise relative).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: these tests compare with torch.optim")

import mlp_problem
import decay  # noqa: E402
from decay.tolerances import assert_close, relative_error, rtol  # noqa: E402

STEPS = 100
KEYS = ("w1", "b1", "w2", "b2")
SGD_LR = 0.1
ADAM_LR = 0.01
WD = 1e-2


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The tensors here are tiny; with several intra-op threads on a busy 2-core machine
    # torch's thread pool spins and a 100-step run went from 0.15 s to 10 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------
# The regression problem.


def _data():
    return mlp_problem.data(20240611, 8)


def _torch_loss(p):
    x, y, _ = _data()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    pred = (torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]
    return torch.mean((pred - y) ** 2)


def _torch_grads(params):
    """Gradient of the loss at ``params`` (torch tensors or NumPy arrays), by autograd."""
    as_numpy = isinstance(params["w1"], np.ndarray)
    leaves = {
        k: (torch.from_numpy(np.array(v)) if as_numpy else v.detach().clone()).requires_grad_()
        for k, v in params.items()
    }
    grads = torch.autograd.grad(_torch_loss(leaves), [leaves[k] for k in KEYS])
    return {k: (g.numpy() if as_numpy else g) for k, g in zip(KEYS, grads)}


def _tf_grad_function():
    return mlp_problem.tf_grad_function(20240611, 8)


def _tf_grads(params):
    return dict(zip(KEYS, _tf_grad_function()(*[params[k] for k in KEYS])))


@functools.lru_cache(maxsize=None)
def _jax_grad_function():
    import jax
    import jax.numpy as jnp

    x, y, _ = _data()
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        pred = (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]
        return jnp.mean((pred - y) ** 2)

    return jax.jit(jax.grad(loss))


def _jax_grads(params):
    """Gradient of the same loss by jax.grad (the params are JAX arrays)."""
    return dict(_jax_grad_function()(dict(params)))


def _grad_fn(native):
    return {"tensorflow": _tf_grads, "jax": _jax_grads}.get(native.name, _torch_grads)


def _fresh_params(native):
    return {k: native.param(v, "float64") for k, v in _data()[2].items()}


def _vector(native, params):
    return np.concatenate([native.numpy(params[k]).ravel() for k in KEYS])


# ---------------------------------------------------------------------------------
# Learning-rate schedules: a torch scheduler and the same closed form as a lambda.
# PyTorch's schedulers update lr recursively (lr *= γ, cosine ratios); decay gets
# the closed form, so the comparison also checks that the two are the same function.

COSINE_FLOOR = 0.1  # η_min = 0.1·α


def _torch_scheduler(name, optimizer):
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name == "step":
        return sched.StepLR(optimizer, step_size=30, gamma=0.5)
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=0.98)
    if name == "cosine":
        base = optimizer.param_groups[0]["lr"]
        return sched.CosineAnnealingLR(optimizer, T_max=STEPS, eta_min=COSINE_FLOOR * base)
    raise ValueError(name)


def _closed_form(name, alpha):
    """lr_t, t the 0-based index of the update (PyTorch: after t scheduler.step())."""
    if name == "constant":
        return alpha
    if name == "step":
        return lambda t: alpha * 0.5 ** (t // 30)
    if name == "exponential":
        return lambda t: alpha * 0.98**t
    if name == "cosine":
        floor = COSINE_FLOOR * alpha
        return lambda t: floor + (alpha - floor) * (1.0 + math.cos(math.pi * t / STEPS)) / 2.0
    raise ValueError(name)


SCHEDULES = ("constant", "step", "exponential", "cosine")


def _lr_at(lr, t):
    return lr(t) if callable(lr) else lr


# ---------------------------------------------------------------------------------
# The torch reference: torch.optim + lr_scheduler, weights after every step.


def _torch_run(make_optimizer, schedule, loss_extra=None, before_step=None, steps=STEPS):
    """Weights (one flat vector per step) from a torch optimizer, and the lr it used."""
    _, _, init = _data()
    params = [torch.tensor(init[k]).requires_grad_() for k in KEYS]
    optimizer = make_optimizer(params)
    scheduler = _torch_scheduler(schedule, optimizer)
    trajectory, lrs = [], []
    for t in range(steps):
        optimizer.zero_grad()
        named = dict(zip(KEYS, params))
        loss = _torch_loss(named)
        if loss_extra is not None:
            loss = loss + loss_extra(named)
        loss.backward()
        if before_step is not None:
            before_step(optimizer, t)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return trajectory, lrs


def _decay_run(rule, native, steps=STEPS, fast_path=True):
    """decay's weights after every step. On torch tensors decay steps through torch's
    fused kernels unless ``fast_path=False`` selects its generic code."""
    rule.use_fast_path = fast_path
    params = _fresh_params(native)
    grad_fn = _grad_fn(native)
    state = rule.init(params)
    trajectory = []
    for _ in range(steps):
        params, state = rule.step(params, grad_fn(params), state)
        trajectory.append(_vector(native, params))
    return trajectory


def _paths(native):
    """The code paths decay has for this backend: the fused fast path, on torch also
    the generic one it must agree with."""
    return (True, False) if native.name == "torch" else (True,)


def _assert_trajectories(actual, expected, what):
    """Every step within the float64 tolerance; returns the largest error seen."""
    assert len(actual) == len(expected)
    worst = 0.0
    for t, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, "float64", what=f"{what}, step {t + 1}")
        worst = max(worst, relative_error(a, e))
    return worst


def _max_deviation(actual, expected):
    return max(relative_error(a, e) for a, e in zip(actual, expected))


# ---------------------------------------------------------------------------------
# The cases: every valid SGD combination, Adam (coupled) and AdamW, ± amsgrad.


def _sgd_cases():
    cases = []
    for momentum in (0.0, 0.9):
        for dampening in (0.0, 0.5):
            for nesterov in (False, True):
                if nesterov and (momentum == 0 or dampening != 0):
                    continue  # torch and decay both reject these
                for weight_decay in (0.0, WD):
                    cases.append(
                        ("sgd", dict(momentum=momentum, dampening=dampening, nesterov=nesterov,
                                     weight_decay=weight_decay))
                    )
    return cases


ADAM_CASES = [
    (kind, dict(weight_decay=WD, amsgrad=amsgrad)) for kind in ("adam", "adamw") for amsgrad in (False, True)
]
CASES = _sgd_cases() + ADAM_CASES


def _case_id(case):
    kind, kw = case
    return kind + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def test_every_valid_sgd_combination_is_covered():
    # momentum × dampening × nesterov × weight_decay minus the invalid Nesterov ones.
    assert len(_sgd_cases()) == 2 * 2 * 2 * 2 - 6


def _torch_optimizer(kind, kw):
    if kind == "sgd":
        return lambda ps: torch.optim.SGD(ps, lr=SGD_LR, **kw)
    if kind == "adam":
        return lambda ps: torch.optim.Adam(ps, lr=ADAM_LR, **kw)
    return lambda ps: torch.optim.AdamW(ps, lr=ADAM_LR, **kw)


def _decay_rule(kind, kw, lr):
    if kind == "sgd":
        return decay.sgd(lr=lr, **kw)
    if kind == "adam":
        return decay.adam(lr=lr, **kw)
    return decay.adamw(lr=lr, **kw)


@functools.lru_cache(maxsize=None)
def _reference(case_index, schedule):
    kind, kw = CASES[case_index]
    return _torch_run(_torch_optimizer(kind, kw), schedule)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("case_index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_rule_matches_torch_optim(case_index, schedule, native):
    """decay on NumPy, torch and TF tensors == torch.optim (+ lr_scheduler), every step."""
    kind, kw = CASES[case_index]
    expected, torch_lrs = _reference(case_index, schedule)
    lr = _closed_form(schedule, SGD_LR if kind == "sgd" else ADAM_LR)
    # The closed form is the lr torch's scheduler used (torch updates it recursively).
    np.testing.assert_allclose([_lr_at(lr, t) for t in range(STEPS)], torch_lrs, rtol=1e-13, atol=0)
    for fast_path in _paths(native):
        actual = _decay_run(_decay_rule(kind, kw, lr), native, fast_path=fast_path)
        what = f"{_case_id(CASES[case_index])}, {schedule}, {native.name}, fast_path={fast_path}"
        _assert_trajectories(actual, expected, what)


def test_tolerance_detects_a_dropped_weight_decay():
    # The float64 tolerance is far below the effect of weight decay itself: a rule that
    # ignored weight_decay would fail the parity tests above by orders of magnitude.
    momentum = dict(momentum=0.9, dampening=0.0, nesterov=False)
    with_wd, _ = _reference(CASES.index(("sgd", dict(momentum, weight_decay=WD))), "constant")
    without, _ = _reference(CASES.index(("sgd", dict(momentum, weight_decay=0.0))), "constant")
    assert relative_error(with_wd[-1], without[-1]) > 1e6 * rtol("float64")


# ---------------------------------------------------------------------------------
# Decoupled decay scaled by the schedule multiplier (AdamW paper) or by nothing
# (TF-Addons): closed forms, and torch AdamW with a converted coefficient.


def _decoupled_factor(scaled_by, lr, alpha, weight_decay, t):
    lam = _lr_at(weight_decay, t)
    if scaled_by == "lr":
        return 1.0 - _lr_at(lr, t) * lam  # PyTorch AdamW, Keras 3
    if scaled_by == "schedule_multiplier":
        return 1.0 - (_lr_at(lr, t) / alpha) * lam  # θ ← θ − η_t·λ·θ, η_t = lr_t/α
    return 1.0 - lam  # θ ← θ − λ_t·θ


ZERO_GRAD_RULES = {
    "sgd": lambda **kw: decay.sgd(**kw),
    "sgd-momentum": lambda **kw: decay.sgd(momentum=0.9, **kw),
    "sgd-nesterov": lambda **kw: decay.sgd(momentum=0.9, nesterov=True, **kw),
    "adam": lambda **kw: decay.adam(**kw),
    "adam-amsgrad-epsilon_hat": lambda **kw: decay.adam(amsgrad=True, epsilon_hat=True, eps=1e-7, **kw),
}


@pytest.mark.parametrize(
    "schedule, weight_decay_kind", [("constant", "constant"), ("step", "constant"), ("cosine", "scheduled")]
)
@pytest.mark.parametrize("scaled_by", ["lr", "schedule_multiplier", "none"])
@pytest.mark.parametrize("rule_name", sorted(ZERO_GRAD_RULES))
def test_decoupled_decay_with_zero_gradient_is_a_closed_form(
    rule_name, scaled_by, schedule, weight_decay_kind, native
):
    """With g = 0 momentum and Adam's moments stay 0, so only decay moves θ:
    θ_t = θ_0·Π_{s<t}(1 − s_s·λ_s), s_s = lr_s, lr_s/α or 1. At constant lr and λ
    that is the geometric θ_0·(1 − s·λ)^t."""
    alpha, lam = 0.2, 0.05
    lr = _closed_form(schedule, alpha)
    weight_decay = lam if weight_decay_kind == "constant" else (lambda t: lam * 0.99**t)
    theta0 = np.array([1.0, -2.0, 0.5, 3.0, -0.25])
    rule = ZERO_GRAD_RULES[rule_name](
        lr=lr, weight_decay=weight_decay, decoupled=True, decay_scaled_by=scaled_by
    )
    zero = native.grad(np.zeros_like(theta0), "float64")
    for fast_path in _paths(native):
        rule.use_fast_path = fast_path
        params = native.param(theta0, "float64")
        state = rule.init(params)
        factor = 1.0
        for t in range(STEPS):
            params, state = rule.step(params, zero, state)
            factor *= _decoupled_factor(scaled_by, lr, alpha, weight_decay, t)
            what = f"step {t + 1}, fast_path={fast_path}"
            assert_close(native.numpy(params), theta0 * factor, "float64", what=what)
        if schedule == "constant" and weight_decay_kind == "constant":
            per_step = {"lr": alpha * lam, "schedule_multiplier": lam, "none": lam}[scaled_by]
            geometric = theta0 * (1.0 - per_step) ** STEPS
            assert_close(native.numpy(params), geometric, "float64", what="geometric closed form")


def test_decay_scaling_none_ignores_the_learning_rate(native):
    """TF-Addons: θ ← θ − λ_t·θ whatever lr is; with g = 0, two lrs give one θ."""
    lam = 0.03
    theta0 = np.array([2.0, -1.0, 0.5])
    out = []
    for lr in (0.5, _closed_form("cosine", 0.01)):
        rule = decay.sgd(lr=lr, weight_decay=lam, decoupled=True, decay_scaled_by="none")
        params = native.param(theta0, "float64")
        state = rule.init(params)
        for _ in range(STEPS):
            params, state = rule.step(params, native.grad(np.zeros(3), "float64"), state)
        out.append(native.numpy(params))
    assert_close(out[0], theta0 * (1.0 - lam) ** STEPS, "float64")
    assert_close(out[1], theta0 * (1.0 - lam) ** STEPS, "float64")


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_adamw_schedule_multiplier_equals_torch_adamw_with_wd_over_alpha(schedule, amsgrad, native):
    """Paper scaling θ ← θ·(1 − (lr_t/α)·λ) is torch AdamW's θ·(1 − lr_t·λ'), λ' = λ/α."""
    lam = 0.5
    expected, _ = _torch_run(
        lambda ps: torch.optim.AdamW(ps, lr=ADAM_LR, weight_decay=lam / ADAM_LR, amsgrad=amsgrad), schedule
    )
    rule = decay.adamw(lr=_closed_form(schedule, ADAM_LR), weight_decay=lam, amsgrad=amsgrad,
                       decay_scaled_by="schedule_multiplier")
    for fast_path in _paths(native):
        actual = _decay_run(rule, native, fast_path=fast_path)
        _assert_trajectories(actual, expected, f"adamw paper scaling, {schedule}, fast_path={fast_path}")


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_adamw_unscaled_decay_equals_torch_adamw_with_wd_over_lr(schedule, native):
    """TF-Addons scaling θ ← θ·(1 − λ_t) is torch AdamW with its group's weight_decay set to
    λ_t/lr_t before each step (torch reads it afresh every step)."""
    lr = _closed_form(schedule, ADAM_LR)
    wd_t = lambda t: 5e-3 * 0.99**t  # noqa: E731

    def set_weight_decay(optimizer, t):
        for group in optimizer.param_groups:
            group["weight_decay"] = wd_t(t) / group["lr"]

    expected, _ = _torch_run(
        lambda ps: torch.optim.AdamW(ps, lr=ADAM_LR, weight_decay=0.0), schedule, before_step=set_weight_decay
    )
    rule = decay.adamw(lr=lr, weight_decay=wd_t, decay_scaled_by="none")
    for fast_path in _paths(native):
        actual = _decay_run(rule, native, fast_path=fast_path)
        _assert_trajectories(actual, expected, f"adamw unscaled decay, {schedule}, fast_path={fast_path}")


# ---------------------------------------------------------------------------------
# The exact conversions between conventions (the README's conventions table).


def _l2_penalty(lam):
    return lambda named: lam * sum(torch.sum(p**2) for p in named.values())


L2_RULES = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=SGD_LR), lambda **kw: decay.sgd(lr=SGD_LR, **kw)),
    "sgd-momentum": (
        lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9),
        lambda **kw: decay.sgd(lr=SGD_LR, momentum=0.9, **kw),
    ),
    "sgd-nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9, nesterov=True),
        lambda **kw: decay.sgd(lr=SGD_LR, momentum=0.9, nesterov=True, **kw),
    ),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=ADAM_LR), lambda **kw: decay.adam(lr=ADAM_LR, **kw)),
}


@pytest.mark.parametrize("rule_name", sorted(L2_RULES))
def test_l2_in_loss_equals_coupled_2lam_equals_regularizer(rule_name, native):
    """torch optimizer on loss + lam·Σθ² ≡ decay coupled weight_decay=2·lam ≡
    decay regularizer=L2(lam) (≡ torch's own weight_decay=2·lam)."""
    lam = 0.02
    make_torch, make_decay = L2_RULES[rule_name]
    in_loss, _ = _torch_run(make_torch, "constant", loss_extra=_l2_penalty(lam))

    def with_wd(ps):
        opt = make_torch(ps)
        for group in opt.param_groups:
            group["weight_decay"] = 2 * lam
        return opt

    torch_coupled, _ = _torch_run(with_wd, "constant")
    _assert_trajectories(torch_coupled, in_loss, "torch weight_decay=2·lam vs L2 in the loss")
    for what, rule in [
        ("weight_decay=2·lam", make_decay(weight_decay=2 * lam)),
        ("regularizer=L2(lam)", make_decay(regularizer=decay.L2(lam))),
    ]:
        for fast_path in _paths(native):
            actual = _decay_run(rule, native, fast_path=fast_path)
            _assert_trajectories(actual, in_loss, f"{rule_name} {what}, fast_path={fast_path}")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_plain_sgd_coupled_equals_decoupled(schedule, native):
    """No momentum: torch coupled λ ≡ decoupled lr-scaled λ ≡ TF-Addons wd_t = lr_t·λ ≡
    the paper's λ_paper = λ·α."""
    lam = 0.05
    expected, _ = _torch_run(lambda ps: torch.optim.SGD(ps, lr=SGD_LR, weight_decay=lam), schedule)
    lr = _closed_form(schedule, SGD_LR)
    rules = {
        "decoupled, lr-scaled": decay.sgd(lr=lr, weight_decay=lam, decoupled=True),
        "decoupled, unscaled, wd_t = lr_t·λ": decay.sgd(
            lr=lr, weight_decay=lambda t: _lr_at(lr, t) * lam, decoupled=True, decay_scaled_by="none"
        ),
        "decoupled, paper, λ·α": decay.sgd(
            lr=lr, weight_decay=lam * SGD_LR, decoupled=True, decay_scaled_by="schedule_multiplier"
        ),
    }
    for what, rule in rules.items():
        for fast_path in _paths(native):
            actual = _decay_run(rule, native, fast_path=fast_path)
            _assert_trajectories(actual, expected, f"{what}, {schedule}, fast_path={fast_path}")


class _NumpyNative:
    """The conftest ``native`` helper's NumPy half, for tests that need one backend."""

    name = "numpy"

    def param(self, array, dtype, variable=True):
        return np.array(array, dtype=dtype)

    grad = param

    def numpy(self, x):
        return np.asarray(x)


DIFFER_CASES = {
    "sgd-momentum": (
        lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9, weight_decay=WD),
        decay.sgd(lr=SGD_LR, momentum=0.9, weight_decay=WD, decoupled=True),
    ),
    "sgd-nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9, nesterov=True, weight_decay=WD),
        decay.sgd(lr=SGD_LR, momentum=0.9, nesterov=True, weight_decay=WD, decoupled=True),
    ),
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=ADAM_LR, weight_decay=0.1),
        decay.adamw(lr=ADAM_LR, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("case", sorted(DIFFER_CASES))
def test_with_momentum_coupled_and_decoupled_differ(case):
    """With momentum (or Adam's normalization) the same λ coupled and decoupled are
    different rules: torch's coupled run and decay's decoupled one part by > 1e-3."""
    make_torch, rule = DIFFER_CASES[case]
    coupled, _ = _torch_run(make_torch, "constant")
    decoupled = _decay_run(rule, _NumpyNative())
    assert _max_deviation(decoupled, coupled) > 1e-3
