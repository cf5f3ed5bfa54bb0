"""decay.keras against Keras's own optimizers and regularizers, in float64.

Expected values come from Keras (``keras.optimizers.SGD``/``AdamW``,
``keras.optimizers.schedules.ExponentialDecay``, ``keras.regularizers``), from closed
forms written here, or from a model trained without interruption; none from decay.

The problem: a Dense(4, tanh) → Dense(1) regression on 64 fixed samples, batches of 16
in order (``shuffle=False``), so each epoch is 4 steps.

Tolerances. Keras casts its Python-float hyperparameters (momentum, weight_decay, the
β's inside the bias corrections) through float32 even when floatx is float64
(``keras.ops.cast(0.999, "float64")`` is 0.9990000128746033), and evaluates
``ExponentialDecay`` in float32. With hyperparameters that float32 holds exactly
(0.875, 2⁻⁶, ...) the two sides agree to float64 round-off (:func:`rtol` "float64" per
step: measured 0 for SGD, 3.6e-16 for AdamW); with 0.9, 0.01 or 0.999 they differ by
those float32 roundings: the "float32" tolerance per step bounds SGD with momentum
0.9 (measured 2.9e-7 after 12 steps); AdamW with β2 = 0.999 drifts more (measured
1.8e-5), because its bias correction uses float32(0.999), whose 1 − β2 is 1.3e-5 off,
and the test bounds it by that drift (see ``_float32_beta2_drift``).
"""

from __future__ import annotations

import functools
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from conftest import keras_floatx, required_backends

try:
    import keras
    import tensorflow as tf
except ImportError:  # pragma: no cover - depends on the environment
    if "tensorflow" in required_backends():
        raise
    pytest.skip("keras/tensorflow not installed", allow_module_level=True)

import decay  # noqa: E402
from decay.tolerances import relative_error, rtol  # noqa: E402

BATCH = 16
EPOCHS = 3
STEPS = EPOCHS * 64 // BATCH
# Hyperparameters float32 holds exactly: Keras's float32 casts then lose nothing.
LR, MU, WD = 0.0625, 0.875, 2.0**-6
BETAS = (0.875, 0.99609375)


@pytest.fixture(autouse=True)
def _float64():
    with keras_floatx("float64"):
        yield


def _data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 3))
    y = np.sin(x @ np.array([1.0, -2.0, 0.5]))[:, None] + 0.1 * rng.normal(size=(64, 1))
    return x, y


def _model(hidden=None, out=None):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden", **(hidden or {})),
            keras.layers.Dense(1, name="out", **(out or {})),
        ],
        name="net",
    )


def _fit(optimizer, epochs=EPOCHS, model=None, x=None, y=None, **compile_kwargs):
    model = model or _model()
    if x is None:
        x, y = _data()
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return model


def _error(model, expected_model) -> float:
    return max(relative_error(a, b) for a, b in zip(model.get_weights(), expected_model.get_weights()))


# ---------------------------------------------------------------------------------------
# Optimizer parity with Keras in model.fit.


@pytest.mark.parametrize(
    "lr, momentum, wd, tolerance",
    [(LR, MU, WD, "float64"), (0.05, 0.9, 0.01, "float32")],
    ids=["float32-exact-hyper", "momentum0.9"],
)
def test_sgd_momentum_decoupled_matches_keras_sgd(lr, momentum, wd, tolerance):
    ours = _fit(decay.keras.Optimizer(decay.sgd(lr, momentum=momentum, weight_decay=wd, decoupled=True)))
    keras_sgd = _fit(keras.optimizers.SGD(lr, momentum=momentum, weight_decay=wd))
    assert _error(ours, keras_sgd) <= rtol(tolerance, STEPS)
    assert int(ours.optimizer.iterations) == STEPS


def _float32_beta2_drift(beta2: float) -> float:
    """Largest relative change of Keras's step size lr·√(1 − β2^k)/(1 − β1^k) over the
    run when β2 inside the power is float32(β2), as Keras has it."""
    b32 = float(np.float32(beta2))
    return max(abs(math.sqrt((1 - b32**k) / (1 - beta2**k)) - 1) for k in range(1, STEPS + 1))


