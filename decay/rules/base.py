"""What every update rule shares: parameter structures, hyperparameters that may be
schedules, masks and groups, the state, and the public pair ``init`` / ``step``.

A rule is a pair of functions in the optax style, ``init(params) -> state`` and
``step(params, grads, state) -> (params, state)``. A rule's own file gives only its
hyperparameters (:meth:`Rule.check_group`, :meth:`Rule.coefficients`), its slots and
its math (:meth:`Rule.direction`, written in the vocabulary of :mod:`decay.ops`), and
may declare a framework kernel that computes the same step (:meth:`Rule.fused`).
Weight decay is placed by :mod:`decay.rules._decay` for every rule alike, and the step
is run by :mod:`decay.engine`, the same for every backend and integration.
"""

from __future__ import annotations

import operator

from .. import engine
from ..backends import backend_of_tensors
from ..engine import LOW_PRECISION, Hyper
from ..errors import DecayError
from ..masks import resolve_groups, resolve_mask
from ..penalties import Penalty
from ..tree import flatten, flatten_like, same_pytree, state_by_name, unflatten
from ..validation import (check_choice, check_flag, check_number_or_schedule, check_updatable,
                          dense_grads)
from . import _checks, _decay, _state
from ._config import rule_to_config
from ._reference import check_decay_toward, reference_slots
from ._state import RuleState, _check_count, _names_of

NONFINITE_POLICIES = ("apply", "skip", "raise")


def _same_leaves(params, flat, leaves) -> bool:
    """Whether ``params`` is the structure ``flat`` was made from, holding the very same
    tensor objects (identity, one C-level pass)."""
    kind = flat.kind
    if kind == "pytree":
        return same_pytree(params, flat, leaves)
    if kind == "single":
        return params is leaves[0]
    if kind == "dict":  # the same names and tensors, possibly listed in another order
        return (
            type(params) is dict and len(params) == len(leaves)
            and all(map(operator.is_, map(params.get, flat.keys), leaves))
        )
    return (
        type(params) is (list if kind == "list" else tuple) and len(params) == len(leaves)
        and all(map(operator.is_, params, leaves))
    )


# Attributes that are caches, dropped when a rule is pickled or copied.
_CACHES = ("_step_cache", "_trusted_slots", "_xla_steps", "_signature", "_version", "_memory_cache")


