"""decay ↔ PyTorch: ``torch.optim`` optimizers and their lr schedulers.

PyTorch's ``weight_decay`` is coupled (λθ added to the gradient), AdamW's decoupled
and scaled by lr_t; its lr schedulers multiply the optimizer's base lr. Nothing here
imports torch: the optimizer is written as a :class:`~decay.convert._codegen._Call`
that builds it on demand, and native objects are read through their attributes. Use
:func:`decay.convert.to_native` and :func:`decay.convert.from_native`.
"""

from __future__ import annotations

import math

from .. import schedules
from ..errors import DecayError
from ..masks import resolve_mask
from ..rules.adam import adam, adamw
from ..rules.sgd import sgd
from . import _rule, modern, torch_classic
from ._codegen import Conversion, _Call, _Multiplier, _Name, _reason
from ._common import common_issues, lr_scaled, mask_source, named, to_float, unsupported, weight_decay
from ._penalty import torch_penalty_source
from ._schedules import base_value, is_constant, is_integer, kind, plain_callable_issue

_SCHEDULER = "torch.optim.lr_scheduler."


# ---------------------------------------------------------------------------------
# decay lr schedules -> torch lr schedulers. A named scheduler where one is equal at
# every step (each function returns None where the schedule's options have none),
# else LambdaLR evaluating decay's schedule.


def _step_lr(s):
    return _Call(_SCHEDULER + "StepLR", _Name("optimizer"), step_size=s.step_size, gamma=s.gamma)


def _multistep_lr(s):
    return _Call(_SCHEDULER + "MultiStepLR", _Name("optimizer"), milestones=list(s.milestones), gamma=s.gamma)


def _exponential_lr(s):
    if s.decay_steps == 1 and s.transition_begin == 0 and s.end_value is None:
        return _Call(_SCHEDULER + "ExponentialLR", _Name("optimizer"), gamma=s.decay_rate)
    return None


def _polynomial_lr(s):
    if s.end_value == 0 and not s.cycle:
        return _Call(_SCHEDULER + "PolynomialLR", _Name("optimizer"), total_iters=s.decay_steps, power=s.power)
    return None


def _cosine_annealing_warm_restarts(s):
    if s.m_mul == 1 and is_integer(s.t_mul):
        return _Call(_SCHEDULER + "CosineAnnealingWarmRestarts", _Name("optimizer"), T_0=s.first_decay_steps,
                     T_mult=int(s.t_mul), eta_min=s.floor)
    return None


_NAMED_SCHEDULERS = {
    "step": _step_lr,
    "multistep": _multistep_lr,
    "exponential": _exponential_lr,
    "polynomial": _polynomial_lr,
    "cosine_restarts": _cosine_annealing_warm_restarts,
}


def _lambda_lr(s, issues, notes):
    if s.base <= 0:
        issues.append(
            f"the schedule's base lr is {s.base!r}; PyTorch's LambdaLR multiplies the base lr, "
            "so a schedule with base 0 cannot be written as one. The closest keeps lr at 0."
        )
        return None
    if kind(s) == "cosine":
        notes.append(
            f"CosineAnnealingLR(optimizer, T_max={s.decay_steps}, eta_min={s.floor!r}) is equal "
            f"only for t <= {s.decay_steps}: past T_max PyTorch climbs back to the base lr, "
            "decay stays at the floor; LambdaLR follows decay's schedule"
        )
    notes.append("LambdaLR computes base·(s(t)/base), equal to decay's s(t) to 1 ulp")
    return _Call(_SCHEDULER + "LambdaLR", _Name("optimizer"), lr_lambda=_Multiplier(s))


def _torch_scheduler(sched, issues, notes):
    """The torch scheduler _Call for an lr schedule (None for a constant)."""
    if is_constant(sched):
        return None
    if not isinstance(sched, schedules.Schedule):
        issues.append(plain_callable_issue(sched))
        return None
    named_scheduler = _NAMED_SCHEDULERS.get(kind(sched))
    call = named_scheduler(sched) if named_scheduler is not None else None
    return call if call is not None else _lambda_lr(sched, issues, notes)


def schedule_to_torch(sched) -> Conversion:
    issues, notes = [], []
    call = _torch_scheduler(sched, issues, notes)
    notes.insert(0, f"create the optimizer with lr={base_value(sched)!r}; call scheduler.step() "
                    "after every optimizer.step()")
    code = call.source() if call is not None else "None  # constant lr: no scheduler"
    return Conversion(
        "torch", not issues, _reason(issues), code, note="; ".join(notes),
        _builder=lambda optimizer=None: None if call is None else call.build({"optimizer": optimizer}),
    )


