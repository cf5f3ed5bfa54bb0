"""Lion, LAMB and Muon against every framework's own version, float64, every step of 100.

Expected values come from the frameworks' optimizers (Keras 3 on TensorFlow, optax on
JAX with x64, torch.optim), driven side by side with decay on the same problem: each
side holds its own copy of the same initial weights and computes its gradient from them
with the one NumPy function below, every step. Keras casts its Python-float
hyperparameters to float32 (see test_parity_keras.py), so the values here are exact in
float32 (powers of two, 0.875, 63/64).

Where two frameworks' versions differ, a test measures by how much after 100 steps on
this problem and checks the figure the README's conventions table states.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import decay  # noqa: E402
import parity_runs  # noqa: E402
from decay.tolerances import assert_close  # noqa: E402
from parity_runs import assert_same_run, gap  # noqa: E402

STEPS = 100
RNG = np.random.default_rng(16)
# Two matrices (one tall, one wide: Muon transposes the tall one) and a vector.
SHAPES = {"w": (6, 4), "v": (3, 5), "b": (4,)}
INIT = {n: RNG.normal(size=s) for n, s in SHAPES.items()}
X = {n: RNG.normal(size=(8, s[0])) for n, s in SHAPES.items() if len(s) == 2}
Y = {n: RNG.normal(size=(8, SHAPES[n][1])) for n in X}
TARGET_B, CURV_B = RNG.normal(size=4), 0.5 + RNG.random(4)
NOISE = [{n: 0.1 * RNG.normal(size=s) for n, s in SHAPES.items()} for _ in range(STEPS)]


def grads_of(params: dict, t: int) -> dict:
    """The gradient at step t: least squares for the matrices, a quadratic for the
    vector, plus a fixed noise per step (float64 NumPy, the same for every side)."""
    out = {n: X[n].T @ (X[n] @ params[n] - Y[n]) / 8 for n in X}
    out["b"] = CURV_B * (params["b"] - TARGET_B)
    return {n: out[n] + NOISE[t][n] for n in SHAPES}


# -- the sides -----------------------------------------------------------------------------
def run_decay(rule, backend="numpy", steps=STEPS) -> list:
    """Every step's parameters (NumPy) of ``rule`` on ``backend``."""
    b = decay.get_backend(backend)
    params = {n: b.tensor(v) for n, v in INIT.items()}
    state, out = rule.init(params), []
    for t in range(steps):
        g = grads_of({n: b.to_numpy(p) for n, p in params.items()}, t)
        params, state = rule.step(params, {n: b.tensor(v, variable=False) for n, v in g.items()}, state)
        out.append({n: b.to_numpy(p) for n, p in params.items()})
    return out


def run_decay_torch_optimizer(rule, steps=STEPS) -> list:
    torch = pytest.importorskip("torch")
    params = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in INIT.items()}
    opt = decay.torch.Optimizer(list(params.items()), rule)
    return _run_torch(opt, params, steps)


def _run_torch(opt, params, steps, others=()):
    out = []
    for t in range(steps):
        g = grads_of({n: p.detach().numpy() for n, p in params.items()}, t)
        for n, p in params.items():
            p.grad = p.new_tensor(g[n])
        for o in (opt, *others):
            o.step()
        out.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return out


def run_keras(optimizer, steps=STEPS, dtype="float64") -> list:
    """``optimizer.apply_gradients`` traced once (as ``model.fit`` runs it): eager
    Keras costs ~45 ms a step here, which 100 steps per case cannot afford."""
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    variables = {n: keras.Variable(v.astype(dtype), dtype=dtype, name=n) for n, v in INIT.items()}
    apply = tf.function(lambda *g: optimizer.apply_gradients(zip(g, [variables[n] for n in SHAPES])))
    out = []
    for t in range(steps):
        g = grads_of({n: np.asarray(v, dtype=np.float64) for n, v in variables.items()}, t)
        apply(*[tf.constant(g[n].astype(dtype)) for n in SHAPES])
        out.append({n: np.asarray(v).copy() for n, v in variables.items()})
    return out


