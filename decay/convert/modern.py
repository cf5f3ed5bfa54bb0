"""decay ↔ PyTorch / Keras for the modern rules: Lion, LAMB, Muon.

=====================================  ===============================================  =====
decay                                  native                                           exact
=====================================  ===============================================  =====
lion, decoupled (or coupled via L2)    keras Lion(weight_decay=λ') (+ L2 in the loss)   yes
lion                                   torch: none in torch.optim (2.13)                no
lamb, decay_in_trust_ratio=False       keras Lamb(epsilon=ε, weight_decay=λ')           yes
lamb, decay inside the trust ratio     keras Lamb (decays before the step)              no
lamb                                   torch: none in torch.optim (2.13)                no
muon(convention="keras")               keras Muon (its Adam takes the non-2-D weights)  yes
muon, other conventions                keras Muon                                       no
muon(ns_dtype="bfloat16")              torch Muon (orthogonalizes in bfloat16)          yes
muon, other ns_dtype                   torch Muon                                       no
=====================================  ===============================================  =====

Where torch.optim has no such optimizer, the closest is decay's own rule inside torch,
``decay.torch.Optimizer`` (the same numbers as decay, but not a native optimizer).
"""

from __future__ import annotations

from ..errors import DecayError
from ..rules.lamb import Lamb, lamb
from ..rules.lion import Lion, lion
from ..rules.muon import NS_COEFFICIENTS, Muon, muon
from . import _rule
from ._codegen import Conversion, _Call, _Name, _reason
from ._common import common_issues, lr_scaled, to_float, weight_decay
from ._schedules import base_value

MODERN = (Lion, Lamb, Muon)
TORCH_BFLOAT16 = (
    "torch.optim.Muon orthogonalizes in bfloat16 whatever the parameters' dtype (this rule in {}): "
    "measured 1.5e-3 relative after 100 steps on the parity problem; ns_dtype='bfloat16' is torch's"
)


def is_modern(rule) -> bool:
    return isinstance(rule, MODERN)


# -- to torch ------------------------------------------------------------------------------
def rule_to_torch(rule) -> Conversion:
    if not isinstance(rule, Muon):
        name = type(rule).__name__
        code = f"decay.torch.Optimizer(model.named_parameters(), {_rule_source(rule)})"
        reason = (f"torch.optim (2.13) has no {name}; the closest runs decay's own rule inside torch: "
                  "decay.torch.Optimizer, the same numbers as decay")

        def build(params=None):
            from ..integrations.torch import Optimizer

            return Optimizer(list(params.items()) if isinstance(params, dict) else params, rule)

        return Conversion("torch", False, reason, code, _builder=build)
    issues = [] if rule.ns_dtype == "bfloat16" else [
        TORCH_BFLOAT16.format("the parameters' dtype" if rule.ns_dtype is None else rule.ns_dtype)]
    common_issues(rule, issues, "torch")
    _muon_issues(rule, issues, "torch")
    lam = weight_decay(rule)
    wd = lr_scaled(rule, lam, "torch.optim.Muon", issues) if rule.decoupled else 0.0
    if lam and not rule.decoupled:
        issues.append("torch.optim.Muon's weight decay is decoupled only; the closest uses the same λ decoupled")
        wd = lam
    if rule.regularizer is not None or rule.mask is not None:
        issues.append("torch.optim.Muon takes no penalty or mask; the closest has none")
    adjust = {"original": None, "match_rms_adamw": "match_rms_adamw"}.get(rule.adjust_lr)
    call = _Call("torch.optim.Muon", _Name("params"), lr=base_value(_rule.hyper(rule, "lr")), weight_decay=wd,
                 momentum=_rule.hyper(rule, "momentum"), nesterov=rule.nesterov,
                 ns_coefficients=rule.ns_coefficients, eps=rule.eps, ns_steps=rule.ns_steps, adjust_lr_fn=adjust)
    return Conversion("torch", not issues, _reason(issues), call.source(),
                      note="give the non-2-D parameters to rule.adamw_for_others() (torch.optim.AdamW)",
                      _builder=lambda params=None: call.build({"params": params}))


def _rule_source(rule) -> str:
    return f"decay.{rule!r}"


def _muon_issues(rule, issues, framework):
    """What the chosen framework's Muon computes otherwise than ``rule``."""
    torch = framework == "torch"
    form = "ema" if torch else "sum"
    if rule.momentum_form != form:
        issues.append(
            f"{'torch' if torch else 'Keras'}'s Muon keeps b ← μ·b + {'(1 − μ)·' if torch else ''}g, this rule's "
            f"momentum_form is {rule.momentum_form!r}"
        )
    if rule.eps_clamps != torch or (not torch and rule.eps != 1e-7):
        issues.append(
            "torch divides by max(‖X‖, ε), Keras by ‖X‖ + 1e-7 (fixed): this rule's "
            f"eps={rule.eps!r}, eps_clamps={rule.eps_clamps!r} differs"
        )
    allowed = ("original", "match_rms_adamw") if torch else ("match_rms_adamw", "none")
    if rule.adjust_lr not in allowed or (rule.adjust_lr == "match_rms_adamw" and torch and rule.rms_rate != 0.2):
        issues.append(f"adjust_lr={rule.adjust_lr!r} (rms_rate {rule.rms_rate!r}) has no {framework} Muon option")
    if not torch and rule.ns_dtype is not None:
        issues.append(f"Keras's Muon orthogonalizes in the weights' dtype, this rule in ns_dtype={rule.ns_dtype!r}")


