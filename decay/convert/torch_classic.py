"""decay ↔ PyTorch for the classic optimizers: RMSprop, Adagrad, Adadelta, Adamax, NAdam,
RAdam. One small function per optimizer and direction; :mod:`decay.convert.torch`
dispatches to them (``TO_TORCH`` by rule name, ``FROM_TORCH`` by torch class name).

torch's ``weight_decay`` is coupled in all six; NAdam and RAdam also take
``decoupled_weight_decay=True`` (θ ← θ·(1 − lr_t·λ), decay's ``decoupled=True``). The
others have no decoupled decay, and their update is not linear in g, so no coupled λ
equals a decoupled one: such a rule converts with ``exact=False``.
"""

from __future__ import annotations

from ..rules.adadelta import adadelta
from ..rules.adagrad import adagrad
from ..rules.adamax import adamax
from ..rules.nadam import nadam
from ..rules.radam import radam
from ..rules.rmsprop import rmsprop
from . import _rule
from . import adafactor as _adafactor
from ._common import lr_scaled, to_float


def _coupled_only(rule, lam, path, issues):
    """(torch's weight_decay, the penalty left for the loss) for an optimizer whose decay
    is coupled only; the regularizer's L2 part folds into weight_decay."""
    if rule.decoupled and lam:
        issues.append(
            f"{path} has only coupled weight decay (λθ added to the gradient, then divided by "
            "the adaptive denominator); decay's decoupled shrink θ·(1 − lr·λ) is not that for "
            "any λ. The closest uses the same λ coupled"
        )
    penalty = rule.regularizer
    if penalty is None:
        return lam, None
    return lam + penalty.coupled_weight_decay(), penalty.without_l2()


def _either(rule, lam, path, options, issues):
    """NAdam, RAdam: decoupled_weight_decay=True where decay's is decoupled."""
    if rule.decoupled and lam:
        options["decoupled_weight_decay"] = True
        # The regularizer stays a loss term: its gradient is coupled, the decay decoupled.
        return path, options, lr_scaled(rule, lam, path, issues), rule.regularizer
    return (path, options, *_coupled_only(rule, lam, path, issues))


def _eps_issue(issues, what, torch_has):
    issues.append(f"{what}; torch has {torch_has}, and no constant ε makes the two equal. The closest uses ε as is")


def _rmsprop_to_torch(rule, lam, issues):
    path = "torch.optim.RMSprop"
    if rule.eps_inside_sqrt:
        _eps_issue(issues, "eps_inside_sqrt=True divides by √(v + ε) (Keras, optax)", "√v + ε")
    if rule.initial_accumulator_value:
        issues.append(
            f"initial_accumulator_value={rule.initial_accumulator_value!r}: torch's RMSprop "
            "starts its square average at 0. The closest starts at 0"
        )
    options = {"alpha": _rule.hyper(rule, "alpha"), "eps": _rule.hyper(rule, "eps")}
    if _rule.hyper(rule, "momentum"):
        options["momentum"] = _rule.hyper(rule, "momentum")
    if rule.centered:
        options["centered"] = True
    return (path, options, *_coupled_only(rule, lam, path, issues))


def _adagrad_to_torch(rule, lam, issues):
    path = "torch.optim.Adagrad"
    if rule.eps_inside_sqrt:
        _eps_issue(issues, "eps_inside_sqrt=True divides by √(s + ε) (Keras, optax)", "√s + ε")
    options = {"lr_decay": _rule.hyper(rule, "lr_decay"), "eps": _rule.hyper(rule, "eps")}
    if rule.initial_accumulator_value:
        options["initial_accumulator_value"] = rule.initial_accumulator_value
    return (path, options, *_coupled_only(rule, lam, path, issues))


def _adadelta_to_torch(rule, lam, issues):
    path = "torch.optim.Adadelta"
    options = {"rho": _rule.hyper(rule, "rho"), "eps": _rule.hyper(rule, "eps")}
    return (path, options, *_coupled_only(rule, lam, path, issues))


def _adamax_to_torch(rule, lam, issues):
    path = "torch.optim.Adamax"
    if not rule.eps_inside_max:
        _eps_issue(issues, "eps_inside_max=False divides by max(β2·u, |g|) + ε (Keras)", "max(β2·u, |g| + ε)")
    options = {"betas": tuple(_rule.hyper(rule, "betas")), "eps": _rule.hyper(rule, "eps")}
    return (path, options, *_coupled_only(rule, lam, path, issues))