def run_decay_keras_optimizer(rule, steps=STEPS) -> list:
    return run_keras(decay.keras.Optimizer(rule), steps)


def run_optax(make, steps=STEPS) -> list:
    return parity_runs.run_optax(make, INIT, grads_of, steps)


# -- Lion ------------------------------------------------------------------------------------
LION = dict(lr=2.0**-7, betas=(0.875, 63 / 64), weight_decay=0.0625)


def _same_keras_config(built, native, keys):
    got, want = built.get_config(), native.get_config()
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


def test_lion_keras_and_conversion():
    keras = pytest.importorskip("keras")
    lr, (b1, b2), wd = LION["lr"], LION["betas"], LION["weight_decay"]
    native = lambda: keras.optimizers.Lion(learning_rate=lr, beta_1=b1, beta_2=b2, weight_decay=wd)  # noqa: E731
    want = run_keras(native())
    assert_same_run(run_decay(decay.lion(**LION)), want, "decay.lion vs keras Lion")
    assert_same_run(run_decay_keras_optimizer(decay.lion(**LION)), want, "decay.keras(lion) vs keras Lion")
    # Conversion both ways: from_native's rule trains Keras's numbers; to_native builds Keras's optimizer.
    assert_same_run(run_decay(decay.from_native(native())), want, "from_native(keras Lion)")
    conversion = decay.to_native(decay.lion(**LION), "keras")
    assert conversion.exact
    _same_keras_config(conversion.build(), native(), ("learning_rate", "beta_1", "beta_2", "weight_decay"))
    torch_side = decay.to_native(decay.lion(**LION), "torch", strict=False)
    assert not torch_side.exact and "no Lion" in torch_side.reason


def test_lion_optax_on_every_backend():
    optax = pytest.importorskip("optax")
    lr, (b1, b2), wd = LION["lr"], LION["betas"], LION["weight_decay"]
    mask = {"w": True, "v": True, "b": False}
    want = run_optax(lambda: optax.lion(lr, b1, b2, weight_decay=wd, mask=mask))
    rule = lambda: decay.lion(**LION, mask=decay.masks.exclude_names("b"))  # noqa: E731
    for backend in decay.available_backends():
        assert_same_run(run_decay(rule(), backend), want, f"decay.lion on {backend} vs optax.lion")
    assert_same_run(run_decay_torch_optimizer(rule()), want, "decay.torch(lion) vs optax.lion")


# -- LAMB ------------------------------------------------------------------------------------
LAMB = dict(lr=2.0**-6, betas=(0.875, 0.9990234375), weight_decay=0.125)  # β2 = 1 − 2⁻¹⁰


