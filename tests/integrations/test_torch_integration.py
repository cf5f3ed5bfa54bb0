"""decay.torch.Optimizer is a real torch optimizer and trains as torch.optim does."""

import copy
import io
import math

import pytest

torch = pytest.importorskip("torch", reason="torch not installed: these tests drive decay.torch.Optimizer")

import decay
from decay.tolerances import assert_close

STEPS = 100


def make_model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)


def data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 4, generator=g, dtype=dtype), torch.randn(64, 1, generator=g, dtype=dtype)


def train(model, opt, sched=None, steps=STEPS, start=0):
    X, y = data(next(model.parameters()).dtype)
    trajectory = []
    for i in range(start, start + steps):
        rows = slice((i * 16) % 64, (i * 16) % 64 + 16)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X[rows]), y[rows])
            loss.backward()
            return loss

        opt.step(closure)
        if sched is not None:
            sched.step()
        trajectory.append(flat(model))
    return trajectory


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


CASES = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-2), decay.sgd(0.1, weight_decay=1e-2)),
    "momentum+dampening": (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-2),
        decay.sgd(0.1, momentum=0.9, dampening=0.3, weight_decay=1e-2),
    ),
    "nesterov": (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        decay.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    "adam": (
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
        decay.adam(0.01, weight_decay=1e-2),
    ),
    "adam-amsgrad": (
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2, amsgrad=True),
        decay.adam(0.01, weight_decay=1e-2, amsgrad=True),
    ),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), decay.adamw(0.01, weight_decay=0.1)),
}
SCHEDULERS = {
    "constant": None,
    "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60),
    "step": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5),
}


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("case", list(CASES))
def test_trains_as_torch_optim(case, scheduler):
    native, rule = CASES[case]
    reference, ours = make_model(), make_model()
    ref_opt = native(reference.parameters())
    our_opt = decay.torch.Optimizer(ours.named_parameters(), rule)
    make_sched = SCHEDULERS[scheduler]
    expected = train(reference, ref_opt, make_sched and make_sched(ref_opt))
    actual = train(ours, our_opt, make_sched and make_sched(our_opt))
    for step, (a, e) in enumerate(zip(actual, expected), 1):
        assert_close(a.numpy(), e.numpy(), "float64", steps=step, what=f"{case} step {step}")


def test_decay_schedule_as_lr_equals_torch_scheduler():
    reference, ours = make_model(), make_model()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=25, gamma=0.5)
    our_opt = decay.torch.Optimizer(ours.parameters(), decay.sgd(decay.schedules.step(0.1, 25, 0.5), momentum=0.9))
    expected = train(reference, ref_opt, sched)
    actual = train(ours, our_opt)
    assert_close(actual[-1].numpy(), expected[-1].numpy(), "float64", steps=STEPS)


def test_param_groups_and_masks_by_name():
    # torch: explicit groups, no decay on biases and a smaller lr for the last layer.
    reference, ours = make_model(), make_model()
    named = dict(reference.named_parameters())
    ref_opt = torch.optim.AdamW(
        [
            {"params": [named["0.weight"]]},
            {"params": [named["2.weight"]], "lr": 0.003},
            {"params": [named["0.bias"], named["2.bias"]], "weight_decay": 0.0},
        ],
        lr=0.01,
        weight_decay=0.1,
    )
    ours_named = dict(ours.named_parameters())
    our_opt = decay.torch.Optimizer(
        [
            {"params": [("0.weight", ours_named["0.weight"]), ("0.bias", ours_named["0.bias"])]},
            {"params": [("2.weight", ours_named["2.weight"]), ("2.bias", ours_named["2.bias"])], "lr": 0.003},
        ],
        decay.adamw(0.01, weight_decay=0.1, mask=decay.masks.exclude_names("bias")),
    )
    # the bias of layer 2 runs at lr 0.003 in ours; match that in the reference
    ref_opt.param_groups[2]["params"] = [named["0.bias"]]
    ref_opt.add_param_group({"params": [named["2.bias"]], "lr": 0.003, "weight_decay": 0.0})
    expected = train(reference, ref_opt)
    actual = train(ours, our_opt)
    assert_close(actual[-1].numpy(), expected[-1].numpy(), "float64", steps=STEPS)


def test_timm_mask_without_names_uses_ndim():
    reference, ours = make_model(), make_model()
    decayed = [p for p in reference.parameters() if p.ndim > 1]
    plain = [p for p in reference.parameters() if p.ndim <= 1]
    ref_opt = torch.optim.SGD([{"params": decayed}, {"params": plain, "weight_decay": 0.0}], lr=0.1, weight_decay=0.05)
    our_opt = decay.torch.Optimizer(ours.parameters(), decay.sgd(0.1, weight_decay=0.05, mask=decay.masks.timm_default))
    assert_close(train(ours, our_opt)[-1].numpy(), train(reference, ref_opt)[-1].numpy(), "float64", steps=STEPS)


