"""decay's rules against Keras 3's own optimizers (TensorFlow backend), float64 weights.

Every expected value comes from a Keras optimizer driven by ``apply_gradients`` in a
custom ``tf.GradientTape`` loop, or from a closed form written here; none from decay.
Each side holds its own copy of the same initial weights of a 3-4-1 tanh MLP and
recomputes its gradient from them every step; every step's weights are compared.

Keras 3.15 on TensorFlow rounds some hyperparameters to float32 even for float64
weights (measured here, see ``test_keras_rounds_hyperparameters_through_float32``):

- ``learning_rate`` is a variable of dtype ``keras.config.floatx()``, float32 unless
  changed: Keras steps with fl32(lr) = lr·(1 + δ), |δ| ≤ 2⁻²⁴ ≈ 6e-8;
- ``weight_decay``, SGD's ``momentum``, ``L2(l2)``'s l2 and Adam's β1, β2 *in the
  bias corrections* go through ``ops.cast(python_float, "float64")``, which on
  TensorFlow makes a float32 tensor first: fl32(0.9) = 0.89999998 and
  fl32(0.999) = 0.99900001, whose 1 − fl32(0.999) is 1.3e-5 (relative) away from
  1 − 0.999, so Keras's Adam steps are ≈ 6.7e-6 relatively shorter than the formula
  with β2 = 0.999 in early steps;
- ε and the (1 − β) of the moment updates stay exact (Python floats combined with
  float64 tensors).

So each case is checked twice: decay given the hyperparameters Keras actually uses
(rounded; Adam's rounded bias corrections folded into an lr schedule) equals Keras to
the float64 tolerance, 1e-12, every step — the rounding is the whole difference; and
decay given the nominal hyperparameters stays within the deviation those roundings
imply (``_rounding_bounds``).
"""

from __future__ import annotations

import functools
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow", reason="tensorflow not installed: these tests compare with Keras's own optimizers")
keras = pytest.importorskip("keras", reason="keras not installed: these tests compare with Keras's own optimizers")
if keras.backend.backend() != "tensorflow":
    pytest.skip(
        f"these tests drive Keras on TensorFlow; KERAS_BACKEND is {keras.backend.backend()!r}",
        allow_module_level=True,
    )

import mlp_problem
import decay  # noqa: E402
from decay.masks import exclude_names  # noqa: E402
from decay.tolerances import assert_close, relative_error, rtol  # noqa: E402
from conftest import keras_floatx

STEPS = 100
KEYS = ("w1", "b1", "w2", "b2")  # the order of the Sequential's trainable_variables
SGD_LR = 0.1
ADAM_LR = 0.01
BETAS = (0.9, 0.999)
KERAS_EPS = 1e-7  # Keras's default epsilon ("ε-hat")


def _f32(x):
    """A Python float rounded to float32 and back, as Keras's casts do."""
    return float(np.float32(x))


def _rounding(x):
    """|fl32(x) − x| / |x|: the relative change of rounding x to float32 (≤ 2⁻²⁴)."""
    return abs(_f32(x) - x) / abs(x) if x else 0.0


def _floatx(name):
    return keras_floatx(name)


def test_keras_rounds_hyperparameters_through_float32():
    """The premise of the tolerances here (see the module docstring)."""
    assert keras.optimizers.SGD(SGD_LR).learning_rate.dtype == "float32"
    with _floatx("float64"):
        assert keras.optimizers.SGD(SGD_LR).learning_rate.dtype == "float64"
    # What SGD/Adam/_apply_weight_decay do with momentum, β and weight_decay:
    for value in (0.9, 0.999, 0.05):
        assert float(keras.ops.cast(value, "float64")) == _f32(value) != value
    x = keras.ops.convert_to_tensor(np.ones(1))
    assert float(keras.regularizers.L2(0.02)(x)) == _f32(0.02) != 0.02


# ---------------------------------------------------------------------------------
# The problem, as a Keras model and as plain tf.Variables for decay.


def _data():
    return mlp_problem.data(7, 4)


def _keras_model(kernel_regularizer=None):
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=kernel_regularizer, dtype="float64"),
            keras.layers.Dense(1, kernel_regularizer=kernel_regularizer, dtype="float64"),
        ]
    )
    model.set_weights([_data()[2][k] for k in KEYS])
    return model


def _vector(variables):
    return np.concatenate([np.asarray(v.numpy()).ravel() for v in variables])