def test_lamb_keras():
    keras = pytest.importorskip("keras")
    lr, (b1, b2), wd = LAMB["lr"], LAMB["betas"], LAMB["weight_decay"]
    native = lambda: keras.optimizers.Lamb(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=1e-7, weight_decay=wd)  # noqa: E731,E501
    want = run_keras(native())
    rule = lambda: decay.lamb(**LAMB, convention="keras")  # noqa: E731
    assert_same_run(run_decay(rule(), "tensorflow"), want, "decay.lamb(keras) vs keras Lamb")
    assert_same_run(run_decay_keras_optimizer(rule()), want, "decay.keras(lamb) vs keras Lamb")
    assert_same_run(run_decay(decay.from_native(native())), want, "from_native(keras Lamb)")
    _same_keras_config(decay.to_native(rule(), "keras").build(), native(),
                       ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay"))
    with pytest.raises(decay.DecayError, match="inside the ratio"):
        decay.to_native(decay.lamb(**LAMB), "keras")  # optax's placement: no Keras equivalent


def test_lamb_optax_and_the_keras_gap():
    optax = pytest.importorskip("optax")
    lr, (b1, b2), wd = LAMB["lr"], LAMB["betas"], LAMB["weight_decay"]
    mask = {"w": True, "v": True, "b": False}
    want = run_optax(lambda: optax.lamb(lr, b1, b2, eps=1e-6, weight_decay=wd, mask=mask))
    rule = lambda **kw: decay.lamb(**LAMB, mask=decay.masks.exclude_names("b"), **kw)  # noqa: E731
    optax_like = run_decay(rule())
    assert_same_run(optax_like, want, "decay.lamb(optax) on numpy vs optax.lamb")
    assert_same_run(run_decay(rule(), "torch"), want, "decay.lamb(optax) on torch vs optax.lamb")
    assert_same_run(run_decay(rule(), "tensorflow"), want, "decay.lamb(optax) on tensorflow vs optax.lamb")
    assert_same_run(run_decay_torch_optimizer(rule()), want, "decay.torch(lamb) vs optax.lamb")
    # Where the decay enters, alone (same ε): the README's conventions table states it.
    outside = run_decay(rule(decay_in_trust_ratio=False))
    assert 6e-2 < gap(optax_like, outside) < 1.2e-1, gap(optax_like, outside)  # measured 8.9e-2


# -- Muon -------------------------------------------------------------------------------------
MUON = dict(lr=2.0**-6, momentum=0.875, weight_decay=0.0625)
MATRICES, OTHERS = ("w", "v"), ("b",)


def run_decay_pair(muon, others, backend="numpy", steps=STEPS, dtype="float64") -> list:
    """Muon on the matrices and a second rule on the rest, side by side (the frameworks'
    split); every step's parameters."""
    b = decay.get_backend(backend)
    params = {n: b.tensor(v.astype(dtype)) for n, v in INIT.items()}
    mat, rest = decay.rules.Muon.split(params)
    assert set(mat) == set(MATRICES) and set(rest) == set(OTHERS)
    s_mat, s_rest, out = muon.init(mat), others.init(rest), []
    for t in range(steps):
        g = grads_of({n: b.to_numpy(p).astype(np.float64) for n, p in params.items()}, t)
        g = {n: b.tensor(v.astype(dtype), variable=False) for n, v in g.items()}
        mat, s_mat = muon.step(mat, {n: g[n] for n in mat}, s_mat)
        rest, s_rest = others.step(rest, {n: g[n] for n in rest}, s_rest)
        params = {**mat, **rest}
        out.append({n: b.to_numpy(p) for n, p in params.items()})
    return out


def _torch_muon_pair(bfloat16_ns: bool, dtype="float64"):
    torch = pytest.importorskip("torch")
    import torch.optim._muon as torch_muon

    params = {n: torch.nn.Parameter(torch.tensor(v.astype(dtype))) for n, v in INIT.items()}
    muon = torch.optim.Muon([params[n] for n in MATRICES], **MUON)
    adamw = torch.optim.AdamW([params[n] for n in OTHERS], lr=MUON["lr"], weight_decay=0.125)
    if bfloat16_ns:
        return _run_torch(muon, params, STEPS, others=(adamw,))
    # torch.optim.Muon casts its Newton–Schulz input to bfloat16 (a fixed
    # `grad.bfloat16()`): to compare the algorithm in float64, that one cast alone is
    # made to keep the dtype, for the duration of this run.
    real, cast = torch_muon._zeropower_via_newtonschulz, torch.Tensor.bfloat16

    def same_dtype_ns(grad, *args):
        torch.Tensor.bfloat16 = torch.Tensor.clone
        try:
            return real(grad, *args)
        finally:
            torch.Tensor.bfloat16 = cast

    torch_muon._zeropower_via_newtonschulz = same_dtype_ns
    try:
        return _run_torch(muon, params, STEPS, others=(adamw,))
    finally:
        torch_muon._zeropower_via_newtonschulz = real


def test_muon_torch_in_bfloat16_is_torchs():
    # ns_dtype="bfloat16" casts where torch.optim.Muon does (its `grad.bfloat16()`),
    # normalizes and iterates in bfloat16 with torch.addmm's fused products, and adds the
    # bfloat16 update to the parameters; the buffer is torch's lerp. The one difference
    # left is lr·(scale·X) against torch's (lr·scale)·X: bit-identical on the wide
    # matrix (scale 1), one float32 rounding per step on the tall one (scale √1.5).
    torch = pytest.importorskip("torch")
    rule = decay.muon(**MUON, convention="torch", ns_dtype="bfloat16")
    native = torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)], **MUON)
    assert decay.from_native(native).get_config() == rule.get_config()
    conversion = decay.to_native(rule, "torch", strict=False)
    assert conversion.exact, conversion.reason
    assert conversion.build([torch.zeros(2, 2, requires_grad=True)]).defaults == native.defaults
    others = rule.adamw_for_others(weight_decay=0.125)
    ours = run_decay_pair(rule, others, "torch")
    assert_same_run(ours, _torch_muon_pair(bfloat16_ns=True), "decay.muon(ns_dtype=bfloat16) vs torch Muon")
    ours, want = run_decay_pair(rule, others, "torch", dtype="float32"), _torch_muon_pair(True, "float32")
    for i, (a, b) in enumerate(zip(ours, want), start=1):  # measured ≤ 1.5e-8 per entry
        np.testing.assert_array_equal(a["v"], b["v"], err_msg=f"wide matrix, step {i}")
        for n in SHAPES:
            assert_close(a[n], b[n], "float32", steps=i, what=f"decay.muon(ns_dtype=bfloat16) float32: step {i} {n}")