# -- to Keras ------------------------------------------------------------------------------
def rule_to_keras(rule) -> Conversion:
    from . import keras as k

    issues, notes = [], [_keras_note(rule)]
    common_issues(rule, issues, "keras")
    lam = weight_decay(rule)
    learning_rate = k._keras_schedule(_rule.hyper(rule, "lr"), issues)
    if not isinstance(learning_rate, _Call):
        learning_rate = float(learning_rate)
    keras_wd, penalty = k._keras_decay(rule, lam, issues)
    if isinstance(rule, Lion):
        beta_1, beta_2 = _rule.hyper(rule, "betas")
        path, options = "keras.optimizers.Lion", dict(beta_1=beta_1, beta_2=beta_2)
    elif isinstance(rule, Lamb):
        beta_1, beta_2 = _rule.hyper(rule, "betas")
        path, options = "keras.optimizers.Lamb", dict(beta_1=beta_1, beta_2=beta_2, epsilon=_rule.hyper(rule, "eps"))
        if rule.decay_in_trust_ratio and rule.decoupled and lam:
            issues.append(
                "Keras's Lamb shrinks θ by lr·λ before the step and takes the trust ratio of Adam's "
                "step alone; this rule puts λθ inside the ratio (the paper's, optax's): measured 8.9e-2 "
                "relative after 100 steps on the parity problem. For an exact conversion build it "
                "with convention='keras'"
            )
    else:
        _muon_issues(rule, issues, "keras")
        path = "keras.optimizers.Muon"
        a, b, c = rule.ns_coefficients
        options = dict(momentum=_rule.hyper(rule, "momentum"), nesterov=rule.nesterov, ns_steps=rule.ns_steps,
                       muon_a=a, muon_b=b, muon_c=c, rms_rate=rule.rms_rate if rule.adjust_lr != "none" else None)
        notes.append("Keras's Muon gives the non-2-D variables (and embeddings) to its own Adam "
                     "(decay: rule.adamw_for_others())")
    optimizer = _Call(path, learning_rate=learning_rate, weight_decay=keras_wd, **options)
    code, mask_call = optimizer.source(), None
    if rule.mask is not None and keras_wd:
        code, mask_call = k._keras_mask(rule, code, notes)
    return Conversion("keras", not issues, _reason(issues), code, k._keras_extra(rule, penalty),
                      " ".join(notes), penalty, k._keras_builder(optimizer, mask_call))


def _keras_note(rule) -> str:
    names = ("learning_rate, weight_decay and momentum" if isinstance(rule, Muon)
             else "learning_rate, weight_decay, beta_1 and beta_2")
    return (
        f"Keras casts {names} to float32 before using them: the weights equal decay's to "
        "float64 round-off when those values are exact in float32 (e.g. 0.875, 2^-7; "
        "tests/integrations/test_parity_modern.py), otherwise to float32 rounding."
    )


# -- from native ----------------------------------------------------------------------------
def from_keras(opt, name):
    """keras.optimizers.Lion / Lamb / Muon -> decay.lion / lamb / muon."""
    from . import keras as k

    k._check_options(opt, name)
    lr = k._keras_lr(opt, name)
    wd = 0.0 if opt.weight_decay is None else to_float(opt.weight_decay)
    mask = k._keras_exclusions(opt, name)
    if name == "Lion":
        return lion(lr, (to_float(opt.beta_1), to_float(opt.beta_2)), wd, mask=mask)
    if name == "Lamb":
        return lamb(lr, (to_float(opt.beta_1), to_float(opt.beta_2)), to_float(opt.epsilon), wd, mask=mask,
                    convention="keras")
    if to_float(opt.adam_lr_ratio) != 1.0 or opt.exclude_layers:
        raise DecayError(
            "keras.optimizers.Muon with adam_lr_ratio != 1 or exclude_layers: decay's Muon takes the "
            "2-D weights and rule.adamw_for_others(lr=...) the rest; build the two by hand."
        )
    return muon(lr, to_float(opt.momentum), wd, bool(opt.nesterov), (opt.muon_a, opt.muon_b, opt.muon_c),
                int(opt.ns_steps), convention="keras", mask=mask,
                adjust_lr="none" if opt.rms_rate is None else "match_rms_adamw",
                rms_rate=0.2 if opt.rms_rate is None else to_float(opt.rms_rate))


def from_torch_muon(opt, scheduler):
    """torch.optim.Muon -> decay.muon(convention="torch", ns_dtype="bfloat16"): its numbers."""
    from . import torch as t

    base = t._torch_hyper(opt.param_groups[0])
    if len(opt.param_groups) > 1 and t._group_differences(opt.param_groups, base):
        raise DecayError("torch.optim.Muon has param groups with different hyperparameters; build decay's by hand.")
    lr = t._torch_lr(opt, "Muon", base, scheduler)
    return muon(lr, to_float(base["momentum"]), to_float(base["weight_decay"]), bool(base["nesterov"]),
                tuple(base["ns_coefficients"]), int(base["ns_steps"]), to_float(base["eps"]), convention="torch",
                adjust_lr=base["adjust_lr_fn"] or "original", ns_dtype="bfloat16")


NATIVE = {("keras", "Lion"), ("keras", "Lamb"), ("keras", "Muon"), ("torch", "Muon")}
__all__ = ["is_modern", "rule_to_torch", "rule_to_keras", "from_keras", "from_torch_muon", "NS_COEFFICIENTS"]
