"""The headline test: one MLP, the same initial weights and the same batches, trained
200 steps in a plain PyTorch loop with decay.torch.Optimizer, in Keras ``fit`` with
decay.keras.Optimizer, and in NumPy with hand-written gradients — with weight decay in
each of its three places. Per-step losses and final weights agree to 1e-9 relative in
float64 and 1e-4 in float32.

Each framework computes its own forward pass, loss and gradients (autograd,
GradientTape, NumPy backprop); only the update rule and the penalty come from decay.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="tensorflow not installed: this test trains in PyTorch, Keras and NumPy")
keras = pytest.importorskip("keras", reason="keras not installed: this test trains in PyTorch, Keras and NumPy")
torch = pytest.importorskip("torch", reason="torch not installed: this test trains in PyTorch, Keras and NumPy")

import decay
from conftest import keras_floatx
from decay.app.models import MLP, fit
from decay.tolerances import relative_error

N, FEATURES, HIDDEN, BATCH, STEPS = 64, 5, 8, 16, 200
LR, LAMBDA = 0.05, 0.02
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
PLACEMENTS = ["loss", "coupled", "decoupled"]


def problem():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, FEATURES))
    y = np.tanh(X @ rng.normal(size=FEATURES))[:, None] + 0.1 * rng.normal(size=(N, 1))
    return X, y


def rule_and_penalty(placement):
    """λ in PyTorch's convention everywhere: in the loss that is L2(λ/2)."""
    if placement == "loss":
        return decay.sgd(LR, momentum=0.9), decay.L2(LAMBDA / 2)
    return decay.sgd(LR, momentum=0.9, weight_decay=LAMBDA, decoupled=placement == "decoupled"), None


def run_numpy(params0, X, y, placement, dtype):
    model = MLP(FEATURES, hidden=(HIDDEN,), n_outputs=1, activation="tanh")
    rule, penalty = rule_and_penalty(placement)
    params, losses = fit(model, params0, rule, X.astype(dtype), y.astype(dtype), STEPS, batch_size=BATCH,
                         penalty=penalty)
    return np.asarray(losses), params


def run_torch(params0, X, y, placement, dtype):
    tdtype = getattr(torch, dtype)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1)).to(tdtype)
    with torch.no_grad():
        for layer, name in ((net[0], "dense_0"), (net[2], "dense_1")):
            layer.weight.copy_(torch.tensor(params0[f"{name}/kernel"].T))  # Keras kernel = weight.T
            layer.bias.copy_(torch.tensor(params0[f"{name}/bias"]))
    rule, penalty = rule_and_penalty(placement)
    optimizer = decay.torch.Optimizer(net.named_parameters(), rule)
    Xt, yt = torch.tensor(X, dtype=tdtype), torch.tensor(y, dtype=tdtype)
    losses = []
    for step in range(STEPS):
        rows = slice((step * BATCH) % N, (step * BATCH) % N + BATCH)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(Xt[rows]), yt[rows])
        if penalty is not None:
            loss = decay.regularized_loss(loss, dict(net.named_parameters()), penalty)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = {}
    for layer, name in ((net[0], "dense_0"), (net[2], "dense_1")):
        params[f"{name}/kernel"] = layer.weight.detach().numpy().T
        params[f"{name}/bias"] = layer.bias.detach().numpy()
    return np.asarray(losses), params


class BatchLosses(keras.callbacks.Callback):
    """Keras logs the epoch's running mean of the loss after each batch; the k-th
    batch's own loss is k·mean_k − (k − 1)·mean_(k−1)."""

    def __init__(self):
        super().__init__()
        self.losses, self._previous = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._previous)
        self._previous = mean


def run_keras(params0, X, y, placement, dtype):
    with keras_floatx(dtype):
        return _run_keras(params0, X, y, placement, dtype)


def _run_keras(params0, X, y, placement, dtype):
    rule, penalty = rule_and_penalty(placement)
    regularizer = decay.keras.Regularizer(penalty) if penalty is not None else None
    # dtype given explicitly: Keras caches its global dtype policy on first use, so
    # set_floatx alone does not change the dtype of layers built later.
    model = keras.Sequential([
        keras.Input((FEATURES,), dtype=dtype),
        keras.layers.Dense(HIDDEN, activation="tanh", name="dense_0", dtype=dtype,
                           kernel_regularizer=regularizer, bias_regularizer=regularizer),
        keras.layers.Dense(1, name="dense_1", dtype=dtype, kernel_regularizer=regularizer,
                           bias_regularizer=regularizer),
    ])
    for name in ("dense_0", "dense_1"):
        model.get_layer(name).set_weights([params0[f"{name}/kernel"], params0[f"{name}/bias"]])
    model.compile(optimizer=decay.keras.Optimizer(rule), loss="mse")
    record = BatchLosses()
    model.fit(X.astype(dtype), y.astype(dtype), batch_size=BATCH, epochs=STEPS * BATCH // N, shuffle=False,
              verbose=0, callbacks=[record])
    assert all(w.dtype == dtype for w in model.weights)
    params = {}
    for name in ("dense_0", "dense_1"):
        kernel, bias = model.get_layer(name).get_weights()
        params[f"{name}/kernel"], params[f"{name}/bias"] = kernel, bias
    return np.asarray(record.losses), params


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_same_training_in_three_frameworks(placement, dtype):
    X, y = problem()
    params0 = MLP(FEATURES, hidden=(HIDDEN,), n_outputs=1, activation="tanh").init_params(0, dtype)
    results = {
        "numpy": run_numpy(params0, X, y, placement, dtype),
        "torch": run_torch(params0, X, y, placement, dtype),
        "keras": run_keras(params0, X, y, placement, dtype),
    }
    ref_losses, ref_params = results["numpy"]
    assert len(ref_losses) == STEPS
    flat_ref = np.concatenate([ref_params[k].ravel() for k in sorted(ref_params)])
    for name in ("torch", "keras"):
        losses, params = results[name]
        assert len(losses) == STEPS
        loss_error = np.max(np.abs(losses - ref_losses) / np.abs(ref_losses))
        assert loss_error <= TOLERANCE[dtype], f"{name} per-step losses differ by {loss_error:.2e}"
        flat = np.concatenate([params[k].ravel() for k in sorted(ref_params)])
        weight_error = relative_error(flat, flat_ref)
        assert weight_error <= TOLERANCE[dtype], f"{name} final weights differ by {weight_error:.2e}"
    # Decay did something: the three placements are not all the same training.
    assert np.linalg.norm(flat_ref) > 0
