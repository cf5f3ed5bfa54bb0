"""Penalties added to the loss: L2, L1 and elastic net.

A penalty regularizes whatever tensors it is given. Applied to a model's weights it is
weight decay in the loss (Keras ``kernel_regularizer``); applied to a layer's outputs it
is *activity* regularization (Keras ``activity_regularizer``) — which is what the
TensorFlow snippet of the article this project started from actually did when it
penalized ``y_pred``. Keras divides an activity penalty by the batch size; decay does
not divide anything: pass ``lam / batch_size`` for that.
"""

from __future__ import annotations

from .backends import backend_of_tensors
from .errors import DecayError
from .tree import _index_names, flatten, unflatten
from .validation import check_number


class Penalty:
    """Base class. Subclasses give the per-tensor value and gradient, and may give the
    value over all tensors at once (:meth:`total_value`)."""

    def leaf_value(self, backend, x):
        raise NotImplementedError

    def total_value(self, backend, leaves):
        """The penalty summed over ``leaves``. Subclasses override it with the backend's
        all-tensor reductions: one call instead of one (autodiff-recorded) op per leaf."""
        total = None
        for leaf in leaves:
            value = self.leaf_value(backend, leaf)
            total = value if total is None else total + value
        return total

    def leaf_grad(self, backend, x):
        raise NotImplementedError

    def penalty(self, params):
        """The penalty as a native 0-d scalar of the params' backend and dtype.

        Differentiable by the framework's own autodiff (torch autograd,
        ``tf.GradientTape``): the parameters are used as given, not detached."""
        if type(params) in (list, tuple) and params:
            # A list, the common case, needs no names and no flatten (its per-leaf
            # structure check costs 10% of the value for 1,000 small tensors):
            # backend_of_tensors refuses any leaf that is not a tensor, and flatten then
            # gives its clearer error for nested structures.
            try:
                backend = backend_of_tensors(zip(_index_names(len(params)), params))
            except DecayError:
                flatten(params)
                raise
            return self.total_value(backend, params)
        flat = flatten(params)
        backend = backend_of_tensors(zip(flat.names, flat.leaves))
        return self.total_value(backend, flat.leaves)

    def grad(self, params):
        """The penalty's gradient, with the same structure as ``params``."""
        flat = flatten(params)
        backend = backend_of_tensors(zip(flat.names, flat.leaves))
        with backend.no_grad():
            grads = [self.leaf_grad(backend, backend.read(leaf)) for leaf in flat.leaves]
        return unflatten(flat, grads, params)

    __call__ = penalty

    def get_config(self) -> dict:
        raise NotImplementedError

    # -- the algebra every other module asks for (rules, conversion, compare) --------------
    #: c in the penalty's ``c·Σθ²`` part (0 when it has none)
    l2 = 0.0

    def coupled_weight_decay(self) -> float:
        """The λ of a coupled weight decay (g ← g + λθ) that equals this penalty's
        L2 part: its gradient is 2·c·θ, so λ = 2·c."""
        return 2.0 * self.l2

    def without_l2(self) -> "Penalty | None":
        """What is left once the L2 part is taken out (its gradient is not linear in
        θ), or None when nothing is."""
        return None

    def plus_l2(self, lam: float) -> "Penalty":
        """This penalty plus ``lam·Σθ²``, as one penalty."""
        raise NotImplementedError


class L2(Penalty):
    """``lam · Σθ²`` — gradient ``2·lam·θ``.

    The article's formula and ``keras.regularizers.L2(l2=lam)`` (no ½). In the update
    rule it equals PyTorch's coupled ``weight_decay = 2·lam``.

    ``center=θ₀`` (tensors like the parameters: a dict name -> tensor, a list in their
    order, or one tensor; any backend's or NumPy) makes it L2-SP (Li, Grandvalet and
    Davoine, 2018): ``lam · Σ‖θ − θ₀‖²``, gradient ``2·lam·(θ − θ₀)``, pulling toward
    the pretrained weights instead of 0. No framework has it; in an update rule use
    ``decay_toward=θ₀`` with ``weight_decay=2·lam`` instead."""

    def __init__(self, lam: float = 0.01, center=None):
        self.lam = check_number("lam", lam)
        if center is not None:
            from .rules._reference import check_decay_toward

            if isinstance(center, str):
                raise DecayError(f"`center` must be tensors like the parameters. Received: center={center!r}.")
            check_decay_toward(center)
        self.center = center
        self._centers: dict = {}  # native copies of the center, per backend, device and dtype

    def leaf_value(self, backend, x):
        return backend.sum_squares(x) * self.lam

    def total_value(self, backend, leaves):
        return backend.sum_squares_all(leaves) * self.lam  # lam applied once, not per leaf

    def leaf_grad(self, backend, x):
        return x * (2.0 * self.lam)

    def _offsets(self, params):
        """(flat params, backend, θ − θ₀ per leaf): the center matched by name or position."""
        from .rules._reference import pick_reference, reference_slots

        flat = flatten(params)
        backend = backend_of_tensors(zip(flat.names, flat.leaves))
        out = []
        for i, (name, x) in enumerate(zip(flat.names, flat.leaves)):
            key = (backend.name, backend.device(x), backend.dtype_name(x), i, len(flat.leaves), name)
            c = self._centers.get(key)
            if c is None:
                one = pick_reference(self.center, flat.names, len(flat.leaves), i)
                c = self._centers[key] = reference_slots(one, backend, [name], [x], [x])[0]
            out.append(x - c)
        return flat, backend, out

    def penalty(self, params):
        if self.center is None:
            return super().penalty(params)
        _, backend, offsets = self._offsets(params)
        return backend.sum_squares_all(offsets) * self.lam

    def grad(self, params):
        if self.center is None:
            return super().grad(params)
        flat = flatten(params)
        backend = backend_of_tensors(zip(flat.names, flat.leaves))
        with backend.no_grad():
            grads = [d * (2.0 * self.lam) for d in self._offsets(params)[2]]
        return unflatten(flat, grads)

    __call__ = penalty

    def get_config(self):
        if self.center is None:
            return {"name": "L2", "lam": self.lam}
        from .rules._reference import to_config

        return {"name": "L2", "lam": self.lam, "center": to_config(self.center)}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_centers"}

    def __setstate__(self, state):
        self.__dict__.update(state, _centers={})

    @property
    def l2(self):
        return self.lam

    def plus_l2(self, lam):
        if self.center is not None:
            raise DecayError(f"{self!r} has a center; it cannot be merged with an L2 toward 0.")
        return L2(self.lam + lam)

    def __repr__(self):
        center = "" if self.center is None else ", center=<tensors>"
        return f"L2(lam={self.lam!r}{center})"


