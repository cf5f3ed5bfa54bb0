"""Classes 6, 7 and 9 of the guarantees through Keras: graph mode, model.save, masks.

Inside ``model.fit`` (a tf.function) and with ``run_eagerly=True``, ``raise`` and
``skip`` leave every slot and weight bit-identical on a non-finite gradient, and a
schedule that turns non-finite is caught before anything is written; later ``fit``
calls on clean data then train as a model that never saw the bad batch (the Keras
optimizer trained on the clean batches alone gives the expected weights).
``model.save`` never destroys the previous file. ``from_native`` refuses Keras exclusion
patterns whose matches would differ from Keras's during fit.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="keras not installed: these tests run model.fit")
tf = pytest.importorskip("tensorflow", reason="tensorflow not installed: these tests run model.fit")

import decay  # noqa: E402
from decay.tolerances import assert_close  # noqa: E402
from conftest import keras_floatx

BATCH = 8
# Values float32 holds exactly, so that Keras's own float32 casts lose nothing.
LR, BETAS = 0.0625, (0.875, 0.99609375)


@pytest.fixture(autouse=True)
def _float64():
    with keras_floatx("float64"):
        yield


def _model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")], name="net")


def _data():
    rng = np.random.default_rng(5)
    return rng.normal(size=(3 * BATCH, 3)), rng.normal(size=(3 * BATCH, 2))


def _state(model):
    return [v.numpy().copy() for v in model.weights] + [
        v.numpy().copy() for v in model.optimizer.variables if "skipped" not in v.path
    ]


@pytest.mark.parametrize(
    "policy, eager", [("raise", False), ("skip", False), ("raise", True)], ids=["raise-fit", "skip-fit", "raise-eager"]
)  # (skip eagerly: tests/integrations/test_keras_integration.py)
def test_nonfinite_batch_in_fit_leaves_weights_and_slots(policy, eager):
    """The issue's third case: after a raised NaN batch the Adam slots held NaN, so every
    later fit on clean data failed."""
    x, y = _data()
    model = _model()
    model.compile(optimizer=decay.keras.Optimizer(decay.adam(LR, betas=BETAS, eps=1e-7, epsilon_hat=True,
                                                             on_nonfinite=policy)),
                  loss="mse", run_eagerly=eager)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    before = _state(model)
    bad = x[BATCH:2 * BATCH].copy()
    bad[2, 1] = np.nan
    if policy == "raise":
        with pytest.raises((decay.DecayError, tf.errors.InvalidArgumentError), match="Non-finite gradient"):
            model.fit(bad, y[BATCH:2 * BATCH], batch_size=BATCH, verbose=0)
    else:
        model.fit(bad, y[BATCH:2 * BATCH], batch_size=BATCH, verbose=0)
    after = _state(model)
    for a, b in zip(before, after):
        assert a.tobytes() == b.tobytes()
    # Training goes on, as Keras's Adam trained on the clean batches only.
    model.fit(x[2 * BATCH:], y[2 * BATCH:], batch_size=BATCH, shuffle=False, verbose=0)
    theirs = _model()
    theirs.compile(optimizer=keras.optimizers.Adam(LR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=1e-7), loss="mse")
    keep = np.r_[0:BATCH, 2 * BATCH:3 * BATCH]
    theirs.fit(x[keep], y[keep], batch_size=BATCH, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), theirs.get_weights()):
        assert_close(a, b, "float64", 2)


@pytest.mark.parametrize("eager", [False, True], ids=["fit-graph", "fit-eager"])
def test_schedule_turning_nonfinite_in_fit_is_caught_before_any_write(eager):
    x, y = _data()
    model = _model()
    rule = decay.adamw(lambda t: LR if t < 1 else float("nan"), weight_decay=0.01)
    model.compile(optimizer=decay.keras.Optimizer(rule), loss="mse", run_eagerly=eager)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    before = _state(model) + [int(model.optimizer.iterations)]
    with pytest.raises((decay.DecayError, tf.errors.InvalidArgumentError), match="returned nan at step 1"):
        model.fit(x[BATCH:2 * BATCH], y[BATCH:2 * BATCH], batch_size=BATCH, verbose=0)
    after = _state(model) + [int(model.optimizer.iterations)]
    assert before[-1] == after[-1]
    for a, b in zip(before[:-1], after[:-1]):
        assert a.tobytes() == b.tobytes()


def _fit_until_nan(compile_kwargs):
    """A decay Adam model with on_nonfinite="raise", fitted on 3 batches whose second holds
    a NaN: (the exception fit raised, the model)."""
    x, y = _data()
    x[BATCH + 2, 1] = np.nan
    model = _model()
    model.compile(optimizer=decay.keras.Optimizer(decay.adam(LR, betas=BETAS, eps=1e-7, epsilon_hat=True,
                                                             on_nonfinite="raise")),
                  loss="mse", **compile_kwargs)
    with pytest.raises(Exception) as info:
        model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    return info.value, model


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_raise_in_compiled_fit_is_tensorflows_error_carrying_the_decay_error(steps_per_execution):
    """The exception type inside compiled fit, pinned (docs/guarantees.md says why it is
    not decay's to choose): TensorFlow turns the DecayError raised in the step's host call
    into tf.errors.InvalidArgumentError, which carries the whole DecayError message (the
    parameters, the value, the step, the fix) exactly as the eager fit raises it. Nothing
    of the failing step (or, with steps_per_execution=3, after it) is written: the model
    holds, bit for bit, what the first batch alone gives (Keras's Adam's numbers for the
    clean batches: test_nonfinite_batch_in_fit_leaves_weights_and_slots)."""
    eager, _ = _fit_until_nan(dict(run_eagerly=True))
    assert type(eager) is decay.DecayError
    error, model = _fit_until_nan(dict(steps_per_execution=steps_per_execution, jit_compile=False))
    assert type(error) is tf.errors.InvalidArgumentError and not isinstance(error, decay.DecayError)
    assert f"decay.errors.DecayError: {eager}" in str(error)
    for part in ("['net/out/kernel', 'net/out/bias']", "(inf or nan)", "at step 1", "on_nonfinite='skip'"):
        assert part in str(error)
    assert int(model.optimizer.iterations) == 1
    x, y = _data()
    clean = _model()
    clean.compile(optimizer=decay.keras.Optimizer(decay.adam(LR, betas=BETAS, eps=1e-7, epsilon_hat=True)),
                  loss="mse", steps_per_execution=steps_per_execution, jit_compile=False)
    clean.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    assert [v.numpy().tobytes() for v in model.weights] == [v.numpy().tobytes() for v in clean.weights]
    model.fit(x[2 * BATCH:], y[2 * BATCH:], batch_size=BATCH, verbose=0)  # clean data trains on
    assert int(model.optimizer.iterations) == 2


def test_jit_compiled_fit_is_refused_with_a_decay_error_before_any_write():
    """XLA cannot compile the host call: the DecayError is raised while the step is
    traced, so it reaches the user as itself, with every weight untouched."""
    model = _model()
    start = [w.copy() for w in model.get_weights()]
    error, model = _fit_until_nan(dict(jit_compile=True))
    assert type(error) is decay.DecayError and "jit_compile=False" in str(error)
    assert int(model.optimizer.iterations) == 0
    for a, b in zip(model.get_weights(), start):
        assert a.tobytes() == b.tobytes()


def test_model_save_with_an_unsaveable_rule_keeps_the_file_loadable(tmp_path):
    """Keras truncates the file before it asks the optimizer for its config; a rule with
    a plain-callable schedule used to raise there and destroy the previous file. Now the
    weights are saved (with a warning) and loading the optimizer says what was lost."""
    path = str(tmp_path / "m.keras")
    model = _model()
    model.compile(optimizer=decay.keras.Optimizer(decay.sgd(lambda t: 0.1)), loss="mse")
    with pytest.warns(UserWarning, match="the rule cannot be saved"):
        model.save(path)
    with pytest.raises(decay.DecayError, match="compile=False"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, compile=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pattern", ["kernel$", "^net", "ker.el", "out|bias:0"])
def test_from_native_refuses_exclusion_patterns_keras_matches_differently(pattern):
    opt = keras.optimizers.AdamW(0.01, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=[pattern])
    with pytest.raises(decay.DecayError, match="plain substrings"):
        decay.from_native(opt)


def test_from_native_plain_substrings_exclude_what_keras_excludes_in_fit():
    """The converted rule, run in fit, gives Keras's AdamW weights with the same
    exclusion: the same variables are decayed."""
    x, y = _data()
    theirs = keras.optimizers.AdamW(LR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=1e-7, weight_decay=0.25)
    theirs.exclude_from_weight_decay(var_names=["bias"])
    rule = decay.from_native(theirs)
    models = []
    for optimizer in (theirs, decay.keras.Optimizer(rule)):
        model = _model()
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
        models.append(model)
    for a, b in zip(*(m.get_weights() for m in models)):
        assert_close(a, b, "float64", 3)


def test_timm_default_selects_what_timm_selects():
    """timm's param_groups_weight_decay: no decay when ndim <= 1 or the name ends with
    ".bias" (written out here from timm's rule)."""
    cases = {
        ("attn_bias", 2): True,  # timm decays it: not ".bias"
        ("blocks.0.attn.bias", 2): False,
        ("proj.weight", 2): True,
        ("norm.weight", 1): False,
        ("rel_pos_bias", 3): True,
    }
    for (name, ndim), decayed in cases.items():
        assert decay.masks.timm_default(name, np.zeros((2,) * ndim)) is decayed, name
