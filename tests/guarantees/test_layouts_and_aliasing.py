"""Classes 1 and 2 of the guarantees: memory layouts and aliasing, on every path.

On ``rule.step`` (the fast path and the definition run plainly) and through
``decay.torch.Optimizer``, a tensor of any layout gives the numbers ``torch.optim``
gives for the same values, or is refused with a DecayError that changes nothing. The
expected numbers come from torch.optim (or, on NumPy, from the same values laid out
plainly and stepped by torch.optim); none from decay.
"""

from __future__ import annotations

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close
from guarantees.helpers import RULES, assert_unchanged, snapshot, torch_optim_run, torch_optimizer

torch = pytest.importorskip("torch", reason="torch not installed: these tests compare with torch.optim")

STEPS = 3
RNG = np.random.default_rng(13)
START = RNG.normal(size=(2, 3, 4, 5))
GRADS = RNG.normal(size=(STEPS, 2, 3, 4, 5))


# Each layout: (param values -> torch tensor laid out so, grad values -> torch tensor).
def _transposed(x):
    return torch.tensor(np.ascontiguousarray(np.swapaxes(x, -1, -2))).transpose(-1, -2)


def _sliced(x):
    wide = torch.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=torch.float64)
    wide[..., ::2] = torch.tensor(x)
    return wide[..., ::2]


def _channels_last(x):
    return torch.tensor(x).to(memory_format=torch.channels_last)