class L1(Penalty):
    """``lam · Σ|θ|`` — (sub)gradient ``lam · sign(θ)``, 0 at θ = 0.

    Equals ``keras.regularizers.L1(l1=lam)``."""

    def __init__(self, lam: float = 0.01):
        self.lam = check_number("lam", lam)

    def leaf_value(self, backend, x):
        return backend.sum_abs(x) * self.lam

    def total_value(self, backend, leaves):
        return backend.sum_abs_all(leaves) * self.lam

    def leaf_grad(self, backend, x):
        return backend.sign(x) * self.lam

    def get_config(self):
        return {"name": "L1", "lam": self.lam}

    def without_l2(self):
        return self

    def plus_l2(self, lam):
        return ElasticNet(self.lam, lam)

    def __repr__(self):
        return f"L1(lam={self.lam!r})"


class ElasticNet(Penalty):
    """``l1 · Σ|θ| + l2 · Σθ²`` — gradient ``l1 · sign(θ) + 2 · l2 · θ``.

    Equals ``keras.regularizers.L1L2(l1=l1, l2=l2)``."""

    def __init__(self, l1: float = 0.01, l2: float = 0.01):
        self.l1 = check_number("l1", l1)
        self.l2 = check_number("l2", l2)

    def leaf_value(self, backend, x):
        return backend.sum_abs(x) * self.l1 + backend.sum_squares(x) * self.l2

    def total_value(self, backend, leaves):
        return backend.sum_abs_all(leaves) * self.l1 + backend.sum_squares_all(leaves) * self.l2

    def leaf_grad(self, backend, x):
        return backend.sign(x) * self.l1 + x * (2.0 * self.l2)

    def get_config(self):
        return {"name": "ElasticNet", "l1": self.l1, "l2": self.l2}

    def without_l2(self):
        return L1(self.l1) if self.l1 else None

    def plus_l2(self, lam):
        return ElasticNet(self.l1, self.l2 + lam)

    def __repr__(self):
        return f"ElasticNet(l1={self.l1!r}, l2={self.l2!r})"


def add_l2(penalty: "Penalty | None", lam: float) -> "Penalty | None":
    """``penalty + L2(lam)`` as one penalty (``penalty`` may be None)."""
    if lam == 0:
        return penalty
    return L2(lam) if penalty is None else penalty.plus_l2(lam)


def l2_for_coupled_weight_decay(lam: float) -> float:
    """c of the L2 penalty ``c·Σθ²`` equal to a coupled weight decay λ (the inverse of
    :meth:`Penalty.coupled_weight_decay`): c = λ/2."""
    return lam / 2.0


def split_l2(penalty: "Penalty | None") -> tuple:
    """(c of the L2 part ``c·Σθ²``, the rest of the penalty or None)."""
    if penalty is None:
        return 0.0, None
    return penalty.l2, penalty.without_l2()


def penalty_from_config(config: dict) -> Penalty:
    kinds = {"L2": L2, "L1": L1, "ElasticNet": ElasticNet}
    config = dict(config)
    if config.get("center") is not None:
        from .rules._reference import from_config

        config["center"] = from_config(config["center"])
    return kinds[config.pop("name")](**config)


def regularized_loss(loss, params, penalty: Penalty):
    """``loss + penalty(params)``: weight decay placed in the loss.

    Differentiate the result with the framework's autodiff (``.backward()``,
    ``tf.GradientTape``); the gradient then carries the penalty's gradient, e.g.
    ``2·lam·θ`` for ``L2(lam)``. Passing a layer's *outputs* as ``params`` makes it
    activity regularization instead of weight decay."""
    return loss + penalty.penalty(params)
