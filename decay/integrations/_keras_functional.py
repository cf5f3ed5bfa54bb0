"""``decay.keras.Optimizer`` on Keras's JAX and torch backends.

Keras's base optimizer drives the step there (``apply`` → ``_backend_update_step``); on
JAX, ``model.fit`` runs it inside ``jax.jit`` through ``stateless_apply``, where a
variable's ``.value`` is a tracer and ``assign`` records the new value. The step's numbers
are decay's Python float64 ones: at the concrete step count (torch, eager JAX) or by one
host callback from the traced count (JAX under jit, as :mod:`decay.backends._jax_traced`).
The update is the rule's definition on the backend's arrays (``engine.run``), written back
with ``assign``. ``on_nonfinite`` other than "apply" is TensorFlow-only for now.
"""

from __future__ import annotations

import numpy as np

from .. import engine
from ..backends import get_backend
from ..errors import DecayError

SUPPORTED = ("jax", "torch")


def check(rule, keras_backend: str) -> None:
    if rule.on_nonfinite != "apply":
        raise DecayError(
            f"decay.keras.Optimizer on Keras's {keras_backend!r} backend applies every step; "
            f"on_nonfinite={rule.on_nonfinite!r} needs Keras's TensorFlow backend for now. "
            "Use on_nonfinite='apply' (with optax-style skipping outside Keras) or KERAS_BACKEND=tensorflow."
        )


def _step_count(optimizer):
    """The iteration count: a Python int, or a JAX tracer inside jit."""
    value = optimizer.iterations.value
    backend = get_backend("jax") if optimizer._keras_backend == "jax" else None
    if backend is not None and backend.traced([value]):
        return value
    return int(np.asarray(value.detach().cpu() if hasattr(value, "detach") else value))


def _hypers(optimizer, t):
    rule = optimizer._rule
    groups = rule.hyper_sets()
    if isinstance(t, int):
        return engine.coefficients(rule, groups, t)
    from ..backends._jax_traced import _numbers

    template = optimizer._templates
    key, values = engine.flatten_hypers(template)
    import jax

    dtype = np.float64 if jax.config.read("jax_enable_x64") else np.float32
    vector = _numbers(rule, groups, t, key, len(values), dtype)
    return engine.rebuild_hypers(template, [vector[i] for i in range(len(values))])


def current_lr(optimizer):
    """The rule's lr for its default group at the current step."""
    t = _step_count(optimizer)
    hypers = _hypers(optimizer, t)
    return hypers[0].lr


def update_step(optimizer, grads, trainable_variables):
    """The engine's step on the native values of ``trainable_variables`` and the slots,
    written back with ``assign``."""
    rule = optimizer._rule
    backend = get_backend(optimizer._keras_backend)
    indices = [optimizer._get_variable_index(v) for v in trainable_variables]
    values = [v.value for v in trainable_variables]
    grads = [g.astype(v.dtype) if optimizer._keras_backend == "jax" else g.to(v.dtype) for g, v in zip(grads, values)]
    hypers = _hypers(optimizer, _step_count(optimizer))
    parts, _ = engine.partition(
        rule, rule.hyper_sets(), [optimizer._group_of[i] for i in indices],
        [optimizer._decayed[i] for i in indices], [optimizer._dtypes[i] for i in indices],
        shapes=[tuple(v.shape) for v in trainable_variables],
    )
    names = sorted({n for i in indices for n in optimizer._slots[i]})
    columns = {n: [optimizer._slots[i][n].value if n in optimizer._slots[i] else None for i in indices]
               for n in names}
    with backend.no_grad():
        work = backend.read_all(values)
        new, columns = engine.run(rule, backend, parts, hypers, work, grads, columns, fast=False)
    for variable, value, old in zip(trainable_variables, new, values):
        if value is not old:
            optimizer.assign(variable, value)
    for n, column in columns.items():
        for i, value in zip(indices, column):
            if value is not None and value is not optimizer._slots[i][n].value:
                optimizer.assign(optimizer._slots[i][n], value)