@pytest.mark.parametrize(
    "betas, wd, tolerance",
    [
        (BETAS, WD, rtol("float64", STEPS)),
        # Each step's update is off by at most the drift (6.4e-6 for 0.999), and an
        # update is smaller than the weights: at most STEPS times it (measured 1.8e-5).
        ((0.9, 0.999), 0.01, STEPS * _float32_beta2_drift(0.999) + rtol("float32", STEPS)),
    ],
    ids=["float32-exact-hyper", "keras-default-betas"],
)
def test_adamw_matches_keras_adamw(betas, wd, tolerance):
    rule = decay.adamw(LR, betas=betas, weight_decay=wd, eps=1e-7, epsilon_hat=True)
    ours = _fit(decay.keras.Optimizer(rule))
    theirs = _fit(keras.optimizers.AdamW(LR, beta_1=betas[0], beta_2=betas[1], weight_decay=wd, epsilon=1e-7))
    assert _error(ours, theirs) <= tolerance


def test_schedule_matches_keras_exponential_decay():
    # No momentum: with a changing lr Keras's v ← μv − lr·g and PyTorch's buffer differ.
    sched = decay.schedules.exponential(0.125, decay_rate=0.5, decay_steps=4)
    ours = _fit(decay.keras.Optimizer(decay.sgd(sched, weight_decay=WD, decoupled=True)))
    keras_sched = keras.optimizers.schedules.ExponentialDecay(0.125, decay_steps=4, decay_rate=0.5)
    theirs = _fit(keras.optimizers.SGD(keras_sched, weight_decay=WD))
    # Keras evaluates the schedule in float32 (measured 5.8e-8 here).
    assert _error(ours, theirs) <= rtol("float32", STEPS)
    # learning_rate reports the rule's lr at the current step, eagerly and traced.
    expected = 0.125 * 0.5 ** (STEPS / 4)
    assert float(ours.optimizer.learning_rate) == pytest.approx(expected, rel=1e-15)
    assert float(tf.function(lambda: ours.optimizer.learning_rate)()) == pytest.approx(expected, rel=1e-15)


@pytest.fixture
def _no_grappler():
    # Grappler's arithmetic rewrites change Adam's last bit in a graph (measured 1 ulp);
    # without them the traced step runs exactly the eager operations.
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


def test_eager_and_traced_updates_are_bit_identical(_no_grappler):
    """The coefficients reach the graph exactly: a traced step equals an eager one."""
    rng = np.random.default_rng(3)
    grads = [(rng.normal(size=(3, 2)), rng.normal(size=2)) for _ in range(6)]
    grads[2] = (np.full((3, 2), np.nan), grads[2][1])  # skipped
    init = (rng.normal(size=(3, 2)), rng.normal(size=2))

    def run(compiled):
        rule = decay.adamw(
            decay.schedules.cosine(0.05, decay_steps=6), weight_decay=0.01, amsgrad=True,
            mask=decay.masks.timm_default, on_nonfinite="skip",
        )
        opt = decay.keras.Optimizer(rule)
        variables = [keras.Variable(init[0], name="kernel"), keras.Variable(init[1], name="bias")]

        def step(g):
            opt.apply_gradients(zip(g, variables))

        step = tf.function(step) if compiled else step
        for g in grads:
            step([tf.constant(x) for x in g])
        return [v.numpy() for v in variables + opt.variables]

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


def test_custom_gradient_tape_loop_matches_keras():
    x, y = (tf.constant(a) for a in _data())

    def train(optimizer, compiled):
        model = _model()
        model.build((None, 3))

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(xb) - yb) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        step = tf.function(step) if compiled else step
        for start in range(0, 64, BATCH):
            step(x[start : start + BATCH], y[start : start + BATCH])
        return model

    for compiled in (False, True):
        ours = train(decay.keras.Optimizer(decay.sgd(LR, momentum=MU, nesterov=True)), compiled)
        theirs = train(keras.optimizers.SGD(LR, momentum=MU, nesterov=True), compiled)
        assert _error(ours, theirs) <= rtol("float64", 4)


def test_gradient_accumulation_matches_keras():
    ours = _fit(decay.keras.Optimizer(decay.sgd(LR, momentum=MU), gradient_accumulation_steps=2), epochs=2)
    theirs = _fit(keras.optimizers.SGD(LR, momentum=MU, gradient_accumulation_steps=2), epochs=2)
    assert _error(ours, theirs) <= rtol("float64", 4)
    assert int(ours.optimizer.iterations) == 4  # updates applied: 8 batches / 2


