"""What the 100-step parity tests share: optax's run of a problem, the step-by-step
comparison of two runs, and their gap after the last step. A run is a list of
{name: float64 array} dicts, one per step; a problem is its initial parameters and
``grads_of(params, t)``."""

import numpy as np
import pytest

from decay.tolerances import assert_close, relative_error


def run_optax(make, init: dict, grads_of, steps: int) -> list:
    """``make()`` builds the optax transformation (called under x64)."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        tx = make()
        params = {n: jax.numpy.asarray(v) for n, v in init.items()}
        state, update, out = tx.init(params), jax.jit(tx.update), []
        for t in range(steps):
            g = grads_of({n: np.asarray(p) for n, p in params.items()}, t)
            updates, state = update({n: jax.numpy.asarray(v) for n, v in g.items()}, state, params)
            params = optax.apply_updates(params, updates)
            out.append({n: np.asarray(p).copy() for n, p in params.items()})
    return out


def assert_same_run(got: list, want: list, what: str, dtype="float64", per_step=None) -> None:
    """Every step within the dtype's tolerance (n·per-step after n steps), or within
    n·``per_step`` where given."""
    for i, (a, b) in enumerate(zip(got, want), start=1):
        for n in b:
            if per_step is None:
                assert_close(a[n], b[n], dtype, steps=i, what=f"{what}: step {i} {n}")
            else:
                error = relative_error(a[n], b[n])
                assert error <= per_step * i, f"{what}: step {i} {n}: {error:.3e} > {per_step * i:.3e}"


def gap(a: list, b: list) -> float:
    """max over parameters of the norm-wise relative difference after the last step."""
    return max(relative_error(a[-1][n], b[-1][n]) for n in b[-1])
