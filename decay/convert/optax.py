"""decay ↔ optax: chains of ``add_decayed_weights``, ``trace``, ``scale_by_adam`` and
schedules; and optax transformations built with ``optax.inject_hyperparams``.

optax composes weight decay by its place in a chain: ``add_decayed_weights`` before the
momentum/Adam transformation is coupled decay (g + λθ), after it and before
``scale_by_learning_rate`` decoupled lr-scaled decay (``optax.adamw``). So, with λ' the
lr-scaled coefficient (``decay.convert._common.lr_scaled``):

- sgd coupled λ (μ, Nesterov, no dampening) ≡ ``chain(add_decayed_weights(λ), sgd(lr, μ, nesterov))``
- sgd decoupled ≡ ``chain(trace(μ, nesterov), add_decayed_weights(λ'), scale_by_learning_rate(lr))``
  (exact with momentum too, which neither PyTorch nor Keras can say)
- adam coupled ≡ ``chain(add_decayed_weights(λ), scale_by_adam(β1, β2, ε), scale_by_learning_rate(lr))``
- adam(w) decoupled ≡ ``optax.adamw(lr, β1, β2, ε, weight_decay=λ', mask)``
- a regularizer's L2 part c·Σθ² adds ``add_decayed_weights(2c)`` first (coupled).

Not exact: dampening (optax's ``trace`` has none), ``amsgrad`` (optax takes the max of
the bias-corrected ν̂, PyTorch and decay of the raw v), ``epsilon_hat``, L1 penalties,
groups, decay schedules other than optax's, ``on_nonfinite``.

optax may evaluate its schedules in float32 even with ``jax_enable_x64`` (its counts are
int32), so under an lr schedule lr_t carries up to one float32 rounding:
|Δlr_t| ≤ 2⁻²³·lr_t, a relative error ≤ 1.2e-7 per step in the update and at most
n·1.2e-7 after n steps (``OPTAX_SCHEDULE_NOTE`` gives the measured values).
Nothing here imports optax or JAX at import time.
"""

from __future__ import annotations

from ..errors import DecayError
from ..masks import resolve_mask
from ..rules.adam import adam, adamw
from ..rules.sgd import sgd
from ..tree import flatten, unflatten
from . import _rule
from . import adafactor as _adafactor
from ._codegen import Conversion, _build_value, _Call, _reason, _source
from ._common import common_issues, lr_scaled, mask_source, weight_decay
from ._schedules import convert_schedule, kind

OPTAX_SCHEDULE_NOTE = (
    "optax may evaluate lr schedules in float32 even with jax_enable_x64 (its counts are "
    "int32; warmup_cosine_decay_schedule does): lr_t then carries one float32 rounding, "
    "relative <= 2^-23 per step, so the weights agree to n*1.2e-7 relative after n steps "
    "(measured after 100 steps: 1.7e-9 with warmup + cosine AdamW, 1e-16 with cosine SGD)"
)


# -- decay lr schedules -> optax schedules: one function per kind ------------------------


def _optax_constant(s, issues):
    return s.base


def _optax_step(s, issues):
    return _Call("optax.exponential_decay", init_value=s.base, transition_steps=s.step_size,
                 decay_rate=s.gamma, staircase=True)


def _optax_exponential(s, issues):
    kwargs = dict(init_value=s.base, transition_steps=s.decay_steps, decay_rate=s.decay_rate,
                  transition_begin=s.transition_begin, staircase=s.staircase)
    if s.end_value is not None:
        kwargs["end_value"] = s.end_value
    return _Call("optax.exponential_decay", **kwargs)


def _optax_cosine(s, issues):
    if s.base <= 0:
        issues.append("optax's cosine_decay_schedule gives the floor as a fraction alpha of a base lr of 0")
        return 0.0
    return _Call("optax.cosine_decay_schedule", init_value=s.base, decay_steps=s.decay_steps,
                 alpha=s.floor / s.base)


def _optax_polynomial(s, issues):
    if getattr(s, "cycle", False):
        issues.append("optax's polynomial_schedule does not cycle; the closest stays at end_value")
    return _Call("optax.polynomial_schedule", init_value=s.base, end_value=s.end_value, power=s.power,
                 transition_steps=s.decay_steps)


def _optax_warmup(s, issues):
    inner = s.schedule
    if kind(inner) == "cosine":
        return _Call("optax.warmup_cosine_decay_schedule", init_value=s.start_value, peak_value=inner.base,
                     warmup_steps=s.warmup_steps, decay_steps=s.warmup_steps + inner.decay_steps,
                     end_value=inner.floor)
    issues.append(f"optax has a linear warmup before a cosine only; warmup around {inner!r} is dropped")
    return _optax_schedule(inner, issues)


