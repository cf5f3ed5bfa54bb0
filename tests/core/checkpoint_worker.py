"""Run k steps of every rule on one backend, optionally resuming from checkpoints.

Imported by tests/core/test_checkpoint.py and also run as a separate process by it
(``python tests/core/checkpoint_worker.py BACKEND DIR START STEPS``), so that resuming
happens in a fresh interpreter, as it would after a crash.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo

import decay  # noqa: E402

RULES = {
    "sgd": lambda: decay.sgd(decay.schedules.cosine(0.1, 50), weight_decay=0.01),
    "momentum": lambda: decay.sgd(0.05, momentum=0.9, dampening=0.1, regularizer=decay.L1(0.01)),
    "nesterov": lambda: decay.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: decay.adam(0.01, weight_decay=0.01, amsgrad=True),
    "adamw": lambda: decay.adamw(decay.schedules.warmup(0.01, 5), weight_decay=0.1),
    "adamw-keras": lambda: decay.adamw(0.01, eps=1e-7, epsilon_hat=True, decay_scaled_by="schedule_multiplier"),
}
RNG = np.random.default_rng(7)
A = RNG.normal(size=(3, 3))
A = A @ A.T / 3 + np.eye(3)
B = RNG.normal(size=3)
THETA0 = {"w": RNG.normal(size=(3, 3)), "b": RNG.normal(size=3)}


def tensor(backend, array):
    if backend == "torch":
        import torch

        return torch.tensor(array)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.Variable(array)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    return np.array(array)


def grads(backend_obj, params, backend):
    w = backend_obj.to_numpy(params["w"])
    b = backend_obj.to_numpy(params["b"])
    return {"w": tensor(backend, w @ A - 0.1), "b": tensor(backend, A @ b - B)}


def run(backend, folder, start, steps):
    backend_obj = decay.get_backend(backend)
    results = {}
    for name, make in RULES.items():
        rule = make()
        if start == 0:
            params = {k: tensor(backend, v) for k, v in THETA0.items()}
            state = rule.init(params)
        else:
            with np.load(os.path.join(folder, f"{name}-params.npz")) as saved:
                params = {k: tensor(backend, saved[k]) for k in ("w", "b")}
            state = decay.checkpoint.load(os.path.join(folder, f"{name}-state.npz"), rule, params)
        for _ in range(steps):
            params, state = rule.step(params, grads(backend_obj, params, backend), state)
        np.savez(os.path.join(folder, f"{name}-params.npz"), **{k: backend_obj.to_numpy(v) for k, v in params.items()})
        decay.checkpoint.save(os.path.join(folder, f"{name}-state.npz"), rule, state)
        results[name] = {k: backend_obj.to_numpy(v) for k, v in params.items()}
    return results


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
