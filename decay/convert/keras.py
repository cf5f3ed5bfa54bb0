"""decay ↔ Keras: ``keras.optimizers`` and their learning-rate schedules, regularizers.

Every Keras optimizer's ``weight_decay`` is decoupled and scaled by lr_t; a coupled
decay becomes an L2 penalty the loss carries. Keras's Adam adds ε outside the bias
correction (decay's ``epsilon_hat=True``). Nothing here imports keras at import time.
Use :func:`decay.convert.to_native` and :func:`decay.convert.from_native`.
"""

from __future__ import annotations

import math
import numbers
import re

from .. import schedules
from ..errors import DecayError
from ..masks import exclude_names, resolve_mask
from ..penalties import L1, L2, ElasticNet, add_l2, l2_for_coupled_weight_decay
from ..rules.adam import adam, adamw
from ..rules.sgd import sgd
from . import _rule, keras_classic, modern
from ._codegen import Conversion, _build_value, _Call, _reason, _source
from ._common import common_issues, lr_scaled, mask_source, named, to_float, unsupported, weight_decay
from ._penalty import keras_penalty_call
from ._schedules import convert_schedule, is_constant, is_integer, kind


def _keras_float32_note(names: str, measured: str) -> str:
    return (
        f"Keras casts {names} to float32 before using them (and computes its lr schedules in "
        "float32): the weights equal decay's to float64 round-off when those values are "
        f"exactly representable in float32 (e.g. 0.03125), otherwise to float32 rounding "
        f"(measured after 100 steps: {measured})."
    )


KERAS_SGD_NOTE = _keras_float32_note("learning_rate, weight_decay and momentum",
                                     "9e-8 relative with lr 0.1 and momentum 0.9")
KERAS_ADAM_NOTE = _keras_float32_note(
    "learning_rate, weight_decay and beta_1/beta_2 in the bias correction",
    "2.7e-6 relative with lr 0.01 and beta_2 0.999, where 1 − β2^k is off by 1e-5 at k = 100",
)

_SCHEDULES = "keras.optimizers.schedules."


# ---------------------------------------------------------------------------------
# decay lr schedules -> Keras learning rates: one function per schedule kind, each
# taking (schedule, issues) and returning a float or a schedule _Call.


def _keras_constant(s, issues):
    return s.base


def _keras_step(s, issues):
    return _Call(_SCHEDULES + "ExponentialDecay", initial_learning_rate=s.base, decay_steps=s.step_size,
                 decay_rate=s.gamma, staircase=True)


