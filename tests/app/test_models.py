"""decay.app.models (decay.models): NumPy models with hand-written gradients, and what decay does to them.

Expected values come from outside the code under test:

- losses from PyTorch's own loss modules (``nn.MSELoss``, ``nn.BCEWithLogitsLoss``,
  ``nn.CrossEntropyLoss``) and gradients from torch autograd, on the same network
  built from ``nn.Linear`` (weight = kernel.T) in float64;
- central finite differences of the model's own loss;
- closed forms and scikit-learn for the optimum of the regularized objective.

Float32 is compared with the float64 reference computed from the same float32-rounded
inputs, so only arithmetic round-off is measured. Every gradient entry is a sum of
N = 32 per-sample terms (a matmul over the batch); with random signs the round-off of
such a sum grows like √N ulp (the probabilistic bound, Higham & Mary 2019), so the
bound is ``rtol("float32", ceil(√N)) = 6 · 4 ulp ≈ 2.9e-6``. Measured worst:
0.56 · rtol("float32") ≈ 2.7e-7.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

import decay
import decay.app.models
from decay.app.models import MLP, LinearRegression, LogisticRegression, batches, fit
from decay.tolerances import assert_close

N = 32
FLOAT32_K = math.ceil(math.sqrt(N))

MODELS = {
    "linear-1": LinearRegression(4, 1),
    "linear-3": LinearRegression(4, 3),
    "logistic-binary": LogisticRegression(4, 2),
    "logistic-softmax": LogisticRegression(4, 5),
    "mlp-regression-tanh": MLP(4, (8,), 1, "tanh", "regression"),
    "mlp-regression-relu-2": MLP(4, (8, 6), 2, "relu", "regression"),
    "mlp-binary-relu": MLP(4, (8,), 1, "relu", "binary"),
    "mlp-multilabel-tanh": MLP(4, (8,), 3, "tanh", "binary"),
    "mlp-multiclass-tanh": MLP(4, (8, 6), 5, "tanh", "multiclass"),
    "mlp-multiclass-relu": MLP(4, (7,), 3, "relu", "multiclass"),
}


def problem(model, seed=0, n=N):
    """Params (init with random, nonzero biases so that they enter the test), X and y."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, model.n_features))
    if model.task == "regression":
        y = rng.normal(size=(n, model.n_units))
    elif model.task == "binary":
        y = rng.integers(0, 2, size=(n, model.n_units)).astype(np.float64)
    else:
        y = rng.integers(0, model.n_units, size=n)
    params = model.init_params(seed)
    for name in params:
        if name.endswith("bias"):
            params[name] = 0.3 * rng.normal(size=params[name].shape)
    return params, X, y


def torch_reference(model, params, X, y):
    """Loss, gradients, raw outputs and predictions from PyTorch in float64."""
    layers = []
    for index, name in enumerate(model.layer_names):
        kernel = params[f"{name}/kernel"]
        linear = torch.nn.Linear(*kernel.shape, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(kernel.T, dtype=torch.float64))  # (out, in)
            linear.bias.copy_(torch.tensor(params[f"{name}/bias"], dtype=torch.float64))
        layers.append(linear)
        if index < len(model.layer_names) - 1:
            layers.append(torch.nn.Tanh() if model.activation == "tanh" else torch.nn.ReLU())
    z = torch.nn.Sequential(*layers)(torch.tensor(X, dtype=torch.float64))
    if model.task == "regression":
        loss = torch.nn.MSELoss()(z, torch.tensor(y, dtype=torch.float64))
        pred = z
    elif model.task == "binary":
        loss = torch.nn.BCEWithLogitsLoss()(z, torch.tensor(y, dtype=torch.float64))
        pred = torch.sigmoid(z)
    else:
        loss = torch.nn.CrossEntropyLoss()(z, torch.tensor(y))
        pred = torch.softmax(z, dim=1)
    loss.backward()
    grads = {}
    for name, linear in zip(model.layer_names, layers[::2]):
        grads[f"{name}/kernel"] = linear.weight.grad.numpy().T
        grads[f"{name}/bias"] = linear.bias.grad.numpy()
    return loss.item(), grads, z.detach().numpy(), pred.detach().numpy()