def test_muon_torch_and_its_bfloat16_gap():
    rule = decay.muon(**MUON, convention="torch")  # ns_dtype=None: the parameters' dtype
    pytest.importorskip("torch")
    conversion = decay.to_native(rule, "torch", strict=False)
    assert not conversion.exact and "bfloat16" in conversion.reason
    others = rule.adamw_for_others(weight_decay=0.125)
    ours = run_decay_pair(rule, others, "torch")
    assert_same_run(ours, _torch_muon_pair(bfloat16_ns=False), "decay.muon(torch) vs torch Muon + AdamW")
    # docs/conventions.md states this: torch's bfloat16 orthogonalization.
    assert 5e-4 < gap(ours, _torch_muon_pair(bfloat16_ns=True)) < 5e-3  # measured 1.5e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_muon_keras(dtype):
    # Keras 3.15's Muon fails on float64 weights with its default rms_rate (its
    # lr_adjust multiplies by a float32 √max(A, B)): float64 without the adjustment,
    # float32 with it.
    keras = pytest.importorskip("keras")
    lr, mu, wd = MUON["lr"], MUON["momentum"], MUON["weight_decay"]
    rms = None if dtype == "float64" else 0.2
    native = lambda: keras.optimizers.Muon(learning_rate=lr, momentum=mu, weight_decay=wd,  # noqa: E731
                                           adam_weight_decay=0.125, adam_beta_1=0.875,
                                           adam_beta_2=LAMB["betas"][1], rms_rate=rms)
    want = run_keras(native(), dtype=dtype)
    rule = decay.muon(**MUON, convention="keras", adjust_lr="none" if rms is None else "match_rms_adamw")
    assert decay.from_native(native()).get_config() == rule.get_config()
    _same_keras_config(decay.to_native(rule, "keras").build(), native(),
                       ("learning_rate", "momentum", "weight_decay", "nesterov", "ns_steps", "rms_rate"))
    others = rule.adamw_for_others(betas=(0.875, LAMB["betas"][1]), weight_decay=0.125)
    ours = run_decay_pair(rule, others, "tensorflow", dtype=dtype)
    for i, (a, b) in enumerate(zip(ours, want), start=1):
        for n in SHAPES:
            assert_close(a[n], b[n], dtype, steps=i, what=f"decay.muon(keras) vs keras Muon: step {i} {n}")


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_optax(nesterov):
    optax = pytest.importorskip("optax")
    lr, mu, wd = MUON["lr"], MUON["momentum"], MUON["weight_decay"]
    want = run_optax(lambda: optax.contrib.muon(lr, beta=mu, weight_decay=wd, adam_weight_decay=0.125,
                                                nesterov=nesterov))
    rule = decay.muon(**MUON, nesterov=nesterov, convention="optax")
    ours = run_decay_pair(rule, rule.adamw_for_others(weight_decay=0.125))
    if nesterov:  # optax gives the others a Nesterov AdamW (NAdamW): the matrices only
        want = [{n: w[n] for n in MATRICES} for w in want]
        ours = [{n: o[n] for n in MATRICES} for o in ours]
        for got, expected in zip(ours, want):
            got.update({n: 0.0 for n in OTHERS})
            expected.update({n: 0.0 for n in OTHERS})
    assert_same_run(ours, want, f"decay.muon(optax, nesterov={nesterov}) vs optax.contrib.muon")


