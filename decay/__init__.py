"""decay: weight decay defined once, run natively on NumPy, PyTorch and TensorFlow.

``import decay`` loads NumPy only; a framework is imported when its backend is first
used (by name, or because its tensors are passed in).
"""

from . import masks, schedules
from .backends import available_backends, get_backend, known_backends
from .errors import DecayError
from .penalties import L1, L2, ElasticNet, Penalty, regularized_loss
from .rules import Rule, RuleState, adam, adamw, normalized_weight_decay, sgd

__version__ = "0.1.0"

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
    "normalized_weight_decay",
    "schedules",
    "masks",
]