LAYOUTS = {
    "transposed-grad": (torch.tensor, _transposed),
    "transposed-param": (_transposed, torch.tensor),
    "channels-last": (_channels_last, _channels_last),
    "sliced": (_sliced, _sliced),
    "expanded-grad": (torch.tensor, lambda g: torch.tensor(g[:1]).expand(g.shape)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("rule_name", list(RULES))
def test_torch_layouts_give_torch_optims_numbers(rule_name, layout):
    """Every path: rule.step fast and plain, decay.torch.Optimizer. The worst case the
    issue names: a transposed gradient through SGD's fused kernel."""
    make_param, make_grad = LAYOUTS[layout]
    grads = GRADS if layout != "expanded-grad" else np.broadcast_to(GRADS[:, :1], GRADS.shape)
    want = torch_optim_run(rule_name, START, grads)
    for path in ("fast", "plain", "optimizer"):
        p = make_param(START)
        rule = RULES[rule_name][0]()
        rule.use_fast_path = path != "plain"
        if path == "optimizer":
            p.requires_grad_(True)
            opt = decay.torch.Optimizer([p], rule)
            for g in grads:
                p.grad = make_grad(g)
                opt.step()
        else:
            state = rule.init(p)
            for g in grads:
                p, state = rule.step(p, make_grad(g), state)
        assert_close(p.detach().numpy(), want, "float64", STEPS)


def test_transposed_gradient_through_the_fused_sgd_kernel_is_read_by_index():
    """The issue's first case, element by element: decay.sgd(1.0) from zeros."""
    p = torch.zeros(2, 2, dtype=torch.float64)
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).t()
    rule = decay.sgd(1.0)
    rule.step(p, g, rule.init(p))
    assert p.tolist() == [[-1.0, -3.0], [-2.0, -4.0]]


def _expanded(backend):
    if backend == "torch":
        return torch.zeros(3, dtype=torch.float64).expand(2, 3)
    if backend == "torch-overlapping":
        return torch.zeros(4, dtype=torch.float64).as_strided((2, 3), (1, 1))
    return np.lib.stride_tricks.as_strided(np.zeros(3), (2, 3), (0, 8))


@pytest.mark.parametrize("backend", ["torch", "torch-overlapping", "numpy"])
@pytest.mark.parametrize("rule_name", ["sgd", "adam"])
def test_expanded_or_overlapping_params_are_refused_and_change_nothing(backend, rule_name):
    """torch aborted the interpreter on an expanded parameter; NumPy wrote it silently."""
    weight = torch.ones(2, 3, dtype=torch.float64) if backend.startswith("torch") else np.ones((2, 3))
    bad = _expanded(backend)
    params = [weight, bad]
    grads = [x * 0 + 1 for x in (weight, torch.ones(2, 3, dtype=torch.float64) if backend.startswith("torch") else np.ones((2, 3)))]
    rule = RULES[rule_name][0]()
    with pytest.raises(decay.DecayError, match=r"Parameter '1' has elements that share memory.*clone\(\)"):
        rule.init(params)
    state = rule.init([weight, weight * 1])
    before = snapshot(params, state)
    with pytest.raises(decay.DecayError, match="share memory"):
        rule.step(params, grads, state)
    assert_unchanged(before, snapshot(params, state))
    if backend.startswith("torch"):
        with pytest.raises(decay.DecayError, match="share memory"):
            decay.torch.Optimizer([weight, bad.requires_grad_(True)], rule)


def test_numpy_layouts_read_only_and_matrix_give_torch_optims_numbers():
    """Read-only arrays come back new (the original untouched); np.matrix and transposed
    arrays are updated by index, as torch.optim updates the same values."""
    start, grads = START[0, 0], GRADS[:, 0, 0]  # 4x5
    want = torch_optim_run("adam", start, grads)
    for kind in ("read-only", "matrix", "transposed"):
        if kind == "read-only":
            p = start.copy()
            p.flags.writeable = False
        elif kind == "matrix":
            p = np.matrix(start.copy())
        else:
            p = start.T.copy(order="C").T
        original = np.array(p, copy=True)
        rule = RULES["adam"][0]()
        state, out = rule.init(p), p
        for g in grads:
            out, state = rule.step(out, np.asarray(g), state)
        assert_close(np.asarray(out), want, "float64", STEPS)
        if kind == "read-only":
            np.testing.assert_array_equal(p, original)
        if kind == "matrix":
            assert out is p  # written in place, still a matrix


def _fresh(backend, values):
    if backend == "numpy":
        return values.copy()
    if backend == "torch":
        return torch.tensor(values)
    import tensorflow as tf

    return tf.Variable(values)


def _read(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow"])
@pytest.mark.parametrize("rule_name", ["momentum", "adamw"])
def test_gradient_that_is_the_parameter_or_a_view_of_it(backend, rule_name):
    """The gradient is read as the value it had before the step on every backend: the
    numbers of a separate copy of it, stepped by torch.optim."""
    if backend == "tensorflow":
        pytest.importorskip("tensorflow")
    start = START[0, 0, 0]
    for kind in ("itself", "view"):
        if backend == "tensorflow" and kind == "view":
            continue  # a tf.Variable has no views
        p = _fresh(backend, start)
        want = torch_optim_run(rule_name, start, [start])
        grad = p if kind == "itself" else (p[:] if backend == "numpy" else p.detach())
        rule = RULES[rule_name][0]()
        out, _ = rule.step(p, grad, rule.init(p))
        assert_close(_read(out), want, "float64", 1)


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow"])
def test_the_same_tensor_twice_is_refused_everywhere(backend):
    if backend == "tensorflow":
        pytest.importorskip("tensorflow")
    p = _fresh(backend, np.ones(3))
    rule = decay.sgd(0.1)
    with pytest.raises(decay.DecayError, match=r"the same tensor more than once: \[\('a', 'b'\)\]"):
        rule.init({"a": p, "b": p})
    state = rule.init([p, _fresh(backend, np.ones(3))])
    with pytest.raises(decay.DecayError, match="more than once"):
        rule.step([p, p], [np.ones(3)] * 2 if backend == "numpy" else [p * 0 + 1] * 2, state)
    np.testing.assert_array_equal(_read(p), np.ones(3))
    q = _fresh(backend, np.full(3, 2.0))  # another parameter given as p's gradient
    with pytest.raises(decay.DecayError, match=r"parameter '1' and the gradient of '0' share memory"):
        rule.step([p, q], [q, q], state)
    np.testing.assert_array_equal(_read(p), np.ones(3))
    if backend == "torch":
        q = torch.ones(3, requires_grad=True)
        for params in ([q, q], [{"params": [q]}, {"params": [q]}]):
            with pytest.raises(decay.DecayError, match="more than once"):
                decay.torch.Optimizer(params, rule)
        for params in ({q}, [{"params": {q}}]):  # a set's order changes between runs
            with pytest.raises(decay.DecayError, match="is a set"):
                decay.torch.Optimizer(params, rule)


# Overlapping views of one storage (decay/_memory.py). Each case: (params, grads) made
# from one buffer ``x`` of the library; torch.optim gives no defined result for any.
def _overlapping(case, lib):
    new = (lambda *s: torch.tensor(RNG.normal(size=s))) if lib == "torch" else (lambda *s: RNG.normal(size=s))
    x = new(4, 6)
    if case == "grad-partly-its-param":  # p is x[:, :3], g is x[:, 1:4]
        return [x[:, :3]], [x[:, 1:4]], x
    if case == "grad-shifted-its-param":
        return [x.reshape(-1)[:12]], [x.reshape(-1)[6:18]], x
    if case == "grad-transposed-its-param":
        square = x.reshape(-1)[:16].reshape(4, 4)  # dense: torch can tell the overlap
        return [square], [square.t() if lib == "torch" else square.T], x
    if case == "grad-overlaps-another-param":
        return [new(4, 3), x[:, :3]], [x[:, 1:4], new(4, 3)], x
    if case == "grad-is-another-param":
        q = new(4, 3)
        return [x[:, :3], q], [q, new(4, 3)], x
    return [x[:, :3], x[:, 2:5]], [new(4, 3), new(4, 3)], x  # two params overlapping


OVERLAPS = ["grad-partly-its-param", "grad-shifted-its-param", "grad-transposed-its-param",
            "grad-overlaps-another-param", "grad-is-another-param", "params-overlap"]


def test_torch_optim_gives_no_defined_result_for_overlapping_views():
    """Why decay refuses them: torch.optim.SGD raises where torch can tell (a shifted or
    transposed gradient of its own parameter), and its for-loop and foreach paths give
    different numbers for two overlapping parameters."""
    for case in ("grad-shifted-its-param", "grad-transposed-its-param"):
        params, grads, _ = _overlapping(case, "torch")
        for p, g in zip(params, grads):
            p.requires_grad_(True).grad = g
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            torch.optim.SGD(params, lr=0.1).step()
    results = []
    for foreach in (False, True):
        params, _, x = _overlapping("params-overlap", "torch")
        for p in params:
            p.requires_grad_(True).grad = torch.ones(4, 3, dtype=torch.float64)
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.5, foreach=foreach)
        opt.step()
        opt.step()
        results.append(x.clone())
    assert not torch.equal(*results)


@pytest.mark.parametrize("lib", ["torch", "numpy"])
@pytest.mark.parametrize("case", OVERLAPS)
def test_overlapping_views_are_refused_on_every_path_and_change_nothing(case, lib):
    """rule.step (fast and plain) and decay.torch.Optimizer refuse with a DecayError that
    names both tensors and the fix; the buffer, the params and the state are untouched."""
    for path in ("fast", "plain", "optimizer") if lib == "torch" else ("fast", "plain"):
        params, grads, x = _overlapping(case, lib)
        rule = RULES["momentum"][0]()
        rule.use_fast_path = path == "fast"
        copies = [p * 1 for p in params]  # a state made for plain copies, then a step on the views
        state = rule.init(copies)
        rule.step(copies, [g * 1 for g in grads], state)
        before = snapshot([x] + params, state)
        message = r"(parameter|the gradient of) '.*' and (parameter|the gradient of) '.*' share memory.*clone\(\)"
        if path == "optimizer":
            if case == "params-overlap":
                with pytest.raises(decay.DecayError, match=message):
                    decay.torch.Optimizer([p.requires_grad_(True) for p in params], rule)
                continue
            opt = decay.torch.Optimizer([p.requires_grad_(True) for p in params], rule)
            for p, g in zip(params, grads):
                p.grad = g
            with pytest.raises(decay.DecayError, match=message.replace("'.*'", "'param [01]'")):
                opt.step()
            assert not opt.state
        else:
            with pytest.raises(decay.DecayError, match=message):
                rule.step(params, grads, state)
        assert_unchanged(before, snapshot([x] + params, state))


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_views_that_share_no_element_or_only_gradients_give_torch_optims_numbers(lib):
    """Not refused: params that interleave in one storage without sharing an element
    (x[:, ::2], x[:, 1::2]), gradients that are chunks of one flat buffer (DDP's buckets),
    and gradients that overlap each other (only read). torch.optim's numbers, the
    gradients' buffer untouched."""
    wrap = torch.tensor if lib == "torch" else np.array
    start, flat = RNG.normal(size=(4, 6)), RNG.normal(size=30)
    want = []
    for grads in ([flat[:12].reshape(4, 3), flat[12:24].reshape(4, 3)], [flat[:12].reshape(4, 3), flat[3:15].reshape(4, 3)]):
        ps = [torch.tensor(start[:, ::2], requires_grad=True), torch.tensor(start[:, 1::2], requires_grad=True)]
        opt = torch_optimizer("adamw", ps)
        for _ in range(2):
            for p, g in zip(ps, grads):
                p.grad = torch.tensor(g)
            opt.step()
        want.append([p.detach().numpy() for p in ps])
    for path in ("fast", "plain", "optimizer") if lib == "torch" else ("fast", "plain"):
        for k, (lo, hi) in enumerate([((0, 12), (12, 24)), ((0, 12), (3, 15))]):
            x, buffer = wrap(start.copy()), wrap(flat.copy())
            params = [x[:, ::2], x[:, 1::2]]
            grads = [buffer[lo[0]:lo[1]].reshape(4, 3), buffer[hi[0]:hi[1]].reshape(4, 3)]
            rule = RULES["adamw"][0]()
            rule.use_fast_path = path != "plain"
            if path == "optimizer":
                opt = decay.torch.Optimizer([p.requires_grad_(True) for p in params], rule)
                for _ in range(2):
                    for p, g in zip(params, grads):
                        p.grad = g
                    opt.step()
            else:
                state = rule.init(params)
                for _ in range(2):
                    params, state = rule.step(params, grads, state)
            for p, w in zip(params, want[k]):
                assert_close(p.detach().numpy() if lib == "torch" else p, w, "float64", 2)
            assert np.asarray(buffer).tobytes() == flat.tobytes()


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_a_state_slot_sharing_memory_with_a_param_is_refused(lib):
    wrap = torch.tensor if lib == "torch" else np.array
    x = wrap(np.arange(8.0))
    params = [x[:4], wrap(np.ones(4))]
    rule = decay.sgd(0.1, momentum=0.9)
    state = rule.init(params)
    state = state._replace(slots={"momentum_buffer": (x[2:6], state.slots["momentum_buffer"][1])})
    before = snapshot(params, state)
    with pytest.raises(decay.DecayError, match=r"parameter '0' and `state` slot 'momentum_buffer' of '0' share memory"):
        rule.step(params, [wrap(np.ones(4))] * 2, state)
    assert_unchanged(before, snapshot(params, state))


def test_the_parameters_ranges_remembered_between_steps_never_refuse_wrongly_or_miss():
    """rule.step and decay.torch.Optimizer remember the parameters' memory ranges while
    the same tensors come back: a gradient overlapping a parameter at a later step is
    still refused; a parameter whose .data moved is seen where it now is (a gradient
    overlapping its new memory refused, one lying where it was taken: θ − lr·g)."""
    for path in ("step", "optimizer"):
        x = torch.zeros(4, 6, dtype=torch.float64)
        p = x[:, :3]
        rule = decay.sgd(0.5)
        if path == "optimizer":
            opt = decay.torch.Optimizer([p.requires_grad_(True)], rule)

            def step(grad):
                p.grad = grad
                opt.step()
        else:
            box = [rule.init(p)]

            def step(grad):
                box[0] = rule.step(p, grad, box[0])[1]
        step(torch.ones(4, 3, dtype=torch.float64))
        before = x.clone()
        with pytest.raises(decay.DecayError, match="share memory"):
            step(x[:, 1:4])
        assert torch.equal(x, before)
        old, y = p.data, torch.zeros(4, 6, dtype=torch.float64)
        p.data = y[:, :3]
        with pytest.raises(decay.DecayError, match="share memory"):
            step(y[:, 1:4])
        assert torch.equal(y, torch.zeros(4, 6, dtype=torch.float64))
        step(old)  # where p was: no longer shared
        assert torch.equal(p.detach(), torch.full((4, 3), 0.25, dtype=torch.float64))


def test_a_freed_model_checked_for_the_kernel_is_not_trusted_for_the_next():
    """The fused kernels' layout check is remembered per set of tensors, by identity.
    Tensors freed and new ones made in their place (CPython hands their ids out again)
    are checked anew: transposed parameters made after contiguous ones were freed get
    torch.optim's numbers, not a kernel reading them in memory order."""
    start = RNG.normal(size=(3, 4, 5))
    grads = RNG.normal(size=(2, 3, 4, 5))
    want = torch_optim_run("sgd", start, grads)
    reused = 0
    for _ in range(5):
        rule = RULES["sgd"][0]()
        plain, first = [torch.tensor(x) for x in start], RULES["sgd"][0]()  # its caches hold plain
        first.step(plain, [torch.tensor(g) for g in grads[0]], first.init(plain))
        # the transposed views made right after the plain tensors are freed: the
        # likeliest to take their ids
        bases = [torch.tensor(np.ascontiguousarray(np.swapaxes(x, -1, -2))) for x in start]
        ids = list(map(id, plain))
        del plain, first
        params = [b.transpose(-1, -2) for b in bases]
        reused += list(map(id, params)) == ids
        state = rule.init(params)
        for g in grads:
            params, state = rule.step(params, [torch.tensor(x) for x in g], state)
        for got, expected in zip(params, want):
            assert_close(got.numpy(), expected, "float64", len(grads))
    assert reused, "no id was handed out again: this test checked nothing (it relies on CPython's allocator)"
