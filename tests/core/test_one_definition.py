"""Every fast path is the rule's one definition: step by step, on every rule and option.

For each backend, a rule run with its fast path (torch's declared fused kernels, NumPy's
cache-sized blocks, TensorFlow's compiled step) is compared with the same rule run with
``use_fast_path = False`` — the definition in :meth:`Rule.direction`, run plainly — after
every step: parameters and every slot, to the per-step dtype tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close
from conftest import BACKENDS
from rule_cases import PARAM_SHAPES, RULE_OPTIONS, cases, compiled_cases, make

CASES = cases()
# TensorFlow and JAX compile each case: they run the subset rule_cases.compiled_cases().
_COMPILING = {"tensorflow", "jax"}
_ON_COMPILED = compiled_cases()
GRID = [(b, c) for c in CASES for b in BACKENDS if b not in _COMPILING or c in _ON_COMPILED]
STEPS = 8
SHAPES = {"layer.weight": (6, 5), "layer.bias": (5,), "scale": ()}


def test_every_rule_has_cases():
    # A new rule must add its options to tests/core/rule_cases.py to be covered here.
    assert set(decay.rules.RULES) <= set(RULE_OPTIONS)


def _problem(dtype, shapes=SHAPES):
    rng = np.random.default_rng(7)
    params = {n: rng.normal(size=s).astype(dtype) for n, s in shapes.items()}
    grads = [{n: rng.normal(size=s).astype(dtype) for n, s in shapes.items()} for _ in range(STEPS)]
    return params, grads


@pytest.mark.parametrize("backend, case", GRID, indirect=["backend"])
def test_fast_path_equals_the_definition_every_step(native, dtype, case):
    rule_name, kwargs = CASES[case]
    init, grads = _problem(dtype, PARAM_SHAPES.get(rule_name, SHAPES))
    fast, plain = make(rule_name, kwargs), make(rule_name, kwargs)
    plain.use_fast_path = False
    p_fast = {n: native.param(v, dtype) for n, v in init.items()}
    p_plain = {n: native.param(v, dtype) for n, v in init.items()}
    s_fast, s_plain = fast.init(p_fast), plain.init(p_plain)
    for i, g in enumerate(grads, start=1):
        p_fast, s_fast = fast.step(p_fast, {n: native.grad(v, dtype) for n, v in g.items()}, s_fast)
        p_plain, s_plain = plain.step(p_plain, {n: native.grad(v, dtype) for n, v in g.items()}, s_plain)
        for n in SHAPES:
            assert_close(native.numpy(p_fast[n]), native.numpy(p_plain[n]), dtype, steps=i, what=f"step {i} {n}")
        for slot, per_leaf in s_fast.slots.items():
            for n, a, b in zip(SHAPES, per_leaf, s_plain.slots[slot]):
                if a is not None:
                    assert_close(native.numpy(a), native.numpy(b), dtype, steps=i, what=f"step {i} {slot}[{n}]")


def test_torch_declared_kernels_are_used():
    # The shortcut is real: where a rule declares a kernel, torch's fused kernel runs
    # (counted by patching it), and a layout it would misread falls back.
    torch = pytest.importorskip("torch")
    backend = decay.get_backend("torch")
    calls = []
    real = backend.run_fused

    def counting(call, *args):
        calls.append(call.kernel)
        return real(call, *args)

    backend.run_fused = counting
    try:
        rule = decay.adamw(1e-2, weight_decay=0.1)
        p = [torch.randn(4, 3), torch.randn(3)]
        state = rule.init(p)
        p, state = rule.step(p, [torch.randn(4, 3), torch.randn(3)], state)
        assert calls == ["_fused_adamw_"]
        g = torch.randn(3, 4).t()  # transposed: the kernel would read it in memory order
        before = p[0].clone()
        p, state = rule.step(p, [g, torch.randn(3)], state)
        assert calls == ["_fused_adamw_"]  # not called again: the definition ran
        assert not torch.equal(before, p[0])
    finally:
        backend.run_fused = real
