"""What the PyTorch and Keras halves share: the caveats every rule conversion has, the
lr scaling of a decoupled decay, masks, and reading native numbers and types."""

from __future__ import annotations

from ..errors import DecayError
from ..masks import timm_default
from ..tree import flatten
from . import _rule
from ._schedules import base_value, is_constant

SUPPORTED_NATIVE = (
    "torch.optim.SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam, Adafactor (optionally with one of "
    "torch.optim.lr_scheduler.StepLR, MultiStepLR, ExponentialLR, PolynomialLR, "
    "CosineAnnealingWarmRestarts, or a LambdaLR built by decay.convert), "
    "keras.optimizers.SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, Nadam, Adafactor (learning_rate a float or one of "
    "keras.optimizers.schedules.ExponentialDecay, PiecewiseConstantDecay, CosineDecay, "
    "CosineDecayRestarts, InverseTimeDecay, PolynomialDecay), "
    "keras.regularizers.L1, L2, L1L2, the loss penalties built by decay.convert, and "
    "optax.inject_hyperparams(optax.sgd | optax.adam | optax.adamw | optax.adafactor)(...) with numbers"
)


# -- to native -----------------------------------------------------------------------


def common_issues(rule, issues, framework):
    """What neither framework's optimizer has: groups, a non-finite policy, a decay schedule."""
    fw = {"torch": "PyTorch", "keras": "Keras", "optax": "optax"}[framework]
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
    variant_issues(rule, issues, fw)
    wd = _rule.hyper(rule, "weight_decay")
    if callable(wd):
        issues.append(
            f"the weight decay is a schedule ({wd!r}); {fw} optimizers "
            "take a constant; the closest uses its value at step 0"
        )


def variant_issues(rule, issues, fw):
    """The decay variants no framework ships (decay/rules/_decay.py): each one an issue,
    so that to_native refuses them, or gives the closest with exact=False and why."""
    if not _rule.decays(rule):
        return
    if rule.decoupled and rule.cautious_decay:
        issues.append(
            f"cautious_decay=True decays only where the update u and θ agree in sign "
            f"(θ ← θ − η_t·(u + λ·1[u⊙θ ≥ 0]⊙θ)); {fw} has no such option: the closest decays "
            "every coordinate"
        )
    if rule.decoupled and rule.decay_scaled_by == "corrected":
        issues.append(
            f"decay_scaled_by='corrected' scales the decay by lr_t²/lr_max (AdamC); {fw} scales it "
            "by lr_t: the closest is equal only while lr_t = lr_max"
        )
    if rule.decay_toward is not None:
        issues.append(
            f"decay_toward pulls θ toward a reference θ₀ (L2-SP); {fw}'s weight decay pulls toward 0: "
            "the closest decays toward 0"
        )


def weight_decay(rule) -> float:
    """λ, the rule's weight decay at step 0 (a schedule's first value; see common_issues),
    or 0.0 when the rule does not decay."""
    if not _rule.decays(rule):
        return 0.0
    wd = _rule.hyper(rule, "weight_decay")
    return float(wd(0)) if callable(wd) else float(wd)


def lr_scaled(rule, lam: float, what: str, issues) -> float:
    """λ' such that decay's decoupled s_t·λ equals the framework's lr_t·λ'."""
    if lam == 0 or rule.decay_scaled_by == "lr":
        return lam
    lr = _rule.hyper(rule, "lr")
    if rule.decay_scaled_by == "schedule_multiplier":
        return lam / _rule.base_lr(rule)
    if rule.decay_scaled_by == "corrected":
        return lam  # lr_t²/lr_max·λ = lr_t·λ while lr_t = lr_max (variant_issues says so)
    alpha = base_value(lr)
    if not is_constant(lr):
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


def mask_source(mask) -> str:
    if mask is timm_default:
        return "decay.masks.timm_default"
    if hasattr(mask, "substrings"):
        return f"decay.masks.exclude_names({', '.join(map(repr, mask.substrings))})"
    if isinstance(mask, dict):
        return repr({str(k): bool(v) for k, v in mask.items()})
    return "mask  # your mask function (name, tensor) -> bool"


def named(params, what):
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


# -- from native ---------------------------------------------------------------------


def to_float(x) -> float:
    """A native number (tensor, variable, numpy or python scalar) as a python float."""
    return float(x.item() if hasattr(x, "item") else x)


def type_id(obj) -> tuple[str, str]:
    cls = type(obj)
    return cls.__module__, cls.__qualname__


def unsupported(obj, what="") -> DecayError:
    module, name = type_id(obj)
    return DecayError(
        f"from_native() cannot convert an object of type {module}.{name}{what}. "
        f"Supported: {SUPPORTED_NATIVE}."
    )