# ---------------------------------------------------------------------------------
# decay rules -> torch optimizers. Each optimizer function returns (path, its own
# keyword arguments, torch's weight_decay, the penalty left for the loss).


def _fold_l2(torch_wd, penalty):
    """torch's weight_decay is coupled, as decay's regularizer always is: the penalty's
    L2 part goes in as the coupled weight decay equal to it; the rest stays a penalty."""
    if penalty is None:
        return torch_wd, None
    return torch_wd + penalty.coupled_weight_decay(), penalty.without_l2()


def _sgd_to_torch(rule, lam, issues):
    mu = _rule.hyper(rule, "momentum")
    torch_wd = lam
    if rule.decoupled and lam:
        torch_wd = lr_scaled(rule, lam, "torch.optim.SGD", issues)
        if mu > 0:
            issues.append(
                f"torch.optim.SGD has only coupled weight decay: λθ is added to the gradient "
                f"and enters the momentum buffer, so with momentum {mu!r} the shrink per step "
                f"builds up to lr·λ/(1−μ) = {1 / (1 - mu):.3g}× decay's decoupled lr·λ. "
                "The closest uses the same λ coupled"
            )
    torch_wd, penalty = _fold_l2(torch_wd, rule.regularizer)
    options = {}
    if mu:
        options["momentum"] = mu
    if _rule.hyper(rule, "dampening"):
        options["dampening"] = _rule.hyper(rule, "dampening")
    if _rule.hyper(rule, "nesterov"):
        options["nesterov"] = True
    return "torch.optim.SGD", options, torch_wd, penalty


def _adam_to_torch(rule, lam, issues):
    betas = _rule.hyper(rule, "betas")
    if rule.epsilon_hat:
        issues.append(
            f"epsilon_hat=True is Keras's ε placement, θ −= lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε); "
            f"PyTorch adds ε to the bias-corrected √v̂, so its ε would have to be "
            f"ε/√(1−β2^k), which changes every step ({1 / math.sqrt(1 - betas[1]):.3g}·ε at step 1, "
            "→ ε later): no constant eps is equal. The closest uses eps=ε"
        )
    options = {"betas": tuple(betas), "eps": _rule.hyper(rule, "eps")}
    if rule.amsgrad:
        options["amsgrad"] = True
    if rule.decoupled and (lam or _rule.is_adamw(rule)):
        return "torch.optim.AdamW", options, lr_scaled(rule, lam, "torch.optim.AdamW", issues), rule.regularizer
    return ("torch.optim.Adam", options, *_fold_l2(lam, rule.regularizer))


def _torch_optimizer(rule, path, kwargs):
    """(the optimizer _Call, the code setting up its params). A mask becomes two param
    groups, the undecayed one with weight_decay 0."""
    if rule.mask is None:
        return _Call(path, _Name("params"), **kwargs), ""
    groups = [{"params": _Name("decayed"), "param_names": _Name("decayed_names")},
              {"params": _Name("others"), "param_names": _Name("other_names"), "weight_decay": 0.0}]
    setup = (
        "names, tensors = list(params), list(params.values())  # params: dict(model.named_parameters())\n"
        f"keep = decay.masks.resolve_mask({mask_source(rule.mask)}, names, tensors)\n"
        "decayed = [p for p, k in zip(tensors, keep) if k]; decayed_names = [n for n, k in zip(names, keep) if k]\n"
        "others = [p for p, k in zip(tensors, keep) if not k]; other_names = [n for n, k in zip(names, keep) if not k]\n"
    )
    return _Call(path, groups, **kwargs), setup


def _torch_code(optimizer, setup, scheduler) -> str:
    if scheduler is None and not setup:
        return optimizer.source()
    code = setup + f"optimizer = {optimizer.source()}"
    if scheduler is not None:
        code += f"\nscheduler = {scheduler.source()}"
    return code


def _torch_extra(rule, penalty):
    if penalty is None:
        return None
    where = "the decayed parameters" if rule.mask is not None else "all parameters"
    return f"add to the loss: loss = loss + {torch_penalty_source(penalty, 'params')} (params: {where})"


def _torch_env(rule, params) -> dict:
    """The names the optimizer's _Call uses (see _torch_optimizer), bound to ``params``."""
    if rule.mask is None:
        if params is None:
            raise DecayError("A torch optimizer needs `params`: build(model.parameters()).")
        # A dict name -> tensor goes in as named parameters (what torch accepts).
        return {"params": list(params.items()) if isinstance(params, dict) else params}
    names, tensors = named(params, "A conversion with a mask")
    keep = resolve_mask(rule.mask, names, tensors)
    return {
        "decayed": [p for p, k in zip(tensors, keep) if k],
        "decayed_names": [n for n, k in zip(names, keep) if k],
        "others": [p for p, k in zip(tensors, keep) if not k],
        "other_names": [n for n, k in zip(names, keep) if not k],
    }