@pytest.mark.skipif(torch is None, reason="torch not installed: the expected losses and gradients come from torch.nn")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("key", list(MODELS))
def test_loss_grads_and_predictions_match_torch(key, dtype):
    model = MODELS[key]
    params, X, y = problem(model)
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = X.astype(dtype)
    ref_loss, ref_grads, ref_z, ref_pred = torch_reference(model, params, X, y)

    loss, grads = model.loss_and_grads(params, X, y)
    k = 1 if dtype == "float64" else FLOAT32_K
    assert list(grads) == list(params)
    assert_close(loss, ref_loss, dtype, k, what=f"{key} loss vs torch")
    assert_close(model.loss(params, X, y), ref_loss, dtype, k, what=f"{key} loss() vs torch")
    for name in params:
        assert_close(grads[name], ref_grads[name], dtype, k, what=f"{key} grad {name} vs autograd")
    assert_close(model.forward(params, X), ref_z, dtype, k, what=f"{key} forward")
    assert_close(model.predict(params, X), ref_pred, dtype, k, what=f"{key} predict")


@pytest.mark.parametrize("key", list(MODELS))
def test_one_model_definition_on_every_backend(key, backend):
    """The model is written once: on PyTorch and TensorFlow autodiff of that loss gives
    the NumPy backpropagation (itself checked against torch.nn above), and fit trains
    in the params' framework to the same weights."""
    model = MODELS[key]
    params, X, y = problem(model)
    native = {k: backend.tensor(v) for k, v in params.items()}
    loss, grads = model.loss_and_grads(native, X, y)
    ref_loss, ref_grads = model.loss_and_grads(params, X, y)
    assert_close(loss, ref_loss, "float64", what=f"{key} loss on {backend.name}")
    assert_close(model.loss(native, X, y), ref_loss, "float64", what=f"{key} loss() on {backend.name}")
    for name in params:
        assert_close(backend.to_numpy(grads[name]), ref_grads[name], "float64", what=f"{key} grad {name}")
    assert_close(backend.to_numpy(model.predict(native, X)), model.predict(params, X), "float64")

    steps, rule, penalty = 20, decay.sgd(0.1, momentum=0.9), decay.L2(0.01)
    trained, losses = fit(model, native, rule, X, y, steps, batch_size=8, penalty=penalty)
    ref_trained, ref_losses = fit(model, params, rule, X, y, steps, batch_size=8, penalty=penalty)
    assert_close(losses, ref_losses, "float64", steps, what=f"{key} losses on {backend.name}")
    for name in params:
        assert decay.get_backend(trained[name]) is backend
        assert_close(backend.to_numpy(trained[name]), ref_trained[name], "float64", steps, what=name)
        assert np.array_equal(backend.to_numpy(native[name]), params[name])  # the caller's are untouched


@pytest.mark.parametrize("key", list(MODELS))
def test_grads_match_finite_differences(key):
    model = MODELS[key]
    params, X, y = problem(model, seed=1)
    _, grads = model.loss_and_grads(params, X, y)
    rng = np.random.default_rng(2)
    h = 1e-6
    for name, value in params.items():
        for flat_index in rng.choice(value.size, size=min(3, value.size), replace=False):
            index = np.unravel_index(flat_index, value.shape)
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][index] += h
            minus[name][index] -= h
            numeric = (model.loss(plus, X, y) - model.loss(minus, X, y)) / (2 * h)
            # Central differences: O(h²) truncation plus ~ε·|loss|/h round-off ≈ 1e-10.
            assert abs(grads[name][index] - numeric) <= 1e-7 * max(1.0, abs(numeric)), (name, index)


