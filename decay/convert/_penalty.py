"""Penalties in each framework: a torch loss term (PyTorch has no regularizer object)
or a Keras regularizer."""

from __future__ import annotations

from ..errors import DecayError
from ..penalties import L1, L2, ElasticNet, Penalty
from ._codegen import Conversion, _Call


class _TorchPenalty:
    """``params -> tensor``: the penalty term to add to a PyTorch loss, written with the
    same torch operations as the generated code."""

    def __init__(self, penalty: Penalty):
        self.penalty = penalty

    def __call__(self, params):
        ps = list(params.values()) if isinstance(params, dict) else list(params)
        p = self.penalty
        if isinstance(p, L2):
            return p.lam * sum(x.pow(2).sum() for x in ps)
        if isinstance(p, L1):
            return p.lam * sum(x.abs().sum() for x in ps)
        return p.l1 * sum(x.abs().sum() for x in ps) + p.l2 * sum(x.pow(2).sum() for x in ps)

    def __repr__(self):
        return torch_penalty_source(self.penalty)


def torch_penalty_source(p: Penalty, params="params") -> str:
    squares = f"sum(p.pow(2).sum() for p in {params})"
    absolute = f"sum(p.abs().sum() for p in {params})"
    if isinstance(p, L2):
        return f"{p.lam!r} * {squares}"
    if isinstance(p, L1):
        return f"{p.lam!r} * {absolute}"
    return f"{p.l1!r} * {absolute} + {p.l2!r} * {squares}"


def keras_penalty_call(p: Penalty) -> _Call:
    if isinstance(p, L2):
        return _Call("keras.regularizers.L2", p.lam)
    if isinstance(p, L1):
        return _Call("keras.regularizers.L1", p.lam)
    return _Call("keras.regularizers.L1L2", l1=p.l1, l2=p.l2)


def check_convertible(p: Penalty):
    """Only these three are written natively; another penalty's parts cannot be read."""
    if not isinstance(p, (L1, L2, ElasticNet)):
        raise DecayError(f"No conversion for penalty {p!r}; decay.L1, L2 and ElasticNet convert.")
    if getattr(p, "center", None) is not None:
        raise DecayError(
            f"No conversion for {p!r}: an L2 toward a center (L2-SP) exists in neither PyTorch nor "
            "Keras. Add decay's own penalty to the loss (decay.regularized_loss(loss, params, penalty), "
            "or decay.keras.Regularizer(penalty) on a layer)."
        )


def penalty_conversion(p: Penalty, framework: str) -> Conversion:
    check_convertible(p)
    return _penalty_to_torch(p) if framework == "torch" else _penalty_to_keras(p)


def _penalty_to_torch(p: Penalty) -> Conversion:
    return Conversion(
        "torch", True, None,
        code=f"loss = loss + {torch_penalty_source(p)}",
        note="PyTorch has no regularizer object: add the term to the loss before "
             "backward(); `params` are the decayed parameters.",
        _builder=lambda params=None: _TorchPenalty(p),
    )


def _penalty_to_keras(p: Penalty) -> Conversion:
    call = keras_penalty_call(p)
    return Conversion(
        "keras", True, None,
        code=call.source(),
        extra=f"pass it as kernel_regularizer= to every decayed layer (or add "
              f"{call.source()}(w) to the loss for every decayed weight w)",
        note="Keras divides an activity regularizer by the batch size, not a kernel regularizer.",
        _builder=lambda params=None: call.build({}),
    )