def _torch_builder(rule, optimizer, scheduler):
    def build(params=None):
        opt = optimizer.build(_torch_env(rule, params))
        if scheduler is None:
            return opt
        return opt, scheduler.build({"optimizer": opt})

    return build


def rule_to_torch(rule) -> Conversion:
    if modern.is_modern(rule):  # Lion, LAMB, Muon: decay/convert/modern.py
        return modern.rule_to_torch(rule)
    issues, notes = [], []
    common_issues(rule, issues, "torch")
    lr = _rule.hyper(rule, "lr")
    alpha, lam = base_value(lr), weight_decay(rule)
    scheduler = _torch_scheduler(lr, issues, notes)
    to_torch = _sgd_to_torch if _rule.is_sgd(rule) else torch_classic.TO_TORCH.get(rule.name, _adam_to_torch)
    path, options, torch_wd, penalty = to_torch(rule, lam, issues)
    if rule.name == "nadam":
        notes.append(torch_classic.NADAM_NOTE)
    kwargs = {"lr": alpha, **options}
    if torch_wd or path == "torch.optim.AdamW":
        kwargs["weight_decay"] = torch_wd
    optimizer, setup = _torch_optimizer(rule, path, kwargs)
    code = _torch_code(optimizer, setup, scheduler)
    if scheduler is not None:
        notes.append("call scheduler.step() after every optimizer.step()")
    return Conversion("torch", not issues, _reason(issues), code, _torch_extra(rule, penalty),
                      "; ".join(notes) or None, penalty, _torch_builder(rule, optimizer, scheduler))


# ---------------------------------------------------------------------------------
# torch lr schedulers -> decay lr schedules. Each takes the scheduler and its (one)
# base lr α.


def _from_step_lr(s, alpha):
    return schedules.step(alpha, s.step_size, s.gamma)


def _from_multistep_lr(s, alpha):
    counts = dict(sorted(s.milestones.items()))
    if all(c == 1 for c in counts.values()):
        return schedules.multistep(alpha, list(counts), s.gamma)
    # A milestone given k times multiplies by gamma^k there.
    values, k = [alpha], 0
    for c in counts.values():
        k += c
        values.append(alpha * s.gamma**k)
    return schedules.piecewise(list(counts), values)


def _from_exponential_lr(s, alpha):
    return schedules.exponential(alpha, s.gamma)


def _from_polynomial_lr(s, alpha):
    return schedules.polynomial(alpha, s.total_iters, power=s.power)


def _from_cosine_annealing_warm_restarts(s, alpha):
    return schedules.cosine_restarts(alpha, s.T_0, t_mul=float(s.T_mult), floor=float(s.eta_min))


def _from_lambda_lr(s, alpha):
    if len(s.lr_lambdas) != 1 or not isinstance(s.lr_lambdas[0], _Multiplier):
        raise unsupported(s, " (a torch lr scheduler)")
    m = s.lr_lambdas[0]
    if m.base != alpha:
        raise DecayError(f"LambdaLR's schedule has base {m.base!r} but the optimizer's lr is {alpha!r}.")
    return m.schedule


def _from_cosine_annealing_lr(s, alpha):
    raise DecayError(
        f"CosineAnnealingLR(T_max={s.T_max}, eta_min={s.eta_min!r}) has no exact decay "
        f"schedule: past T_max it climbs back to the base lr (period 2·T_max). For runs of at "
        f"most T_max steps it equals decay.schedules.cosine({alpha!r}, {s.T_max}, floor={s.eta_min!r})."
    )


_FROM_SCHEDULERS = {
    "StepLR": _from_step_lr,
    "MultiStepLR": _from_multistep_lr,
    "ExponentialLR": _from_exponential_lr,
    "PolynomialLR": _from_polynomial_lr,
    "CosineAnnealingWarmRestarts": _from_cosine_annealing_warm_restarts,
    "LambdaLR": _from_lambda_lr,
    "CosineAnnealingLR": _from_cosine_annealing_lr,
}


def from_torch_scheduler(s, name):
    bases = [float(b) for b in s.base_lrs]
    if len(set(bases)) != 1:
        raise DecayError(f"{name} drives param groups with different base lrs {bases}; decay's rule has one lr.")
    convert = _FROM_SCHEDULERS.get(name)
    if convert is None:
        raise unsupported(s, " (a torch lr scheduler)")
    return convert(s, bases[0])


# ---------------------------------------------------------------------------------
# torch optimizers -> decay rules.


