"""float16 and bfloat16 parameters: the update is computed in float32 and rounded once,
the state is kept in float32, and the run tracks a float32 run of the same rule.

The float32 run starts from the same (rounded) values; the low-precision run then
rounds its parameters once per step, so it stays within the dtype's tolerance per
step (decay.tolerances: 2 ulp per step)."""

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close, relative_error, rtol

from conftest import backend_or_skip

STEPS = 20
RULES = {
    "momentum": lambda: decay.sgd(0.05, momentum=0.9, weight_decay=0.01),
    "adamw": lambda: decay.adamw(0.01, weight_decay=0.1),
    "adam-amsgrad": lambda: decay.adam(0.01, amsgrad=True, regularizer=decay.L2(0.01)),
    # A slot that starts at 0.1 (kept in float32) and a step that switches form at step 6.
    "adagrad": lambda: decay.adagrad(0.05, initial_accumulator_value=0.1, weight_decay=0.01),
    "radam": lambda: decay.radam(0.01, weight_decay=0.1, decoupled=True),
}
CASES = [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16"),
         ("tensorflow", "float16"), ("tensorflow", "bfloat16")]
RNG = np.random.default_rng(5)
THETA = RNG.normal(size=(6, 5))
A = RNG.normal(size=(5, 5))
A = A @ A.T / 5 + np.eye(5)


def make(backend, array, dtype, variable=True):
    if backend == "numpy":
        return np.asarray(array, dtype=dtype)
    if backend == "torch":
        import torch

        return torch.tensor(np.asarray(array, dtype=np.float32)).to(getattr(torch, dtype))
    import tensorflow as tf

    t = tf.cast(tf.constant(np.asarray(array, dtype=np.float32)), dtype)
    return tf.Variable(t) if variable else t


def run(backend_name, dtype, rule):
    backend = decay.get_backend(backend_name)
    theta = make(backend_name, THETA, dtype)
    state = rule.init(theta)
    for _ in range(STEPS):
        current = backend.to_numpy(theta).astype(np.float64)
        grad = make(backend_name, current @ A - 0.1, dtype, variable=False)
        theta, state = rule.step(theta, grad, state)
    return backend, theta, state


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("backend_name, dtype", CASES)
def test_low_precision_tracks_float32(backend_name, dtype, rule_name):
    backend = backend_or_skip(backend_name)  # a required backend that is missing fails here
    low_backend, low, low_state = run(backend_name, dtype, RULES[rule_name]())
    assert low_backend.dtype_name(low) == dtype
    for per_leaf in low_state.slots.values():
        assert all(backend.dtype_name(x) == "float32" for x in per_leaf)
    # float32 reference from the same rounded start
    start = backend.to_numpy(make(backend_name, THETA, dtype)).astype(np.float32)
    rule = RULES[rule_name]()
    theta, state = np.array(start), None
    state = rule.init(theta)
    for _ in range(STEPS):
        low_grad_input = theta.astype(np.float64)
        theta, state = rule.step(theta, (low_grad_input @ A - 0.1).astype(np.float32), state)
    actual = backend.to_numpy(low).astype(np.float64)
    assert_close(actual, theta, dtype, steps=STEPS, what=f"{backend_name} {dtype} vs float32")
    # and rounding once per step is what keeps it there: far inside the bound
    assert relative_error(actual, theta) < rtol(dtype, STEPS) / 4