# ---------------------------------------------------------------------------------------
# Masks by variable path.


def test_mask_names_are_keras_variable_paths():
    seen = []

    def mask(name, tensor):
        seen.append((name, tuple(tensor.shape)))
        return True

    _fit(decay.keras.Optimizer(decay.sgd(LR, weight_decay=WD, mask=mask)), epochs=1)
    assert seen == [
        ("net/hidden/kernel", (3, 4)), ("net/hidden/bias", (4,)),
        ("net/out/kernel", (4, 1)), ("net/out/bias", (1,)),
    ]


@pytest.mark.parametrize(
    "mask",
    [
        decay.masks.exclude_names("bias"),
        decay.masks.timm_default,
        {"net/hidden/bias": False, "net/out/bias": False},
    ],
    ids=["exclude_names", "timm_default", "dict-of-paths"],
)
def test_mask_matches_keras_exclude_from_weight_decay(mask):
    rule = decay.adamw(LR, betas=BETAS, weight_decay=WD, eps=1e-7, epsilon_hat=True, mask=mask)
    weights = _fit(decay.keras.Optimizer(rule)).get_weights()
    error = max(relative_error(a, b) for a, b in zip(weights, _keras_adamw_weights(exclude_bias=True)))
    assert error <= rtol("float64", STEPS)
    # The mask matters here: decaying the biases too moves them measurably.
    unmasked = _keras_adamw_weights(exclude_bias=False)
    assert max(relative_error(a, b) for a, b in zip(weights, unmasked)) > 1e-6


@functools.lru_cache(maxsize=None)
def _keras_adamw_weights(exclude_bias: bool):
    optimizer = keras.optimizers.AdamW(LR, beta_1=BETAS[0], beta_2=BETAS[1], weight_decay=WD, epsilon=1e-7)
    if exclude_bias:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return tuple(_fit(optimizer).get_weights())


# ---------------------------------------------------------------------------------------
# Regularizers.


# Keras casts l1/l2 through float32 too (``ops.cast(self.l2, x.dtype)``): with values
# float32 holds exactly the two sides run the same operations and agree bit for bit.
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (decay.L2(2.0**-7), keras.regularizers.L2(2.0**-7)),
        (decay.L1(2.0**-7), keras.regularizers.L1(2.0**-7)),
        (decay.ElasticNet(2.0**-8, 2.0**-6), keras.regularizers.L1L2(2.0**-8, 2.0**-6)),
    ],
    ids=["L2", "L1", "ElasticNet"],
)
def test_kernel_regularizer_matches_keras(ours, theirs):
    def train(regularizer):
        model = _model(hidden={"kernel_regularizer": regularizer}, out={"kernel_regularizer": regularizer})
        return _fit(keras.optimizers.SGD(LR), model=model)

    a, b = train(decay.keras.Regularizer(ours)), train(theirs)
    for x, y in zip(a.get_weights() + a.losses, b.get_weights() + b.losses):
        np.testing.assert_array_equal(x, y)


def test_activity_regularizer_matches_keras_and_is_divided_by_batch_size():
    lam = 2.0**-7

    def train(regularizer):
        model = _model(hidden={"activity_regularizer": regularizer})
        return _fit(keras.optimizers.SGD(LR), model=model)

    a, b = train(decay.keras.Regularizer(decay.L2(lam))), train(keras.regularizers.L2(lam))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)

    # Keras (Layer.__call__) divides an activity penalty by the batch size; decay does not.
    layer = keras.layers.Dense(2, activity_regularizer=decay.keras.Regularizer(decay.L2(lam)))
    x = np.arange(10.0).reshape(5, 2) / 10
    out = np.asarray(layer(x))
    assert float(layer.losses[0]) == pytest.approx(lam * np.sum(out**2) / 5, rel=1e-14)


# ---------------------------------------------------------------------------------------
# Non-finite gradients.