_TORCH_IGNORED = {"params", "param_names", "initial_lr", "foreach", "fused", "capturable",
                  "differentiable"}


def _torch_hyper(group) -> dict:
    """A param group's hyperparameters, with the lr a scheduler started from."""
    h = {k: v for k, v in group.items() if k not in _TORCH_IGNORED}
    h["lr"] = group.get("initial_lr", group["lr"])
    return h


def _differs(a, b) -> bool:
    try:
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
        if a is None or b is None or isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
            return a != b
        return to_float(a) != to_float(b)
    except (TypeError, ValueError):
        return a is not b


def _group_differences(groups, base) -> dict:
    """hyperparameter -> [(group index, value)] where a group differs from group 0."""
    differ = {}
    for i, group in enumerate(groups[1:], 1):
        h = _torch_hyper(group)
        for key in set(h) | set(base):
            if _differs(h.get(key), base.get(key)):
                differ.setdefault(key, []).append((i, h.get(key)))
    return differ


def _torch_mask(name, groups, base):
    """The mask of param groups that differ only in weight_decay being 0 (None when all
    groups agree); ``base["weight_decay"]`` becomes the decayed groups' value."""
    differ = _group_differences(groups, base) if len(groups) > 1 else {}
    if not differ:
        return None
    wds = {to_float(g["weight_decay"]) for g in groups}
    if set(differ) != {"weight_decay"} or len(wds) != 2 or 0.0 not in wds:
        raise DecayError(
            f"torch.optim.{name} has {len(groups)} param groups with different "
            f"hyperparameters ({', '.join(f'{k}: {v}' for k, v in sorted(differ.items()))} vs "
            "group 0); from_native converts one set of hyperparameters, plus a mask when "
            "groups differ only in weight_decay being 0. Build the decay rule with groups= by hand."
        )
    if not all("param_names" in g for g in groups):
        raise DecayError(
            f"torch.optim.{name}'s param groups differ in weight_decay (a no-decay group), "
            "which decay expresses as a mask by parameter name, but the optimizer has no "
            "names. Build it with named parameters: [{'params': [...], 'param_names': [...]}, ...] "
            "or model.named_parameters()."
        )
    base["weight_decay"] = max(wds)
    return {n: to_float(g["weight_decay"]) > 0 for g in groups for n in g["param_names"]}


def _torch_lr(opt, name, base, scheduler):
    """The lr: a float, or the decay schedule of ``scheduler``."""
    lr = to_float(base["lr"])
    if scheduler is None and "initial_lr" in opt.param_groups[0]:
        raise DecayError(
            f"This torch.optim.{name} is driven by an lr scheduler (its param groups have "
            "'initial_lr'); without it the lr would be taken as constant. Pass it: "
            "from_native(optimizer, scheduler=scheduler)."
        )
    if scheduler is None:
        return lr
    sched = from_torch_scheduler(scheduler, type(scheduler).__qualname__)
    if getattr(scheduler, "optimizer", opt) is not opt:
        raise DecayError("`scheduler` drives a different optimizer than the one given.")
    return sched


def _from_torch_sgd(h, lr, wd, mask):
    return sgd(lr, momentum=to_float(h["momentum"]), dampening=to_float(h["dampening"]),
               nesterov=bool(h["nesterov"]), weight_decay=wd, mask=mask)


def _adam_settings(h, lr, wd, mask) -> dict:
    return dict(lr=lr, betas=tuple(to_float(b) for b in h["betas"]), eps=to_float(h["eps"]),
                weight_decay=wd, amsgrad=bool(h["amsgrad"]), mask=mask)


def _from_torch_adam(h, lr, wd, mask):
    return adam(decoupled=bool(h.get("decoupled_weight_decay", False)), **_adam_settings(h, lr, wd, mask))


def _from_torch_adamw(h, lr, wd, mask):
    return adamw(**_adam_settings(h, lr, wd, mask))


_FROM_OPTIMIZERS = {"SGD": _from_torch_sgd, "Adam": _from_torch_adam, "AdamW": _from_torch_adamw}
_FROM_OPTIMIZERS.update(torch_classic.FROM_TORCH)  # RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam


def from_torch_optimizer(opt, name, scheduler):
    """``name`` is one of _FROM_OPTIMIZERS' keys (see decay.convert.from_native)."""
    base = _torch_hyper(opt.param_groups[0])
    if base.get("maximize"):
        raise DecayError(f"torch.optim.{name}(maximize=True) ascends the loss; decay's rules descend.")
    mask = _torch_mask(name, opt.param_groups, base)
    lr = _torch_lr(opt, name, base, scheduler)
    return _FROM_OPTIMIZERS[name](base, lr, to_float(base["weight_decay"]), mask)