_TO_SCHEDULES = {
    "constant": _optax_constant,
    "step": _optax_step,
    "exponential": _optax_exponential,
    "cosine": _optax_cosine,
    "polynomial": _optax_polynomial,
    "warmup": _optax_warmup,
}


def _optax_schedule(sched, issues):
    """The optax learning_rate (a float or a schedule _Call) for an lr."""
    return convert_schedule(sched, _TO_SCHEDULES, issues,
                            "no optax schedule is converted from {sched!r} here; the closest keeps lr at {base!r}")


def schedule_to_optax(sched) -> Conversion:
    issues = []
    value = _optax_schedule(sched, issues)
    return Conversion("optax", not issues, _reason(issues), _source(value), note=OPTAX_SCHEDULE_NOTE,
                      _builder=lambda params=None: _build_value(value, {}))


# -- masks -------------------------------------------------------------------------------


class optax_mask:  # noqa: N801 - used like optax's mask functions
    """decay's ``mask`` (None, dict name -> bool, callable (name, tensor) -> bool) as an
    optax mask: ``params -> pytree of bools`` (True = decayed, optax's convention too),
    by decay's names for the leaves ("Dense_0/kernel")."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, params):
        flat = flatten(params)
        return unflatten(flat, resolve_mask(self.mask, flat.names, flat.leaves))

    def __repr__(self):  # the source generated code shows
        return f"decay.convert.optax.optax_mask({mask_source(self.mask)})"


# -- decay rules -> optax ------------------------------------------------------------------


def _penalty_l2(rule, issues) -> float:
    """2c for the regularizer's L2 part c·Σθ² (its gradient, added to g)."""
    penalty = rule.regularizer
    if penalty is None:
        return 0.0
    if penalty.without_l2() is not None:
        issues.append(f"optax has no transformation for the non-L2 part of {penalty!r} (an L1 term)")
    return 2.0 * penalty.l2


def _decayed(lam, mask):
    if not lam:
        return []
    kwargs = {"mask": optax_mask(mask)} if mask is not None else {}
    return [_Call("optax.add_decayed_weights", lam, **kwargs)]


def _sgd_chain(rule, lr, lam, coupled_extra, issues):
    mu, tau = _rule.hyper(rule, "momentum"), _rule.hyper(rule, "dampening")
    nesterov = bool(_rule.hyper(rule, "nesterov"))
    if mu and tau:
        issues.append(f"optax's trace has no dampening (τ = {tau!r}): the closest has none")
    head = _decayed(coupled_extra, None)
    if not rule.decoupled:
        head += _decayed(lam + 0.0, rule.mask) if lam else []
        kwargs = dict(momentum=mu, nesterov=nesterov) if mu else {}
        return head + [_Call("optax.sgd", lr, **kwargs)]
    tail = _decayed(lr_scaled(rule, lam, "optax", issues), rule.mask) + [_Call("optax.scale_by_learning_rate", lr)]
    middle = [_Call("optax.trace", decay=mu, nesterov=nesterov)] if mu else []
    return head + middle + tail


def _adam_chain(rule, lr, lam, coupled_extra, issues):
    b1, b2 = _rule.hyper(rule, "betas")
    eps = _rule.hyper(rule, "eps")
    if rule.amsgrad:
        issues.append("optax's amsgrad keeps the max of the bias-corrected ν̂, decay (as PyTorch) of the raw v")
    if rule.epsilon_hat:
        issues.append("optax adds ε to √ν̂ (epsilon_hat=False); this rule adds ε̂ before the bias correction (Keras)")
    head = _decayed(coupled_extra, None)
    if rule.decoupled and not coupled_extra and lam:
        kwargs = {"mask": optax_mask(rule.mask)} if rule.mask is not None else {}
        return [_Call("optax.adamw", lr, b1=b1, b2=b2, eps=eps,
                      weight_decay=lr_scaled(rule, lam, "optax", issues), **kwargs)]
    if not rule.decoupled:
        head += _decayed(lam, rule.mask)
        tail = []
    else:
        tail = _decayed(lr_scaled(rule, lam, "optax", issues), rule.mask)
    return head + [_Call("optax.scale_by_adam", b1=b1, b2=b2, eps=eps)] + tail + [
        _Call("optax.scale_by_learning_rate", lr)]


