"""Optimizer settings as written in a framework, read without that framework installed."""

from __future__ import annotations

from ..errors import DecayError
from ..rules.adam import adam, adamw
from ..rules.base import Rule
from ..rules.sgd import sgd
from . import _settings_classic

#: Each framework's defaults where they differ (PyTorch: Adam eps 1e-8, AdamW weight
#: decay 1e-2; Keras: eps 1e-7, AdamW weight decay 0.004, decay always decoupled).
_SETTING_DEFAULTS = {
    ("torch", "adamw"): {"weight_decay": 1e-2},
    ("keras", "adamw"): {"weight_decay": 0.004},
    ("optax", "adamw"): {"weight_decay": 1e-4},
}


def rule_from_settings(framework, optimizer, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                       weight_decay=None, betas=None, eps=None, amsgrad=False) -> Rule:
    """The decay rule for optimizer settings written in ``framework``'s convention
    ("torch", "keras" or "decay"), e.g. ``("torch", "sgd", lr=0.1, momentum=0.9,
    weight_decay=5e-4)`` — built from the conventions, so neither framework is needed.

    PyTorch's ``weight_decay`` is coupled (AdamW's decoupled); every Keras optimizer's is
    decoupled and scaled by lr, and Keras's Adam puts ε outside the bias correction.
    optax's are PyTorch's: ``add_decayed_weights`` before ``sgd``/``adam`` (coupled),
    ``adamw``'s decoupled and lr-scaled (its default 1e-4)."""
    if framework not in ("torch", "keras", "optax", "decay"):
        raise DecayError(f"`framework` must be 'torch', 'keras', 'optax' or 'decay'. Received: {framework!r}.")
    if optimizer == "adafactor":  # every framework has one: its own convention (decay: torch's)
        from ..rules.adafactor import adafactor

        if momentum or nesterov or betas:
            raise DecayError("Adafactor has no momentum or betas settings here (optax's momentum: build "
                             "decay.adafactor(..., momentum=) directly).")
        return adafactor(lr, eps=False if eps is None else eps, weight_decay=weight_decay or 0.0,
                         convention="torch" if framework == "decay" else framework)
    if optimizer in ("lion", "lamb", "muon"):  # the modern rules
        return _modern_from_settings(framework, optimizer, lr, momentum, nesterov, weight_decay, betas, eps)
    if optimizer in _settings_classic.CLASSIC:
        return _settings_classic.rule(framework, optimizer, lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay, betas=betas, eps=eps,
                                      amsgrad=amsgrad)
    if optimizer not in ("sgd", "adam", "adamw"):
        raise DecayError(
            f"`optimizer` must be one of {['sgd', 'adam', 'adamw', *_settings_classic.CLASSIC]}. "
            f"Received: {optimizer!r}."
        )
    if weight_decay is None:
        weight_decay = _SETTING_DEFAULTS.get((framework, optimizer), {}).get(
            "weight_decay", 1e-2 if optimizer == "adamw" else 0.0
        )
    if optimizer == "sgd":
        if framework in ("keras", "optax") and dampening:
            name = "Keras's SGD" if framework == "keras" else "optax's sgd (trace)"
            raise DecayError(f"{name} has no dampening. Received: dampening={dampening!r}.")
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


def _modern_from_settings(framework, optimizer, lr, momentum, nesterov, weight_decay, betas, eps) -> Rule:
    """Lion, LAMB, Muon as ``framework`` writes them (decay: optax's LAMB, torch's Muon).
    Muon's momentum 0 (the command line's default) means its default, 0.95; Muon is
    Nesterov in every framework unless told otherwise, so ``nesterov`` is not read."""
    from ..rules.lamb import lamb
    from ..rules.lion import lion
    from ..rules.muon import muon

    if framework == "torch" and optimizer != "muon":
        raise DecayError(f"torch.optim (2.13) has no {optimizer}: use --from keras or --from decay.")
    if optimizer == "lion":
        return lion(lr, tuple(betas) if betas else (0.9, 0.99), weight_decay or 0.0)
    if optimizer == "lamb":
        convention = "keras" if framework == "keras" else "optax"
        return lamb(lr, tuple(betas) if betas else (0.9, 0.999), eps, weight_decay or 0.0, convention=convention)
    convention = framework if framework in ("keras", "optax") else "torch"
    return muon(lr, momentum or 0.95, weight_decay, eps=eps, convention=convention)
