"""Exact conversions between decay's rules, penalties and schedules and PyTorch / Keras.

"What is PyTorch's ``SGD(momentum=0.9, weight_decay=5e-4)`` in Keras?" ::

    >>> import decay
    >>> from decay.convert import from_native, to_native
    >>> rule = decay.sgd(lr=0.1, momentum=0.9, weight_decay=5e-4)   # = torch.optim.SGD(...)
    >>> conv = to_native(rule, "keras")
    >>> print(conv.code)
    keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    >>> print(conv.extra)
    add kernel_regularizer=keras.regularizers.L2(0.00025) to every decayed layer (or add keras.regularizers.L2(0.00025)(w) to the loss for every decayed weight w)

:func:`to_native` returns a :class:`Conversion`. ``exact`` describes ``code`` *together
with* ``extra``: when ``extra`` is not None it is part of the conversion (a penalty the
loss must carry), not a suggestion; ``build_extra()`` builds it. "Exact" means the same
weights as decay's rule, step for step, to the frameworks' own round-off; ``note`` says
where that round-off is float32 (Keras) rather than float64. A conversion that is not
exact raises :class:`~decay.DecayError` unless ``strict=False``, which returns the
closest one with ``exact=False`` and the quantitative ``reason``.

Which conversions are exact (λ weight decay, α base lr, lr_t the lr of step t, μ
momentum, τ dampening; PyTorch's conventions are decay's defaults):

=================================================  ==========================================  =====
decay                                              native                                      exact
=================================================  ==========================================  =====
sgd coupled λ (any μ, τ, Nesterov, schedule)       torch SGD(weight_decay=λ)                   yes
sgd decoupled, μ = 0                               torch SGD(weight_decay=λ')                  yes
sgd decoupled, μ > 0                               torch SGD (coupled only)                    no
adam coupled λ                                     torch Adam(weight_decay=λ)                  yes
adam(w) decoupled                                  torch AdamW(weight_decay=λ')                yes
adam(w) with epsilon_hat=True                      torch Adam/AdamW                            no
regularizer=L2(lam), coupled update                weight_decay += 2·lam                       yes
regularizer with L1 / in AdamW                     optimizer + penalty added to the loss       yes
sgd, μ = 0 (coupled or decoupled)                  keras SGD(weight_decay=λ')                  yes
sgd decoupled, μ > 0, constant lr                  keras SGD(momentum=μ, weight_decay=λ')      yes
sgd coupled, μ > 0, constant lr                    keras SGD(momentum=μ) + L2(λ/2) in the loss yes
sgd, μ > 0, lr schedule / τ ≠ 0                    keras SGD                                   no
adam(w) epsilon_hat=True, coupled                  keras Adam + L2(λ/2) in the loss            yes
adam(w) epsilon_hat=True, decoupled                keras Adam/AdamW(weight_decay=λ')           yes
adam(w) epsilon_hat=False                          keras Adam/AdamW                            no
L2 / L1 / ElasticNet                               keras L2 / L1 / L1L2, torch loss term       yes
=================================================  ==========================================  =====

λ' is the lr-scaled coefficient both frameworks use (θ ← θ·(1 − lr_t·λ')):
λ' = λ for ``decay_scaled_by="lr"``, λ/α for ``"schedule_multiplier"`` (exact under any
schedule, since (lr_t/α)·λ = lr_t·(λ/α)), and λ/α for ``"none"`` only while the lr is
constant. A weight-decay *schedule*, ``groups=``, and ``on_nonfinite`` other than
"apply" have no native equivalent.

Learning-rate schedules: PyTorch gets a named scheduler where one is equal for every
step (StepLR, MultiStepLR, ExponentialLR, PolynomialLR, CosineAnnealingWarmRestarts),
otherwise ``LambdaLR`` evaluating decay's own schedule (equal to 1 ulp). Keras gets the
``LearningRateSchedule`` the schedule's docstring names (computed in float32), and no
equivalent for ``join`` and the optax-only options.

This module imports no framework at import time; ``to_native(..., "torch").build``
imports torch, the Keras builders import keras, and :func:`from_native` recognizes
native objects by their type's module and name.
"""

from __future__ import annotations

import importlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from . import schedules
from .errors import DecayError
from .masks import exclude_names, resolve_mask, timm_default
from .penalties import L1, L2, ElasticNet, Penalty
from .rules.adam import adam, adamw
from .rules.base import Rule
from .rules.sgd import SGD, sgd
from .tree import flatten

__all__ = ["Conversion", "FRAMEWORKS", "from_native", "rule_from_settings", "to_native"]

FRAMEWORKS = ("torch", "keras")

SUPPORTED_NATIVE = (
    "torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW (optionally with one of "
    "torch.optim.lr_scheduler.StepLR, MultiStepLR, ExponentialLR, PolynomialLR, "
    "CosineAnnealingWarmRestarts, or a LambdaLR built by decay.convert), "
    "keras.optimizers.SGD, Adam, AdamW (learning_rate a float or one of "
    "keras.optimizers.schedules.ExponentialDecay, PiecewiseConstantDecay, CosineDecay, "
    "CosineDecayRestarts, InverseTimeDecay, PolynomialDecay), "
    "keras.regularizers.L1, L2, L1L2, and the loss penalties built by decay.convert"
)

def _keras_float32_note(names: str, measured: str) -> str:
    return (
        f"Keras casts {names} to float32 before using them (and computes its lr schedules in "
        "float32): the weights equal decay's to float64 round-off when those values are "
        f"exactly representable in float32 (e.g. 0.03125), otherwise to float32 rounding "
        f"({measured} relative after 100 steps, measured)."
    )


KERAS_SGD_NOTE = _keras_float32_note("learning_rate, weight_decay and momentum", "9e-8 with lr 0.1, momentum 0.9")
KERAS_ADAM_NOTE = _keras_float32_note(
    "learning_rate, weight_decay and beta_1/beta_2 in the bias correction",
    "2.7e-6 with lr 0.01, beta_2 0.999: 1 − β2^k is off by 1e-5 relative at k = 100",
)


# ---------------------------------------------------------------------------------
# Native constructions as data: the same object gives the source code and builds it.


class _Name:
    """A variable in generated code (``params``, ``optimizer``) filled in at build time."""

    def __init__(self, name):
        self.name = name