def _keras_exponential(s, issues):
    if s.transition_begin != 0 or s.end_value is not None:
        issues.append(
            f"Keras's ExponentialDecay has no transition_begin ({s.transition_begin}) or "
            f"end_value ({s.end_value!r}) (optax options); the closest ignores them"
        )
    return _Call(_SCHEDULES + "ExponentialDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                 decay_rate=s.decay_rate, staircase=s.staircase)


def _keras_inverse_time(s, issues):
    return _Call(_SCHEDULES + "InverseTimeDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                 decay_rate=s.decay_rate, staircase=s.staircase)


def _keras_polynomial(s, issues):
    return _Call(_SCHEDULES + "PolynomialDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                 end_learning_rate=s.end_value, power=s.power, cycle=s.cycle)


def _floor_fraction_undefined(s, keras_name, issues) -> bool:
    """Keras's cosine schedules take the floor as ``alpha``, a fraction of the base lr."""
    if s.base > 0:
        return False
    issues.append(f"Keras's {keras_name} gives the floor as a fraction of a base lr of 0")
    return True


def _keras_cosine(s, issues):
    if _floor_fraction_undefined(s, "CosineDecay", issues):
        return 0.0
    return _Call(_SCHEDULES + "CosineDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                 alpha=s.floor / s.base)


def _keras_cosine_restarts(s, issues):
    if _floor_fraction_undefined(s, "CosineDecayRestarts", issues):
        return 0.0
    if not is_integer(s.t_mul):
        issues.append(
            f"t_mul={s.t_mul!r} is not an integer: Keras finds the cycle with a float32 "
            "logarithm and puts some restart steps at the end of the previous cycle (the "
            "floor instead of the peak)"
        )
    return _Call(_SCHEDULES + "CosineDecayRestarts", initial_learning_rate=s.base,
                 first_decay_steps=s.first_decay_steps, t_mul=s.t_mul, m_mul=s.m_mul,
                 alpha=s.floor / s.base)


def _keras_warmup(s, issues):
    inner = s.schedule
    if s.warmup_steps == 0:
        return _keras_schedule(inner, issues)
    if kind(inner) == "cosine" and inner.base > 0:
        return _Call(_SCHEDULES + "CosineDecay", initial_learning_rate=s.start_value,
                     decay_steps=inner.decay_steps, alpha=inner.floor / inner.base,
                     warmup_target=inner.base, warmup_steps=s.warmup_steps)
    if kind(inner) == "constant" and inner.base > 0:
        # alpha=1 makes the cosine part constant at warmup_target.
        return _Call(_SCHEDULES + "CosineDecay", initial_learning_rate=s.start_value, decay_steps=1,
                     alpha=1.0, warmup_target=inner.base, warmup_steps=s.warmup_steps)
    issues.append(
        f"Keras has a linear warmup only in CosineDecay (warmup_target=); "
        f"warmup around {inner!r} has none; the closest drops the warmup"
    )
    return _keras_schedule(inner, issues)


def _keras_piecewise(s, issues):
    shift = 0 if s.switch == "after" else 1
    return _Call(_SCHEDULES + "PiecewiseConstantDecay", boundaries=[b - shift for b in s.boundaries],
                 values=list(s.values))


def _keras_multistep(s, issues):
    values = [s.base * s.gamma**k for k in range(len(s.milestones) + 1)]
    return _Call(_SCHEDULES + "PiecewiseConstantDecay", boundaries=[m - 1 for m in s.milestones],
                 values=values)


_TO_SCHEDULES = {
    "constant": _keras_constant,
    "step": _keras_step,
    "exponential": _keras_exponential,
    "inverse_time": _keras_inverse_time,
    "polynomial": _keras_polynomial,
    "cosine": _keras_cosine,
    "cosine_restarts": _keras_cosine_restarts,
    "warmup": _keras_warmup,
    "piecewise": _keras_piecewise,
    "multistep": _keras_multistep,
}


def _keras_schedule(sched, issues):
    """The Keras learning_rate (a float or a schedule _Call) for an lr schedule."""
    return convert_schedule(sched, _TO_SCHEDULES, issues,
                            "Keras has no schedule equal to {sched!r}; the closest keeps lr at the schedule's base {base!r}")


def schedule_to_keras(sched) -> Conversion:
    issues = []
    value = _keras_schedule(sched, issues)
    return Conversion(
        "keras", not issues, _reason(issues), _source(value),
        note="Keras computes schedules in float32 (measured 4.6e-6 relative near a small "
             "value, 3.3e-7 of the base lr).",
        _builder=lambda params=None: _build_value(value, {}),
    )


# ---------------------------------------------------------------------------------
# decay rules -> Keras optimizers. Each optimizer function returns (path, its own
# keyword arguments, Keras's weight_decay, the penalty the loss carries).


def _keras_decay(rule, lam, issues, *, coupled_is_decoupled=False):
    """(Keras's decoupled, lr-scaled weight_decay, the penalty for the loss): a coupled
    λ goes into the loss as the L2 penalty equal to it, except where
    ``coupled_is_decoupled`` (plain SGD: coupled λ ≡ decoupled lr-scaled λ)."""
    penalty = rule.regularizer
    if not lam:
        return 0.0, penalty
    if rule.decoupled:
        return lr_scaled(rule, lam, "Keras", issues), penalty
    if coupled_is_decoupled:
        return lam, penalty
    return 0.0, add_l2(penalty, l2_for_coupled_weight_decay(lam))


def _sgd_to_keras(rule, lam, issues):
    mu, tau = _rule.hyper(rule, "momentum"), _rule.hyper(rule, "dampening")
    if mu > 0 and tau:
        issues.append(
            f"Keras's SGD has no dampening: decay scales every gradient after the first by "
            f"1 − τ = {1 - tau!r} in the momentum buffer. The closest has none"
        )
    if mu > 0 and not is_constant(_rule.hyper(rule, "lr")):
        issues.append(
            "Keras's SGD keeps v ← μv − lr_t·g (each gradient keeps the lr of its own step) "
            "where decay and PyTorch keep b ← μb + g and step by lr_t·b (the whole buffer at "
            f"the current lr); with momentum {mu!r} they are equal only while the lr is "
            "constant, not under a schedule"
        )
    keras_wd, penalty = _keras_decay(rule, lam, issues, coupled_is_decoupled=mu == 0)
    options = {}
    if mu:
        options["momentum"] = float(mu)  # Keras accepts a float only
    if _rule.hyper(rule, "nesterov"):
        options["nesterov"] = True
    return "keras.optimizers.SGD", options, keras_wd, penalty


def _adam_to_keras(rule, lam, issues):
    beta_1, beta_2 = _rule.hyper(rule, "betas")
    if not rule.epsilon_hat:
        issues.append(
            "Keras adds ε to √v before the bias correction, θ −= lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε) "
            "(decay's epsilon_hat=True), where this rule adds it to √v̂ as PyTorch does: Keras's "
            f"epsilon would have to be ε·√(1−β2^k), which changes every step "
            f"({math.sqrt(1 - beta_2):.3g}·ε at step 1, → ε later). The closest uses epsilon=ε; "
            "for an exact conversion build the rule with epsilon_hat=True"
        )
    path = "keras.optimizers.AdamW" if _rule.is_adamw(rule) else "keras.optimizers.Adam"
    options = dict(beta_1=beta_1, beta_2=beta_2, epsilon=_rule.hyper(rule, "eps"))
    if rule.amsgrad:
        options["amsgrad"] = True
    return (path, options, *_keras_decay(rule, lam, issues))


def _keras_mask(rule, code, notes):
    """(the code with the mask applied, (kind, value) for the builder). Keras excludes
    variables from weight decay by name substring or by variable."""
    if hasattr(rule.mask, "substrings"):
        notes.append(
            "Keras matches var_names against each variable's name (e.g. 'kernel', 'bias'), "
            "decay against the names of your params: equal when they contain the same substrings"
        )
        return (f"optimizer = {code}\noptimizer.exclude_from_weight_decay(var_names={list(rule.mask.substrings)!r})",
                ("var_names", list(rule.mask.substrings)))
    code = (
        f"optimizer = {code}\n"
        f"keep = decay.masks.resolve_mask({mask_source(rule.mask)}, list(params), list(params.values()))"
        "  # params: dict name -> variable, by the names the mask uses\n"
        "optimizer.exclude_from_weight_decay(var_list=[v for v, k in zip(params.values(), keep) if not k])"
    )
    return code, ("var_list", rule.mask)


def _keras_extra(rule, penalty):
    if penalty is None:
        return None
    reg = keras_penalty_call(penalty).source()
    layers = "every decayed layer (those the mask decays)" if rule.mask is not None else "every decayed layer"
    return (f"add kernel_regularizer={reg} to {layers} (or add {reg}(w) to the loss for every "
            "decayed weight w)")


def _keras_builder(optimizer, mask_call):
    def build(params=None):
        opt = optimizer.build({})
        if mask_call is not None:
            by, value = mask_call
            if by == "var_names":
                opt.exclude_from_weight_decay(var_names=value)
            else:
                names, tensors = named(params, "A Keras conversion with this mask")
                keep = resolve_mask(value, names, tensors)
                opt.exclude_from_weight_decay(var_list=[v for v, k in zip(tensors, keep) if not k])
        return opt

    return build


def rule_to_keras(rule) -> Conversion:
    if modern.is_modern(rule):  # Lion, LAMB, Muon: decay/convert/modern.py
        return modern.rule_to_keras(rule)
    issues, notes = [], [KERAS_SGD_NOTE if _rule.is_sgd(rule) else KERAS_ADAM_NOTE]
    if rule.name == "adafactor":  # no bias correction: its own note (keras_classic.NOTES)
        notes = []
    common_issues(rule, issues, "keras")
    lam = weight_decay(rule)
    learning_rate = _keras_schedule(_rule.hyper(rule, "lr"), issues)
    if not isinstance(learning_rate, _Call):
        learning_rate = float(learning_rate)
    to_keras = _sgd_to_keras if _rule.is_sgd(rule) else keras_classic.TO_KERAS.get(rule.name, _adam_to_keras)
    if rule.name in keras_classic.NOTES:
        notes.append(keras_classic.NOTES[rule.name])
    path, options, keras_wd, penalty = to_keras(rule, lam, issues)
    kwargs = {"learning_rate": learning_rate, **options}
    if keras_wd or path == "keras.optimizers.AdamW":
        kwargs["weight_decay"] = keras_wd
    optimizer = _Call(path, **kwargs)
    code, mask_call = optimizer.source(), None
    if rule.mask is not None and keras_wd:
        code, mask_call = _keras_mask(rule, code, notes)
    return Conversion("keras", not issues, _reason(issues), code, _keras_extra(rule, penalty),
                      " ".join(notes), penalty, _keras_builder(optimizer, mask_call))


# ---------------------------------------------------------------------------------
# Keras schedules -> decay lr schedules: one function per Keras schedule, each taking
# its config and name.


def _keras_lr_float(value) -> float:
    """The shortest decimal that rounds to the float32 Keras stores."""
    import numpy as np

    return float(str(np.float32(to_float(value))))


def _int_steps(name, value, schedule_name):
    v = to_float(value)
    if not v.is_integer():
        raise DecayError(
            f"Keras {schedule_name} has {name}={value!r}; decay's schedules count whole steps. "
            "Use an integer number of steps."
        )
    return int(v)


def _decay_rate_args(c, name):
    """ExponentialDecay's and InverseTimeDecay's arguments, in decay's order."""
    return (to_float(c["initial_learning_rate"]), to_float(c["decay_rate"]),
            _int_steps("decay_steps", c["decay_steps"], name), bool(c["staircase"]))


def _from_exponential_decay(c, name):
    return schedules.exponential(*_decay_rate_args(c, name))


def _from_inverse_time_decay(c, name):
    return schedules.inverse_time(*_decay_rate_args(c, name))


def _from_polynomial_decay(c, name):
    return schedules.polynomial(
        to_float(c["initial_learning_rate"]), _int_steps("decay_steps", c["decay_steps"], name),
        end_value=to_float(c["end_learning_rate"]), power=to_float(c["power"]), cycle=bool(c["cycle"]))


def _from_piecewise_constant_decay(c, name):
    return schedules.piecewise([int(b) for b in c["boundaries"]], [to_float(v) for v in c["values"]],
                               switch="after")


def _from_cosine_decay(c, name):
    alpha = to_float(c["alpha"])
    steps = _int_steps("decay_steps", c["decay_steps"], name)
    init = to_float(c["initial_learning_rate"])

    def cosine_from(peak):  # alpha=1 keeps the cosine part constant at its peak
        return schedules.constant(peak) if alpha == 1.0 else schedules.cosine(peak, steps, floor=alpha * peak)

    target = c.get("warmup_target")
    if target is None:
        return cosine_from(init)
    inner = cosine_from(to_float(target))
    return schedules.warmup(inner, _int_steps("warmup_steps", c["warmup_steps"], name), start_value=init)


def _from_cosine_decay_restarts(c, name):
    t_mul = to_float(c["t_mul"])
    if not t_mul.is_integer():
        raise DecayError(
            f"CosineDecayRestarts(t_mul={t_mul!r}): with a non-integer t_mul Keras finds the cycle "
            "with a float32 logarithm and puts some restart steps at the end of the previous "
            "cycle, so no decay schedule is equal; decay.schedules.cosine_restarts is equal at "
            "all other steps."
        )
    init = to_float(c["initial_learning_rate"])
    return schedules.cosine_restarts(
        init, _int_steps("first_decay_steps", c["first_decay_steps"], name), t_mul=t_mul,
        m_mul=to_float(c["m_mul"]), floor=to_float(c["alpha"]) * init)


_FROM_SCHEDULES = {
    "ExponentialDecay": _from_exponential_decay,
    "InverseTimeDecay": _from_inverse_time_decay,
    "PolynomialDecay": _from_polynomial_decay,
    "PiecewiseConstantDecay": _from_piecewise_constant_decay,
    "CosineDecay": _from_cosine_decay,
    "CosineDecayRestarts": _from_cosine_decay_restarts,
}


def from_keras_schedule(s, name):
    c = s.get_config()
    convert = _FROM_SCHEDULES.get(name)
    if convert is None:
        raise unsupported(s, " (a Keras learning-rate schedule)")
    return convert(c, name)


# ---------------------------------------------------------------------------------
# Keras optimizers and regularizers -> decay rules and penalties.

#: Options decay's rules do not have, with the value that means "off".
_UNSUPPORTED_OPTIONS = (("clipnorm", None), ("clipvalue", None), ("global_clipnorm", None),
                        ("loss_scale_factor", None), ("gradient_accumulation_steps", None),
                        ("use_ema", False))


def _check_options(opt, name):
    for attr, default in _UNSUPPORTED_OPTIONS:
        value = getattr(opt, attr, default)
        if value not in (default, 0) and value is not False:
            raise DecayError(
                f"keras.optimizers.{name}({attr}={value!r}): decay's rules have no {attr}; "
                "remove it or convert the optimizer without it."
            )


def _keras_lr(opt, name):
    """The optimizer's learning rate: a float or a decay schedule."""
    lr_obj = getattr(opt, "_learning_rate", None)
    if type(lr_obj).__module__.startswith("keras.src.optimizers.schedules"):
        return from_keras_schedule(lr_obj, type(lr_obj).__qualname__)
    if hasattr(lr_obj, "numpy"):
        return _keras_lr_float(lr_obj.numpy())
    if isinstance(lr_obj, numbers.Real):
        return _keras_lr_float(lr_obj)
    raise DecayError(
        f"keras.optimizers.{name} has learning_rate={lr_obj!r}; from_native converts a float "
        "or one of the Keras schedules listed in decay.convert.SUPPORTED_NATIVE."
    )


def _keras_exclusions(opt, name):
    """The decay mask of the optimizer's exclude_from_weight_decay (None when none)."""
    if getattr(opt, "_exclude_from_weight_decay", None):
        raise DecayError(
            f"keras.optimizers.{name} excludes variables from weight decay by object "
            "(exclude_from_weight_decay(var_list=...)); decay masks go by name: build the rule "
            "with mask= by hand."
        )
    pattern = getattr(opt, "_exclude_from_weight_decay_pattern", None)
    if pattern is None:
        return None
    # During fit on TensorFlow Keras searches the backend variable's name
    # ("net/dense/kernel:0"); decay's mask searches the path ("net/dense/kernel"). A plain
    # word (letters, digits, _, /, -) is found in both or in neither; a regular
    # expression ("kernel$", "^dense") may not be, so it is refused, not guessed.
    words = pattern.pattern.split("|")
    odd = [w for w in words if not re.fullmatch(r"[A-Za-z0-9_/\-]*[A-Za-z_][A-Za-z0-9_/\-]*", w)]
    if odd:
        raise DecayError(
            f"keras.optimizers.{name} excludes variables from weight decay by the patterns {odd!r}. During "
            "fit Keras searches the TensorFlow variable name ('net/dense/kernel:0'), decay the Keras path "
            "('net/dense/kernel'), so a regular expression can select other variables in the two. Use plain "
            "substrings (var_names=['bias']) or build the rule with mask= by hand."
        )
    return exclude_names(*words)


def _from_keras_sgd(opt, lr, wd, mask):
    mu = to_float(opt.momentum)
    # Keras's decay is decoupled; with none, the plain (coupled) form reads simplest.
    return sgd(lr, momentum=mu, nesterov=bool(opt.nesterov) and mu > 0, weight_decay=wd,
               decoupled=wd > 0, mask=mask)


def _adam_settings(opt, lr, wd, mask) -> dict:
    return dict(lr=lr, betas=(to_float(opt.beta_1), to_float(opt.beta_2)), eps=to_float(opt.epsilon),
                weight_decay=wd, amsgrad=bool(opt.amsgrad), epsilon_hat=True, mask=mask)


def _from_keras_adam(opt, lr, wd, mask):
    return adam(decoupled=wd > 0, **_adam_settings(opt, lr, wd, mask))


def _from_keras_adamw(opt, lr, wd, mask):
    return adamw(**_adam_settings(opt, lr, wd, mask))


_FROM_OPTIMIZERS = {"SGD": _from_keras_sgd, "Adam": _from_keras_adam, "AdamW": _from_keras_adamw}
_FROM_OPTIMIZERS.update(keras_classic.FROM_KERAS)  # RMSprop, Adagrad, Adadelta, Adamax, Nadam


def from_keras_optimizer(opt, name):
    """``name`` is one of _FROM_OPTIMIZERS' keys (see decay.convert.from_native)."""
    _check_options(opt, name)
    lr = _keras_lr(opt, name)
    wd = 0.0 if opt.weight_decay is None else to_float(opt.weight_decay)
    mask = _keras_exclusions(opt, name)
    return _FROM_OPTIMIZERS[name](opt, lr, wd, mask)


def from_keras_regularizer(reg, name):
    if name == "L1":
        return L1(float(reg.l1))
    if name == "L2":
        return L2(float(reg.l2))
    return ElasticNet(float(reg.l1), float(reg.l2))
