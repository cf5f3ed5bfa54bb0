"""Adafactor against every framework's own version, float64, every step of 100.

Expected values come from torch.optim.Adafactor, keras.optimizers.Adafactor (Keras 3 on
TensorFlow, float64 variables) and optax.adafactor (JAX with x64), driven side by side
with decay on one problem: each side holds its own copy of the same initial weights and
computes its gradient from them with the NumPy function below, every step. The problem
has a matrix (factored by every version), a 3-D tensor (torch and Keras factor its last
two axes, optax its two largest: axes 0 and 2), a vector and a scalar (full
accumulators). Keras casts its hyperparameters to float32, so the values are exact in
float32 (powers of two).

Where the versions differ, a test measures by how much after 100 steps on this problem
and checks the figure docs/optimizers.md states.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import decay  # noqa: E402
import parity_runs  # noqa: E402
from parity_runs import assert_same_run, gap  # noqa: E402

STEPS = 100
RNG = np.random.default_rng(1804)
SHAPES = {"w": (6, 4), "c": (5, 2, 3), "b": (4,), "s": ()}
INIT = {n: RNG.normal(size=s) for n, s in SHAPES.items()}
TARGET = {n: RNG.normal(size=s) for n, s in SHAPES.items()}
CURVATURE = {n: 0.5 + RNG.random(size=s) for n, s in SHAPES.items()}
NOISE = [{n: 0.1 * RNG.normal(size=s) for n, s in SHAPES.items()} for _ in range(STEPS)]
LR, WD = 2.0**-5, 0.125  # exact in float32
NO_B = decay.masks.exclude_names("b")


def grads_of(params: dict, t: int) -> dict:
    """A quadratic with a per-coordinate curvature, plus a fixed noise per step."""
    return {n: CURVATURE[n] * (params[n] - TARGET[n]) + NOISE[t][n] for n in SHAPES}


def run_decay(rule, backend="numpy", steps=STEPS, dtype="float64") -> list:
    b = decay.get_backend(backend)
    params = {n: b.tensor(np.asarray(v, dtype)) for n, v in INIT.items()}
    state, out = rule.init(params), []
    for t in range(steps):
        g = grads_of({n: b.to_numpy(p).astype(np.float64) for n, p in params.items()}, t)
        params, state = rule.step(params, {n: b.tensor(np.asarray(v, dtype), variable=False) for n, v in g.items()},
                                  state)
        out.append({n: b.to_numpy(p).astype(np.float64) for n, p in params.items()})
    return out


def run_torch(make, steps=STEPS, start=None, after=None) -> list:
    """``make(named params)`` builds a torch optimizer (torch.optim's or decay's)."""
    torch = pytest.importorskip("torch")
    params = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in (start or INIT).items()}
    opt, out = make(list(params.items())), []
    for t in range(steps):
        g = grads_of({n: p.detach().numpy() for n, p in params.items()}, t)
        for n, p in params.items():
            p.grad = torch.tensor(g[n])
        opt.step()
        out.append({n: p.detach().numpy().copy() for n, p in params.items()})
    if after is not None:
        after(opt, params)
    return out


def run_keras(optimizer, dtype="float64", steps=STEPS) -> list:
    """``apply_gradients`` traced once (as ``model.fit`` runs it)."""
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    variables = [keras.Variable(INIT[n].astype(dtype), dtype=dtype, name=n) for n in SHAPES]
    optimizer.build(variables)
    apply = tf.function(lambda *g: optimizer.apply_gradients(zip(g, variables)))
    out = []
    for t in range(steps):
        g = grads_of({n: np.asarray(v, dtype=np.float64) for n, v in zip(SHAPES, variables)}, t)
        apply(*[tf.constant(g[n].astype(dtype)) for n in SHAPES])
        out.append({n: np.asarray(v, dtype=np.float64).copy() for n, v in zip(SHAPES, variables)})
    return out


def run_optax(make, steps=STEPS) -> list:
    return parity_runs.run_optax(make, INIT, grads_of, steps)


# -- torch ----------------------------------------------------------------------------------
def test_torch_adafactor_every_backend_and_both_ways():
    torch = pytest.importorskip("torch")
    want = run_torch(lambda p: torch.optim.Adafactor([q for _, q in p], lr=LR, weight_decay=WD))
    rule = lambda: decay.adafactor(LR, weight_decay=WD)  # noqa: E731  (convention="torch")
    # NumPy's rule.step, and torch's through decay.torch (the backends agree with each
    # other step by step in tests/core/test_one_definition.py).
    assert_same_run(run_decay(rule()), want, "decay.adafactor on numpy vs torch Adafactor")
    assert_same_run(run_torch(lambda p: decay.torch.Optimizer(p, rule())), want, "decay.torch(adafactor)")
    # from_native reads torch's; to_native builds it back, exact, with the same defaults.
    native = torch.optim.Adafactor([torch.zeros(2, 2, requires_grad=True)], lr=LR, weight_decay=WD)
    assert decay.from_native(native).get_config() == rule().get_config()
    conversion = decay.to_native(rule(), "torch")
    assert conversion.exact
    built = conversion.build([torch.zeros(2, 2, requires_grad=True)])
    assert {k: built.defaults[k] for k in ("lr", "beta2_decay", "eps", "d", "weight_decay")} == {
        k: native.defaults[k] for k in ("lr", "beta2_decay", "eps", "d", "weight_decay")}
    # A mask converts to torch's param groups (a no-decay group): run both sides.
    masked = decay.to_native(decay.adafactor(LR, weight_decay=WD, mask=NO_B), "torch")
    assert masked.exact
    assert_same_run(run_decay(decay.adafactor(LR, weight_decay=WD, mask=NO_B)),
                    run_torch(lambda p: masked.build(dict(p))), "decay.adafactor(mask) vs its torch conversion")


def test_torch_state_loads_into_decay_and_continues():
    # torch.optim.Adafactor's state (row_var (…, m, 1), col_var (…, 1, n), variance) has
    # the slots' shapes decay keeps: 60 steps of torch's, then 40 of decay's from its state.
    torch = pytest.importorskip("torch")
    want = run_torch(lambda p: torch.optim.Adafactor([q for _, q in p], lr=LR, weight_decay=WD))
    saved = {}
    head = run_torch(lambda p: torch.optim.Adafactor([q for _, q in p], lr=LR, weight_decay=WD), steps=60,
                     after=lambda opt, params: saved.update(state=opt.state_dict(), params=params))
    params = saved["params"]
    opt = decay.torch.Optimizer(list(params.items()), decay.adafactor(LR, weight_decay=WD))
    opt.load_state_dict(saved["state"])
    tail = []
    for t in range(60, STEPS):
        g = grads_of({n: p.detach().numpy() for n, p in params.items()}, t)
        for n, p in params.items():
            p.grad = torch.tensor(g[n])
        opt.step()
        tail.append({n: p.detach().numpy().copy() for n, p in params.items()})
    assert_same_run(head + tail, want, "torch's state continued by decay.torch")
    # A slot of the wrong shape is refused before anything is loaded.
    bad = opt.state_dict()
    first = next(iter(bad["state"]))
    bad["state"][first]["row_var"] = torch.zeros(6, 4, dtype=torch.float64)
    with pytest.raises(decay.DecayError, match="row_var"):
        opt.load_state_dict(bad)


# -- Keras ----------------------------------------------------------------------------------
def _keras_native():
    keras = pytest.importorskip("keras")
    return keras.optimizers.Adafactor(learning_rate=LR, weight_decay=WD)


def test_keras_adafactor_float64_and_both_ways():
    want = run_keras(_keras_native())
    rule = lambda: decay.adafactor(LR, weight_decay=WD, convention="keras")  # noqa: E731
    assert_same_run(run_decay(rule(), "tensorflow"), want, "decay.adafactor(keras) vs keras Adafactor")
    assert_same_run(run_keras(decay.keras.Optimizer(rule())), want, "decay.keras(adafactor) vs keras Adafactor")
    assert decay.from_native(_keras_native()).get_config() == rule().get_config()
    conversion = decay.to_native(rule(), "keras")
    assert conversion.exact
    keys = ("learning_rate", "weight_decay", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold")
    assert {k: conversion.build().get_config()[k] for k in keys} == {k: _keras_native().get_config()[k] for k in keys}


def test_keras_adafactor_float32_bound():
    # Keras with float32 weights computes in float32: within the float32 tolerance of
    # decay's float32 step (n·4 ulp after n steps), over 100 steps.
    want = run_keras(_keras_native(), dtype="float32")
    got = run_decay(decay.adafactor(LR, weight_decay=WD, convention="keras"), "tensorflow", dtype="float32")
    assert_same_run(got, want, "float32 decay.adafactor(keras) vs keras Adafactor", dtype="float32")


# -- optax ----------------------------------------------------------------------------------
# optax computes β̂_t = 1 − (t + 1)^(−0.8) in float32 even under x64: one float32
# rounding per step, so the bound is n·2⁻²³ after n steps (as for optax's float32
# schedules, decay.convert.optax); measured: 6e-8 at most over the 100 steps.
OPTAX_PER_STEP = 2.0**-23


@pytest.mark.parametrize("momentum", [None, 0.875])
def test_optax_adafactor(momentum):
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    mask = {"w": True, "c": True, "b": False, "s": True}
    want = run_optax(lambda: optax.adafactor(LR, min_dim_size_to_factor=2, weight_decay_rate=WD, momentum=momentum,
                                             dtype_momentum=jnp.float64, weight_decay_mask=mask))
    rule = lambda: decay.adafactor(LR, weight_decay=WD, convention="optax", min_dim_size_to_factor=2,  # noqa: E731
                                   momentum=momentum, mask=NO_B)
    assert_same_run(run_decay(rule()), want, "decay.adafactor(optax) vs optax", per_step=OPTAX_PER_STEP)
    if momentum is None:
        return
    assert_same_run(run_decay(rule(), "jax"), want, "decay.adafactor(optax) on jax vs optax", per_step=OPTAX_PER_STEP)
    # Both ways: inject_hyperparams(optax.adafactor) reads back; to_native runs optax's.
    tx = optax.inject_hyperparams(optax.adafactor)(learning_rate=LR, min_dim_size_to_factor=2, weight_decay_rate=WD,
                                                   momentum=momentum)
    assert decay.from_native(tx).get_config() == decay.adafactor(
        LR, weight_decay=WD, convention="optax", min_dim_size_to_factor=2, momentum=momentum).get_config()
    conversion = decay.to_native(rule(), "optax")
    assert conversion.exact and "float32" in conversion.note
    # optax keeps its momentum in float32 unless told (dtype_momentum): the built one does.
    assert 1e-9 < gap(run_optax(conversion.build), want) < 1e-6


def test_optax_coupled_decay_converts_to_a_chain():
    # optax.adafactor has no coupled decay; add_decayed_weights before it is one, exactly.
    rule = decay.adafactor(LR, weight_decay=WD, decoupled=False, convention="optax", min_dim_size_to_factor=2)
    conversion = decay.to_native(rule, "optax")
    assert conversion.exact and conversion.code.startswith("optax.chain(optax.add_decayed_weights(0.125)")
    assert_same_run(run_decay(rule), run_optax(conversion.build), "coupled decay vs optax chain",
                    per_step=OPTAX_PER_STEP)


# -- where the versions differ ------------------------------------------------------------------
def test_versions_differ_by():
    # Each convention equals its framework (above); here how far apart they are after
    # 100 steps on this problem (docs/optimizers.md states the figures).
    def run(convention, **kw):
        return run_decay(decay.adafactor(LR, weight_decay=WD, convention=convention, **kw))

    torch_, keras_ = run("torch"), run("keras")
    # What separates torch's and Keras's is Keras reading RMS(θ) after its decay (measured
    # 1.1e-2 with lr·λ = 2⁻⁸); the ε₁ placement (torch's floors, Keras's 1e-30 in g²) does
    # not show at gradients this far from 0: the rest is equal to the last bit.
    assert 5e-3 < gap(torch_, keras_) < 2e-2, gap(torch_, keras_)
    assert gap(torch_, run("keras", param_rms_after_decay=False)) < 1e-12
    # optax, with torch's lr-scaled decay: its two largest axes of the 3-D tensor (0 and 2)
    # instead of the last two move it by 0.31 (measured); its lack of a relative step does
    # not show while lr < 1/√t (t < 1024). With the last two axes it is torch's exactly.
    optax_ = run("optax", min_dim_size_to_factor=1, decay_scaled_by="lr")
    assert 0.15 < gap(torch_, optax_) < 0.6, gap(torch_, optax_)
    assert gap(torch_, run("optax", min_dim_size_to_factor=1, decay_scaled_by="lr", factored_dims="last_two")) < 1e-12


def test_slot_shapes_and_bad_state():
    rule = decay.adafactor(LR, weight_decay=WD)
    params = {n: v.copy() for n, v in INIT.items()}
    state = rule.init(params)
    shapes = {s: [None if x is None else x.shape for x in per] for s, per in state.slots.items()}
    assert shapes == {"row_var": [(6, 1), (5, 2, 1), None, None], "col_var": [(1, 4), (5, 1, 3), None, None],
                      "variance": [None, None, (4,), ()]}
    saved = rule.state_dict(state)
    assert rule.load_state_dict(saved, params).slots["row_var"][0].shape == (6, 1)
    saved["slots"]["row_var"][0] = np.zeros((6, 4))
    with pytest.raises(decay.DecayError, match="shape"):
        rule.load_state_dict(saved, params)
    wrong = state._replace(slots={**state.slots, "col_var": (np.zeros((6, 4)),) + state.slots["col_var"][1:]})
    before = {n: v.copy() for n, v in params.items()}
    with pytest.raises(decay.DecayError, match="col_var"):
        rule.step(params, grads_of(params, 0), wrong)
    assert all(np.array_equal(params[n], before[n]) for n in SHAPES)
    # NumPy's blocks cut every slot like its parameter: a rule with slots of their own
    # shapes must say it is not elementwise, or it is not a rule at all.
    with pytest.raises(TypeError, match="elementwise"):
        type("Blocked", (decay.rules.Rule,), {"slot_shapes": lambda self, group, shape: {}})


def test_sharded_parameters_are_refused_before_any_write():
    # A rank holding a shard of a matrix has neither its row nor its column means: under
    # FSDP2 (DTensor parameters) a rule that is not elementwise refuses to step.
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    tensor = pytest.importorskip("torch.distributed.tensor")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        mesh = tensor.init_device_mesh("cpu", (1,))
        p = torch.nn.Parameter(tensor.distribute_tensor(torch.ones(4, 3), mesh, [tensor.Shard(0)]))
        opt = decay.torch.Optimizer([p], decay.adafactor(LR))
        p.grad = tensor.distribute_tensor(torch.ones(4, 3), mesh, [tensor.Shard(0)])
        with pytest.raises(decay.DecayError, match="shard"):
            opt.step()
        assert bool((p.detach().full_tensor() == 1).all()) and not opt.state
    finally:
        dist.destroy_process_group()


def test_command_line_compare_and_convert(capsys):
    from decay.app.cli import main

    assert main(["compare", "--optimizer", "adafactor", "--backends", "numpy", "--steps", "5",
                 "--decay-mode", "decoupled", "--quiet"]) == 0
    assert "decay.adafactor" in capsys.readouterr().out
    for source, target, exact in (("torch", "torch", "yes"), ("keras", "keras", "yes"), ("optax", "optax", "yes"),
                                  ("torch", "keras", "no"), ("keras", "optax", "no")):
        assert main(["convert", "--from", source, "--optimizer", "adafactor", "--lr", "0.01", "--weight-decay", "0.1",
                     "--to", target]) == 0
        out = capsys.readouterr().out
        assert f"exact: {exact}" in out, (source, target, out)