def _keras_run(make_optimizer, kernel_regularizer=None, steps=STEPS):
    """Weights after every step of a Keras optimizer (its lr as Keras keeps it)."""
    x, y, _ = _data()
    model = _keras_model(kernel_regularizer)
    optimizer = make_optimizer()
    variables = model.trainable_variables
    trajectory = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x)[:, 0] - y) ** 2)
            if model.losses:
                loss = loss + tf.add_n(model.losses)  # the kernel regularizers' l2·Σθ²
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        trajectory.append(_vector(variables))
    return trajectory


def _tf_grad_function():
    return mlp_problem.tf_grad_function(7, 4)


def _decay_run(rule, steps=STEPS):
    params = {k: tf.Variable(v) for k, v in _data()[2].items()}
    state = rule.init(params)
    trajectory = []
    for _ in range(steps):
        grads = dict(zip(KEYS, _tf_grad_function()(*[params[k] for k in KEYS])))
        params, state = rule.step(params, grads, state)
        trajectory.append(_vector([params[k] for k in KEYS]))
    return trajectory


def _theta0():
    return np.concatenate([_data()[2][k].ravel() for k in KEYS])


# ---------------------------------------------------------------------------------
# Tolerances.


def _assert_float64_close(actual, expected, what):
    """Every step within the float64 tolerance (1e-12); returns the largest error."""
    worst = 0.0
    for t, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, "float64", what=f"{what}, step {t + 1}")
        worst = max(worst, relative_error(a, e))
    return worst


def _rounding_bounds(expected, move_error):
    """Per step, the norm-wise relative deviation Keras's float32 roundings explain.

    ``move_error(t)`` bounds the relative change the roundings make to the move Δ_t of
    step t (for the lr alone: 2⁻²⁴, lr rounded to float32 is a relative change of up
    to 6e-8 per step). To first order the deviation after t steps is at most
    Σ_{s≤t} move_error(s)·max|Δ_s|; relative to max|θ_t|, doubled for each deviation
    feeding back through later gradients, plus the float64 tolerance."""
    bounds, path, previous = [], 0.0, _theta0()
    for t, theta in enumerate(expected):
        path += move_error(t) * float(np.max(np.abs(theta - previous)))
        previous = theta
        bounds.append(rtol("float64") + 2.0 * path / float(np.max(np.abs(theta))))
    return bounds


def _assert_within_rounding(actual, expected, move_error, what):
    """Every step within ``_rounding_bounds``; returns the largest error."""
    worst = 0.0
    for t, (a, e, bound) in enumerate(zip(actual, expected, _rounding_bounds(expected, move_error))):
        error = relative_error(a, e)
        assert error <= bound, (
            f"{what}, step {t + 1}: relative error {error:.3e} exceeds {bound:.3e}, the deviation "
            "Keras's float32 rounding of its hyperparameters explains"
        )
        worst = max(worst, error)
    return worst


def _sgd_move_error(lam, momentum, nesterov):
    """SGD: lr and λ (weight_decay or l2) scale the move; a rounded μ changes μ^j, the
    weight of the gradient j steps back, by ≤ j·ρ(μ) relative, ≤ ρ(μ)·μ/(1−μ) on
    average over the buffer (one ρ(μ) more for Nesterov's extra μ·b)."""
    error = _rounding(SGD_LR) + _rounding(lam)
    if momentum:
        error += _rounding(momentum) * (momentum / (1.0 - momentum) + (1.0 if nesterov else 0.0))
    return lambda t: error


def _keras_adam_lr(lr):
    """Keras's Adam as decay's ε-hat Adam with an lr schedule: Keras steps with
    fl32(lr)·√(1 − fl32(β2)^k)/(1 − fl32(β1)^k), decay with lr_t·√(1 − β2^k)/(1 − β1^k);
    equal when lr_t is this (k = t + 1). ``lr`` is the float Keras's lr variable holds."""
    beta1, beta2 = BETAS
    b1, b2 = _f32(beta1), _f32(beta2)

    def schedule(t):
        k = t + 1
        return lr * math.sqrt(1 - b2**k) / (1 - b1**k) * (1 - beta1**k) / math.sqrt(1 - beta2**k)

    return schedule


def _adam_move_error(lam):
    """Adam: the step size is off by |keras lr_t / lr − 1| (lr and β rounded); the
    decoupled decay by ρ(lr) + ρ(λ)."""
    keras_lr = _keras_adam_lr(_f32(ADAM_LR))
    return lambda t: abs(keras_lr(t) / ADAM_LR - 1.0) + _rounding(ADAM_LR) + _rounding(lam)


