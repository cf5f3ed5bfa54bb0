"""The few framework functions the models need beyond decay's backend primitives and
the operators every framework shares (``@ + - *``): activations, the squares, means
and log-sum-exps of the losses, picking rows and labels, and the gradient.

decay's backends hold what the update rules need and nothing else; a model's forward
pass and loss need these too. With them :mod:`decay.app.models` writes each model
once and runs it on NumPy, PyTorch, TensorFlow and JAX. Each framework's table is built
on first use, so naming one imports nothing else.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import get_backend


def ops_for(tensor_or_name) -> SimpleNamespace:
    """The functions for a backend name or a native tensor's framework; ``.backend`` is
    decay's adapter for it (``decay.get_backend``)."""
    backend = get_backend(tensor_or_name)
    if backend.name not in _BUILT:
        _BUILT[backend.name] = SimpleNamespace(backend=backend, **_TABLES[backend.name]())
    return _BUILT[backend.name]


_BUILT = {}


def _numpy():
    def logsumexp(z):
        m = np.max(z, axis=1, keepdims=True)
        return m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))

    return dict(
        tanh=np.tanh,
        relu=lambda z: np.maximum(z, 0),
        exp=np.exp,
        square=np.square,  # r·r exactly; on TensorFlow its gradient takes fewer ops than r·r's
        mean=np.mean,
        softplus=lambda z: np.logaddexp(0, z),  # log(1 + e^z) without overflow
        logsumexp=logsumexp,  # over each row, kept as a column
        pick=lambda z, labels: z[np.arange(z.shape[0]), labels],  # z[i, labels[i]]
        take=lambda x, rows: x[rows],
        constant=lambda array, like: array,
        trainable=lambda x: x.copy(),  # NumPy has no autodiff: the models backpropagate by hand
        value_and_grad=None,
        compile=None,
    )


def _torch():
    import torch

    def value_and_grad(loss_fn, params):
        # A tensor autograd does not track is differentiated through a tracked alias.
        params = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()}
        loss = loss_fn(params)
        grads = torch.autograd.grad(loss, list(params.values()))
        return loss.detach(), dict(zip(params, grads))

    return dict(
        tanh=torch.tanh,
        relu=torch.relu,
        exp=torch.exp,
        square=torch.square,
        mean=torch.mean,
        # logaddexp, not F.softplus: the latter returns z itself above z = 20.
        softplus=lambda z: torch.logaddexp(z, torch.zeros_like(z)),
        logsumexp=lambda z: torch.logsumexp(z, dim=1, keepdim=True),
        pick=lambda z, labels: z.gather(1, labels[:, None])[:, 0],
        take=lambda x, rows: x[torch.as_tensor(rows, device=x.device)],
        constant=lambda array, like: torch.as_tensor(array, device=like.device),
        trainable=lambda x: x.detach().clone().requires_grad_(True),
        value_and_grad=value_and_grad,
        compile=None,  # eager torch is fast enough on these models
    )


def _tensorflow():
    import tensorflow as tf

    def value_and_grad(loss_fn, params):
        with tf.GradientTape() as tape:
            tape.watch(list(params.values()))  # plain tensors too, not only variables
            loss = loss_fn(params)
        return loss, dict(zip(params, tape.gradient(loss, list(params.values()))))

    return dict(
        tanh=tf.tanh,
        relu=tf.nn.relu,
        exp=tf.exp,
        square=tf.square,
        mean=tf.reduce_mean,
        softplus=tf.math.softplus,
        logsumexp=lambda z: tf.reduce_logsumexp(z, axis=1, keepdims=True),
        pick=lambda z, labels: tf.gather(z, labels, batch_dims=1),
        take=lambda x, rows: tf.gather(x, rows),
        constant=lambda array, like: tf.constant(array),
        trainable=lambda x: tf.Variable(x),
        value_and_grad=value_and_grad,
        compile=lambda fn: tf.function(fn, reduce_retracing=True),  # a graph function of (params, X, y)
    )


def _jax():
    import jax
    import jax.numpy as jnp

    def value_and_grad(loss_fn, params):
        loss, grads = jax.value_and_grad(loss_fn)(dict(params))
        return loss, dict(grads)

    return dict(
        tanh=jnp.tanh,
        relu=jax.nn.relu,
        exp=jnp.exp,
        square=jnp.square,
        mean=jnp.mean,
        softplus=lambda z: jnp.logaddexp(0, z),
        logsumexp=lambda z: jax.nn.logsumexp(z, axis=1, keepdims=True),
        pick=lambda z, labels: jnp.take_along_axis(z, jnp.asarray(labels)[:, None], axis=1)[:, 0],
        take=lambda x, rows: x[jnp.asarray(rows)],
        constant=lambda array, like: jnp.asarray(array),
        trainable=lambda x: jnp.array(x, copy=True),  # immutable: jax.grad differentiates any array
        value_and_grad=value_and_grad,
        # traced once per architecture and batch shape, as for TensorFlow: op by op each
        # step dispatches every operation (~100x NumPy's time on these models)
        compile=jax.jit,
    )


_TABLES = {"numpy": _numpy, "torch": _torch, "tensorflow": _tensorflow, "jax": _jax}
