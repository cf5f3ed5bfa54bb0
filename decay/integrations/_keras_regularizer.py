"""``decay.keras.Regularizer``: a decay penalty as a Keras regularizer (imported by
:mod:`decay.integrations.keras`, which holds the Keras checks it shares)."""

from __future__ import annotations

import keras

from ..errors import DecayError
from ..penalties import Penalty, penalty_from_config
from .keras import _describe, _native


@keras.saving.register_keras_serializable(package="decay")
class Regularizer(keras.regularizers.Regularizer):
    """A decay penalty as a Keras regularizer: ``regularizer(x) = penalty.penalty(x)``.

    As ``kernel_regularizer`` it adds the penalty of the weights to the loss (weight
    decay in the loss): ``Regularizer(decay.L2(lam))`` equals ``keras.regularizers.L2(lam)``.
    As ``activity_regularizer`` it penalizes the layer's outputs; Keras itself divides
    an activity regularizer's value by the batch size (``Layer.__call__`` in Keras 3),
    for this class as for its own — decay divides nothing.

    In float64 the coefficient stays float64; Keras's own ``L1``/``L2`` round it to
    float32 first (``ops.cast(self.l2, x.dtype)``), so the two differ by that rounding
    unless float32 holds it exactly (measured 3.3e-10 in the weights for l2 = 0.01).
    """

    def __init__(self, penalty):
        if not isinstance(penalty, Penalty):
            raise DecayError(
                "`penalty` must be a decay penalty such as decay.L2(lam), decay.L1(lam) or "
                f"decay.ElasticNet(l1, l2). Received {_describe(penalty)}."
            )
        self.penalty = penalty

    def __call__(self, x):
        return self.penalty.penalty(_native(x))

    def get_config(self):
        return {"penalty": self.penalty.get_config()}

    @classmethod
    def from_config(cls, config):
        return cls(penalty_from_config(config["penalty"]))

    def __repr__(self):
        return f"decay.keras.Regularizer({self.penalty!r})"
