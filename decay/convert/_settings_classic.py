"""The classic optimizers' settings as written in a framework (``decay convert``):
RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam. PyTorch's conventions are the
factories' defaults (coupled weight decay); Keras's are spelled out here."""

from __future__ import annotations

from ..errors import DecayError
from ..rules import adadelta, adagrad, adamax, nadam, radam, rmsprop

CLASSIC = ("rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam")

_FACTORIES = dict(rmsprop=rmsprop, adagrad=adagrad, adadelta=adadelta, adamax=adamax, nadam=nadam, radam=radam)
# Keras 3's defaults and conventions (its weight_decay is decoupled for every optimizer).
_KERAS = {
    "rmsprop": dict(alpha=0.9, eps=1e-7, eps_inside_sqrt=True),
    "adagrad": dict(initial_accumulator_value=0.1, eps=1e-7, eps_inside_sqrt=True),
    "adadelta": dict(rho=0.95, eps=1e-7),
    "adamax": dict(eps=1e-7, eps_inside_max=False),
    "nadam": dict(eps=1e-7, momentum_schedule="keras"),
}


def rule(framework, optimizer, *, lr, momentum, dampening, nesterov, weight_decay, betas, eps, amsgrad):
    """The decay rule for these settings; see :func:`decay.convert.rule_from_settings`."""
    unused = {k: v for k, v in dict(dampening=dampening, nesterov=nesterov, amsgrad=amsgrad).items() if v}
    if momentum and optimizer != "rmsprop":
        unused["momentum"] = momentum
    if betas and optimizer in ("rmsprop", "adagrad", "adadelta"):
        unused["betas"] = betas
    if unused:
        raise DecayError(f"{optimizer} has no setting {sorted(unused)}. Received: {unused!r}.")
    kwargs = {}
    if framework == "keras":
        if optimizer not in _KERAS:
            raise DecayError(f"Keras 3 has no {optimizer}; convert it --from torch or --from decay.")
        kwargs.update(_KERAS[optimizer], decoupled=True)
    if momentum:
        kwargs["momentum"] = momentum
    if betas:
        kwargs["betas"] = tuple(betas)
    if eps is not None:
        kwargs["eps"] = eps
    return _FACTORIES[optimizer](lr, weight_decay=weight_decay or 0.0, **kwargs)