class Rule:
    """Base class of the update rules. Use :func:`decay.sgd`, :func:`decay.adam`,
    :func:`decay.adamw` (...) to build one; see the README's "Adding an update rule"."""

    name = "rule"
    #: hyperparameters a group may override
    hyper_names: tuple = ("lr", "weight_decay")
    #: the record :meth:`coefficients` returns
    Hyper = Hyper
    #: True when the math treats every element on its own (no norms, no matrix
    #: products): the NumPy backend may then run it over cache-sized blocks
    elementwise = True
    #: True when sparse gradients are taken (made dense), as torch.optim's rule does
    sparse_gradients = False
    #: set per class from whether it overrides :meth:`slot_shapes`
    slots_follow_shape = False

    def __init__(
        self,
        *,
        lr,
        weight_decay=0.0,
        decoupled: bool = False,
        regularizer: Penalty | None = None,
        decay_scaled_by: str = "lr",
        mask=None,
        groups=None,
        on_nonfinite: str = "apply",
        cautious_decay: bool = False,
        lr_max=None,
        decay_toward=None,
        **hyper,
    ):
        self._kwargs = dict(
            lr=lr, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
            decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite, **hyper,
        )
        # The variants no framework ships (decay/rules/_decay.py); saved only when used.
        variants = dict(cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward)
        self._kwargs.update({k: v for k, v in variants.items() if v is not None and v is not False})
        self.decoupled = check_flag("decoupled", decoupled)
        if regularizer is not None and not isinstance(regularizer, Penalty):
            raise DecayError(
                f"`regularizer` must be a decay penalty (decay.L2, decay.L1, decay.ElasticNet). "
                f"Received: regularizer={regularizer!r}."
            )
        self.regularizer = regularizer
        self.decay_scaled_by = check_choice("decay_scaled_by", decay_scaled_by, _decay.DECAY_SCALINGS)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        _decay.check_variants(self, cautious_decay, lr_max, decay_toward)
        self.decay_toward = check_decay_toward(decay_toward)
        self.mask = mask
        self.defaults = self.check_group(dict(lr=lr, weight_decay=weight_decay, **hyper))
        self.groups = []
        for index, group in enumerate(groups or ()):
            if not isinstance(group, dict) or "params" not in group:
                raise DecayError(
                    f"`groups[{index}]` must be a dict with a 'params' entry (a list of names or "
                    f"a callable (name, tensor) -> bool) and hyperparameter overrides. "
                    f"Received: {group!r}."
                )
            overrides = {k: v for k, v in group.items() if k != "params"}
            unknown = sorted(set(overrides) - set(self.hyper_names))
            if unknown:
                raise DecayError(
                    f"`groups[{index}]` sets {unknown}, which {self.name} has no hyperparameter for. "
                    f"A group may set: {list(self.hyper_names)}."
                )
            self.groups.append((group["params"], self.check_group({**self.defaults, **overrides})))
        self._layout_cache: dict = {}
        #: Let the engine take a backend's fast path (a declared native kernel, NumPy's
        #: blocks, TensorFlow's compiled step); tests switch it off to check the one
        #: definition run plainly against it.
        self.use_fast_path = True

    # -- what a rule's own file gives ------------------------------------------------
    def check_group(self, hyper: dict) -> dict:
        """One group's hyperparameters validated (a new dict); subclasses check their own
        too. Integrations call it when a group is added (torch param groups)."""
        hyper = dict(hyper)
        hyper["lr"] = check_number_or_schedule("lr", hyper["lr"])
        hyper["weight_decay"] = check_number_or_schedule("weight_decay", hyper["weight_decay"])
        _decay.check_decay_options(self, hyper, self.lr_max)
        return hyper

    def coefficients(self, group: dict, t: int) -> Hyper:
        """The group's numbers for step ``t`` (0-based) as a typed record: schedules
        evaluated and checked, every step-dependent coefficient computed here in Python
        float64, so the math never looks at ``t``. A rule's record adds its own fields
        to :meth:`common_fields`."""
        return self.Hyper(**self.common_fields(group, t))

    def common_fields(self, group: dict, t: int) -> dict:
        """The fields of :class:`decay.engine.Hyper` for step ``t``: lr_t, λ_t and the
        decay coefficients (:mod:`decay.rules._decay`), ``step_size`` = lr_t."""
        return _decay.common_fields(self, group, t)

    def slot_names(self, group: dict) -> tuple:
        """The state slots a parameter of this group needs."""
        return ()

    def state_slot_names(self, group: dict) -> tuple:
        """The slots parameters of ``group`` may have in the state: the rule's own
        (:meth:`slot_names`) and, with ``decay_toward``, the reference θ₀."""
        names = tuple(self.slot_names(group))
        return names if self.decay_toward is None else names + (engine.REFERENCE_SLOT,)

    def slot_shapes(self, group: dict, shape: tuple) -> dict:
        """The slots a parameter of ``shape`` in ``group`` has, each with its shape: every
        slot of :meth:`slot_names`, of the parameter's shape. A rule whose slots depend
        on the shape (Adafactor: a row and a column for a matrix, a full accumulator for
        a vector) overrides this, and is then not ``elementwise``. The one place every
        layer learns a slot's shape from: ``init``, the state's checks and loading, the
        engine's parts and both integrations."""
        return dict.fromkeys(self.slot_names(group), tuple(shape))

    def state_slot_shapes(self, group: dict, shape: tuple) -> dict:
        """:meth:`slot_shapes` and, with ``decay_toward``, the reference θ₀ (the
        parameter's shape): slot name -> shape, for one parameter."""
        shapes = self.slot_shapes(group, tuple(shape))
        if self.decay_toward is not None:
            shapes[engine.REFERENCE_SLOT] = tuple(shape)
        return shapes

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        #: whether which slots a parameter has, or their shapes, depend on its shape
        cls.slots_follow_shape = cls.slot_shapes is not Rule.slot_shapes
        if cls.slots_follow_shape and cls.elementwise:
            # NumPy's blocks cut every slot like its parameter: it would write the wrong memory.
            raise TypeError(f"{cls.__name__} gives slots of their own shapes: declare elementwise = False.")
    def slot_initial_values(self, group: dict) -> dict:
        """Slots that do not start at zero: slot name -> its starting value (Adagrad's
        initial accumulator). ``init`` and both integrations fill them so."""
        return {}

    def direction(self, ops, h, params: list, grads: list, slots: dict) -> list:
        """The rule's math, in the vocabulary of :mod:`decay.ops`: update ``slots`` in
        place and return u, the engine then steps θ ← θ − h.step_size·u. ``grads``
        already hold the coupled decay (then as an :class:`decay.engine.Scratch`, a list
        the rule may write into; otherwise they are the caller's and must not be written);
        ``params`` are already decoupled-decayed.
        u may be returned as a pair (numerator, denominator) of lists: the engine then
        divides in the step itself (``addcdiv_``, one pass and one list fewer). The
        numerator may be terms ``((x, c), ...)``, Σ c·x: one ``addcdiv_`` per term and no
        list formed for the sum (NAdam's g and m, as torch's NAdam steps)."""
        raise NotImplementedError

    def direction_is_gradient(self, group: dict) -> bool:
        """True when :meth:`direction` returns the gradient itself for this group (SGD
        without momentum): the engine may then fold a coupled decay into one scaling of
        θ on the fast path. A declared property of the math: the shared suite checks the
        fast path against the definition run without it."""
        return False

    def check_leaves(self, backend, leaves: list) -> None:
        """Raise :class:`DecayError` for parameters this rule cannot update (Muon: not
        2-D). The engine calls it on every path before anything is written."""

    def fused(self, h, plan, t: int):
        """A framework kernel that computes this step (a :class:`decay.engine.FusedCall`),
        or None. The shared suite checks every such declaration against
        :meth:`direction`, step by step."""
        return None

    # -- decay, groups and masks -------------------------------------------------------
    def decay_plan(self, group: dict, decayed: bool):
        """Where weight decay sits for leaves of ``group`` (see :mod:`decay.rules._decay`)."""
        return _decay.plan(self, group, decayed)

    def decay_acts(self, hypers: list, group_of, decayed) -> list:
        """Per leaf, whether weight decay or a penalty acts on it (its decay plan is not
        the empty one): where a sparse gradient is refused, as torch.optim refuses it."""
        return [self.decay_plan(hypers[g], d) != _decay.NO_DECAY for g, d in zip(group_of, decayed)]

    def decays(self, group: dict | None = None) -> bool:
        """Whether the weight decay of ``group`` (default: the rule's) can act."""
        return _decay.decays(self.defaults if group is None else group)

    def hyper_sets(self) -> list:
        """The validated hyperparameters: the defaults, then each of ``groups``."""
        return [self.defaults] + [h for _, h in self.groups]

    def resolve(self, names, leaves) -> tuple:
        """Per leaf: the index of its hyperparameter set (0 = defaults) and whether it
        is decayed. Cached on the names and ranks, which is all masks look at."""
        by_name_only = (self.mask is None or isinstance(self.mask, dict)) and not any(
            callable(selector) for selector, _ in self.groups
        )
        names = tuple(names)
        key = names if by_name_only else (names, tuple(len(getattr(x, "shape", ())) for x in leaves))
        layout = self._layout_cache.get(key)
        if layout is None:
            group_of = resolve_groups([g for g, _ in self.groups], names, leaves)
            decayed = resolve_mask(self.mask, names, leaves)
            layout = self._layout_cache[key] = (group_of, decayed)
        return layout

    def _prepare(self, params):
        flat = flatten(params, "params")
        backend = backend_of_tensors(zip(flat.names, flat.leaves), "params")
        for name, leaf in zip(flat.names, flat.leaves):
            if not backend.is_floating(leaf):
                raise DecayError(
                    f"Parameter {name!r} has dtype {backend.dtype_name(leaf)}; decay updates "
                    "floating-point tensors only. Cast it to float32 or exclude it from params."
                )
        check_updatable(flat.names, flat.leaves, backend)
        if len({backend.device_key(x) for x in flat.leaves}) > 1:
            devices = {backend.device(x) for x in flat.leaves}
            raise DecayError(
                f"`params` live on several devices: {sorted(devices)}. Move them to one device "
                "or use one rule per device."
            )
        return flat, backend

    # -- the public pair -------------------------------------------------------
    def init(self, params) -> RuleState:
        """Zero state for ``params`` (one tensor, a list/tuple, or a dict name -> tensor)."""
        flat, backend, _, (group_of, _), _ = self._checked_params(params)
        self.check_leaves(backend, flat.leaves)
        hypers = self.hyper_sets()
        names = sorted({s for h in hypers for s in self.state_slot_names(h)})
        slots = {}
        shapes = [self.state_slot_shapes(hypers[g], backend.shape(leaf)) for leaf, g in zip(flat.leaves, group_of)]
        for slot in names:
            per_leaf = []
            for leaf, g, wanted in zip(flat.leaves, group_of, shapes):
                if slot in wanted:
                    value = backend.read(leaf)
                    same = wanted[slot] == backend.shape(leaf)
                    zero = backend.zeros_like(value) if same else backend.zeros(wanted[slot], value)
                    if backend.dtype_name(leaf) in LOW_PRECISION:
                        zero = backend.cast(zero, "float32")  # state kept in float32
                    start = self.slot_initial_values(hypers[g]).get(slot, 0.0)
                    if start:
                        filled = [zero]
                        backend.add_(filled, float(start))
                        zero = filled[0]
                    per_leaf.append(zero)
                else:
                    per_leaf.append(None)
            slots[slot] = tuple(per_leaf)
        if self.decay_toward is not None:
            slots[engine.REFERENCE_SLOT] = tuple(reference_slots(
                self.decay_toward, backend, flat.names, flat.leaves, slots[engine.REFERENCE_SLOT]))
        if not backend.traced(flat.leaves):
            self._trust(flat, slots)
        return RuleState(count=0, slots=slots, skipped=0, names=_names_of(flat), rule=self.name)

    def step(self, params, grads, state: RuleState):
        """One update. Returns ``(params, state)``.

        NumPy arrays, torch tensors and tf.Variables are written in place (and
        returned); immutable tensors come back new. Everything is checked before the
        first write, so an error leaves params and state as they were.

        Like torch.optim, the state's tensors are updated in place where the backend
        allows: the state passed in is consumed, so keep using the returned one (take a
        snapshot with :meth:`state_dict` to keep an old state)."""
        flat, backend, layouts, (group_of, decayed), parts = self._checked_params(params)
        g_leaves = flatten_like(grads, flat, "grads", "params")
        fit = backend.grads_fit(g_leaves, layouts)
        if not fit:
            g_leaves = dense_grads(self, backend, flat.names, g_leaves,
                                   self.decay_acts(self.hyper_sets(), group_of, decayed))
            _checks.check_grads(backend, flat, g_leaves)  # finds and names the mismatch
        state = state_by_name(state, flat)
        self._check_state_cached(state, flat, backend)
        if backend.traces and (backend.traced(flat.leaves) or backend.traced(g_leaves)
                               or backend.traced([state.count])):
            # inside jax.jit: the state is a traced pytree
            out, state = backend.traced_step(self, flat, g_leaves, state, group_of, decayed, parts)
            return unflatten(flat, out), state
        t = int(state.count)
        skipped, out, columns = engine.step(
            self, backend, flat.leaves, g_leaves, state.slots, groups=self.hyper_sets(), group_of=group_of,
            decayed=decayed, steps=t, names=flat.names, parts=parts, fast=self.use_fast_path, owner=self,
            grads_fit=fit,
        )
        if skipped:
            return params, state._replace(skipped=state.skipped + 1)
        slots = {s: tuple(col) for s, col in columns.items()}
        self._trust(self._returned(flat, out), slots)
        return unflatten(flat, out, params), RuleState(t + 1, slots, state.skipped, state.names, state.rule)

    # -- per-step checks, done once per structure ----------------------------------------
    # A training loop passes the same parameters and the state the last step returned,
    # with new gradients, every step. The checks of what cannot have changed (each
    # parameter's backend, dtype and device; each slot's fit) run when the parameters
    # or the state are new, not at every step; the gradients are compared with the
    # parameters' layouts (shape, dtype, device) in one pass. Caveat, as in torch.optim:
    # a parameter whose ``.data`` is swapped for a tensor of another shape or dtype is
    # re-checked only once its gradient no longer matches the recorded layout.
    _step_cache = None  # (leaves, flat, backend, layouts, mask layout, parts) of the last params
    _trusted_slots = None  # (flat, slot items) of the state the last step returned

    def _checked_params(self, params):
        cache = self._step_cache
        if cache is not None:
            if _same_leaves(params, cache[1], cache[0]):
                return cache[1:6]
            same = self._same_structure(params, cache)
            if same is not None:
                return same
        flat, backend = self._prepare(params)
        layouts = backend.layouts(flat.leaves)
        layout = self.resolve(flat.names, flat.leaves)
        dtypes = [backend.dtype_name(x) for x in flat.leaves]
        parts, _ = engine.partition(self, self.hyper_sets(), layout[0], layout[1], dtypes,
                                    shapes=[backend.shape(x) for x in flat.leaves])
        if not backend.traced(flat.leaves):  # a tracer must not outlive its trace
            self._step_cache = (list(flat.leaves), flat, backend, layouts, layout, parts,
                                backend.structure_key(flat.leaves))
        return flat, backend, layouts, layout, parts

    def _returned(self, flat, out):
        """``flat`` with the leaves this step returned. With immutable tensors (JAX) they
        are new arrays of the same shapes, dtypes and placement, the very ones a training
        loop passes next: the checks done for ``flat`` carry over to them, found again by
        identity."""
        cache = self._step_cache
        if cache is None or cache[1] is not flat or all(map(operator.is_, out, cache[0])):
            return flat  # (written in place: the same tensors come back)
        returned = flat._replace(leaves=list(out))
        self._step_cache = (list(out), returned, *cache[2:])
        return returned

    def _same_structure(self, params, cache):
        """The cached checks for new arrays of the very structure of the last step's (JAX:
        a step returns new arrays): the same names, and per leaf the same shape, dtype and
        placement (:meth:`Backend.structure_key`), each array once. None otherwise."""
        _, old, backend, layouts, layout, parts, key = cache
        if key is None:
            return None
        flat = flatten(params, "params")
        if (flat.kind != old.kind or flat.keys != old.keys or backend.structure_key(flat.leaves) != key
                or len(set(map(id, flat.leaves))) != len(flat.leaves)):
            return None
        self._step_cache = (list(flat.leaves), flat, backend, layouts, layout, parts, key)
        trusted = self._trusted_slots
        if trusted is not None and trusted[0] is old:  # the state that fit them fits these
            self._trusted_slots = (flat, trusted[1])
        return flat, backend, layouts, layout, parts

    def _trust(self, flat, slots: dict):
        self._trusted_slots = (flat, tuple(slots.items()))

    def _check_state_cached(self, state, flat, backend):
        trusted = self._trusted_slots
        if (
            trusted is not None and trusted[0] is flat and isinstance(state, RuleState)
            and len(state.slots) == len(trusted[1])
            and all(state.slots.get(name) is per_leaf for name, per_leaf in trusted[1])
        ):
            _check_count(state)
        else:
            _checks.check_state(self, state, flat, backend)

    def __setattr__(self, name, value):
        # Any attribute set but a cache may change what the definition reads: a count
        # that tells caches keyed on the rule's attributes (JAX's compiled steps) to re-read.
        if name not in _CACHES:
            self.__dict__["_version"] = self.__dict__.get("_version", 0) + 1
        object.__setattr__(self, name, value)

    def signature(self, compute):
        """``compute(self)``, remembered until an attribute of the rule is set."""
        version = self.__dict__.get("_version", 0)
        cached = self.__dict__.get("_signature")
        if cached is None or cached[0] != version:
            cached = self.__dict__["_signature"] = (version, compute(self))
        return cached[1]

    def __getstate__(self):
        # Caches hold tensors and compiled functions: not part of a rule's definition.
        return {k: v for k, v in self.__dict__.items() if k not in _CACHES}

    # -- saving and loading state (decay/rules/_state.py) ------------------------------
    def state_dict(self, state: RuleState) -> dict:
        """The state as plain NumPy arrays and numbers (picklable, ``np.savez``-able).
        A state that does not fit this rule (another rule's slots) is refused."""
        _checks.check_state_fits_rule(self, state)
        return _state.state_dict(self, state)

    def load_state_dict(self, saved: dict, params) -> RuleState:
        """A state for ``params`` (on their backend, dtype and device) from
        :meth:`state_dict`'s output, possibly saved from another backend.

        Everything is checked before any tensor is made: a state of another rule, for
        other shapes, or damaged (missing entries, non-float arrays) is
        refused with a :class:`DecayError`."""
        template = self.init(params)
        flat, backend = self._prepare(params)
        return _state.load_state_dict(self, saved, template, flat, backend)

    # -- saving and loading the rule itself ----------------------------------------------
    def get_config(self) -> dict:
        """The rule as plain data (``rules.from_config`` rebuilds it). Schedules must be
        ``decay.schedules`` objects and masks serializable ones; a plain Python callable
        cannot be saved and is refused with an error."""
        return rule_to_config(self.name, self._kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items() if not k.startswith("_"))
        extra = []
        if self.decoupled:
            extra.append(f"decoupled=True, decay_scaled_by={self.decay_scaled_by!r}")
        extra += [f"{k}={v!r}" for k, v in self._kwargs.items() if k in ("cautious_decay", "lr_max")]
        if self.decay_toward is not None:
            extra.append("decay_toward='init'" if isinstance(self.decay_toward, str) else "decay_toward=<tensors>")
        if self.regularizer is not None:
            extra.append(f"regularizer={self.regularizer!r}")
        return f"{self.name}({', '.join([args] + extra)})"
