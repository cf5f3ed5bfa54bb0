"""The hypothesis suite, drawing memory layouts and aliasing: for a random rule, shape,
layout of each parameter and gradient (contiguous, transposed, strided slice, a
gradient that is the parameter itself or a view of it) on NumPy and PyTorch, a few
steps give the numbers of torch.optim on the same values laid out plainly, or a
DecayError that changes nothing. The expected values come from torch.optim."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import decay
from decay.tolerances import assert_close
from guarantees.helpers import RULES, torch_optim_run, torch_optimizer

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
    assert_close(out, torch_optim_run(rule_name, start, seen), "float64", STEPS)


BUFFER = 48


def _carve(backend, buffer, offset, stride, length):
    view = slice(offset, offset + stride * (length - 1) + 1, stride)
    return buffer[view] if backend == "numpy" else torch.from_numpy(buffer)[view]


@SETTINGS
@given(
    rule_name=st.sampled_from(sorted(RULES)),
    backend=st.sampled_from(["numpy", "torch"]),
    length=st.integers(1, 6),
    carvings=st.lists(st.tuples(st.integers(0, BUFFER - 1), st.integers(1, 4)), min_size=4, max_size=4),
    same=st.booleans(),
    fast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_views_of_one_buffer_are_refused_exactly_when_they_overlap(rule_name, backend, length, carvings, same,
                                                                   fast, seed):
    """Two parameters and their two gradients carved from one buffer at drawn offsets
    and strides (with ``same``, the first gradient is its parameter's own view). The
    step is refused, changing nothing, exactly when NumPy's exact np.shares_memory finds
    an overlap that is not one the frameworks define (a gradient that is its
    parameter's own view, gradients overlapping each other); otherwise it gives
    torch.optim's numbers for the same values laid out plainly."""
    carvings = [(min(o, BUFFER - 1 - s * (length - 1)), s) for o, s in carvings]
    if any(o < 0 for o, _ in carvings):
        return
    if same:
        carvings[2] = carvings[0]
    rng = np.random.default_rng(seed)
    buffer = rng.uniform(0.5, 2.0, size=BUFFER) * rng.choice([-1.0, 1.0], size=BUFFER)
    oracle = [_carve("numpy", buffer, o, s, length) for o, s in carvings]  # the same memory, read by NumPy
    tensors = [_carve(backend, buffer, o, s, length) for o, s in carvings]
    params, grads = tensors[:2], tensors[2:]
    defined = {(0, 2): carvings[0] == carvings[2], (1, 3): carvings[1] == carvings[3], (2, 3): True}
    overlap = any(np.shares_memory(oracle[i], oracle[j]) and not defined.get((i, j), False)
                  for i in range(4) for j in range(i + 1, 4))
    event("refused" if overlap else "taken")
    rule = RULES[rule_name][0]()
    rule.use_fast_path = fast
    if overlap:
        state = rule.init([np.array(x, copy=True) if backend == "numpy" else x.clone() for x in params])
        before = buffer.copy()
        with pytest.raises(decay.DecayError, match="share memory"):
            if np.shares_memory(oracle[0], oracle[1]):
                rule.init(params)
            rule.step(params, grads, state)
        assert buffer.tobytes() == before.tobytes()
        return
    starts, seen = [np.array(x, copy=True) for x in oracle[:2]], []
    state = rule.init(params)
    for _ in range(STEPS):
        seen.append([np.array(x, copy=True) for x in oracle[2:]])
        params, state = rule.step(params, grads, state)
    ps = [torch.tensor(x, requires_grad=True) for x in starts]
    opt = torch_optimizer(rule_name, ps)
    for gs in seen:
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g)
        opt.step()
    for x, p in zip(oracle[:2], ps):
        assert_close(x, p.detach().numpy(), "float64", STEPS)