@pytest.mark.parametrize("key", ["linear-3", "logistic-binary", "mlp-multiclass-relu"])
def test_dtype_is_preserved(key):
    model = MODELS[key]
    params64, X, y = problem(model)
    for dtype in ("float32", "float64"):
        params = {k: v.astype(dtype) for k, v in params64.items()}
        loss, grads = model.loss_and_grads(params, X, y)  # X float64: cast to the params' dtype
        assert isinstance(loss, float) and isinstance(model.loss(params, X, y), float)
        assert {g.dtype.name for g in grads.values()} == {dtype}
        assert model.predict(params, X.astype(np.float32)).dtype.name == dtype
        assert model.forward(params, X).dtype.name == dtype
        trained, _ = fit(model, params, decay.sgd(0.1), X, y, steps=3)
        assert {p.dtype.name for p in trained.values()} == {dtype}


def test_parameter_names_shapes_and_init():
    mlp = MLP(5, hidden=(7, 3), n_outputs=2)
    assert mlp.param_shapes() == {
        "dense_0/kernel": (5, 7), "dense_0/bias": (7,),
        "dense_1/kernel": (7, 3), "dense_1/bias": (3,),
        "dense_2/kernel": (3, 2), "dense_2/bias": (2,),
    }
    assert LinearRegression(3, 2).param_shapes() == {"dense/kernel": (3, 2), "dense/bias": (2,)}
    assert LogisticRegression(3).param_shapes() == {"dense/kernel": (3, 1), "dense/bias": (1,)}
    assert LogisticRegression(3, 4).param_shapes() == {"dense/kernel": (3, 4), "dense/bias": (4,)}

    a, b, c = mlp.init_params(7), mlp.init_params(7), mlp.init_params(8)
    a32 = mlp.init_params(7, dtype="float32")
    for name, value in a.items():
        assert np.array_equal(value, b[name])  # same seed, same values
        assert np.array_equal(a32[name], value.astype(np.float32))  # one draw, then cast
        if name.endswith("bias"):
            assert not value.any()
        else:
            fan_in, fan_out = value.shape
            assert np.abs(value).max() <= math.sqrt(6 / (fan_in + fan_out))
            assert not np.array_equal(value, c[name])
    # Glorot uniform: variance 2 / (fan_in + fan_out); 65536 draws, std error ~0.6%.
    big = MLP(256, hidden=(), n_outputs=256).init_params(0)["dense_0/kernel"]
    assert abs(big.var() / (2 / 512) - 1) < 0.03
    assert abs(big.mean()) < 1e-3


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(decay.DecayError, match=match):
        fn(*args, **kwargs)


def test_bad_inputs_name_what_was_expected_and_received():
    model = MLP(3, hidden=(4,), n_outputs=3, task="multiclass")
    params = model.init_params(0)
    X = np.zeros((5, 3))
    y = np.array([0, 1, 2, 0, 1])
    bad = dict(params)
    del bad["dense_1/bias"]
    _raises(r"missing \['dense_1/bias'\]", model.loss, bad, X, y)
    _raises(r"unknown \['extra'\]", model.loss, {**params, "extra": np.zeros(1)}, X, y)
    _raises(r"'dense_0/kernel'.*shape \(3, 4\).*Received shape \(4, 3\)", model.loss,
            {**params, "dense_0/kernel": np.zeros((4, 3))}, X, y)
    _raises("one dtype", model.loss, {**params, "dense_0/bias": np.zeros(4, np.float32)}, X, y)
    _raises("dict name -> array", model.loss, list(params.values()), X, y)
    _raises(r"X must have shape \(n_samples, 3\).*Received shape \(5, 2\)", model.loss, params, X[:, :2], y)
    _raises(r"X\[None, :\]", model.predict, params, np.zeros(3))
    _raises(r"shape \(5,\).*Received shape \(5, 1\)", model.loss, params, X, y[:, None])
    _raises(r"labels in 0..2.*from 0 to 3", model.loss, params, X, np.array([0, 1, 2, 3, 0]))
    _raises("non-integer", model.loss, params, X, y + 0.5)

    reg = LinearRegression(3, 2)
    _raises(r"shape \(5, 2\).*Received shape \(5,\)", reg.loss, reg.init_params(0), X, np.zeros(5))
    binary = LogisticRegression(3)
    _raises(r"\[0, 1\].*from -1", binary.loss, binary.init_params(0), X, np.array([0, 1, -1, 0, 1]))
    _raises("seed", reg.init_params, None)
    _raises("dtype", reg.init_params, 0, "float16")
    _raises("task", MLP, 3, task="ranking")
    _raises("activation", MLP, 3, activation="gelu")
    _raises("n_classes", LogisticRegression, 3, 1)
    _raises("rule", fit, reg, reg.init_params(0), "sgd", X, np.zeros((5, 2)), 1)
    _raises("batch_size", fit, reg, reg.init_params(0), decay.sgd(0.1), X, np.zeros((5, 2)), 1, 0)


