"""decay ↔ PyTorch / Keras / optax for Adafactor. :mod:`decay.convert.torch_classic`,
:mod:`decay.convert.keras_classic` and :mod:`decay.convert.optax` dispatch here.

=========================================  ===========================================  =====
decay.adafactor                            native                                       exact
=========================================  ===========================================  =====
convention="torch" (decoupled λ by lr)     torch.optim.Adafactor(lr, beta2_decay,        yes
                                           eps=(eps, min_param_scale), d, weight_decay)
convention="keras" (coupled λ: L2 loss)    keras.optimizers.Adafactor(...)              yes
convention="optax" (coupled λ: chain)      optax.adafactor(...)                         yes
any other mix of the options               the framework's own                          no
=========================================  ===========================================  =====

Each option that the target computes otherwise is one reason in ``Conversion.reason``
(measured gaps: ``docs/conventions.md``). ``clip_threshold=None`` converts as an infinite
threshold (max(1, RMS(u)/∞) = 1: no clipping) in torch and Keras.
"""

from __future__ import annotations

from ..errors import DecayError
from ..rules.adafactor import adafactor
from . import _rule
from ._common import lr_scaled, to_float

#: the options each framework computes, as decay's option -> its value there
_NATIVE = {
    "torch": dict(eps_added_to_squares=False, relative_step=True, scale_by_param_rms=True,
                  param_rms_after_decay=False, factored_dims="last_two", momentum=None, decay_offset=0),
    "keras": dict(eps_added_to_squares=True, relative_step=True, scale_by_param_rms=True,
                  param_rms_after_decay=True, factored_dims="last_two", momentum=None, decay_offset=0),
}
_WHY = {
    "eps_added_to_squares": "where ε₁ enters (added to g² before the means, or floors on mean(R) and √V)",
    "relative_step": "the relative step ρ_t = min(lr_t, 1/√t)",
    "scale_by_param_rms": "the parameter scale max(ε₂, RMS(θ))",
    "param_rms_after_decay": "whether RMS(θ) is read before or after the weight decay",
    "factored_dims": "which axes are factored (the last two, or the two largest)",
    "momentum": "a momentum on the updates (optax's only)",
    "decay_offset": "a decay_offset on β̂_t's step (optax's only)",
}


def _option_issues(rule, framework, issues, lam):
    for key, native in _NATIVE[framework].items():
        mine = getattr(rule, key)
        if key == "param_rms_after_decay" and not (lam and rule.decoupled and rule.scale_by_param_rms):
            continue  # no decoupled decay: the order does not matter
        if mine != native:
            issues.append(f"{framework}'s Adafactor fixes {_WHY[key]}: {key}={native!r}, this rule's is {mine!r}")
    if rule.factored_dims is not None and rule.min_dim_size_to_factor > 1:
        issues.append(f"{framework}'s Adafactor factors every parameter of rank >= 2; this rule only those with both "
                      f"axes >= min_dim_size_to_factor={rule.min_dim_size_to_factor}")
    if rule.factored_dims is None:
        issues.append(f"{framework}'s Adafactor factors every parameter of rank >= 2; this rule none")


def _clip(rule):
    return float("inf") if rule.clip_threshold is None else rule.clip_threshold


# -- torch ----------------------------------------------------------------------------------
def to_torch(rule, lam, issues):
    """(path, options, torch's weight_decay, the penalty left for the loss)."""
    path = "torch.optim.Adafactor"
    _option_issues(rule, "torch", issues, lam)
    wd = 0.0
    if lam and rule.decoupled:
        wd = lr_scaled(rule, lam, path, issues)
    elif lam:
        issues.append(f"{path}'s weight decay is decoupled only (θ·(1 − lr·λ)); a coupled λθ in the gradient is "
                      "divided by the factored √V, which no decoupled λ equals. The closest uses the same λ decoupled")
        wd = lam
    options = {"beta2_decay": _rule.hyper(rule, "beta2_decay"), "eps": (rule.eps, rule.min_param_scale),
               "d": _clip(rule), "foreach": True}
    return path, options, wd, rule.regularizer


def from_torch(h, lr, wd, mask):
    """torch.optim.Adafactor's param group 0 -> decay.adafactor(convention="torch")."""
    eps1, eps2 = h["eps"]
    return adafactor(lr, to_float(h["beta2_decay"]), None if eps1 is None else to_float(eps1), to_float(h["d"]),
                     wd, min_param_scale=to_float(eps2), mask=mask, convention="torch")


# -- Keras ----------------------------------------------------------------------------------
def to_keras(rule, lam, issues):
    from .keras import _keras_decay  # keras.py imports the classic module that imports this one

    _option_issues(rule, "keras", issues, lam)
    if rule.eps is None:
        issues.append("eps=None (the dtype's machine epsilon, torch's) has no Keras value; the closest uses 1e-30")
    options = {"beta_2_decay": _rule.hyper(rule, "beta2_decay"),
               "epsilon_1": 1e-30 if rule.eps is None else rule.eps, "epsilon_2": rule.min_param_scale,
               "clip_threshold": _clip(rule), "relative_step": True}
    return ("keras.optimizers.Adafactor", options, *_keras_decay(rule, lam, issues))


