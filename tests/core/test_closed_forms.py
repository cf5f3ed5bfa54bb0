"""Closed forms every backend must reproduce, in every place decay can live.

The article's worked example: x₀ = [1, 2, 3], loss Σx², L2 penalty λ = 0.1 (λΣx²),
lr = 0.01. Each step multiplies x by 1 − lr·(2 + 2λ) = 0.978, so after 100 steps
x = x₀ · 0.978¹⁰⁰.
"""

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

X0 = np.array([1.0, 2.0, 3.0])
LAM, LR, STEPS = 0.1, 0.01, 100
PLACEMENTS = ["loss", "coupled", "regularizer", "decoupled"]


def article_grad(native, x, placement):
    """The gradient the training loop hands to the rule, by the framework's own means."""
    name = native.name
    penalty = decay.L2(LAM) if placement == "loss" else None
    if name == "torch":
        leaf = x.detach().clone().requires_grad_(True)
        loss = (leaf**2).sum()
        if penalty:
            loss = decay.regularized_loss(loss, leaf, penalty)
        loss.backward()
        return leaf.grad
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(x**2)
            if penalty:
                loss = decay.regularized_loss(loss, x, penalty)
        return tape.gradient(loss, x)
    grad = 2 * x  # NumPy has no autodiff: d(Σx²)/dx written by hand
    return grad + penalty.grad(x) if penalty else grad


def article_rule(placement):
    return {
        "loss": decay.sgd(LR),
        "coupled": decay.sgd(LR, weight_decay=2 * LAM),  # PyTorch's λθ: λ = 2·lam
        "regularizer": decay.sgd(LR, regularizer=decay.L2(LAM)),  # the article's 2λw per batch
        "decoupled": decay.sgd(LR, weight_decay=2 * LAM, decoupled=True),
    }[placement]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_article_worked_example(native, dtype, placement):
    x = native.param(X0, dtype)
    rule = article_rule(placement)
    state = rule.init(x)
    for _ in range(STEPS):
        x, state = rule.step(x, article_grad(native, x, placement), state)
    expected = X0 * (1 - LR * (2 + 2 * LAM)) ** STEPS
    assert_close(native.numpy(x), expected, dtype, steps=STEPS)
    assert state.count == STEPS


def test_the_articles_own_snippet_is_wrong():
    # Its gradient `2*x*2*lambda_ + 2*learning_rate*x` is not d/dx (Σx² + λΣx²).
    x = X0.copy()
    for _ in range(STEPS):
        x = x - LR * (2 * x * 2 * LAM + 2 * LR * x)
    right = X0 * (1 - LR * (2 + 2 * LAM)) ** STEPS
    assert np.max(np.abs(x - right)) > 0.5


def ridge_data_grad(native, X, w, y, n):
    """Xᵀ(Xw − y)/n natively: TensorFlow has no ``@`` between a matrix and a vector."""
    if native.name == "tensorflow":
        import tensorflow as tf

        residual = tf.linalg.matvec(X, w) - y
        return tf.linalg.matvec(X, residual, transpose_a=True) / n
    return X.T @ (X @ w - y) / n


def test_ridge_regression_converges_to_closed_form(native, dtype):
    rng = np.random.default_rng(1)
    n, d, lam = 64, 5, 0.3
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    ridge = np.linalg.solve(X.T @ X / n + lam * np.eye(d), X.T @ y / n)
    Xb, yb = native.grad(X, dtype), native.grad(y, dtype)
    w = native.param(np.zeros(d), dtype)
    rule = decay.sgd(0.2, momentum=0.5, weight_decay=lam)  # loss ½‖Xw−y‖²/n + ½λ‖w‖²
    state = rule.init(w)
    for _ in range(400):
        grad = ridge_data_grad(native, Xb, native.backend.read(w), yb, n)
        w, state = rule.step(w, grad, state)
    # Converged: the remaining error is round-off of the normal equations, not steps.
    assert_close(native.numpy(w), ridge, dtype, steps=d * 20)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: decay.sgd(0.05, momentum=0.9, **kw),
        lambda **kw: decay.sgd(0.05, momentum=0.9, nesterov=True, **kw),
        lambda **kw: decay.adam(0.05, **kw),
    ],
    ids=["momentum", "nesterov", "adam"],
)
def test_coupled_two_lambda_equals_penalty_in_loss(native, make):
    # Coupled weight_decay=2λ and L2(λ) in the loss give the same gradient, so the same
    # trajectory — through momentum and Adam too.
    lam = 0.05
    a = native.param(X0, "float64")
    b = native.param(X0, "float64")
    in_loss, coupled = make(), make(weight_decay=2 * lam)
    sa, sb = in_loss.init(a), coupled.init(b)
    for _ in range(STEPS):
        ga = 2 * native.backend.read(a) + decay.L2(lam).grad(a)
        a, sa = in_loss.step(a, ga, sa)
        b, sb = coupled.step(b, 2 * native.backend.read(b), sb)
        assert_close(native.numpy(b), native.numpy(a), "float64", steps=STEPS)