# ---------------------------------------------------------------------------------
# SGD: decoupled weight_decay, and an L2 kernel regularizer in the loss.

SGD_MOMENTA = {
    "plain": dict(momentum=0.0, nesterov=False),
    "momentum": dict(momentum=0.9, nesterov=False),
    "nesterov": dict(momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("variant", sorted(SGD_MOMENTA))
def test_sgd_decoupled_equals_keras_sgd_weight_decay(variant):
    """Keras 3: θ ← θ − θ·λ·lr, then v ← μv − lr·g; θ ← θ + v (equal to PyTorch's
    momentum at constant lr) == decay.sgd(decoupled=True, weight_decay=λ)."""
    lam = 0.05
    kw = SGD_MOMENTA[variant]
    expected = _keras_run(lambda: keras.optimizers.SGD(SGD_LR, weight_decay=lam, **kw))
    what = f"SGD {variant}, weight_decay={lam}"
    as_keras = decay.sgd(
        lr=_f32(SGD_LR), weight_decay=_f32(lam), decoupled=True,
        momentum=_f32(kw["momentum"]), nesterov=kw["nesterov"],
    )
    _assert_float64_close(_decay_run(as_keras), expected, f"{what}, Keras's float32-rounded values")
    nominal = decay.sgd(lr=SGD_LR, weight_decay=lam, decoupled=True, **kw)
    _assert_within_rounding(_decay_run(nominal), expected, _sgd_move_error(lam, **kw), what)


@pytest.mark.parametrize("variant", sorted(SGD_MOMENTA))
def test_sgd_equals_keras_sgd_with_l2_kernel_regularizer(variant):
    """Keras's L2(l2) adds l2·Σθ² (no ½) for each kernel, biases untouched ==
    decay regularizer=L2(l2) == coupled weight_decay=2·l2, both masked off the biases.
    (Keras's l2 is rounded to float32 like the other hyperparameters.)"""
    l2 = 0.02
    kw = SGD_MOMENTA[variant]
    expected = _keras_run(lambda: keras.optimizers.SGD(SGD_LR, **kw), keras.regularizers.L2(l2))
    kernels_only = exclude_names("b")  # the biases are "b1" and "b2"
    penalties = {
        "regularizer=L2(l2)": lambda l2: dict(regularizer=decay.L2(l2)),
        "weight_decay=2·l2": lambda l2: dict(weight_decay=2 * l2),
    }
    for what, penalty in penalties.items():
        as_keras = decay.sgd(
            lr=_f32(SGD_LR), momentum=_f32(kw["momentum"]), nesterov=kw["nesterov"],
            mask=kernels_only, **penalty(_f32(l2)),
        )
        _assert_float64_close(_decay_run(as_keras), expected, f"SGD {variant}, {what}, Keras's values")
        nominal = decay.sgd(lr=SGD_LR, mask=kernels_only, **kw, **penalty(l2))
        _assert_within_rounding(
            _decay_run(nominal), expected, _sgd_move_error(l2, **kw), f"SGD {variant}, {what}"
        )


def test_with_floatx_float64_only_the_learning_rate_is_exact():
    """floatx float64 when the optimizer is made gives Keras a float64 lr; momentum and
    weight_decay are still rounded by its casts."""
    lam = 0.05
    with _floatx("float64"):
        expected = _keras_run(lambda: keras.optimizers.SGD(SGD_LR, momentum=0.9, weight_decay=lam))
    rule = decay.sgd(lr=SGD_LR, momentum=_f32(0.9), weight_decay=_f32(lam), decoupled=True)
    _assert_float64_close(_decay_run(rule), expected, "SGD momentum, float64 lr")


# ---------------------------------------------------------------------------------
# Adam and AdamW: Keras puts ε outside the bias correction ("ε-hat").


@functools.lru_cache(maxsize=None)
def _keras_adam(amsgrad, weight_decay):
    if weight_decay:
        make = lambda: keras.optimizers.AdamW(  # noqa: E731
            ADAM_LR, weight_decay=weight_decay, epsilon=KERAS_EPS, amsgrad=amsgrad
        )
    else:
        make = lambda: keras.optimizers.Adam(ADAM_LR, epsilon=KERAS_EPS, amsgrad=amsgrad)  # noqa: E731
    return _keras_run(make)


def _adam_as_keras(weight_decay, amsgrad, epsilon_hat=True):
    """decay's Adam with the numbers Keras uses: its step size as an lr schedule, its
    decay θ·(1 − fl32(lr)·fl32(λ)) as an unscaled decoupled decay."""
    return decay.adam(
        lr=_keras_adam_lr(_f32(ADAM_LR)),
        weight_decay=_f32(ADAM_LR) * _f32(weight_decay),
        decoupled=True,
        decay_scaled_by="none",
        eps=KERAS_EPS,
        epsilon_hat=epsilon_hat,
        amsgrad=amsgrad,
    )


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_epsilon_hat_equals_keras_adamw(amsgrad):
    lam = 0.05
    expected = _keras_adam(amsgrad, lam)
    what = f"AdamW amsgrad={amsgrad}"
    _assert_float64_close(_decay_run(_adam_as_keras(lam, amsgrad)), expected, f"{what}, Keras's values")
    nominal = decay.adamw(lr=ADAM_LR, weight_decay=lam, eps=KERAS_EPS, epsilon_hat=True, amsgrad=amsgrad)
    _assert_within_rounding(_decay_run(nominal), expected, _adam_move_error(lam), what)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_epsilon_hat_equals_keras_adam(amsgrad):
    expected = _keras_adam(amsgrad, 0.0)
    what = f"Adam amsgrad={amsgrad}"
    _assert_float64_close(_decay_run(_adam_as_keras(0.0, amsgrad)), expected, f"{what}, Keras's values")
    nominal = decay.adam(lr=ADAM_LR, eps=KERAS_EPS, epsilon_hat=True, amsgrad=amsgrad)
    _assert_within_rounding(_decay_run(nominal), expected, _adam_move_error(0.0), what)


def _first_gradient():
    params = {k: tf.Variable(v) for k, v in _data()[2].items()}
    return np.concatenate([np.asarray(g).ravel() for g in _tf_grad_function()(*[params[k] for k in KEYS])])


def test_adam_without_epsilon_hat_differs_from_keras_by_the_closed_form_after_one_step():
    """Step 1 (k = 1) from the same θ0 and g. PyTorch's placement moves θ by
    lr·m̂/(√v̂ + ε); Keras's by lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε̂), with its lr and the β
    of its bias corrections rounded to float32. The measured Keras − decay difference
    must be the difference of these two formulas, evaluated here in NumPy."""
    beta1, beta2 = BETAS
    theta0, g = _theta0(), _first_gradient()
    m = (1 - beta1) * g  # both sides' first moments (Keras: exact 1 − β)
    v = (1 - beta2) * g**2
    torch_form = theta0 - ADAM_LR * (m / (1 - beta1)) / (np.sqrt(v / (1 - beta2)) + KERAS_EPS)
    keras_alpha = _f32(ADAM_LR) * math.sqrt(1 - _f32(beta2)) / (1 - _f32(beta1))
    keras_form = theta0 - keras_alpha * m / (np.sqrt(v) + KERAS_EPS)

    keras_theta1 = _keras_adam(False, 0.0)[0]
    decay_theta1 = _decay_run(decay.adam(lr=ADAM_LR, eps=KERAS_EPS), steps=1)[0]
    assert_close(keras_theta1, keras_form, "float64", what="Keras step 1 vs its formula")
    assert_close(decay_theta1, torch_form, "float64", what="decay step 1 vs PyTorch's formula")

    # Each θ1 carries float64 round-off of ~1e-16·|θ|; the predicted difference is far
    # above that, and the measured one equals it to that round-off.
    atol = rtol("float64") * float(np.max(np.abs(theta0)))
    predicted = keras_form - torch_form
    assert np.max(np.abs(predicted)) > 1e4 * atol
    np.testing.assert_allclose(keras_theta1 - decay_theta1, predicted, rtol=0, atol=atol)

    # The ε placement alone: decay given Keras's step size, without ε-hat.
    same_lr = _decay_run(_adam_as_keras(0.0, False, epsilon_hat=False), steps=1)[0]
    k_lr = _keras_adam_lr(_f32(ADAM_LR))(0)
    placement_only = keras_form - (theta0 - k_lr * (m / (1 - beta1)) / (np.sqrt(v / (1 - beta2)) + KERAS_EPS))
    assert np.max(np.abs(placement_only)) > 1e4 * atol
    np.testing.assert_allclose(keras_theta1 - same_lr, placement_only, rtol=0, atol=atol)


def test_adam_without_epsilon_hat_differs_from_keras_over_100_steps():
    """With Keras's rounded values given to decay, only the placement of ε differs: a
    real difference, far above the float64 tolerance at every step, but a small one."""
    expected = _keras_adam(False, 0.0)
    actual = _decay_run(_adam_as_keras(0.0, False, epsilon_hat=False))
    errors = [relative_error(a, e) for a, e in zip(actual, expected)]
    assert min(errors) > 1e3 * rtol("float64")
    assert max(errors) < 1e-4


# ---------------------------------------------------------------------------------
# Masks: Keras's exclude_from_weight_decay(var_names=...) and decay.masks.exclude_names.

MASK_INIT = {
    "dense_kernel": np.array([[0.5, -1.0], [1.5, 0.25]]),
    "dense_bias": np.array([0.1, -0.2]),
    "layer_norm_gamma": np.array([1.0, 0.9]),
    "embedding": np.array([[0.3, -0.7], [0.2, 0.4]]),
    "out_kernel": np.array([[-0.6], [0.8]]),
}
MASK_TARGET = {k: np.full_like(v, 0.2) for k, v in MASK_INIT.items()}
PATTERNS = [("bias",), ("bias", "norm"), ("^emb", "out_")]


def _mask_grads(named):
    """Gradient of Σ_v Σ (v − 0.2)², per variable (NumPy values in, NumPy out)."""
    return {k: 2.0 * (np.asarray(v) - MASK_TARGET[k]) for k, v in named.items()}


@pytest.mark.parametrize("patterns", PATTERNS, ids=["|".join(p) for p in PATTERNS])
def test_exclude_names_equals_keras_exclude_from_weight_decay(patterns):
    lr, lam = 0.05, 0.1

    def keras_optimizer(variables):
        optimizer = keras.optimizers.SGD(lr, momentum=0.9, weight_decay=lam)
        optimizer.exclude_from_weight_decay(var_names=list(patterns))
        optimizer.build(variables)
        return optimizer

    # Which variables Keras decays, read from its behaviour: with a zero gradient only
    # decay moves a variable.
    variables = [keras.Variable(v, name=k, dtype="float64") for k, v in MASK_INIT.items()]
    keras_optimizer(variables).apply_gradients([(tf.zeros_like(v), v) for v in variables])
    keras_decays = {v.name: bool(np.any(v.numpy() != MASK_INIT[v.name])) for v in variables}
    mask = exclude_names(*patterns)
    assert {k: mask(k, v) for k, v in MASK_INIT.items()} == keras_decays
    assert any(keras_decays.values()) and not all(keras_decays.values())

    # And the runs: Keras's SGD on named variables, decay's on a dict of the same names.
    variables = [keras.Variable(v, name=k, dtype="float64") for k, v in MASK_INIT.items()]
    optimizer = keras_optimizer(variables)
    params = {k: tf.Variable(v) for k, v in MASK_INIT.items()}
    # Keras's float32-rounded values (covered above), so that only the mask may differ.
    rule = decay.sgd(lr=_f32(lr), momentum=_f32(0.9), weight_decay=_f32(lam), decoupled=True, mask=mask)
    state = rule.init(params)
    for t in range(STEPS):
        keras_grads = _mask_grads({v.name: v.numpy() for v in variables})
        optimizer.apply_gradients([(tf.constant(keras_grads[v.name]), v) for v in variables])
        decay_grads = _mask_grads({k: p.numpy() for k, p in params.items()})
        params, state = rule.step(params, {k: tf.constant(g) for k, g in decay_grads.items()}, state)
        assert_close(
            np.concatenate([params[v.name].numpy().ravel() for v in variables]),
            np.concatenate([v.numpy().ravel() for v in variables]),
            "float64",
            what=f"exclude {patterns}, step {t + 1}",
        )


def test_keras_on_tensorflow_matches_names_with_a_colon_0_suffix():
    """A known difference, pinned: Keras's TensorFlow backend runs the exclusion regex on
    the tf.Variable's name, "dense_kernel:0", so an end-anchored pattern ("kernel$")
    excludes nothing there; decay matches the plain name, as Keras's docstring says."""
    variable = keras.Variable(np.ones(2), name="dense_kernel", dtype="float64")
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["kernel$"])
    optimizer.apply_gradients([(tf.zeros(2, tf.float64), variable)])
    assert np.all(variable.numpy() != 1.0)  # Keras decayed it
    assert exclude_names("kernel$")("dense_kernel", variable) is False  # decay excludes it