def _apply(optimizer, variable, grad, compiled):
    def step():
        optimizer.apply_gradients([(tf.constant(grad), variable)])

    (tf.function(step) if compiled else step)()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_skip_leaves_everything_and_does_not_advance(compiled):
    opt = decay.keras.Optimizer(decay.sgd(0.5, momentum=0.5, on_nonfinite="skip"))
    v = keras.Variable(np.array([1.0, 2.0]), name="w")
    _apply(opt, v, np.array([np.nan, 1.0]), compiled)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    assert int(opt.iterations) == 0 and opt.skipped_steps == 1
    slot = [x for x in opt.variables if x.path.endswith("momentum_buffer")][0]
    np.testing.assert_array_equal(slot.numpy(), [0.0, 0.0])
    # The next finite step is the first update: b ← g, θ ← θ − lr·g.
    _apply(opt, v, np.array([0.5, -1.0]), compiled)
    np.testing.assert_array_equal(v.numpy(), [0.75, 2.5])
    np.testing.assert_array_equal(slot.numpy(), [0.5, -1.0])
    assert int(opt.iterations) == 1 and opt.skipped_steps == 1


def test_skip_in_fit_equals_training_without_the_bad_batch():
    x, y = _data()
    bad_x = x.copy()
    bad_x[BATCH + 3, 1] = np.inf  # the second batch has a non-finite gradient
    sched = decay.schedules.exponential(0.125, decay_rate=0.5, decay_steps=4)
    ours = _fit(decay.keras.Optimizer(decay.sgd(sched, on_nonfinite="skip")), epochs=1, x=bad_x, y=y)
    keep = np.r_[0:BATCH, 2 * BATCH : 64]
    keras_sched = keras.optimizers.schedules.ExponentialDecay(0.125, decay_steps=4, decay_rate=0.5)
    theirs = _fit(keras.optimizers.SGD(keras_sched), epochs=1, x=x[keep], y=y[keep])
    assert _error(ours, theirs) <= rtol("float32", 3)
    assert int(ours.optimizer.iterations) == 3 and ours.optimizer.skipped_steps == 1


def test_raise_eagerly_is_a_decay_error_and_changes_nothing():
    opt = decay.keras.Optimizer(decay.adamw(0.1, on_nonfinite="raise"))
    v = keras.Variable(np.array([1.0, 2.0]), name="w")
    with pytest.raises(decay.DecayError, match=r"Non-finite gradient .*'w'.* at step 0"):
        _apply(opt, v, np.array([1.0, np.inf]), compiled=False)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    assert int(opt.iterations) == 0


def test_raise_in_a_graph_carries_the_message_and_changes_nothing():
    opt = decay.keras.Optimizer(decay.adamw(0.1, on_nonfinite="raise"))
    v = keras.Variable(np.array([1.0, 2.0]), name="w")
    # TensorFlow re-raises any exception from a host call as InvalidArgumentError.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"DecayError: Non-finite gradient"):
        _apply(opt, v, np.array([np.nan, 1.0]), compiled=True)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    assert int(opt.iterations) == 0


# ---------------------------------------------------------------------------------------
# Saving and loading.


def _saveable_model():
    regularizer = decay.keras.Regularizer(decay.ElasticNet(1e-3, 1e-2))
    rule = decay.adamw(
        decay.schedules.warmup(decay.schedules.cosine(0.05, decay_steps=8), warmup_steps=2),
        weight_decay=0.01, amsgrad=True, mask=decay.masks.exclude_names("bias"), on_nonfinite="skip",
    )
    model = _model(hidden={"kernel_regularizer": regularizer})
    model.compile(optimizer=decay.keras.Optimizer(rule, clipnorm=1.0), loss="mse")
    return model


def test_save_load_keeps_optimizer_state_and_training_continues_identically(tmp_path):
    x, y = _data()
    fit = dict(batch_size=BATCH, shuffle=False, verbose=0)
    straight = _saveable_model()
    straight.fit(x, y, epochs=2, **fit)

    first = _saveable_model()
    first.fit(x, y, epochs=1, **fit)
    path = tmp_path / "model.keras"
    first.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, decay.keras.Optimizer)
    assert loaded.optimizer.get_config() == first.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 4
    # Compared in order (Keras saves and loads optimizer variables by index): the paths
    # themselves change, since a Sequential built with keras.Input names its variables
    # "net/hidden/kernel" but the same model loaded from its config "hidden/kernel".
    saved = [(v.path, v.numpy()) for v in first.optimizer.variables]
    restored = [(v.path, v.numpy()) for v in loaded.optimizer.variables]
    assert len(saved) == len(restored) == 1 + 3 * 4 + 1  # iteration, 3 slots x 4, skipped_steps
    assert saved[1][0].endswith("net_hidden_kernel_exp_avg") and restored[1][0].endswith("hidden_kernel_exp_avg")
    for (_, value), (_, expected) in zip(restored, saved):
        np.testing.assert_array_equal(value, expected)

    loaded.fit(x, y, epochs=1, **fit)
    # Same operations on the same float64 values: bit-identical, not just close.
    for a, b in zip(loaded.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations) == int(straight.optimizer.iterations) == 8