def test_muon_versions_differ_by():
    # Each convention equals its framework (above); here, how far apart the three are
    # after 100 steps on this problem (the README's conventions table states it).
    def run(convention, **kw):
        return run_decay_pair(decay.muon(**MUON, convention=convention, **kw), decay.adamw(MUON["lr"], weight_decay=0.125))

    torch_, keras_, optax_ = run("torch"), run("keras"), run("optax")
    assert 0.5 < gap(torch_, keras_) < 0.9  # measured 0.67: the scale √max(1, A/B) vs 0.2·√max(A, B)
    assert 0.1 < gap(torch_, optax_) < 0.3  # measured 0.21: √max(1, A/B) vs √max(1, B/A)
    # With one scale, what remains: the summed buffer and ‖X‖ + ε (Keras) is torch's
    # to 5e-9; optax's bias correction of the Nesterov mix moves it by 7.7e-5.
    torch_, keras_, optax_ = (run(c, adjust_lr="match_rms_adamw") for c in ("torch", "keras", "optax"))
    assert gap(torch_, keras_) < 1e-7
    assert 2e-5 < gap(torch_, optax_) < 3e-4


def test_muon_refuses_non_matrices_before_any_write():
    torch = pytest.importorskip("torch")
    with pytest.raises(decay.DecayError, match="2-D parameters only"):
        decay.muon().init({"w": np.ones((3, 4)), "b": np.ones(4)})
    # Through decay.torch with a mask (two parts): the matrix is not written either.
    w, b = torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.ones(4))
    rule = decay.muon(0.1, weight_decay=0.1, mask=decay.masks.exclude_names("b"))
    opt = decay.torch.Optimizer([("w", w), ("b", b)], rule)
    w.grad, b.grad = torch.ones(3, 4), torch.ones(4)
    with pytest.raises(decay.DecayError, match="shapes \\[\\(4,\\)\\]"):
        opt.step()
    assert bool((w == 1).all()) and bool((b == 1).all())


def test_command_line_compare_and_convert(capsys):
    from decay.app.cli import main

    for name in ("lion", "lamb", "muon"):
        # the backends' agreement is the parity tests' business: here, that the command runs
        assert main(["compare", "--optimizer", name, "--backends", "numpy", "--steps", "5",
                     "--decay-mode", "decoupled", "--quiet"]) == 0
        assert f"decay.{name}" in capsys.readouterr().out
    assert main(["convert", "--from", "keras", "--optimizer", "lamb", "--lr", "0.01", "--weight-decay", "0.1",
                 "--to", "keras"]) == 0
    assert "exact: yes" in capsys.readouterr().out
    assert main(["convert", "--from", "decay", "--optimizer", "lamb", "--lr", "0.01", "--weight-decay", "0.1",
                 "--to", "keras"]) == 0
    assert "exact: no" in capsys.readouterr().out


def test_muon_ns_dtype_is_checked(monkeypatch):
    import sys

    with pytest.raises(decay.DecayError, match="ns_dtype.*'bf16'"):
        decay.muon(ns_dtype="bf16")
    # NumPy without ml_dtypes has no bfloat16: refused before anything is written.
    rule = decay.muon(**MUON, ns_dtype="bfloat16")
    params = {n: INIT[n].astype(np.float32) for n in MATRICES}
    state = rule.init(params)
    before = {n: p.copy() for n, p in params.items()}
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(decay.DecayError, match="ml_dtypes"):
        rule.step(params, {n: np.ones_like(p) for n, p in params.items()}, state)
    assert all(np.array_equal(params[n], before[n]) for n in params)
