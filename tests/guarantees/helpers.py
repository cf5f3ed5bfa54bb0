"""What the adversarial matrix shares: the rules, their torch.optim twins, and snapshots
that compare params and state bit for bit before and after a refused call."""

from __future__ import annotations

import numpy as np

import decay

LR = 0.1
WD = 0.01

# Each rule and the torch.optim optimizer that computes the same step (expected values
# come from torch.optim, never from decay).
RULES = {
    "sgd": (lambda: decay.sgd(LR, weight_decay=WD), dict(cls="SGD", lr=LR, weight_decay=WD)),
    "momentum": (
        lambda: decay.sgd(LR, momentum=0.9, nesterov=True, weight_decay=WD),
        dict(cls="SGD", lr=LR, momentum=0.9, nesterov=True, weight_decay=WD),
    ),
    "adam": (lambda: decay.adam(LR, weight_decay=WD, amsgrad=True), dict(cls="Adam", lr=LR, weight_decay=WD, amsgrad=True)),
    "adamw": (lambda: decay.adamw(LR, weight_decay=WD), dict(cls="AdamW", lr=LR, weight_decay=WD)),
}


def torch_optimizer(name, params):
    import torch

    kwargs = dict(RULES[name][1])
    return getattr(torch.optim, kwargs.pop("cls"))(params, **kwargs)


def torch_optim_run(name, start, grads):
    """torch.optim's parameters (the reference) after ``grads`` from ``start``, laid out plainly."""
    import torch

    p = torch.tensor(start, requires_grad=True)
    opt = torch_optimizer(name, [p])
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


def to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy().copy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        return np.array(x.numpy())
    return np.array(x, copy=True)


def snapshot(params, state) -> list:
    """Every number of params and state as NumPy copies, plus the state's counters."""
    leaves = list(params.values()) if isinstance(params, dict) else list(params) if isinstance(params, (list, tuple)) else [params]
    out = [to_numpy(x) for x in leaves]
    if state is not None:
        out += [(state.count, state.skipped)]
        out += [to_numpy(x) for name in sorted(state.slots) for x in state.slots[name]]
    return out


def assert_unchanged(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        else:
            assert a == b


def torch_state_snapshot(optimizer) -> dict:
    import torch

    return {
        id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
        for p, s in optimizer.state.items()
    }


def assert_torch_state_unchanged(before: dict, optimizer):
    import torch

    assert set(before) == {id(p) for p in optimizer.state}
    for p, s in optimizer.state.items():
        old = before[id(p)]
        assert set(old) == set(s)
        for k, v in s.items():
            assert torch.equal(v, old[k]) if isinstance(v, torch.Tensor) else v == old[k]