@pytest.mark.parametrize("case", ["momentum+dampening", "adam-amsgrad", "adamw"])
def test_state_dict_resume_is_bit_identical(case, tmp_path):
    _, rule = CASES[case]
    straight = make_model()
    opt = decay.torch.Optimizer(straight.parameters(), rule)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60)
    train(straight, opt, sched, steps=40)
    expected = train(straight, opt, sched, steps=40, start=40)[-1]

    first = make_model()
    opt1 = decay.torch.Optimizer(first.parameters(), rule)
    sched1 = torch.optim.lr_scheduler.CosineAnnealingLR(opt1, T_max=60)
    train(first, opt1, sched1, steps=40)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict(), "sched": sched1.state_dict()}, path)

    resumed = make_model()
    opt2 = decay.torch.Optimizer(resumed.parameters(), rule)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=60)
    saved = torch.load(path)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    actual = train(resumed, opt2, sched2, steps=40, start=40)[-1]
    assert torch.equal(actual, expected)


def test_state_of_another_rule_is_refused():
    model = make_model()
    opt = decay.torch.Optimizer(model.parameters(), decay.adamw(0.01))
    train(model, opt, steps=2)
    other = decay.torch.Optimizer(make_model().parameters(), decay.sgd(0.1, momentum=0.9))
    with pytest.raises(decay.DecayError, match="adamw"):
        other.load_state_dict(opt.state_dict())


def test_add_param_group_and_zero_grad():
    model = make_model()
    opt = decay.torch.Optimizer(list(model[0].parameters()), decay.sgd(0.1, momentum=0.9))
    opt.add_param_group({"params": list(model[2].parameters()), "lr": 0.0})
    before = flat(model)
    train(model, opt, steps=3)
    after = flat(model)
    n0 = sum(p.numel() for p in model[0].parameters())
    assert not torch.equal(before[:n0], after[:n0])
    assert torch.equal(before[n0:], after[n0:])  # lr 0 in the added group
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_closure_loss_is_returned():
    model = make_model()
    opt = decay.torch.Optimizer(model.parameters(), decay.sgd(0.1))
    X, y = data()
    loss = opt.step(lambda: torch.nn.functional.mse_loss(model(X), y).backward() or torch.tensor(1.5))
    assert float(loss) == 1.5


def test_nonfinite_gradient_skip_and_raise():
    model = make_model()
    opt = decay.torch.Optimizer(model.parameters(), decay.adam(0.01, on_nonfinite="skip"))
    train(model, opt, steps=2)
    before_params = flat(model)
    before_state = copy.deepcopy(opt.state_dict()["state"])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    next(model.parameters()).grad[0, 0] = math.inf
    opt.step()
    assert torch.equal(flat(model), before_params)
    after_state = opt.state_dict()["state"]
    for k in before_state:
        for slot in before_state[k]:
            before, after = before_state[k][slot], after_state[k][slot]
            assert torch.equal(before, after) if isinstance(before, torch.Tensor) else before == after
    assert opt.skipped_steps == 1

    strict = decay.torch.Optimizer(model.parameters(), decay.adam(0.01, on_nonfinite="raise"))
    with pytest.raises(decay.DecayError, match="Non-finite"):
        strict.step()
    assert torch.equal(flat(model), before_params)


def test_bfloat16_tracks_float32():
    low, full = make_model(torch.bfloat16), make_model(torch.float32)
    rule = decay.adamw(0.01, weight_decay=0.1)
    opt_low = decay.torch.Optimizer(low.parameters(), rule)
    opt_full = decay.torch.Optimizer(full.parameters(), rule)
    steps = 20
    train(low, opt_low, steps=steps)
    train(full, opt_full, steps=steps)
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt_low.state.values())
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    # bfloat16 keeps 8 bits: each step rounds once; the float32 run is the reference.
    assert_close(flat(low).float().numpy(), flat(full).numpy(), "bfloat16", steps=steps)
    # state survives a save/load as float32
    saved = [s["exp_avg_sq"].clone() for s in opt_low.state.values()]
    buffer = io.BytesIO()
    torch.save(opt_low.state_dict(), buffer)
    buffer.seek(0)
    opt_low.load_state_dict(torch.load(buffer))
    for before, state in zip(saved, opt_low.state.values()):
        assert state["exp_avg_sq"].dtype == torch.float32
        assert torch.equal(state["exp_avg_sq"], before)  # not rounded through bfloat16


def test_bad_rule_and_groups_are_refused():
    model = make_model()
    with pytest.raises(decay.DecayError, match="torch.optim"):
        decay.torch.Optimizer(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(decay.DecayError, match="param groups"):
        decay.torch.Optimizer(model.parameters(), decay.sgd(0.1, groups=[{"params": ["0"], "lr": 0.1}]))
    with pytest.raises(decay.DecayError, match="named_parameters"):
        opt = decay.torch.Optimizer(model.parameters(), decay.sgd(0.1, weight_decay=0.1, mask={"0.bias": False}))
        train(model, opt, steps=1)
    with pytest.raises(decay.DecayError, match="lr"):
        opt = decay.torch.Optimizer(model.parameters(), decay.sgd(0.1))
        opt.param_groups[0]["lr"] = -1.0
        train(model, opt, steps=1)
