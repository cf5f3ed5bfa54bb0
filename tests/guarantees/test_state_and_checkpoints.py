"""Classes 5 and 7 of the guarantees: state that does not fit, and checkpoints.

A slot of another dtype or device, another rule's state, a sparse gradient where
torch.optim refuses one, another optimizer's ``load_state_dict``: a DecayError, with
params and state (``optimizer.state`` too) bit-identical. Sparse gradients where
torch.optim takes them (SGD) give torch.optim's numbers. Checkpoints match a dict of
parameters by name; every failure of ``save`` and ``load`` is a DecayError naming the
path given, and a failed save leaves the previous file as it was.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close
from guarantees.helpers import assert_torch_state_unchanged, assert_unchanged, snapshot, torch_state_snapshot

torch = pytest.importorskip("torch", reason="torch not installed: these tests compare with torch.optim")


@pytest.mark.parametrize(
    "spoil, words",
    [
        (lambda x: x.float(), "is float32, not float64"),
        (lambda x: x.to("meta"), "is on meta, not on the parameter's cpu"),
        (lambda x: x[:1].expand(x.shape), "shares memory"),
    ],
    ids=["dtype", "meta-device", "expanded"],
)
def test_slots_that_do_not_fit_are_refused(spoil, words):
    """A state on the meta device made step a silent no-op; another dtype a crash."""
    p = torch.ones(3, dtype=torch.float64)
    rule = decay.adam(0.1)
    state = rule.init(p)
    state = state._replace(slots={k: tuple(spoil(x) for x in v) for k, v in state.slots.items()})
    before = snapshot(p, None)
    with pytest.raises(decay.DecayError, match=words):
        rule.step(p, torch.ones(3, dtype=torch.float64), state)
    assert_unchanged(before, snapshot(p, None))


def test_state_of_another_rule_with_the_same_slots_is_refused():
    """Adam's and AdamW's slots have the same names; the state still belongs to its rule."""
    p = np.ones(3)
    state = decay.adam(0.1).init(p)
    for call in (lambda: decay.adamw(0.1).step(p, np.ones(3), state),
                 lambda: decay.adamw(0.1).state_dict(state)):
        with pytest.raises(decay.DecayError, match="made by rule 'adam', not 'adamw'"):
            call()
    np.testing.assert_array_equal(p, np.ones(3))


def test_numpy_slot_of_another_dtype_is_refused():
    p = np.ones(3)
    rule = decay.sgd(0.1, momentum=0.9)
    state = rule.init(p)
    state = state._replace(slots={"momentum_buffer": (np.zeros(3, np.float32),)})
    with pytest.raises(decay.DecayError, match="is float32, not float64"):
        rule.step(p, np.ones(3), state)
    np.testing.assert_array_equal(p, np.ones(3))


def _sparse(values):
    index = torch.tensor([[0, 2, 2]])
    return torch.sparse_coo_tensor(index, torch.tensor(values, dtype=torch.float64), (4,))


# The rules that take sparse gradients, each with torch.optim's twin (no weight decay:
# torch.optim refuses that with a sparse gradient).
SPARSE_RULES = {
    "sgd": (lambda: decay.sgd(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "adagrad": (lambda: decay.adagrad(0.1, lr_decay=0.1, initial_accumulator_value=0.5),
                lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5)),
}


@pytest.mark.parametrize("rule_name", list(SPARSE_RULES))
def test_sparse_gradients_take_torch_optims_numbers(rule_name):
    """torch.optim.SGD and Adagrad take sparse gradients (without weight decay); so do
    decay.sgd and decay.adagrad, on rule.step and through decay.torch.Optimizer. Their
    sparse step is the dense gradient's (Adagrad's _make_sparse path too), bit for bit."""
    make_rule, make_torch = SPARSE_RULES[rule_name]
    grads = [_sparse([1.0, 2.0, 3.0]), _sparse([-1.0, 0.5, 0.25])]
    p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    reference = make_torch([p])
    for g in grads:
        p.grad = g
        reference.step()
    q = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = decay.torch.Optimizer([q], make_rule())
    r = torch.ones(4, dtype=torch.float64)
    rule = make_rule()
    state = rule.init(r)
    for g in grads:
        q.grad = g
        opt.step()
        r, state = rule.step(r, g, state)
    assert_close(q.detach().numpy(), p.detach().numpy(), "float64", 2)
    assert_close(r.numpy(), p.detach().numpy(), "float64", 2)


def test_sparse_gradients_are_refused_where_torch_refuses_them():
    p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = decay.torch.Optimizer([p], decay.adam(0.1))
    p.grad = _sparse([1.0, 2.0, 3.0])
    with pytest.raises(decay.DecayError, match="sparse; adam does not take sparse gradients"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.float64)) and not opt.state
    rule = decay.adamw(0.1)
    state = rule.init(p.detach())
    with pytest.raises(decay.DecayError, match="sparse"):
        rule.step(p.detach(), p.grad, state)


DECAYED = {  # torch.optim's twin raises for each: weight_decay != 0 with a sparse gradient
    "sgd": lambda: decay.sgd(0.1, momentum=0.9, weight_decay=0.01),
    "sgd-decoupled": lambda: decay.sgd(0.1, weight_decay=0.01, decoupled=True),
    "adagrad": lambda: decay.adagrad(0.1, weight_decay=0.01),
}


@pytest.mark.parametrize("kind", list(DECAYED))
def test_sparse_gradients_with_weight_decay_are_refused_and_change_nothing(kind):
    """torch.optim.SGD ("add(sparse, dense) is not supported") and Adagrad ("weight_decay
    option is not compatible with sparse gradients") raise; decay refuses the same input
    with a DecayError before any write, on rule.step and decay.torch.Optimizer. A mask
    that leaves the parameter undecayed makes it torch's weight_decay=0 case: taken."""
    torch_cls = torch.optim.Adagrad if kind == "adagrad" else torch.optim.SGD
    p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    p.grad = _sparse([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError):
        torch_cls([p], lr=0.1, weight_decay=0.01).step()
    for path in ("step", "optimizer"):
        rule = DECAYED[kind]()
        q = torch.ones(4, dtype=torch.float64, requires_grad=True)
        w = torch.ones(2, dtype=torch.float64, requires_grad=True)
        if path == "optimizer":
            opt = decay.torch.Optimizer([w, q], rule)
            w.grad, q.grad = torch.ones(2, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
            opt.step()  # step 1 from a state made by a clean step: it must stay as it is
            q.grad = _sparse([1.0, 2.0, 3.0])
            before, values = torch_state_snapshot(opt), [w.detach().clone(), q.detach().clone()]
            with pytest.raises(decay.DecayError, match=r"\['param 1'\] are sparse, and weight decay.*to_dense"):
                opt.step()
            assert_torch_state_unchanged(before, opt)
            assert torch.equal(w.detach(), values[0]) and torch.equal(q.detach(), values[1])
        else:
            params = {"w": w.detach(), "q": q.detach()}
            state = rule.init(params)
            before = snapshot(params, state)
            grads = {"w": torch.ones(2, dtype=torch.float64), "q": _sparse([1.0, 2.0, 3.0])}
            with pytest.raises(decay.DecayError, match=r"\['q'\] are sparse, and weight decay"):
                rule.step(params, grads, state)
            assert_unchanged(before, snapshot(params, state))
    # The parameter masked out of the decay: torch.optim's weight_decay=0 group's numbers.
    kwargs = dict(weight_decay=0.01, mask=decay.masks.exclude_names("q"))
    rule = decay.adagrad(0.1, **kwargs) if kind == "adagrad" else decay.sgd(0.1, **kwargs)
    q = torch.ones(4, dtype=torch.float64)
    q, _ = rule.step({"q": q}, {"q": _sparse([1.0, 2.0, 3.0])}, rule.init({"q": q}))
    p.grad = _sparse([1.0, 2.0, 3.0])
    torch_cls([p], lr=0.1).step()
    assert_close(q["q"].numpy(), p.detach().numpy(), "float64", 1)


def test_load_state_dict_of_another_optimizer_is_refused_at_load():
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([p], 0.1)
    p.grad = torch.ones(3, dtype=torch.float64)
    adam.step()
    q = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = decay.torch.Optimizer([q], decay.sgd(0.1, momentum=0.9))
    q.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    before = torch_state_snapshot(opt)
    with pytest.raises(decay.DecayError, match=r"holds \['exp_avg', 'exp_avg_sq', 'step'\].*sgd keeps"):
        opt.load_state_dict(adam.state_dict())
    assert_torch_state_unchanged(before, opt)
    saved = opt.state_dict()
    # (torch's state_dict shares each parameter's dict with optimizer.state: copy it)
    saved["state"] = {0: {**saved["state"][0], "momentum_buffer": torch.ones(5, dtype=torch.float64)}}
    with pytest.raises(decay.DecayError, match="shape"):
        opt.load_state_dict(saved)
    assert_torch_state_unchanged(before, opt)


def test_load_state_dict_with_a_slot_sharing_a_parameters_memory_is_refused_at_load():
    # torch keeps a loaded tensor of the parameter's dtype and device as is: a momentum
    # buffer that is a view of a parameter would be written twice by every step.
    p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    q = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = decay.torch.Optimizer([p, q], decay.sgd(0.1, momentum=0.9))
    p.grad, q.grad = torch.ones(4, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    opt.step()
    before = torch_state_snapshot(opt)
    saved = opt.state_dict()
    for buffer, why in ((p.detach(), "the parameter itself"), (p.detach().clone(), None)):
        state = {0: {**saved["state"][0], "momentum_buffer": buffer}, 1: dict(saved["state"][1])}
        if why is None:  # a copy: its own memory, accepted
            opt.load_state_dict({**saved, "state": state})
            assert torch.equal(opt.state[p]["momentum_buffer"], buffer)
            continue
        with pytest.raises(decay.DecayError, match=r"parameter 0 of group 0 and the loaded state 'momentum_buffer'"):
            opt.load_state_dict({**saved, "state": state})
        assert_torch_state_unchanged(before, opt)


def test_torch_adams_own_state_loads_and_continues_as_torch():
    """torch.optim.Adam's state (its step a float tensor) is what decay.adam keeps."""
    start = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = [torch.tensor(g, dtype=torch.float64) for g in ([0.3, -1.0, 2.0], [1.0, 0.5, -0.25], [0.1, 0.2, 0.3])]
    p = start.clone().requires_grad_()
    adam = torch.optim.Adam([p], 0.1)
    for g in grads[:2]:
        p.grad = g.clone()
        adam.step()
    q = p.detach().clone().requires_grad_()
    opt = decay.torch.Optimizer([q], decay.adam(0.1))
    saved = adam.state_dict()
    saved["state"] = {k: {n: v.clone() for n, v in s.items()} for k, s in saved["state"].items()}
    opt.load_state_dict(saved)
    p.grad, q.grad = grads[2].clone(), grads[2].clone()
    adam.step()
    opt.step()
    torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-15, atol=0)


def test_a_failed_first_step_leaves_optimizer_state_empty():
    p = torch.ones(3, requires_grad=True)
    opt = decay.torch.Optimizer([p], decay.adam(lambda t: float("nan")))
    p.grad = torch.ones(3)
    with pytest.raises(decay.DecayError, match="returned nan at step 0"):
        opt.step()
    assert not opt.state and torch.equal(p.detach(), torch.ones(3))


# -- checkpoints -------------------------------------------------------------------------
def _trained(order):
    rule = decay.adam(0.1)
    params = {k: np.ones(n) for k, n in order}
    state = rule.init(params)
    grads = {"a": np.full(3, 1.0), "b": np.full(2, -2.0)}
    params, state = rule.step(params, grads, state)
    return rule, params, state, grads


def test_checkpoint_matches_a_dict_by_name_not_position(tmp_path):
    rule, params, state, grads = _trained([("a", 3), ("b", 2)])
    decay.checkpoint.save(tmp_path / "ck.npz", rule, state)
    # The same model rebuilt with its keys in another order.
    flipped = {"b": params["b"].copy(), "a": params["a"].copy()}
    loaded = decay.checkpoint.load(tmp_path / "ck.npz", rule, flipped)
    flipped, _ = rule.step(flipped, grads, loaded)
    # The live state too: stepped with the dict in the other order.
    copy = state._replace(slots={k: tuple(x.copy() for x in v) for k, v in state.slots.items()})
    again, _ = rule.step({"b": params["b"].copy(), "a": params["a"].copy()}, grads, copy)
    straight, _ = rule.step({k: v.copy() for k, v in params.items()}, grads, state)
    for k in ("a", "b"):
        np.testing.assert_array_equal(flipped[k], straight[k])
        np.testing.assert_array_equal(again[k], straight[k])
    with pytest.raises(decay.DecayError, match=r"made for parameters \['a', 'b'\]"):
        decay.checkpoint.load(tmp_path / "ck.npz", rule, {"a": np.ones(3), "c": np.ones(2)})


def test_save_refuses_a_state_of_another_rule_and_keeps_the_previous_file(tmp_path):
    rule, _, state, _ = _trained([("a", 3), ("b", 2)])
    path = tmp_path / "ck.npz"
    decay.checkpoint.save(path, rule, state)
    before = path.read_bytes()
    with pytest.raises(decay.DecayError, match="made by rule 'adam', not 'sgd'"):
        decay.checkpoint.save(path, decay.sgd(0.1, momentum=0.9), state)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ck.npz"]


def test_saved_file_has_the_permissions_the_umask_gives(tmp_path):
    rule, _, state, _ = _trained([("a", 3), ("b", 2)])
    old = os.umask(0o027)
    try:
        decay.checkpoint.save(tmp_path / "ck.npz", rule, state)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "ck.npz").st_mode & 0o777 == 0o640


def _write_meta(path, meta):
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def _bad_files(tmp_path):
    rule, _, state, _ = _trained([("a", 3), ("b", 2)])
    good = tmp_path / "good.npz"
    decay.checkpoint.save(good, rule, state)
    (tmp_path / "text.npz").write_text("not a zip")
    os.mkdir(tmp_path / "folder")
    for name, layout in (("layout-str.npz", "oops"), ("layout-int.npz", {"exp_avg": 5})):
        _write_meta(tmp_path / name, {"format": "decay-state-1", "rule": "adam", "count": 1, "layout": layout})
    _write_meta(tmp_path / "meta-list.npz", [1, 2])
    data = bytearray(good.read_bytes())  # every entry marked with compression method 99
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset:at + offset + 2] = (99).to_bytes(2, "little")
            at = data.find(signature, at + 4)
    (tmp_path / "compression.npz").write_bytes(bytes(data))
    return rule


@pytest.mark.parametrize("name", ["text.npz", "folder", "layout-str.npz", "layout-int.npz", "meta-list.npz",
                                  "compression.npz", "missing.npz"])
def test_every_failed_load_names_the_path(tmp_path, name):
    rule = _bad_files(tmp_path)
    given = str(tmp_path / name)
    with pytest.raises(decay.DecayError) as info:
        decay.checkpoint.load(given, rule, {"a": np.ones(3), "b": np.ones(2)})
    assert repr(given) in str(info.value)


@pytest.mark.parametrize("name", ["folder", os.path.join("missing", "ck.npz")])
def test_every_failed_save_names_the_path(tmp_path, name):
    rule, _, state, _ = _trained([("a", 3), ("b", 2)])
    os.mkdir(tmp_path / "folder")
    given = str(tmp_path / name)
    with pytest.raises(decay.DecayError) as info:
        decay.checkpoint.save(given, rule, state)
    assert repr(given) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["folder"]


def test_compressed_npz_files_load(tmp_path):
    """Not a failure: a checkpoint recompressed with DEFLATE/BZIP2/LZMA reads the same."""
    rule, params, state, _ = _trained([("a", 3), ("b", 2)])
    decay.checkpoint.save(tmp_path / "ck.npz", rule, state)
    with zipfile.ZipFile(tmp_path / "ck.npz") as src, zipfile.ZipFile(tmp_path / "z.npz", "w", zipfile.ZIP_LZMA) as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
    loaded = decay.checkpoint.load(tmp_path / "z.npz", rule, params)
    assert_unchanged(snapshot(params, state), snapshot(params, loaded))
