"""decay: weight decay defined once, run natively on NumPy, PyTorch, TensorFlow and JAX.

``import decay`` loads NumPy only; a framework is imported when its backend is first
used (by name, or because its tensors are passed in).
"""

from . import checkpoint, distributed, masks, schedules
from .backends import available_backends, get_backend, known_backends
from .convert import from_native, to_native
from .errors import DecayError
from .penalties import L1, L2, ElasticNet, Penalty, regularized_loss
from .rules import Rule, RuleState, adam, adamw, normalized_weight_decay, sgd, weight_decay_for_timescale
from .rules import adadelta, adagrad, adamax, nadam, radam, rmsprop
from .rules import adafactor, lamb, lion, muon

__version__ = "0.1.0"

# Loaded when first touched: the integrations import a framework (decay.torch,
# decay.keras, decay.optax), and decay.models belongs to the command-line program (decay.app), which
# the library itself never needs.
_LAZY = {
    "torch": "decay.integrations.torch",
    "keras": "decay.integrations.keras",
    "optax": "decay.optax",
    "models": "decay.app.models",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'decay' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "DecayError",
    "available_backends",
    "known_backends",
    "get_backend",
    "Penalty",
    "L1",
    "L2",
    "ElasticNet",
    "regularized_loss",
    "Rule",
    "RuleState",
    "sgd",
    "adam",
    "adamw",
    "lion",
    "lamb",
    "adafactor",
    "muon",
    "rmsprop",
    "adagrad",
    "adadelta",
    "adamax",
    "nadam",
    "radam",
    "normalized_weight_decay",
    "weight_decay_for_timescale",
    "from_native",
    "to_native",
    "schedules",
    "masks",
    "models",
    "checkpoint",
    "distributed",
]