class _Call:
    """``path(*args, **kwargs)`` where path is a dotted name such as torch.optim.SGD."""

    def __init__(self, path, *args, **kwargs):
        self.path, self.args, self.kwargs = path, args, kwargs

    def source(self) -> str:
        parts = [_source(a) for a in self.args]
        parts += [f"{k}={_source(v)}" for k, v in self.kwargs.items()]
        return f"{self.path}({', '.join(parts)})"

    def build(self, env: dict):
        target = _resolve(self.path)
        args = [_build_value(a, env) for a in self.args]
        kwargs = {k: _build_value(v, env) for k, v in self.kwargs.items()}
        return target(*args, **kwargs)


def _resolve(path: str):
    root, *rest = path.split(".")
    obj = importlib.import_module(root)
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _source(value) -> str:
    if isinstance(value, _Call):
        return value.source()
    if isinstance(value, _Name):
        return value.name
    if isinstance(value, schedules.Schedule):
        return _schedule_source(value)
    if isinstance(value, _Multiplier):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_source(v) for v in value)
        if isinstance(value, tuple):
            return f"({inner}{',' if len(value) == 1 else ''})"
        return f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_source(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _build_value(value, env):
    if isinstance(value, _Call):
        return value.build(env)
    if isinstance(value, _Name):
        return env[value.name]
    if isinstance(value, list):
        return [_build_value(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_build_value(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _build_value(v, env) for k, v in value.items()}
    return value


def _schedule_source(sched) -> str:
    """``decay.schedules.name(arg=..., ...)``, nested schedules included."""
    config = sched.get_config()
    return _schedule_config_source(config)


def _schedule_config_source(config) -> str:
    def value_source(v):
        if isinstance(v, dict) and "name" in v:
            return _schedule_config_source(v)
        if isinstance(v, list):
            return "[" + ", ".join(value_source(x) for x in v) + "]"
        return repr(v)

    args = ", ".join(f"{k}={value_source(v)}" for k, v in config.items() if k != "name")
    return f"decay.schedules.{config['name']}({args})"


class _Multiplier:
    """``t -> sched(t) / base``: the factor PyTorch's ``LambdaLR`` multiplies the base
    lr by. A class rather than a lambda so that :func:`from_native` can read the
    schedule back and the scheduler can be pickled."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.base = schedule.base

    def __call__(self, t):
        return self.schedule(int(t)) / self.base

    def __repr__(self):
        return f"lambda t: {_schedule_source(self.schedule)}(t) / {self.base!r}"


class _TorchPenalty:
    """``params -> tensor``: the penalty term to add to a PyTorch loss, written with the
    same torch operations as the generated code."""

    def __init__(self, penalty: Penalty):
        self.penalty = penalty

    def __call__(self, params):
        ps = list(params.values()) if isinstance(params, dict) else list(params)
        p = self.penalty
        if isinstance(p, L2):
            return p.lam * sum(x.pow(2).sum() for x in ps)
        if isinstance(p, L1):
            return p.lam * sum(x.abs().sum() for x in ps)
        return p.l1 * sum(x.abs().sum() for x in ps) + p.l2 * sum(x.pow(2).sum() for x in ps)

    def __repr__(self):
        return _torch_penalty_source(self.penalty)


def _torch_penalty_source(p: Penalty, params="params") -> str:
    squares = f"sum(p.pow(2).sum() for p in {params})"
    absolute = f"sum(p.abs().sum() for p in {params})"
    if isinstance(p, L2):
        return f"{p.lam!r} * {squares}"
    if isinstance(p, L1):
        return f"{p.lam!r} * {absolute}"
    return f"{p.l1!r} * {absolute} + {p.l2!r} * {squares}"


def _keras_penalty_call(p: Penalty) -> _Call:
    if isinstance(p, L2):
        return _Call("keras.regularizers.L2", p.lam)
    if isinstance(p, L1):
        return _Call("keras.regularizers.L1", p.lam)
    return _Call("keras.regularizers.L1L2", l1=p.l1, l2=p.l2)


# ---------------------------------------------------------------------------------
# The result.


@dataclass(frozen=True)
class Conversion:
    """A decay object in another framework.

    - ``exact``: whether ``code`` (with ``extra``, when given) updates the weights as
      decay does, to the framework's round-off (see ``note``).
    - ``reason``: why it is not exact, quantitatively where possible; None when exact.
    - ``code``: the native construction as Python source. ``params`` stands for your
      parameters (``model.parameters()``; a dict name -> tensor where the code says so,
      for a mask) and ``optimizer`` for the optimizer; needs ``import torch``/``keras``
      and, where it names decay, ``import decay``.
    - ``extra``: what else the conversion needs, e.g. a kernel regularizer on every
      decayed layer; part of the conversion when not None.
    - ``note``: caveats of an exact conversion (float32 hyperparameters, call order).
    - ``penalty``: the decay penalty that ``extra`` adds to the loss, or None.

    ``build(params)`` constructs what ``code`` constructs: a torch optimizer (which needs
    ``params``), or ``(optimizer, scheduler)`` when the lr is a schedule; a Keras
    optimizer (``params``, a dict name -> variable, only needed to resolve a mask); a
    torch lr scheduler (pass the optimizer); a Keras schedule, regularizer, or the
    torch penalty callable ``params -> tensor``. ``build_extra()`` builds ``extra``'s
    penalty (a Keras regularizer or a torch callable), or returns None.
    """

    framework: str
    exact: bool
    reason: str | None
    code: str
    extra: str | None = None
    note: str | None = None
    penalty: Penalty | None = None
    _builder: Callable = field(default=None, repr=False, compare=False)

    def build(self, params=None):
        return self._builder(params)

    def build_extra(self):
        if self.penalty is None:
            return None
        return _penalty_conversion(self.penalty, self.framework).build()

    def __str__(self):
        lines = [self.code]
        if self.extra:
            lines.append(f"# and: {self.extra}")
        if self.note:
            lines.append(f"# note: {self.note}")
        if not self.exact:
            lines.append(f"# NOT EXACT: {self.reason}")
        return "\n".join(lines)


def to_native(obj, framework: str, *, strict: bool = True) -> Conversion:
    """The PyTorch or Keras equivalent of a decay rule, penalty or lr schedule.

    ``framework`` is "torch" or "keras". With ``strict=True`` (the default) a conversion
    that is not exact raises :class:`~decay.DecayError` saying why and what the closest
    one is; ``strict=False`` returns that closest one with ``exact=False`` and
    ``reason``. See the module docstring for which conversions are exact.
    """
    if framework not in FRAMEWORKS:
        raise DecayError(f"`framework` must be one of {list(FRAMEWORKS)}. Received: framework={framework!r}.")
    if isinstance(obj, Rule):
        conversion = _rule_to_torch(obj) if framework == "torch" else _rule_to_keras(obj)
    elif isinstance(obj, Penalty):
        conversion = _penalty_conversion(obj, framework)
    elif isinstance(obj, schedules.Schedule):
        conversion = _schedule_conversion(obj, framework)
    else:
        raise DecayError(
            f"to_native() converts decay rules (decay.sgd/adam/adamw), penalties (decay.L2, "
            f"L1, ElasticNet) and decay.schedules. Received an object of type "
            f"{type(obj).__module__}.{type(obj).__qualname__}."
        )
    if strict and not conversion.exact:
        raise DecayError(
            f"{obj!r} has no exact {framework} equivalent: {conversion.reason}\n"
            f"The closest is:\n    {conversion.code.replace(chr(10), chr(10) + '    ')}\n"
            + (f"with: {conversion.extra}\n" if conversion.extra else "")
            + "Pass strict=False to get it (Conversion.exact is then False and .reason says why)."
        )
    return conversion


# ---------------------------------------------------------------------------------
# Penalties.


def _penalty_conversion(p: Penalty, framework: str) -> Conversion:
    if not isinstance(p, (L1, L2, ElasticNet)):
        raise DecayError(f"No conversion for penalty {p!r}; decay.L1, L2 and ElasticNet convert.")
    if framework == "torch":
        return Conversion(
            "torch", True, None,
            code=f"loss = loss + {_torch_penalty_source(p)}",
            note="PyTorch has no regularizer object: add the term to the loss before "
                 "backward(); `params` are the decayed parameters.",
            _builder=lambda params=None: _TorchPenalty(p),
        )
    call = _keras_penalty_call(p)
    return Conversion(
        "keras", True, None,
        code=call.source(),
        extra=f"pass it as kernel_regularizer= to every decayed layer (or add "
              f"{call.source()}(w) to the loss for every decayed weight w)",
        note="Keras divides an activity regularizer by the batch size, not a kernel regularizer.",
        _builder=lambda params=None: call.build({}),
    )


def _add_l2(penalty: Penalty | None, lam: float) -> Penalty | None:
    """``penalty + L2(lam)`` as one penalty."""
    if lam == 0:
        return penalty
    if penalty is None:
        return L2(lam)
    if isinstance(penalty, L2):
        return L2(penalty.lam + lam)
    if isinstance(penalty, L1):
        return ElasticNet(penalty.lam, lam)
    return ElasticNet(penalty.l1, penalty.l2 + lam)


def _split_l2(penalty: Penalty | None):
    """(the L2 coefficient, the rest of the penalty or None)."""
    if penalty is None:
        return 0.0, None
    if isinstance(penalty, L2):
        return penalty.lam, None
    if isinstance(penalty, L1):
        return 0.0, penalty
    return penalty.l2, (L1(penalty.l1) if penalty.l1 else None)


# ---------------------------------------------------------------------------------
# Schedules.


def _kind(sched) -> str | None:
    """A decay schedule's name ("step", "cosine", ...), None for anything else."""
    return sched.name if isinstance(sched, schedules.Schedule) else None


def _is_constant(lr) -> bool:
    return not callable(lr) or _kind(lr) == "constant"


def _base(lr) -> float:
    if not callable(lr):
        return float(lr)
    base = getattr(lr, "base", None)
    return float(base) if base is not None else float(lr(0))


def _is_integer(x) -> bool:
    return float(x).is_integer()


def _torch_scheduler(sched, issues, notes):
    """The torch scheduler _Call for an lr schedule (None for a constant)."""
    opt = _Name("optimizer")
    L = "torch.optim.lr_scheduler."
    if _is_constant(sched):
        return None
    if not isinstance(sched, schedules.Schedule):
        issues.append(
            f"the lr is a plain callable ({sched!r}) with no config to write down; use a "
            "decay.schedules schedule. The closest keeps lr at its value at step 0."
        )
        return None
    s = sched
    if _kind(s) == "step":
        return _Call(L + "StepLR", opt, step_size=s.step_size, gamma=s.gamma)
    if _kind(s) == "multistep":
        return _Call(L + "MultiStepLR", opt, milestones=list(s.milestones), gamma=s.gamma)
    if (_kind(s) == "exponential" and s.decay_steps == 1 and s.transition_begin == 0
            and s.end_value is None):
        return _Call(L + "ExponentialLR", opt, gamma=s.decay_rate)
    if _kind(s) == "polynomial" and s.end_value == 0 and not s.cycle:
        return _Call(L + "PolynomialLR", opt, total_iters=s.decay_steps, power=s.power)
    if _kind(s) == "cosine_restarts" and s.m_mul == 1 and _is_integer(s.t_mul):
        return _Call(L + "CosineAnnealingWarmRestarts", opt, T_0=s.first_decay_steps,
                     T_mult=int(s.t_mul), eta_min=s.floor)
    if s.base <= 0:
        issues.append(
            f"the schedule's base lr is {s.base!r}; PyTorch's LambdaLR multiplies the base lr, "
            "so a schedule with base 0 cannot be written as one. The closest keeps lr at 0."
        )
        return None
    if _kind(s) == "cosine":
        notes.append(
            f"CosineAnnealingLR(optimizer, T_max={s.decay_steps}, eta_min={s.floor!r}) is equal "
            f"only for t <= {s.decay_steps}: past T_max PyTorch climbs back to the base lr, "
            "decay stays at the floor; LambdaLR follows decay's schedule"
        )
    notes.append("LambdaLR computes base·(s(t)/base), equal to decay's s(t) to 1 ulp")
    return _Call(L + "LambdaLR", opt, lr_lambda=_Multiplier(s))


def _keras_schedule(sched, issues):
    """The Keras learning_rate (a float or a schedule _Call) for an lr schedule."""
    K = "keras.optimizers.schedules."
    if not callable(sched):
        return float(sched)
    if not isinstance(sched, schedules.Schedule):
        issues.append(
            f"the lr is a plain callable ({sched!r}) with no config to write down; use a "
            "decay.schedules schedule. The closest keeps lr at its value at step 0."
        )
        return float(sched(0))
    s = sched
    if _kind(s) == "constant":
        return s.base
    if _kind(s) == "step":
        return _Call(K + "ExponentialDecay", initial_learning_rate=s.base, decay_steps=s.step_size,
                     decay_rate=s.gamma, staircase=True)
    if _kind(s) == "exponential":
        if s.transition_begin != 0 or s.end_value is not None:
            issues.append(
                f"Keras's ExponentialDecay has no transition_begin ({s.transition_begin}) or "
                f"end_value ({s.end_value!r}) (optax options); the closest ignores them"
            )
        return _Call(K + "ExponentialDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                     decay_rate=s.decay_rate, staircase=s.staircase)
    if _kind(s) == "inverse_time":
        return _Call(K + "InverseTimeDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                     decay_rate=s.decay_rate, staircase=s.staircase)
    if _kind(s) == "polynomial":
        return _Call(K + "PolynomialDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                     end_learning_rate=s.end_value, power=s.power, cycle=s.cycle)
    if _kind(s) == "cosine":
        if s.base <= 0:
            issues.append("Keras's CosineDecay gives the floor as a fraction of a base lr of 0")
            return 0.0
        return _Call(K + "CosineDecay", initial_learning_rate=s.base, decay_steps=s.decay_steps,
                     alpha=s.floor / s.base)
    if _kind(s) == "cosine_restarts":
        if s.base <= 0:
            issues.append("Keras's CosineDecayRestarts gives the floor as a fraction of a base lr of 0")
            return 0.0
        if not _is_integer(s.t_mul):
            issues.append(
                f"t_mul={s.t_mul!r} is not an integer: Keras finds the cycle with a float32 "
                "logarithm and puts some restart steps at the end of the previous cycle (the "
                "floor instead of the peak)"
            )
        return _Call(K + "CosineDecayRestarts", initial_learning_rate=s.base,
                     first_decay_steps=s.first_decay_steps, t_mul=s.t_mul, m_mul=s.m_mul,
                     alpha=s.floor / s.base)
    if _kind(s) == "warmup":
        inner = s.schedule
        if s.warmup_steps == 0:
            return _keras_schedule(inner, issues)
        if _kind(inner) == "cosine" and inner.base > 0:
            return _Call(K + "CosineDecay", initial_learning_rate=s.start_value,
                         decay_steps=inner.decay_steps, alpha=inner.floor / inner.base,
                         warmup_target=inner.base, warmup_steps=s.warmup_steps)
        if _kind(inner) == "constant" and inner.base > 0:
            # alpha=1 makes the cosine part constant at warmup_target.
            return _Call(K + "CosineDecay", initial_learning_rate=s.start_value, decay_steps=1,
                         alpha=1.0, warmup_target=inner.base, warmup_steps=s.warmup_steps)
        issues.append(
            f"Keras has a linear warmup only in CosineDecay (warmup_target=); "
            f"warmup around {inner!r} has none; the closest drops the warmup"
        )
        return _keras_schedule(inner, issues)
    if _kind(s) == "piecewise":
        shift = 0 if s.switch == "after" else 1
        return _Call(K + "PiecewiseConstantDecay", boundaries=[b - shift for b in s.boundaries],
                     values=list(s.values))
    if _kind(s) == "multistep":
        values = [s.base * s.gamma**k for k in range(len(s.milestones) + 1)]
        return _Call(K + "PiecewiseConstantDecay", boundaries=[m - 1 for m in s.milestones],
                     values=values)
    issues.append(
        f"Keras has no schedule equal to {s!r}; the closest keeps lr at the schedule's base "
        f"{s.base!r}"
    )
    return s.base


def _schedule_conversion(sched, framework) -> Conversion:
    issues, notes = [], []
    if framework == "torch":
        call = _torch_scheduler(sched, issues, notes)
        notes.insert(0, f"create the optimizer with lr={_base(sched)!r}; call scheduler.step() "
                        "after every optimizer.step()")
        code = call.source() if call is not None else "None  # constant lr: no scheduler"
        return Conversion(
            "torch", not issues, "; ".join(issues) or None, code, note="; ".join(notes),
            _builder=lambda optimizer=None: None if call is None else call.build({"optimizer": optimizer}),
        )
    value = _keras_schedule(sched, issues)
    code = _source(value)
    return Conversion(
        "keras", not issues, "; ".join(issues) or None, code,
        note="Keras computes schedules in float32 (measured 4.6e-6 relative near a small "
             "value, 3.3e-7 of the base lr).",
        _builder=lambda params=None: _build_value(value, {}),
    )


# ---------------------------------------------------------------------------------
# Rules.


def _common_issues(rule: Rule, issues, framework):
    fw = "PyTorch" if framework == "torch" else "Keras"
    if rule.groups:
        issues.append(
            f"the rule has {len(rule.groups)} hyperparameter group(s) (groups=); the "
            f"conversion covers the defaults only: build {fw} "
            + ("param groups by hand" if framework == "torch" else "one optimizer per group")
        )
    if rule.on_nonfinite != "apply":
        issues.append(
            f"on_nonfinite={rule.on_nonfinite!r}: {fw} optimizers apply every step, non-finite "
            "gradients included; the closest does too"
        )
    if callable(rule.defaults["weight_decay"]):
        issues.append(
            f"the weight decay is a schedule ({rule.defaults['weight_decay']!r}); {fw} optimizers "
            "take a constant; the closest uses its value at step 0"
        )


def _wd0(rule):
    wd = rule.defaults["weight_decay"]
    return float(wd(0)) if callable(wd) else float(wd)


def _lr_scaled(rule: Rule, lam: float, what: str, issues) -> float:
    """λ' such that decay's decoupled s_t·λ equals the framework's lr_t·λ'."""
    if lam == 0 or rule.decay_scaled_by == "lr":
        return lam
    lr = rule.defaults["lr"]
    if rule.decay_scaled_by == "schedule_multiplier":
        return lam / rule.defaults["_lr0"]
    alpha = _base(lr)
    if not _is_constant(lr):
        issues.append(
            f"decay_scaled_by='none' shrinks θ by λ={lam!r} every step whatever the lr; {what} "
            f"scales decoupled decay by lr_t, so the closest ({what} weight_decay=λ/α={lam / alpha if alpha else lam!r}) "
            "is equal only while lr_t = α; with this lr schedule it decays lr_t/α times as "
            "much, from the first step where lr_t differs from α"
        )
    if alpha == 0:
        issues.append(
            f"decay_scaled_by='none' shrinks θ by λ={lam!r} every step, but the lr is 0, so "
            f"{what}'s lr-scaled decay never acts"
        )
        return lam
    return lam / alpha


def _mask_source(mask) -> str:
    if mask is timm_default:
        return "decay.masks.timm_default"
    if hasattr(mask, "substrings"):
        return f"decay.masks.exclude_names({', '.join(map(repr, mask.substrings))})"
    if isinstance(mask, dict):
        return repr({str(k): bool(v) for k, v in mask.items()})
    return "mask  # your mask function (name, tensor) -> bool"


def _named(params, what):
    """(names, tensors) of a dict name -> tensor, an iterable of (name, tensor) pairs
    (``model.named_parameters()``) or a list of tensors (named "0", "1", ...)."""
    if params is None:
        raise DecayError(f"{what} needs `params`: a dict name -> tensor, such as dict(model.named_parameters()).")
    if not isinstance(params, dict) and not hasattr(params, "shape"):
        params = list(params)
        if params and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in params):
            params = dict(params)
    flat = flatten(params)
    return list(flat.names), list(flat.leaves)


def _rule_to_torch(rule: Rule) -> Conversion:
    issues, notes = [], []
    _common_issues(rule, issues, "torch")
    h = rule.defaults
    lr = h["lr"]
    alpha = _base(lr)
    lam = _wd0(rule) if h["_decays"] else 0.0
    scheduler = _torch_scheduler(lr, issues, notes)
    penalty = rule.regularizer
    kwargs: dict[str, Any] = {"lr": alpha}
    if isinstance(rule, SGD):
        path = "torch.optim.SGD"
        mu, tau, nesterov = h["momentum"], h["dampening"], h["nesterov"]
        if rule.decoupled and lam:
            torch_wd = _lr_scaled(rule, lam, "torch.optim.SGD", issues)
            if mu > 0:
                issues.append(
                    f"torch.optim.SGD has only coupled weight decay: λθ is added to the gradient "
                    f"and enters the momentum buffer, so with momentum {mu!r} the shrink per step "
                    f"builds up to lr·λ/(1−μ) = {1 / (1 - mu):.3g}× decay's decoupled lr·λ. "
                    "The closest uses the same λ coupled"
                )
        else:
            torch_wd = lam
        # torch's weight_decay is coupled, as decay's regularizer always is: fold its L2 part in.
        l2, penalty = _split_l2(penalty)
        torch_wd += 2.0 * l2
        if mu:
            kwargs["momentum"] = mu
        if tau:
            kwargs["dampening"] = tau
        if nesterov:
            kwargs["nesterov"] = True
    else:
        if rule.epsilon_hat:
            b2 = h["betas"][1]
            issues.append(
                f"epsilon_hat=True is Keras's ε placement, θ −= lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε); "
                f"PyTorch adds ε to the bias-corrected √v̂, so its ε would have to be "
                f"ε/√(1−β2^k), which changes every step ({1 / math.sqrt(1 - b2):.3g}·ε at step 1, "
                "→ ε later): no constant eps is equal. The closest uses eps=ε"
            )
        kwargs["betas"] = tuple(h["betas"])
        kwargs["eps"] = h["eps"]
        if rule.amsgrad:
            kwargs["amsgrad"] = True
        if rule.decoupled and (lam or rule.name == "adamw"):
            path = "torch.optim.AdamW"
            torch_wd = _lr_scaled(rule, lam, "torch.optim.AdamW", issues)
        else:
            path = "torch.optim.Adam"
            torch_wd = lam
            l2, penalty = _split_l2(penalty)
            torch_wd += 2.0 * l2
    if torch_wd or path == "torch.optim.AdamW":
        kwargs["weight_decay"] = torch_wd

    # The mask: param groups, the undecayed one with weight_decay 0.
    if rule.mask is not None:
        groups_src = [{"params": _Name("decayed"), "param_names": _Name("decayed_names")},
                      {"params": _Name("others"), "param_names": _Name("other_names"), "weight_decay": 0.0}]
        optimizer = _Call(path, groups_src, **kwargs)
        setup = (
            "names, tensors = list(params), list(params.values())  # params: dict(model.named_parameters())\n"
            f"keep = decay.masks.resolve_mask({_mask_source(rule.mask)}, names, tensors)\n"
            "decayed = [p for p, k in zip(tensors, keep) if k]; decayed_names = [n for n, k in zip(names, keep) if k]\n"
            "others = [p for p, k in zip(tensors, keep) if not k]; other_names = [n for n, k in zip(names, keep) if not k]\n"
        )
    else:
        optimizer = _Call(path, _Name("params"), **kwargs)
        setup = ""

    if scheduler is None and not setup:
        code = optimizer.source()
    else:
        code = setup + f"optimizer = {optimizer.source()}"
        if scheduler is not None:
            code += f"\nscheduler = {scheduler.source()}"
    extra = None
    if penalty is not None:
        where = "the decayed parameters" if rule.mask is not None else "all parameters"
        extra = f"add to the loss: loss = loss + {_torch_penalty_source(penalty, 'params')} (params: {where})"

    def build(params=None):
        if rule.mask is not None:
            names, tensors = _named(params, "A conversion with a mask")
            keep = resolve_mask(rule.mask, names, tensors)
            env = {
                "decayed": [p for p, k in zip(tensors, keep) if k],
                "decayed_names": [n for n, k in zip(names, keep) if k],
                "others": [p for p, k in zip(tensors, keep) if not k],
                "other_names": [n for n, k in zip(names, keep) if not k],
            }
        else:
            if params is None:
                raise DecayError("A torch optimizer needs `params`: build(model.parameters()).")
            # A dict name -> tensor goes in as named parameters (what torch accepts).
            env = {"params": list(params.items()) if isinstance(params, dict) else params}
        opt = optimizer.build(env)
        if scheduler is None:
            return opt
        return opt, scheduler.build({"optimizer": opt})

    if scheduler is not None:
        notes.append("call scheduler.step() after every optimizer.step()")
    return Conversion("torch", not issues, "; ".join(issues) or None, code, extra,
                      "; ".join(notes) or None, penalty, build)


def _rule_to_keras(rule: Rule) -> Conversion:
    issues, notes = [], [KERAS_SGD_NOTE if isinstance(rule, SGD) else KERAS_ADAM_NOTE]
    _common_issues(rule, issues, "keras")
    h = rule.defaults
    lr = h["lr"]
    lam = _wd0(rule) if h["_decays"] else 0.0
    learning_rate = _keras_schedule(lr, issues)
    if not isinstance(learning_rate, _Call):
        learning_rate = float(learning_rate)
    penalty = rule.regularizer
    kwargs: dict[str, Any] = {"learning_rate": learning_rate}
    keras_wd = 0.0
    if isinstance(rule, SGD):
        path = "keras.optimizers.SGD"
        mu, tau, nesterov = h["momentum"], h["dampening"], h["nesterov"]
        if mu > 0 and tau:
            issues.append(
                f"Keras's SGD has no dampening: decay scales every gradient after the first by "
                f"1 − τ = {1 - tau!r} in the momentum buffer. The closest has none"
            )
        if mu > 0 and not _is_constant(lr):
            issues.append(
                "Keras's SGD keeps v ← μv − lr_t·g (each gradient keeps the lr of its own step) "
                "where decay and PyTorch keep b ← μb + g and step by lr_t·b (the whole buffer at "
                f"the current lr); with momentum {mu!r} they are equal only while the lr is "
                "constant, not under a schedule"
            )
        if lam:
            if rule.decoupled:
                keras_wd = _lr_scaled(rule, lam, "Keras", issues)
            elif mu == 0:
                keras_wd = lam  # plain SGD: coupled λ ≡ decoupled lr-scaled λ
            else:
                penalty = _add_l2(penalty, lam / 2.0)
        if mu:
            kwargs["momentum"] = float(mu)  # Keras accepts a float only
        if nesterov:
            kwargs["nesterov"] = True
    else:
        if not rule.epsilon_hat:
            b2 = h["betas"][1]
            issues.append(
                "Keras adds ε to √v before the bias correction, θ −= lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε) "
                "(decay's epsilon_hat=True), where this rule adds it to √v̂ as PyTorch does: Keras's "
                f"epsilon would have to be ε·√(1−β2^k), which changes every step "
                f"({math.sqrt(1 - b2):.3g}·ε at step 1, → ε later). The closest uses epsilon=ε; "
                "for an exact conversion build the rule with epsilon_hat=True"
            )
        path = "keras.optimizers.AdamW" if rule.name == "adamw" else "keras.optimizers.Adam"
        kwargs.update(beta_1=h["betas"][0], beta_2=h["betas"][1], epsilon=h["eps"])
        if rule.amsgrad:
            kwargs["amsgrad"] = True
        if lam:
            if rule.decoupled:
                keras_wd = _lr_scaled(rule, lam, "Keras", issues)
            else:
                penalty = _add_l2(penalty, lam / 2.0)
    if keras_wd or path == "keras.optimizers.AdamW":
        kwargs["weight_decay"] = keras_wd
    optimizer = _Call(path, **kwargs)

    code = optimizer.source()
    mask_call = None
    if rule.mask is not None and keras_wd:
        if hasattr(rule.mask, "substrings"):
            mask_call = ("var_names", list(rule.mask.substrings))
            code = f"optimizer = {code}\noptimizer.exclude_from_weight_decay(var_names={list(rule.mask.substrings)!r})"
            notes.append(
                "Keras matches var_names against each variable's name (e.g. 'kernel', 'bias'), "
                "decay against the names of your params: equal when they contain the same substrings"
            )
        else:
            mask_call = ("var_list", rule.mask)
            code = (
                f"optimizer = {code}\n"
                f"keep = decay.masks.resolve_mask({_mask_source(rule.mask)}, list(params), list(params.values()))"
                "  # params: dict name -> variable, by the names the mask uses\n"
                "optimizer.exclude_from_weight_decay(var_list=[v for v, k in zip(params.values(), keep) if not k])"
            )
    extra = None
    if penalty is not None:
        reg = _keras_penalty_call(penalty).source()
        layers = "every decayed layer (those the mask decays)" if rule.mask is not None else "every decayed layer"
        extra = (f"add kernel_regularizer={reg} to {layers} (or add {reg}(w) to the loss for every "
                 "decayed weight w)")

    def build(params=None):
        opt = optimizer.build({})
        if mask_call is not None:
            kind, value = mask_call
            if kind == "var_names":
                opt.exclude_from_weight_decay(var_names=value)
            else:
                names, tensors = _named(params, "A Keras conversion with this mask")
                keep = resolve_mask(value, names, tensors)
                opt.exclude_from_weight_decay(var_list=[v for v, k in zip(tensors, keep) if not k])
        return opt

    return Conversion("keras", not issues, "; ".join(issues) or None, code, extra,
                      " ".join(notes), penalty, build)


# ---------------------------------------------------------------------------------
# From native objects.


def _type_id(obj) -> tuple[str, str]:
    cls = type(obj)
    return cls.__module__, cls.__qualname__


def _unsupported(obj, what="") -> DecayError:
    module, name = _type_id(obj)
    return DecayError(
        f"from_native() cannot convert an object of type {module}.{name}{what}. "
        f"Supported: {SUPPORTED_NATIVE}."
    )


def from_native(obj, *, scheduler=None):
    """The decay rule, penalty or schedule equal to a PyTorch or Keras object.

    - ``torch.optim.SGD``/``Adam``/``AdamW`` → :func:`decay.sgd` / :func:`decay.adam` /
      :func:`decay.adamw` (coupled for SGD and Adam, decoupled for AdamW), with the lr
      schedule of ``scheduler`` (a torch lr scheduler; or pass ``(optimizer, scheduler)``).
      Param groups that differ only in weight_decay being 0 become a ``mask`` when the
      optimizer was built with parameter names.
    - ``keras.optimizers.SGD`` → ``decay.sgd(..., decoupled=True)`` (Keras's decay is
      decoupled and lr-scaled); ``Adam``/``AdamW`` → ``decay.adam``/``adamw(...,
      epsilon_hat=True, eps=epsilon)``. A Keras schedule as learning_rate becomes the
      equal ``decay.schedules`` schedule. The float32 learning rate Keras stores comes
      back as the shortest decimal that rounds to it (0.1, not 0.10000000149).
    - ``keras.regularizers.L1``/``L2``/``L1L2`` → ``decay.L1``/``L2``/``ElasticNet``.
    - A torch scheduler or Keras schedule alone → the decay schedule.

    Anything else, and settings decay cannot express exactly (``maximize``, gradient
    clipping, EMA, ``CosineAnnealingLR`` past T_max, ...), raise :class:`~decay.DecayError`.
    The rule starts at step 0 whatever the optimizer's own step count.
    """
    if isinstance(obj, tuple) and len(obj) == 2 and scheduler is None:
        obj, scheduler = obj
    module, name = _type_id(obj)
    if isinstance(obj, (Rule, Penalty, schedules.Schedule)):
        raise DecayError(f"from_native() takes a PyTorch or Keras object; {obj!r} is already a decay object.")
    if isinstance(obj, _TorchPenalty):
        return obj.penalty
    if module in ("torch.optim.sgd", "torch.optim.adam", "torch.optim.adamw") and name in ("SGD", "Adam", "AdamW"):
        return _from_torch_optimizer(obj, name, scheduler)
    if scheduler is not None:
        raise DecayError("`scheduler` goes with a torch optimizer only.")
    if module == "torch.optim.lr_scheduler":
        return _from_torch_scheduler(obj, name)
    if module.startswith("keras.src.optimizers.schedules"):
        return _from_keras_schedule(obj, name)
    if module.startswith("keras.src.optimizers.") and name in ("SGD", "Adam", "AdamW"):
        return _from_keras_optimizer(obj, name)
    if module.startswith("keras.src.regularizers") and name in ("L1", "L2", "L1L2"):
        if name == "L1":
            return L1(float(obj.l1))
        if name == "L2":
            return L2(float(obj.l2))
        return ElasticNet(float(obj.l1), float(obj.l2))
    raise _unsupported(obj)


def _float(x) -> float:
    return float(x.item() if hasattr(x, "item") else x)


_TORCH_IGNORED = {"params", "param_names", "initial_lr", "foreach", "fused", "capturable",
                  "differentiable"}


def _from_torch_optimizer(opt, name, scheduler):
    groups = opt.param_groups
    first = groups[0]

    def hyper(group):
        h = {k: v for k, v in group.items() if k not in _TORCH_IGNORED}
        h["lr"] = group.get("initial_lr", group["lr"])
        return h

    base = hyper(first)
    if base.get("maximize"):
        raise DecayError(f"torch.optim.{name}(maximize=True) ascends the loss; decay's rules descend.")
    mask = None
    if len(groups) > 1:
        differ = {}
        for i, group in enumerate(groups[1:], 1):
            h = hyper(group)
            for key in set(h) | set(base):
                if _differs(h.get(key), base.get(key)):
                    differ.setdefault(key, []).append((i, h.get(key)))
        if differ:
            wds = {_float(g["weight_decay"]) for g in groups}
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
            lam = max(wds)
            mask = {n: _float(g["weight_decay"]) > 0 for g in groups for n in g["param_names"]}
            base["weight_decay"] = lam
    lr = _float(base["lr"])
    if scheduler is None and "initial_lr" in first:
        raise DecayError(
            f"This torch.optim.{name} is driven by an lr scheduler (its param groups have "
            "'initial_lr'); without it the lr would be taken as constant. Pass it: "
            "from_native(optimizer, scheduler=scheduler)."
        )
    if scheduler is not None:
        sched = _from_torch_scheduler(scheduler, type(scheduler).__qualname__)
        if getattr(scheduler, "optimizer", opt) is not opt:
            raise DecayError("`scheduler` drives a different optimizer than the one given.")
        lr = sched
    wd = _float(base["weight_decay"])
    if name == "SGD":
        return sgd(lr, momentum=_float(base["momentum"]), dampening=_float(base["dampening"]),
                   nesterov=bool(base["nesterov"]), weight_decay=wd, mask=mask)
    betas = tuple(_float(b) for b in base["betas"])
    common = dict(lr=lr, betas=betas, eps=_float(base["eps"]), weight_decay=wd,
                  amsgrad=bool(base["amsgrad"]), mask=mask)
    if name == "AdamW":
        return adamw(**common)
    return adam(decoupled=bool(base.get("decoupled_weight_decay", False)), **common)


def _differs(a, b) -> bool:
    try:
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
        if a is None or b is None or isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
            return a != b
        return _float(a) != _float(b)
    except (TypeError, ValueError):
        return a is not b


def _from_torch_scheduler(s, name):
    bases = [float(b) for b in s.base_lrs]
    if len(set(bases)) != 1:
        raise DecayError(f"{name} drives param groups with different base lrs {bases}; decay's rule has one lr.")
    alpha = bases[0]
    if name == "StepLR":
        return schedules.step(alpha, s.step_size, s.gamma)
    if name == "MultiStepLR":
        counts = dict(sorted(s.milestones.items()))
        if all(c == 1 for c in counts.values()):
            return schedules.multistep(alpha, list(counts), s.gamma)
        values, k = [alpha], 0
        for c in counts.values():
            k += c
            values.append(alpha * s.gamma**k)
        return schedules.piecewise(list(counts), values)
    if name == "ExponentialLR":
        return schedules.exponential(alpha, s.gamma)
    if name == "PolynomialLR":
        return schedules.polynomial(alpha, s.total_iters, power=s.power)
    if name == "CosineAnnealingWarmRestarts":
        return schedules.cosine_restarts(alpha, s.T_0, t_mul=float(s.T_mult), floor=float(s.eta_min))
    if name == "LambdaLR" and len(s.lr_lambdas) == 1 and isinstance(s.lr_lambdas[0], _Multiplier):
        m = s.lr_lambdas[0]
        if m.base != alpha:
            raise DecayError(f"LambdaLR's schedule has base {m.base!r} but the optimizer's lr is {alpha!r}.")
        return m.schedule
    if name == "CosineAnnealingLR":
        raise DecayError(
            f"CosineAnnealingLR(T_max={s.T_max}, eta_min={s.eta_min!r}) has no exact decay "
            f"schedule: past T_max it climbs back to the base lr (period 2·T_max). For runs of at "
            f"most T_max steps it equals decay.schedules.cosine({alpha!r}, {s.T_max}, floor={s.eta_min!r})."
        )
    raise _unsupported(s, " (a torch lr scheduler)")


def _keras_lr_float(value) -> float:
    """The shortest decimal that rounds to the float32 Keras stores."""
    import numpy as np

    return float(str(np.float32(_float(value))))


def _int_steps(name, value, schedule_name):
    v = _float(value)
    if not v.is_integer():
        raise DecayError(
            f"Keras {schedule_name} has {name}={value!r}; decay's schedules count whole steps. "
            "Use an integer number of steps."
        )
    return int(v)


def _from_keras_schedule(s, name):
    c = s.get_config()
    if name == "ExponentialDecay":
        return schedules.exponential(
            _float(c["initial_learning_rate"]), _float(c["decay_rate"]),
            _int_steps("decay_steps", c["decay_steps"], name), bool(c["staircase"]))
    if name == "InverseTimeDecay":
        return schedules.inverse_time(
            _float(c["initial_learning_rate"]), _float(c["decay_rate"]),
            _int_steps("decay_steps", c["decay_steps"], name), bool(c["staircase"]))
    if name == "PolynomialDecay":
        return schedules.polynomial(
            _float(c["initial_learning_rate"]), _int_steps("decay_steps", c["decay_steps"], name),
            end_value=_float(c["end_learning_rate"]), power=_float(c["power"]), cycle=bool(c["cycle"]))
    if name == "PiecewiseConstantDecay":
        return schedules.piecewise([int(b) for b in c["boundaries"]], [_float(v) for v in c["values"]],
                                   switch="after")
    if name == "CosineDecay":
        alpha = _float(c["alpha"])
        steps = _int_steps("decay_steps", c["decay_steps"], name)
        init = _float(c["initial_learning_rate"])
        target = c.get("warmup_target")
        if target is None:
            return schedules.constant(init) if alpha == 1.0 else schedules.cosine(init, steps, floor=alpha * init)
        target = _float(target)
        inner = schedules.constant(target) if alpha == 1.0 else schedules.cosine(target, steps, floor=alpha * target)
        return schedules.warmup(inner, _int_steps("warmup_steps", c["warmup_steps"], name), start_value=init)
    if name == "CosineDecayRestarts":
        t_mul = _float(c["t_mul"])
        if not t_mul.is_integer():
            raise DecayError(
                f"CosineDecayRestarts(t_mul={t_mul!r}): with a non-integer t_mul Keras finds the cycle "
                "with a float32 logarithm and puts some restart steps at the end of the previous "
                "cycle, so no decay schedule is equal; decay.schedules.cosine_restarts is equal at "
                "all other steps."
            )
        init = _float(c["initial_learning_rate"])
        return schedules.cosine_restarts(
            init, _int_steps("first_decay_steps", c["first_decay_steps"], name), t_mul=t_mul,
            m_mul=_float(c["m_mul"]), floor=_float(c["alpha"]) * init)
    raise _unsupported(s, " (a Keras learning-rate schedule)")


def _from_keras_optimizer(opt, name):
    for attr, default in (("clipnorm", None), ("clipvalue", None), ("global_clipnorm", None),
                          ("loss_scale_factor", None), ("gradient_accumulation_steps", None),
                          ("use_ema", False)):
        value = getattr(opt, attr, default)
        if value not in (default, 0) and value is not False:
            raise DecayError(
                f"keras.optimizers.{name}({attr}={value!r}): decay's rules have no {attr}; "
                "remove it or convert the optimizer without it."
            )
    lr_obj = getattr(opt, "_learning_rate", None)
    lr_module = type(lr_obj).__module__
    if lr_module.startswith("keras.src.optimizers.schedules"):
        lr = _from_keras_schedule(lr_obj, type(lr_obj).__qualname__)
    elif hasattr(lr_obj, "numpy"):
        lr = _keras_lr_float(lr_obj.numpy())
    elif isinstance(lr_obj, numbers.Real):
        lr = _keras_lr_float(lr_obj)
    else:
        raise DecayError(
            f"keras.optimizers.{name} has learning_rate={lr_obj!r}; from_native converts a float "
            "or one of the Keras schedules listed in decay.convert.SUPPORTED_NATIVE."
        )
    wd = 0.0 if opt.weight_decay is None else _float(opt.weight_decay)
    mask = None
    if getattr(opt, "_exclude_from_weight_decay", None):
        raise DecayError(
            f"keras.optimizers.{name} excludes variables from weight decay by object "
            "(exclude_from_weight_decay(var_list=...)); decay masks go by name: build the rule "
            "with mask= by hand."
        )
    pattern = getattr(opt, "_exclude_from_weight_decay_pattern", None)
    if pattern is not None:
        mask = exclude_names(pattern.pattern)
    if name == "SGD":
        mu = _float(opt.momentum)
        # Keras's decay is decoupled; with none, the plain (coupled) form reads simplest.
        return sgd(lr, momentum=mu, nesterov=bool(opt.nesterov) and mu > 0, weight_decay=wd,
                   decoupled=wd > 0, mask=mask)
    common = dict(lr=lr, betas=(_float(opt.beta_1), _float(opt.beta_2)), eps=_float(opt.epsilon),
                  weight_decay=wd, amsgrad=bool(opt.amsgrad), epsilon_hat=True, mask=mask)
    if name == "AdamW":
        return adamw(**common)
    return adam(decoupled=wd > 0, **common)


# -- settings as written in a framework, without that framework installed ----------------------
#: Each framework's defaults where they differ (PyTorch: Adam eps 1e-8, AdamW weight
#: decay 1e-2; Keras: eps 1e-7, AdamW weight decay 0.004, decay always decoupled).
_SETTING_DEFAULTS = {
    ("torch", "adamw"): {"weight_decay": 1e-2},
    ("keras", "adamw"): {"weight_decay": 0.004},
}


def rule_from_settings(framework, optimizer, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                       weight_decay=None, betas=None, eps=None, amsgrad=False) -> Rule:
    """The decay rule for optimizer settings written in ``framework``'s convention
    ("torch", "keras" or "decay"), e.g. ``("torch", "sgd", lr=0.1, momentum=0.9,
    weight_decay=5e-4)`` — built from the conventions, so neither framework is needed.

    PyTorch's ``weight_decay`` is coupled (AdamW's decoupled); every Keras optimizer's is
    decoupled and scaled by lr, and Keras's Adam puts ε outside the bias correction."""
    if framework not in ("torch", "keras", "decay"):
        raise DecayError(f"`framework` must be 'torch', 'keras' or 'decay'. Received: {framework!r}.")
    if optimizer not in ("sgd", "adam", "adamw"):
        raise DecayError(f"`optimizer` must be 'sgd', 'adam' or 'adamw'. Received: {optimizer!r}.")
    if weight_decay is None:
        weight_decay = _SETTING_DEFAULTS.get((framework, optimizer), {}).get(
            "weight_decay", 1e-2 if optimizer == "adamw" else 0.0
        )
    if optimizer == "sgd":
        if framework == "keras" and dampening:
            raise DecayError(f"Keras's SGD has no dampening. Received: dampening={dampening!r}.")
        return sgd(lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=weight_decay, decoupled=framework == "keras")
    if momentum or dampening or nesterov:
        raise DecayError(
            f"`momentum`, `dampening` and `nesterov` are SGD settings; {optimizer} has none. "
            f"Received: momentum={momentum!r}, dampening={dampening!r}, nesterov={nesterov!r}."
        )
    keras = framework == "keras"
    kwargs = dict(betas=betas or (0.9, 0.999), eps=(1e-7 if keras else 1e-8) if eps is None else eps,
                  weight_decay=weight_decay, amsgrad=amsgrad, epsilon_hat=keras)
    if optimizer == "adamw":
        return adamw(lr, **kwargs)
    return adam(lr, decoupled=keras, **kwargs)
