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

RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam (:mod:`decay.convert.torch_classic`,
:mod:`decay.convert.keras_classic`): exact where the rule has the framework's
convention (ε placement, accumulator start, NAdam's momentum schedule; decoupled decay
for torch's NAdam/RAdam only, coupled decay as an L2 term in Keras's loss), refused
otherwise with the reason. Keras has no RAdam.

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

The package: :mod:`decay.convert.torch` and :mod:`decay.convert.keras` convert to and
from each framework, one small function per optimizer and per schedule; ``_codegen``
holds the generated-code machinery and :class:`Conversion`, ``_penalty`` the penalties,
and ``_rule`` every read of a rule's internals.
"""

from __future__ import annotations

from .. import schedules
from ..errors import DecayError
from ..penalties import Penalty
from ..rules.base import Rule
from . import keras as _keras
from . import modern as _modern
from . import optax as _optax
from . import torch as _torch
from ._codegen import Conversion
from ._common import type_id, unsupported
from ._penalty import _TorchPenalty, check_convertible, penalty_conversion

# Public names of decay.convert, defined where they are used.
from ._common import SUPPORTED_NATIVE  # noqa: F401  (error messages point users here)
from ._settings import rule_from_settings
from .keras import KERAS_ADAM_NOTE, KERAS_SGD_NOTE  # noqa: F401

__all__ = ["Conversion", "FRAMEWORKS", "from_native", "rule_from_settings", "to_native"]

FRAMEWORKS = ("torch", "keras", "optax")


def to_native(obj, framework: str, *, strict: bool = True) -> Conversion:
    """The PyTorch, Keras or optax equivalent of a decay rule, penalty or lr schedule.

    ``framework`` is "torch", "keras" or "optax" (rules and schedules; see
    :mod:`decay.convert.optax`). With ``strict=True`` (the default) a conversion
    that is not exact raises :class:`~decay.DecayError` saying why and what the closest
    one is; ``strict=False`` returns that closest one with ``exact=False`` and
    ``reason``. See the module docstring for which conversions are exact.
    """
    if framework not in FRAMEWORKS:
        raise DecayError(f"`framework` must be one of {list(FRAMEWORKS)}. Received: framework={framework!r}.")
    torch = framework == "torch"
    if framework == "optax" and isinstance(obj, Rule):
        conversion = _optax.rule_to_optax(obj)
    elif framework == "optax" and isinstance(obj, schedules.Schedule):
        conversion = _optax.schedule_to_optax(obj)
    elif framework == "optax" and isinstance(obj, Penalty):
        raise DecayError(
            f"optax has no penalty objects: add {obj!r} to the loss (decay.regularized_loss works "
            "on JAX arrays), or, for an L2, optax.add_decayed_weights(2·lam) before the optimizer."
        )
    elif isinstance(obj, Rule):
        if obj.regularizer is not None:
            check_convertible(obj.regularizer)  # else torch would drop what it cannot fold in
        conversion = _torch.rule_to_torch(obj) if torch else _keras.rule_to_keras(obj)
    elif isinstance(obj, Penalty):
        conversion = penalty_conversion(obj, framework)
    elif isinstance(obj, schedules.Schedule):
        conversion = _torch.schedule_to_torch(obj) if torch else _keras.schedule_to_keras(obj)
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
    - ``optax.inject_hyperparams(optax.sgd | adam | adamw | adafactor)(...)`` with numbers
      → the decay rule (any other optax transformation is opaque: an error says why).
    - ``torch.optim.Adafactor``, ``keras.optimizers.Adafactor`` → ``decay.adafactor`` in
      that framework's convention (``decay/convert/adafactor.py``).

    Anything else, and settings decay cannot express exactly (``maximize``, gradient
    clipping, EMA, ``CosineAnnealingLR`` past T_max, ...), raise :class:`~decay.DecayError`.
    The rule starts at step 0 whatever the optimizer's own step count.
    """
    module, name = type_id(obj)
    if module.startswith("optax.") and name.startswith("GradientTransformation"):
        return _optax.from_optax(obj)  # a NamedTuple (init, update): before the pair below
    if isinstance(obj, tuple) and len(obj) == 2 and scheduler is None:
        obj, scheduler = obj
    module, name = type_id(obj)
    if isinstance(obj, (Rule, Penalty, schedules.Schedule)):
        raise DecayError(f"from_native() takes a PyTorch or Keras object; {obj!r} is already a decay object.")
    if isinstance(obj, _TorchPenalty):
        return obj.penalty
    if ((module.startswith("torch.optim.") and module != "torch.optim.lr_scheduler" or module == "torch.optim")
            and name in _torch._FROM_OPTIMIZERS):  # torch.optim.Adafactor's module is torch.optim
        return _torch.from_torch_optimizer(obj, name, scheduler)
    if module in ("torch.optim", "torch.optim._muon") and name == "Muon":  # the modern rules: decay/convert/modern.py
        return _modern.from_torch_muon(obj, scheduler)
    if scheduler is not None:
        raise DecayError("`scheduler` goes with a torch optimizer only.")
    if module == "torch.optim.lr_scheduler":
        return _torch.from_torch_scheduler(obj, name)
    if module.startswith("keras.src.optimizers.schedules"):
        return _keras.from_keras_schedule(obj, name)
    if module.startswith("keras.src.optimizers.") and name in _keras._FROM_OPTIMIZERS:
        return _keras.from_keras_optimizer(obj, name)
    if module.startswith("keras.src.optimizers.") and name in ("Lion", "Lamb", "Muon"):
        return _modern.from_keras(obj, name)
    if module.startswith("keras.src.regularizers") and name in ("L1", "L2", "L1L2"):
        return _keras.from_keras_regularizer(obj, name)
    raise unsupported(obj)

