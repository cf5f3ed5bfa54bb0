"""Training a decay.app model: its mini-batches and the loop (``fit``), on any backend."""

from __future__ import annotations

import numpy as np

from ..errors import DecayError
from ..masks import resolve_mask
from ..penalties import Penalty
from ..rules import Rule
from .models import DenseModel, _positive_int


def batches(n_samples: int, batch_size: int | None, steps: int, seed: int | None = None):
    """The sample indices of each of ``steps`` mini-batches.

    Epochs of ``ceil(n / batch_size)`` batches, the last one smaller when
    ``batch_size`` does not divide ``n`` (PyTorch ``DataLoader(drop_last=False)``,
    Keras ``fit``). With ``seed=None`` every epoch takes the samples in order
    (0..b−1, b..2b−1, …); with an integer seed epoch e takes them in the order of the
    e-th ``rng.permutation(n)`` of ``rng = np.random.default_rng(seed)``.
    ``batch_size=None`` means the full batch."""
    b = n_samples if batch_size is None else _positive_int("batch_size", batch_size)
    b = min(b, n_samples)
    rng = None if seed is None else np.random.default_rng(_positive_int("seed", seed, minimum=0))
    done = 0
    while done < steps:
        order = np.arange(n_samples) if rng is None else rng.permutation(n_samples)
        for start in range(0, n_samples, b):
            if done == steps:
                return
            yield order[start : start + b]
            done += 1


def fit(model, params, rule, X, y, steps, batch_size=None, penalty=None, seed=None, *, penalty_mask=None,
        on_step=None):
    """Train ``model`` with ``rule`` for ``steps`` updates; returns ``(params, losses)``.

    Each step takes the next mini-batch (see :func:`batches`: in order when ``seed`` is
    None, reshuffled every epoch from ``seed`` otherwise), computes the loss and its
    gradient at the current params, and calls ``rule.step``. With ``penalty`` (e.g.
    ``decay.L2(lam)``) weight decay sits in the loss: ``penalty.grad`` is added to the
    gradient and ``losses[t]`` is the data loss plus the penalty. ``penalty_mask`` (a
    decay mask, e.g. ``decay.masks.timm_default``) limits the penalty to some
    parameters, as Keras's ``kernel_regularizer``; by default it covers all.

    ``params`` may be NumPy arrays, torch tensors or TensorFlow tensors/variables (one
    framework): training runs in that framework, with its autodiff, and the trained
    params come back in it. ``X`` and ``y`` are NumPy arrays. ``rule`` is a decay rule,
    or any object with a rule's ``init(params)`` and ``step(params, grads, state)``.
    ``on_step(t, loss, grads)``, when given, sees each step's loss and gradient (the
    penalty's included) before the update.

    ``losses[t]`` is the batch's loss before update t (a float64 array of length
    ``steps``). ``params`` is copied first: the caller's tensors are not modified."""
    _check_fit_args(model, rule, penalty)
    steps = _positive_int("steps", steps, minimum=0)
    params, ops, dtype = model._check_params(params)
    X, y = model._data(X, y, dtype, ops, params)
    params = {k: ops.trainable(v) for k, v in params.items()}
    penalized = []
    if penalty is not None:
        decayed = resolve_mask(penalty_mask, list(params), list(params.values()))
        penalized = [k for k, keep in zip(params, decayed) if keep]

    state = rule.init(params)
    losses = []  # grows with the steps done, not the steps asked for (a Ctrl-C may come first)
    for t, index in enumerate(batches(ops.backend.shape(X)[0], batch_size, steps, seed)):
        loss, grads = model._loss_and_grads(params, ops.take(X, index), ops.take(y, index), ops)
        loss = float(loss)
        if penalized:
            sub = {k: params[k] for k in penalized}
            with ops.backend.no_grad():
                loss += float(penalty.penalty(sub))
            for k, g in penalty.grad(sub).items():
                grads[k] = grads[k] + g
        losses.append(loss)
        if on_step is not None:
            on_step(t, loss, grads)
        params, state = rule.step(params, grads, state)
    return params, np.asarray(losses, dtype=np.float64)


def _check_fit_args(model, rule, penalty):
    if not isinstance(model, DenseModel):
        raise DecayError(
            f"`model` must be a decay.models model (LinearRegression, LogisticRegression, MLP). "
            f"Received a {type(model).__name__}."
        )
    if not (isinstance(rule, Rule) or all(callable(getattr(rule, m, None)) for m in ("init", "step"))):
        raise DecayError(
            f"`rule` must be a decay update rule (decay.sgd, decay.adam, decay.adamw) or an object "
            f"with its init(params) and step(params, grads, state). Received: rule={rule!r}."
        )
    if penalty is not None and not isinstance(penalty, Penalty):
        raise DecayError(
            f"`penalty` must be a decay penalty (decay.L2, decay.L1, decay.ElasticNet) or None. "
            f"Received: penalty={penalty!r}."
        )