def rule_to_optax(rule) -> Conversion:
    issues = []
    common_issues(rule, issues, "optax")
    lam = weight_decay(rule)
    note = OPTAX_SCHEDULE_NOTE if callable(_rule.hyper(rule, "lr")) else None
    if rule.name == "adafactor":  # decay/convert/adafactor.py
        chain = _adafactor.to_optax(rule, lam, issues)
        note = _adafactor.OPTAX_NOTE if note is None else f"{_adafactor.OPTAX_NOTE} {note}"
    else:
        lr = _optax_schedule(_rule.hyper(rule, "lr"), issues)
        extra = _penalty_l2(rule, issues)
        chain = (_sgd_chain if _rule.is_sgd(rule) else _adam_chain)(rule, lr, lam, extra, issues)
    call = chain[0] if len(chain) == 1 else _Call("optax.chain", *chain)
    return Conversion("optax", not issues, _reason(issues), call.source(), note=note,
                      _builder=lambda params=None: call.build({}))


# -- optax -> decay: transformations built with optax.inject_hyperparams --------------------

_OPAQUE = (
    "optax transformations are pairs of functions whose hyperparameters live in closures; "
    "decay reads the ones built with optax.inject_hyperparams(optax.sgd | optax.adam | "
    "optax.adamw)(...) with numbers (not schedules) as hyperparameters. Build it that way, "
    "or write the decay rule directly (decay.convert.optax's docstring has the table)."
)


def _closure(fn) -> dict:
    names = getattr(getattr(fn, "__code__", None), "co_freevars", ())
    cells = getattr(fn, "__closure__", None) or ()
    return {name: cell.cell_contents for name, cell in zip(names, cells)}


def _number(name, value) -> float:
    if callable(value) and not hasattr(value, "item"):
        raise DecayError(
            f"from_native() reads optax hyperparameters that are numbers; {name} is a schedule "
            f"({value!r}), which is an opaque function. {_OPAQUE}"
        )
    return float(value.item() if hasattr(value, "item") else value)


def from_optax(tx):
    """The decay rule equal to ``optax.inject_hyperparams(optax.sgd|adam|adamw)(...)``."""
    cells = _closure(getattr(tx, "init", None))
    factory = cells.get("inner_factory")
    if factory is None or "numeric_hps" not in cells:
        raise DecayError(f"from_native() cannot read this optax transformation: {_OPAQUE}")
    hps = {**cells.get("other_hps", {}), **cells["numeric_hps"],
           **{k: getattr(v, "schedule_fn", v) for k, v in cells.get("sched_hps", {}).items()}}
    name = getattr(factory, "__name__", repr(factory))
    reader = _FROM_OPTAX.get(name)
    if reader is None:
        raise DecayError(f"from_native() reads optax.sgd, adam, adamw and adafactor; this is optax.{name}. {_OPAQUE}")
    return reader(hps)


def _from_sgd(h):
    if h.get("accumulator_dtype") is not None:
        raise DecayError("optax.sgd's accumulator_dtype has no decay equivalent (decay keeps slots in the params' dtype).")
    mu = h.get("momentum")
    return sgd(_number("learning_rate", h["learning_rate"]), momentum=0.0 if mu is None else _number("momentum", mu),
               nesterov=bool(h.get("nesterov", False)))


def _adam_args(h):
    if _number("eps_root", h.get("eps_root", 0.0)) != 0.0:
        raise DecayError("optax's eps_root (ε inside the square root) has no decay equivalent.")
    if h.get("nesterov"):
        raise DecayError("optax's nesterov Adam (NAdam) has no decay equivalent.")
    return dict(lr=_number("learning_rate", h["learning_rate"]),
                betas=(_number("b1", h.get("b1", 0.9)), _number("b2", h.get("b2", 0.999))),
                eps=_number("eps", h.get("eps", 1e-8)))


def _from_adam(h):
    return adam(**_adam_args(h))


def _from_adamw(h):
    mask = h.get("mask")
    if mask is not None and not isinstance(mask, optax_mask):
        raise DecayError(
            "optax.adamw's mask here is a pytree or a function of params; decay's masks are by "
            "name: pass mask=decay.convert.optax.optax_mask(decay_mask), or build the decay rule "
            "with its mask= directly."
        )
    return adamw(**_adam_args(h), weight_decay=_number("weight_decay", h.get("weight_decay", 1e-4)),
                 mask=None if mask is None else mask.mask)


_FROM_OPTAX = {"sgd": _from_sgd, "adam": _from_adam, "adamw": _from_adamw, "adafactor": _adafactor.from_optax}

__all__ = ["rule_to_optax", "schedule_to_optax", "from_optax", "optax_mask", "OPTAX_SCHEDULE_NOTE"]
