"""decay ↔ Keras 3 for the classic optimizers: RMSprop, Adagrad, Adadelta, Adamax, Nadam
(Keras has no RAdam). One small function per optimizer and direction;
:mod:`decay.convert.keras` dispatches to them (``TO_KERAS`` by rule name,
``FROM_KERAS`` by Keras class name).

Keras's ``weight_decay`` is decoupled and lr-scaled in all of them (decay's
``decoupled=True``); a coupled λ converts exactly as the L2 penalty equal to it in the
loss, whose gradient Keras adds before the optimizer, as coupled decay does.
"""

from __future__ import annotations

from ..errors import DecayError
from ..rules.adadelta import adadelta
from ..rules.adagrad import adagrad
from ..rules.adamax import adamax
from ..rules.nadam import nadam
from ..rules.rmsprop import rmsprop
from . import _rule
from . import adafactor as _adafactor
from ._common import to_float
from ._schedules import is_constant


def _decay(rule, lam, issues):
    from .keras import _keras_decay  # keras.py imports this module

    return _keras_decay(rule, lam, issues)


def _eps_issue(issues, what, keras_has):
    issues.append(f"{what}; Keras has {keras_has}, and no constant ε makes the two equal. The closest uses ε as is")


def _rmsprop_to_keras(rule, lam, issues):
    if not rule.eps_inside_sqrt:
        _eps_issue(issues, "this rule divides by √v + ε (PyTorch's placement)", "√(v + ε) (eps_inside_sqrt=True)")
    if rule.initial_accumulator_value:
        issues.append(
            f"initial_accumulator_value={rule.initial_accumulator_value!r}: Keras's RMSprop starts "
            "its average at 0. The closest starts at 0"
        )
    momentum = _rule.hyper(rule, "momentum")
    if momentum and not is_constant(_rule.hyper(rule, "lr")):
        issues.append(
            "Keras's RMSprop keeps the lr inside its momentum (b ← μb + lr_t·g/d, θ ← θ − b), "
            "decay and PyTorch outside it (b ← μb + g/d, θ ← θ − lr_t·b): equal only while the "
            "lr is constant, not under a schedule"
        )
    options = dict(rho=_rule.hyper(rule, "alpha"), momentum=momentum, epsilon=_rule.hyper(rule, "eps"))
    if rule.centered:
        options["centered"] = True
    return ("keras.optimizers.RMSprop", options, *_decay(rule, lam, issues))


def _adagrad_to_keras(rule, lam, issues):
    if not rule.eps_inside_sqrt:
        _eps_issue(issues, "this rule divides by √s + ε (PyTorch's placement)", "√(s + ε) (eps_inside_sqrt=True)")
    if _rule.hyper(rule, "lr_decay"):
        issues.append(
            f"lr_decay={_rule.hyper(rule, 'lr_decay')!r} (PyTorch's lr/(1 + t·lr_decay)) has no Keras "
            "Adagrad option; give the rule decay.schedules.inverse_time instead. The closest has none"
        )
    options = dict(initial_accumulator_value=rule.initial_accumulator_value, epsilon=_rule.hyper(rule, "eps"))
    return ("keras.optimizers.Adagrad", options, *_decay(rule, lam, issues))


def _adadelta_to_keras(rule, lam, issues):
    options = dict(rho=_rule.hyper(rule, "rho"), epsilon=_rule.hyper(rule, "eps"))
    return ("keras.optimizers.Adadelta", options, *_decay(rule, lam, issues))


def _betas(rule):
    beta_1, beta_2 = _rule.hyper(rule, "betas")
    return dict(beta_1=beta_1, beta_2=beta_2, epsilon=_rule.hyper(rule, "eps"))


def _adamax_to_keras(rule, lam, issues):
    if rule.eps_inside_max:
        _eps_issue(issues, "this rule takes max(β2·u, |g| + ε) (PyTorch, optax)",
                   "max(β2·u, |g|) + ε (eps_inside_max=False)")
    return ("keras.optimizers.Adamax", _betas(rule), *_decay(rule, lam, issues))