KERAS_NOTE = ("Keras computes Adafactor in the variables' dtype and casts its hyperparameters there: with "
              "float32 weights the two agree to float32 rounding (measured: docs/optimizers.md).")


def from_keras(opt, lr, wd, mask):
    """keras.optimizers.Adafactor -> decay.adafactor(convention="keras"). Keras 3 steps by
    min(lr_t, 1/√t) whatever its relative_step flag: so does the rule."""
    return adafactor(lr, to_float(opt.beta_2_decay), to_float(opt.epsilon_1), to_float(opt.clip_threshold), wd,
                     min_param_scale=to_float(opt.epsilon_2), mask=mask, convention="keras")


# -- optax ------------------------------------------------------------------------------------
def _optax_issues(rule, lam, issues):
    if rule.factored_dims == "last_two":
        issues.append("optax's adafactor factors the two largest axes (factored_dims='largest_two'); this rule the "
                      "last two")
    if not rule.eps_added_to_squares:
        issues.append("optax's adafactor adds ε₁ to g² (eps_added_to_squares=True); this rule floors mean(R) and √V")
    if rule.relative_step:
        issues.append("optax's adafactor has no relative step: ρ_t = lr_t, this rule's min(lr_t, 1/√t)")
    if lam and rule.decoupled and rule.scale_by_param_rms and rule.param_rms_after_decay:
        issues.append("optax's adafactor reads RMS(θ) before its decay; this rule after it (Keras's order)")


def to_optax(rule, lam, issues):
    """The optax transformation (a list for optax.chain) equal to ``rule``."""
    from .optax import _Call, _decayed, _optax_schedule, _penalty_l2, optax_mask

    _optax_issues(rule, lam, issues)
    lr = _optax_schedule(_rule.hyper(rule, "lr"), issues)
    head = _decayed(_penalty_l2(rule, issues), None)
    kwargs = dict(learning_rate=lr, min_dim_size_to_factor=max(rule.min_dim_size_to_factor, 1),
                  decay_rate=-_rule.hyper(rule, "beta2_decay"), decay_offset=rule.decay_offset,
                  multiply_by_parameter_scale=rule.scale_by_param_rms, clipping_threshold=rule.clip_threshold,
                  momentum=rule.momentum, eps=1e-30 if rule.eps is None else rule.eps,
                  factored=rule.factored_dims is not None)
    if lam and not rule.decoupled:
        head += _decayed(lam, rule.mask)  # g + λθ before the factored RMS: coupled, exact
    elif lam:
        kwargs["weight_decay_rate"] = _optax_decay_rate(rule, lam, issues)
        if rule.mask is not None:
            kwargs["weight_decay_mask"] = optax_mask(rule.mask)
    return head + [_Call("optax.adafactor", **kwargs)]


def _optax_decay_rate(rule, lam, issues):
    """optax shrinks θ by λ' every step (not scaled by the lr): λ' = s_t·λ."""
    if rule.decay_scaled_by == "none":
        return lam
    lr = _rule.hyper(rule, "lr")
    if callable(lr):
        issues.append("optax's weight_decay_rate shrinks θ by a constant λ every step; this rule by lr_t·λ under "
                      "an lr schedule. The closest uses λ·lr_0")
        return lam * float(lr(0))
    return lam * (lr / _rule.base_lr(rule) if rule.decay_scaled_by == "schedule_multiplier" else lr)


OPTAX_NOTE = ("optax computes β̂_t in float32 even with jax_enable_x64 (6e-8 relative per step: 1e-8 after 100 "
              "steps, measured) and keeps the momentum in float32 unless dtype_momentum=jnp.float64.")


def from_optax(h):
    """optax.inject_hyperparams(optax.adafactor)(...) -> decay.adafactor(convention="optax").
    optax keeps the momentum in float32 unless ``dtype_momentum`` says otherwise; the rule
    keeps it in the parameters' dtype (``OPTAX_NOTE``)."""
    from .optax import _number, optax_mask

    mask = h.get("weight_decay_mask")
    if mask is not None and not isinstance(mask, optax_mask):
        raise DecayError("optax.adafactor's weight_decay_mask here is a pytree or a function; decay's masks go "
                         "by name: pass weight_decay_mask=decay.convert.optax.optax_mask(mask).")
    lr, wd, mu = h.get("learning_rate"), h.get("weight_decay_rate"), h.get("momentum")
    return adafactor(
        1.0 if lr is None else _number("learning_rate", lr), -_number("decay_rate", h.get("decay_rate", 0.8)),
        _number("eps", h.get("eps", 1e-30)),
        None if h.get("clipping_threshold") is None else _number("clipping_threshold", h["clipping_threshold"]),
        0.0 if wd is None else _number("weight_decay_rate", wd), convention="optax",
        min_dim_size_to_factor=int(_number("min_dim_size_to_factor", h.get("min_dim_size_to_factor", 128))),
        decay_offset=int(_number("decay_offset", h.get("decay_offset", 0))),
        scale_by_param_rms=bool(h.get("multiply_by_parameter_scale", True)),
        factored_dims="largest_two" if h.get("factored", True) else None,
        momentum=None if mu is None else _number("momentum", mu), mask=None if mask is None else mask.mask,
    )