def _nadam_to_torch(rule, lam, issues):
    path = "torch.optim.NAdam"
    schedule = rule.momentum_schedule
    if schedule == "constant":
        issues.append(
            "momentum_schedule='constant' (μ_k = β1, optax's nadam) is not torch's "
            "μ_k = β1·(1 − ½·0.96^(k·momentum_decay)) for any momentum_decay. The closest uses "
            "torch's default momentum_decay=0.004"
        )
    options = {"betas": tuple(_rule.hyper(rule, "betas")), "eps": _rule.hyper(rule, "eps")}
    # Keras's schedule is torch's with momentum_decay = 1 (0.96^k).
    options["momentum_decay"] = 4e-3 if schedule == "constant" else _rule.hyper(rule, "momentum_decay")
    return _either(rule, lam, path, options, issues)


def _radam_to_torch(rule, lam, issues):
    options = {"betas": tuple(_rule.hyper(rule, "betas")), "eps": _rule.hyper(rule, "eps")}
    return _either(rule, lam, "torch.optim.RAdam", options, issues)


#: torch keeps NAdam's running product of μ in float32 unless the default dtype is float64.
NADAM_NOTE = (
    "torch.optim.NAdam keeps its mu_product in float32 unless torch.get_default_dtype() is "
    "float64 (decay computes it in float64): 6.5e-10 relative after 100 steps (measured); "
    "exact with torch.set_default_dtype(torch.float64)"
)

#: decay rule name -> fn(rule, λ, issues) -> (torch path, options, torch's weight_decay, penalty for the loss)
TO_TORCH = {
    "rmsprop": _rmsprop_to_torch,
    "adagrad": _adagrad_to_torch,
    "adadelta": _adadelta_to_torch,
    "adamax": _adamax_to_torch,
    "nadam": _nadam_to_torch,
    "radam": _radam_to_torch,
}


# -- torch optimizers -> decay rules (h: param group 0's hyperparameters) --------------


def _betas(h):
    return tuple(to_float(b) for b in h["betas"])


def _from_rmsprop(h, lr, wd, mask):
    return rmsprop(lr, alpha=to_float(h["alpha"]), eps=to_float(h["eps"]), weight_decay=wd,
                   momentum=to_float(h["momentum"]), centered=bool(h["centered"]), mask=mask)


def _from_adagrad(h, lr, wd, mask):
    return adagrad(lr, lr_decay=to_float(h["lr_decay"]), weight_decay=wd, eps=to_float(h["eps"]),
                   initial_accumulator_value=to_float(h["initial_accumulator_value"]), mask=mask)


def _from_adadelta(h, lr, wd, mask):
    return adadelta(lr, rho=to_float(h["rho"]), eps=to_float(h["eps"]), weight_decay=wd, mask=mask)


def _from_adamax(h, lr, wd, mask):
    return adamax(lr, betas=_betas(h), eps=to_float(h["eps"]), weight_decay=wd, mask=mask)


def _from_nadam(h, lr, wd, mask):
    return nadam(lr, betas=_betas(h), eps=to_float(h["eps"]), weight_decay=wd,
                 momentum_decay=to_float(h["momentum_decay"]),
                 decoupled=bool(h.get("decoupled_weight_decay", False)), mask=mask)


def _from_radam(h, lr, wd, mask):
    return radam(lr, betas=_betas(h), eps=to_float(h["eps"]), weight_decay=wd,
                 decoupled=bool(h.get("decoupled_weight_decay", False)), mask=mask)


#: torch.optim class name -> fn(hyperparameters, lr, weight_decay, mask) -> decay rule
FROM_TORCH = {
    "RMSprop": _from_rmsprop,
    "Adagrad": _from_adagrad,
    "Adadelta": _from_adadelta,
    "Adamax": _from_adamax,
    "NAdam": _from_nadam,
    "RAdam": _from_radam,
}

# Adafactor (issue 16): decay/convert/adafactor.py
TO_TORCH["adafactor"] = _adafactor.to_torch
FROM_TORCH["Adafactor"] = _adafactor.from_torch