def test_fit_batches_are_as_documented():
    model = MLP(3, hidden=(4,), n_outputs=1, task="binary")
    params, X, y = problem(model, n=10)
    y = y[:, 0]
    order = list(batches(10, 4, 7))
    assert [list(b) for b in order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2 + [[0, 1, 2, 3]]
    rng = np.random.default_rng(5)
    p1, p2, p3 = rng.permutation(10), rng.permutation(10), rng.permutation(10)
    expected = [p1[:4], p1[4:8], p1[8:], p2[:4], p2[4:8], p2[8:], p3[:4]]
    assert all(np.array_equal(a, b) for a, b in zip(batches(10, 4, 7, seed=5), expected))
    assert [len(b) for b in batches(10, None, 3)] == [10, 10, 10]

    for seed in (None, 5):
        before = {k: v.copy() for k, v in params.items()}
        rule = decay.sgd(0.3, momentum=0.9)
        trained, losses = fit(model, params, rule, X, y, steps=7, batch_size=4, seed=seed)
        for name in params:  # the caller's arrays are untouched
            assert np.array_equal(params[name], before[name])
        # The same loop by hand: bit-for-bit the same.
        p = {k: v.copy() for k, v in params.items()}
        state = rule.init(p)
        for t, index in enumerate(batches(10, 4, 7, seed)):
            loss, grads = model.loss_and_grads(p, X[index], y[index])
            assert losses[t] == loss
            p, state = rule.step(p, grads, state)
        for name in p:
            assert np.array_equal(trained[name], p[name])


def test_fit_penalty_in_loss_equals_coupled_decay():
    """L2(lam) in the loss gives the gradient 2·lam·θ: PyTorch's weight_decay = 2·lam."""
    model = MLP(4, hidden=(8,), n_outputs=1)
    params, X, y = problem(model)
    lam, steps = 0.05, 50
    in_loss, losses = fit(model, params, decay.sgd(0.1), X, y, steps, batch_size=8, penalty=decay.L2(lam))
    coupled, _ = fit(model, params, decay.sgd(0.1, weight_decay=2 * lam), X, y, steps, batch_size=8)
    for name in params:
        assert_close(in_loss[name], coupled[name], "float64", steps, what=name)
    penalty = lam * sum(float(np.sum(v**2)) for v in params.values())
    assert_close(losses[0], model.loss(params, X[:8], y[:8]) + penalty, "float64")

    # penalty_mask: only the kernels, as a Keras kernel_regularizer.
    masked, losses = fit(model, params, decay.sgd(0.1), X, y, steps, batch_size=8,
                         penalty=decay.L2(lam), penalty_mask=decay.masks.timm_default)
    rule = decay.sgd(0.1, weight_decay=2 * lam, mask=decay.masks.timm_default)
    coupled, _ = fit(model, params, rule, X, y, steps, batch_size=8)
    for name in params:
        assert_close(masked[name], coupled[name], "float64", steps, what=name)
    kernels = lam * sum(float(np.sum(v**2)) for k, v in params.items() if k.endswith("kernel"))
    assert_close(losses[0], model.loss(params, X[:8], y[:8]) + kernels, "float64")


def _ridge_data():
    rng = np.random.default_rng(0)
    n, d, k = 64, 3, 2
    X = rng.normal(size=(n, d)) + 0.5
    Y = X @ rng.normal(size=(d, k)) + 1.5 + 0.3 * rng.normal(size=(n, k))
    return X, Y


def test_ridge_closed_form():
    """Full-batch SGD with coupled decay λ on L = mean((XW + b − Y)²) (n samples, k
    outputs) stops where ∇L + λ·θ = 0 on the decayed θ, i.e. it minimizes
    L + (λ/2)·‖θ‖², i.e. (times n·k) ‖XW + b − Y‖² + (λ·n·k/2)·‖θ‖².

    - bias not decayed (mask=timm_default): ridge with an unpenalized intercept,
      sklearn ``Ridge(alpha=λ·n·k/2, fit_intercept=True)``;
    - bias decayed too (no mask): ridge on [X, 1] with the intercept penalized,
      (X̃ᵀX̃ + (λ·n·k/2)·I) θ = X̃ᵀY, also ``Ridge(alpha, fit_intercept=False)`` on [X, 1].

    The iteration contracts by at least 1 − lr·μ ≈ 0.8 per step: 500 steps reach
    round-off. Measured: ≤ 1.5e-15."""
    X, Y = _ridge_data()
    (n, d), k = X.shape, Y.shape[1]
    lam = 0.1
    alpha = lam * n * k / 2
    model = LinearRegression(d, k)
    params = model.init_params(0)
    Xa = np.hstack([X, np.ones((n, 1))])

    rule = decay.sgd(0.2, weight_decay=lam)
    trained, _ = fit(model, params, rule, X, Y, steps=500)
    theta = np.linalg.solve(Xa.T @ Xa + alpha * np.eye(d + 1), Xa.T @ Y)
    assert_close(np.vstack([trained["dense/kernel"], trained["dense/bias"]]), theta, "float64",
                 what="ridge, bias decayed")

    rule = decay.sgd(0.2, weight_decay=lam, mask=decay.masks.timm_default)
    masked, _ = fit(model, params, rule, X, Y, steps=500)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)  # an unpenalized intercept centres the data
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(d), Xc.T @ Yc)
    assert_close(masked["dense/kernel"], W, "float64", what="ridge kernel, bias not decayed")
    assert_close(masked["dense/bias"], Y.mean(0) - X.mean(0) @ W, "float64", what="ridge intercept")

    from sklearn import linear_model
    sk = linear_model.Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit(X, Y)
    assert_close(masked["dense/kernel"], sk.coef_.T, "float64", what="vs sklearn Ridge coef_")
    assert_close(masked["dense/bias"], sk.intercept_, "float64", what="vs sklearn Ridge intercept_")
    sk = linear_model.Ridge(alpha=alpha, fit_intercept=False, solver="cholesky").fit(Xa, Y)
    assert_close(np.vstack([trained["dense/kernel"], trained["dense/bias"]]), sk.coef_.T, "float64",
                 what="vs sklearn Ridge on [X, 1]")


