"""The hypothesis suite, drawing memory layouts and aliasing: for a random rule, shape,
layout of each parameter and gradient (contiguous, transposed, strided slice, a
gradient that is the parameter itself or a view of it) on NumPy and PyTorch, a few
steps give the numbers of torch.optim on the same values laid out plainly, or a
DecayError that changes nothing. The expected values come from torch.optim."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import decay
from decay.tolerances import assert_close
from guarantees.helpers import RULES, torch_optimizer

torch = pytest.importorskip("torch", reason="torch not installed: these tests compare with torch.optim")

SETTINGS = settings(
    max_examples=int(os.environ.get("DECAY_HYPOTHESIS_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STEPS = 2


def _lay_out(backend, values, layout):
    """``values`` (a 2-d float64 array) as a tensor of ``backend`` in ``layout``."""
    if layout == "transposed":
        plain = values.T.copy(order="C")  # a copy: ascontiguousarray may return a view of values
        return plain.T if backend == "numpy" else torch.from_numpy(plain).t()
    if layout == "sliced":
        wide = np.zeros((values.shape[0], 2 * values.shape[1]))
        wide[:, ::2] = values
        return wide[:, ::2] if backend == "numpy" else torch.from_numpy(wide)[:, ::2]
    return values.copy() if backend == "numpy" else torch.from_numpy(values.copy())


def _expected(rule_name, start, grads):
    p = torch.tensor(start, requires_grad=True)
    opt = torch_optimizer(rule_name, [p])
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


@SETTINGS
@given(
    rule_name=st.sampled_from(sorted(RULES)),
    backend=st.sampled_from(["numpy", "torch"]),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    param_layout=st.sampled_from(["plain", "transposed", "sliced"]),
    grad_layout=st.sampled_from(["plain", "transposed", "sliced", "itself", "view"]),
    fast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_layout_gives_torch_optims_numbers(rule_name, backend, shape, param_layout, grad_layout, fast, seed):
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.5, 2.0, size=shape)
    grads = [rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape) for _ in range(STEPS)]
    p = _lay_out(backend, start, param_layout)
    rule = RULES[rule_name][0]()
    rule.use_fast_path = fast
    state = rule.init(p)
    seen = []
    for g in grads:
        if grad_layout in ("itself", "view"):
            # The gradient is the parameter (or a view of it): read as the value it had.
            seen.append(np.array(p if backend == "numpy" else p.numpy(), copy=True))
            grad = p if grad_layout == "itself" else p[:] if backend == "numpy" else p.detach()
        else:
            seen.append(g)
            grad = _lay_out(backend, g, grad_layout)
        p, state = rule.step(p, grad, state)
    out = np.asarray(p) if backend == "numpy" else p.numpy()
    assert_close(out, _expected(rule_name, start, seen), "float64", STEPS)