def _nadam_to_keras(rule, lam, issues):
    if rule.momentum_schedule != "keras":
        issues.append(
            f"momentum_schedule={rule.momentum_schedule!r}: Keras's Nadam has μ_k = β1·(1 − ½·0.96^k) "
            "(momentum_schedule='keras'), with no option to change it. The closest uses Keras's"
        )
    return ("keras.optimizers.Nadam", _betas(rule), *_decay(rule, lam, issues))


def _radam_to_keras(rule, lam, issues):
    issues.append("Keras 3 has no RAdam; the closest is keras.optimizers.Adam, without the rectification")
    return ("keras.optimizers.Adam", _betas(rule), *_decay(rule, lam, issues))


#: decay rule name -> fn(rule, λ, issues) -> (Keras path, options, Keras's weight_decay, penalty for the loss)
TO_KERAS = {
    "rmsprop": _rmsprop_to_keras,
    "adagrad": _adagrad_to_keras,
    "adadelta": _adadelta_to_keras,
    "adamax": _adamax_to_keras,
    "nadam": _nadam_to_keras,
    "radam": _radam_to_keras,
}

#: What Keras rounds to float32 beyond learning_rate and weight_decay, per rule.
NOTES = {
    "nadam": "Keras's Nadam computes μ_k with 0.96 rounded to float32 (its running product with "
             "the exact 0.96): 3.4e-8 relative after 100 steps in float64 (measured).",
    "adagrad": "Keras starts its accumulator at initial_accumulator_value rounded to float32 "
               "(0.1 → 0.10000000149): exact when that value is exact in float32 (0.125).",
}


# -- Keras optimizers -> decay rules -----------------------------------------------------


def _decoupled(wd, mask):
    return dict(weight_decay=wd, decoupled=wd > 0, mask=mask)


def _from_rmsprop(opt, lr, wd, mask):
    momentum = to_float(opt.momentum)
    if momentum and callable(lr):
        raise DecayError(
            "keras.optimizers.RMSprop with momentum under a learning-rate schedule keeps lr_t "
            "inside its momentum buffer; decay's RMSprop (PyTorch's) keeps it outside: no "
            "decay rule equals it. Use a constant learning rate or momentum=0."
        )
    return rmsprop(lr, alpha=to_float(opt.rho), eps=to_float(opt.epsilon), momentum=momentum,
                   centered=bool(opt.centered), eps_inside_sqrt=True, **_decoupled(wd, mask))


def _from_adagrad(opt, lr, wd, mask):
    return adagrad(lr, initial_accumulator_value=to_float(opt.initial_accumulator_value),
                   eps=to_float(opt.epsilon), eps_inside_sqrt=True, **_decoupled(wd, mask))


def _from_adadelta(opt, lr, wd, mask):
    return adadelta(lr, rho=to_float(opt.rho), eps=to_float(opt.epsilon), **_decoupled(wd, mask))


def _from_adamax(opt, lr, wd, mask):
    return adamax(lr, betas=(to_float(opt.beta_1), to_float(opt.beta_2)), eps=to_float(opt.epsilon),
                  eps_inside_max=False, **_decoupled(wd, mask))


def _from_nadam(opt, lr, wd, mask):
    return nadam(lr, betas=(to_float(opt.beta_1), to_float(opt.beta_2)), eps=to_float(opt.epsilon),
                 momentum_schedule="keras", **_decoupled(wd, mask))


#: Keras optimizer class name -> fn(optimizer, lr, weight_decay, mask) -> decay rule
FROM_KERAS = {
    "RMSprop": _from_rmsprop,
    "Adagrad": _from_adagrad,
    "Adadelta": _from_adadelta,
    "Adamax": _from_adamax,
    "Nadam": _from_nadam,
}

# Adafactor (issue 16): decay/convert/adafactor.py
TO_KERAS["adafactor"] = _adafactor.to_keras
FROM_KERAS["Adafactor"] = _adafactor.from_keras
NOTES["adafactor"] = _adafactor.KERAS_NOTE