@pytest.mark.parametrize("n_classes", [2, 4])
def test_l2_logistic_regression_matches_sklearn(n_classes):
    """L2(lam) on the kernel only (penalty_mask=timm_default), mean cross-entropy:
    F = (1/n)·Σ CE + lam·‖W‖²; times n/(2·lam): (1/(2·lam·n))·Σ CE + ½‖W‖², which is
    sklearn's objective C·Σ CE + ½‖W‖² (intercept unpenalized) with C = 1/(2·lam·n).
    For n_classes > 2 both are the multinomial (softmax) loss; the intercepts are then
    unique only up to a common shift, so probabilities are compared instead.

    ``newton-cholesky`` solves to round-off; the default lbfgs stops at its gradient
    tolerance (~1e-8 here). Measured: ≤ 3e-14 (binary kernel), ≤ 1e-14 elsewhere."""
    from sklearn import linear_model
    rng = np.random.default_rng(3)
    n, lam = 90, 0.01
    X = rng.normal(size=(n, 3))
    if n_classes == 2:
        y = (X @ [1.0, -1.0, 0.5] + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
    else:
        y = np.argmax(X @ rng.normal(size=(3, n_classes)) + 0.5 * rng.normal(size=(n, n_classes)), 1)
    model = LogisticRegression(3, n_classes)
    trained, losses = fit(model, model.init_params(0), decay.sgd(1.0), X, y, steps=2000,
                          penalty=decay.L2(lam), penalty_mask=decay.masks.timm_default)
    sk = linear_model.LogisticRegression(C=1 / (2 * lam * n), solver="newton-cholesky", tol=1e-14,
                                         max_iter=1000).fit(X, y)
    coef = sk.coef_.T  # (n_features, 1) for binary, (n_features, C) for multinomial
    assert_close(trained["dense/kernel"], coef, "float64", what="kernel vs sklearn coef_")
    assert_close(model.predict(trained, X)[:, -1] if n_classes == 2 else model.predict(trained, X),
                 sk.predict_proba(X)[:, 1] if n_classes == 2 else sk.predict_proba(X),
                 "float64", what="probabilities vs sklearn predict_proba")
    if n_classes == 2:
        assert_close(trained["dense/bias"], sk.intercept_, "float64", what="bias vs sklearn intercept_")
    assert losses[-1] <= losses[0]


def _separable(seed, n, margin, angle):
    """Points pushed ``margin`` away from the line through (0.5, 0.5) normal to ``angle``."""
    rng = np.random.default_rng(seed)
    w = np.array([math.cos(angle), math.sin(angle)])
    X = rng.normal(size=(n, 2))
    side = np.where(X @ w >= 0, 1.0, -1.0)
    return X + margin * side[:, None] * w + 0.5, (side > 0).astype(np.float64)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(10, 40),
    margin=st.floats(0.3, 1.0),
    angle=st.floats(0.0, 2 * math.pi),
    lam=st.floats(0.02, 0.2),
)
def test_decay_bounds_logistic_weights_on_separable_data(seed, n, margin, angle, lam):
    """On separable data the unregularized logistic loss has no minimum: gradient descent
    drives ‖θ‖ up without end (like log t). With L2(lam) in the loss and lr ≤ 1/L the
    objective F = loss + lam·‖θ‖² never increases, so lam·‖θ_t‖² ≤ F(θ_t) ≤ F(θ₀) for
    every t: ‖θ‖ ≤ √(F(θ₀)/lam), and it converges."""
    X, y = _separable(seed, n, margin, angle)
    model = LogisticRegression(2)
    params = model.init_params(seed)
    Xa = np.hstack([X, np.ones((n, 1))])
    smooth = 0.25 * np.linalg.eigvalsh(Xa.T @ Xa / n).max()  # L of the mean BCE

    def norm(p):
        return math.sqrt(sum(float(np.sum(v**2)) for v in p.values()))

    free, norms = params, []
    for _ in range(4):
        free, _ = fit(model, free, decay.sgd(1 / smooth), X, y, steps=250)
        norms.append(norm(free))

    decayed, all_losses, decayed_norms = params, [], []
    for _ in range(4):
        decayed, losses = fit(model, decayed, decay.sgd(1 / (smooth + 2 * lam)), X, y, steps=250,
                              penalty=decay.L2(lam))
        all_losses.append(losses)
        decayed_norms.append(norm(decayed))
    losses = np.concatenate(all_losses)
    bound = math.sqrt(losses[0] / lam)

    assert all(b > a for a, b in zip(norms, norms[1:])), norms  # keeps growing
    assert np.all(np.diff(losses) <= 1e-12), "F increased"
    assert max(decayed_norms) <= bound
    assert abs(decayed_norms[-1] - decayed_norms[-2]) <= 1e-6 * decayed_norms[-1]  # converged
    assert norms[-1] > decayed_norms[-1]


def test_docstring_examples():
    result = doctest.testmod(decay.app.models, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