def test_get_config_round_trips():
    rule = decay.sgd(
        decay.schedules.exponential(0.1, decay_rate=0.5, decay_steps=10), momentum=0.9,
        weight_decay=1e-3, decoupled=True, mask=decay.masks.timm_default,
        groups=[{"params": ["net/out/kernel"], "lr": 0.01}],
    )
    opt = decay.keras.Optimizer(rule, name="mine", clipvalue=0.5)
    config = opt.get_config()
    again = decay.keras.Optimizer.from_config(config)
    assert again.get_config() == config and again.name == "mine" and again.clipvalue == 0.5
    via_keras = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(via_keras) is decay.keras.Optimizer and via_keras.get_config() == config

    reg = decay.keras.Regularizer(decay.ElasticNet(0.01, 0.02))
    back = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert type(back) is decay.keras.Regularizer
    assert back.get_config() == reg.get_config() == {"penalty": {"name": "ElasticNet", "l1": 0.01, "l2": 0.02}}


# ---------------------------------------------------------------------------------------
# Bad input and what is not supported.


@pytest.mark.parametrize("bad", ["sgd", 0.1, None], ids=["str", "float", "None"])
def test_optimizer_rejects_what_is_not_a_rule(bad):
    with pytest.raises(decay.DecayError, match=type(bad).__qualname__):
        decay.keras.Optimizer(bad)


def test_optimizer_rejects_a_keras_optimizer():
    with pytest.raises(decay.DecayError, match="keras.*SGD"):
        decay.keras.Optimizer(keras.optimizers.SGD(0.1))


def test_regularizer_rejects_what_is_not_a_penalty():
    with pytest.raises(decay.DecayError, match="float"):
        decay.keras.Regularizer(0.01)
    with pytest.raises(decay.DecayError, match="L2"):
        decay.keras.Regularizer(keras.regularizers.L2(0.01))


@pytest.mark.parametrize("key", ["learning_rate", "weight_decay"])
def test_keras_learning_rate_and_weight_decay_belong_to_the_rule(key):
    with pytest.raises(decay.DecayError, match=f"`{key}` from the rule"):
        decay.keras.Optimizer(decay.sgd(0.1), **{key: 0.1})


def test_learning_rate_cannot_be_set_so_lr_callbacks_fail_clearly():
    opt = decay.keras.Optimizer(decay.sgd(0.1))
    assert float(opt.learning_rate) == 0.1
    with pytest.raises(decay.DecayError, match="decay schedule|schedules"):
        opt.learning_rate = 0.01
    callback = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    x, y = _data()
    model = _model()
    model.compile(optimizer=opt, loss="mse")
    with pytest.raises(decay.DecayError, match="LearningRateScheduler"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])


def test_jit_compile_true_says_to_turn_it_off():
    # Keras's default jit_compile="auto" is False on CPU-only machines; True is what
    # "auto" picks on a GPU.
    with pytest.raises(decay.DecayError, match="jit_compile=False"):
        _fit(decay.keras.Optimizer(decay.sgd(LR)), epochs=1, jit_compile=True)


def test_float16_variables_keep_float32_slots():
    opt = decay.keras.Optimizer(decay.sgd(0.1, momentum=0.9))
    v = keras.Variable(np.array([1.0, -0.3], dtype=np.float16), dtype="float16", name="h")
    g = np.array([0.1, 0.2], dtype=np.float16)
    opt.apply_gradients([(tf.constant(g), v)])
    slot = [x for x in opt.variables if x.path.endswith("momentum_buffer")][0]
    assert keras.backend.standardize_dtype(slot.dtype) == "float32"
    assert keras.backend.standardize_dtype(v.dtype) == "float16"
    # First step, computed in float32 and rounded once: b ← g, θ ← θ − lr·g.
    g32 = g.astype(np.float32)
    np.testing.assert_array_equal(slot.numpy(), g32)
    expected = (np.array([1.0, -0.3], dtype=np.float16).astype(np.float32) - g32 * np.float32(0.1)).astype(np.float16)
    np.testing.assert_array_equal(v.numpy(), expected)
