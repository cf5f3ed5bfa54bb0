"""What every update rule shares: parameter structures, hyperparameters that may be
schedules, masks and groups, the three places weight decay can live, and the state.

A rule is a pair of functions in the optax style, ``init(params) -> state`` and
``step(params, grads, state) -> (params, state)``. Subclasses write only the per-tensor
math in ``_update``; nothing here or there is backend specific — it runs on any
backend's tensors through the primitives in :mod:`decay.backends.base`.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

import numpy as np

from ..backends import backend_of_tensors
from ..errors import DecayError
from ..penalties import Penalty, penalty_from_config
from .. import schedules
from ..tree import flatten, flatten_like, unflatten
from ..validation import check_choice, check_number_or_schedule, scheduled_value
from ..masks import mask_from_config, mask_to_config, resolve_groups, resolve_mask

#: How decoupled decay θ ← θ − s_t·λ_t·θ is scaled:
#: "lr": s_t = lr_t (PyTorch AdamW, Keras 3, optax); "schedule_multiplier":
#: s_t = lr_t / lr_0 (the AdamW paper, Composer); "none": s_t = 1 (TF-Addons).
DECAY_SCALINGS = ("lr", "schedule_multiplier", "none")
NONFINITE_POLICIES = ("apply", "skip", "raise")
LOW_PRECISION = ("float16", "bfloat16")


class RuleState(NamedTuple):
    """A rule's state: plain data. ``step`` returns the next one; its tensors may be
    those of the state passed in, updated in place (see :meth:`Rule.step`).

    ``count`` is the number of updates applied so far (the 0-based index of the next
    one, which is the step schedules are evaluated at); ``slots`` maps a slot name
    (``momentum_buffer``, ``exp_avg``, ...) to one tensor per parameter (None where
    that parameter has no such slot); ``skipped`` counts steps skipped for non-finite
    gradients."""

    count: int
    slots: dict
    skipped: int = 0


def _check_count(state) -> None:
    if isinstance(state.count, bool) or not isinstance(state.count, (int, np.integer)) or state.count < 0:
        raise DecayError(f"`state.count` must be an integer >= 0. Received: {state.count!r}.")


def _same_leaves(params, flat, leaves) -> bool:
    """Whether ``params`` is the structure ``flat`` was made from, holding the very same
    tensor objects (identity, one C-level pass)."""
    kind = flat.kind
    if kind == "single":
        return params is leaves[0]
    if kind == "dict":
        return (
            type(params) is dict and len(params) == len(leaves)
            and all(map(operator.is_, params.values(), leaves)) and tuple(params) == flat.keys
        )
    return (
        type(params) is (list if kind == "list" else tuple) and len(params) == len(leaves)
        and all(map(operator.is_, params, leaves))
    )


# Attributes that are caches, dropped when a rule is pickled or copied.
_CACHES = ("_step_cache", "_trusted_slots", "_xla_steps")


class Rule:
    """Base class of the update rules. Use :func:`decay.sgd`, :func:`decay.adam` or
    :func:`decay.adamw` to build one."""

    name = "rule"
    #: hyperparameters a group may override
    hyper_names: tuple = ("lr", "weight_decay")
    #: entries of :meth:`hyper_at`'s result that change from step to step; every other
    #: entry is a constant of the group (compiled fast paths bake those in)
    step_keys: tuple = ("lr", "weight_decay", "decoupled_factor", "decoupled_keep", "step")

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
        **hyper,
    ):
        self._kwargs = dict(
            lr=lr, weight_decay=weight_decay, decoupled=decoupled, regularizer=regularizer,
            decay_scaled_by=decay_scaled_by, mask=mask, groups=groups, on_nonfinite=on_nonfinite, **hyper,
        )
        self.decoupled = bool(decoupled)
        if regularizer is not None and not isinstance(regularizer, Penalty):
            raise DecayError(
                f"`regularizer` must be a decay penalty (decay.L2, decay.L1, decay.ElasticNet). "
                f"Received: regularizer={regularizer!r}."
            )
        self.regularizer = regularizer
        self.decay_scaled_by = check_choice("decay_scaled_by", decay_scaled_by, DECAY_SCALINGS)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        self.mask = mask
        self.defaults = self._check_hyper(dict(lr=lr, weight_decay=weight_decay, **hyper))
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
            self.groups.append((group["params"], self._check_hyper({**self.defaults, **overrides})))
        self._layout_cache: dict = {}
        #: Let a backend run its fused/compiled hot path (see Backend.fast_update_columns);
        #: tests switch it off to check the generic path against it.
        self.use_fast_path = True

    # -- hyperparameters ---------------------------------------------------
    def _check_hyper(self, hyper: dict) -> dict:
        """Validate one group's hyperparameters; subclasses check their own too."""
        hyper["lr"] = check_number_or_schedule("lr", hyper["lr"])
        hyper["weight_decay"] = check_number_or_schedule("weight_decay", hyper["weight_decay"])
        if self.decay_scaled_by == "schedule_multiplier":
            hyper["_lr0"] = _base_lr(hyper["lr"])
        # Decided once, not per step: the math below must not branch on step values, so
        # that it also traces into a graph (tf.function) with the step as a tensor.
        hyper["_decays"] = callable(hyper["weight_decay"]) or hyper["weight_decay"] > 0
        return hyper

    def hyper_at(self, hyper: dict, t: int) -> dict:
        """One group's hyperparameters as numbers for step ``t``: schedules evaluated
        and checked, and every step-dependent coefficient the math needs computed here
        in Python float64, so the per-tensor math never looks at ``t``. Integrations
        call this with their own group dicts."""
        h = dict(hyper)
        h["step"] = t
        h["lr"] = scheduled_value("lr", hyper["lr"], t)
        h["weight_decay"] = wd = scheduled_value("weight_decay", hyper["weight_decay"], t)
        if self.decay_scaled_by == "lr":
            h["decoupled_factor"] = h["lr"] * wd
        elif self.decay_scaled_by == "schedule_multiplier":
            h["decoupled_factor"] = (h["lr"] / hyper["_lr0"]) * wd
        else:
            h["decoupled_factor"] = wd
        h["decoupled_keep"] = 1.0 - h["decoupled_factor"]
        return h

    # -- structure -----------------------------------------------------------
    def _layout(self, flat):
        """Per leaf: the index of its hyperparameter set (0 = defaults) and whether it
        is decayed. Cached on the names and ranks, which is all masks look at."""
        by_name_only = (self.mask is None or isinstance(self.mask, dict)) and not any(
            callable(selector) for selector, _ in self.groups
        )
        # Masks and groups given by name do not look at tensors: key on the names alone.
        key = flat.names if by_name_only else (flat.names, tuple(len(getattr(x, "shape", ())) for x in flat.leaves))
        layout = self._layout_cache.get(key)
        if layout is None:
            group_of = resolve_groups([g for g, _ in self.groups], flat.names, flat.leaves)
            decayed = resolve_mask(self.mask, flat.names, flat.leaves)
            layout = (group_of, decayed)
            self._layout_cache[key] = layout
        return layout

    def _hyper_sets(self):
        return [self.defaults] + [h for _, h in self.groups]

    def slots_for(self, hyper: dict) -> tuple:
        """The state slots a parameter with these hyperparameters needs."""
        return ()

    def _prepare(self, params):
        flat = flatten(params, "params")
        backend = backend_of_tensors(zip(flat.names, flat.leaves), "params")
        for name, leaf in zip(flat.names, flat.leaves):
            if not backend.is_floating(leaf):
                raise DecayError(
                    f"Parameter {name!r} has dtype {backend.dtype_name(leaf)}; decay updates "
                    "floating-point tensors only. Cast it to float32 or exclude it from params."
                )
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
        flat, backend, _, (group_of, _) = self._checked_params(params)
        hypers = self._hyper_sets()
        names = sorted({s for h in hypers for s in self.slots_for(h)})
        slots = {}
        for slot in names:
            per_leaf = []
            for leaf, g in zip(flat.leaves, group_of):
                if slot in self.slots_for(hypers[g]):
                    zero = backend.zeros_like(backend.read(leaf))
                    if backend.dtype_name(leaf) in LOW_PRECISION:
                        zero = backend.cast(zero, "float32")  # state kept in float32
                    per_leaf.append(zero)
                else:
                    per_leaf.append(None)
            slots[slot] = tuple(per_leaf)
        self._trust(flat, slots)
        return RuleState(count=0, slots=slots, skipped=0)

    def step(self, params, grads, state: RuleState):
        """One update. Returns ``(params, state)``.

        NumPy arrays, torch tensors and tf.Variables are written in place (and
        returned); immutable tensors come back new. Everything is checked before the
        first write, so an error leaves params and state as they were.

        Like torch.optim, a backend's fast path updates the state's tensors in place:
        the state passed in is consumed, so keep using the returned one (take a
        snapshot with :meth:`state_dict` to keep an old state)."""
        flat, backend, layouts, (group_of, decayed) = self._checked_params(params)
        g_leaves = flatten_like(grads, flat, "grads", "params")
        if layouts is None or backend.layouts(g_leaves) != layouts:
            self._check_grads(backend, flat, g_leaves)  # finds and names the mismatch
        self._check_state_cached(state, flat, backend)
        t = int(state.count)
        hypers = [self.hyper_at(h, t) for h in self._hyper_sets()]

        with backend.no_grad():
            g_vals = backend.read_all(g_leaves)
            if self.skips_nonfinite(backend, flat.names, g_vals, t):
                return params, state._replace(skipped=state.skipped + 1)
            n = len(flat.leaves)
            columns = {s: list(per_leaf) for s, per_leaf in state.slots.items()}
            leaf_hypers = [hypers[0]] * n if len(hypers) == 1 else [hypers[g] for g in group_of]
            if self.use_fast_path and backend.fast_update_columns(
                self, flat.leaves, g_vals, columns, leaf_hypers, decayed
            ):
                out = flat.leaves  # written in place, slots too
            else:
                leaf_slots = [{s: col[i] for s, col in columns.items() if col[i] is not None} for i in range(n)]
                values, leaf_slots = self.compute(backend, flat.leaves, g_vals, leaf_slots, leaf_hypers, decayed)
                out = [backend.assign(p, v) for p, v in zip(flat.leaves, values)]
                columns = {s: [leaf_slots[i].get(s) for i in range(n)] for s in columns}
        slots = {s: tuple(col) for s, col in columns.items()}
        self._trust(flat, slots)
        return unflatten(flat, out), RuleState(t + 1, slots, state.skipped)

    # -- per-step checks, done once per structure ----------------------------------------
    # A training loop passes the same parameters and the state the last step returned,
    # with new gradients, every step. The checks of what cannot have changed (each
    # parameter's backend, dtype and device; each slot's fit) run when the parameters
    # or the state are new, not at every step; the gradients are compared with the
    # parameters' layouts (shape, dtype, device) in one pass. Caveat, as in torch.optim:
    # a parameter whose ``.data`` is swapped for a tensor of another shape or dtype is
    # re-checked only once its gradient no longer matches the recorded layout.
    _step_cache = None  # (leaves, flat, backend, layouts, mask layout) of the last params
    _trusted_slots = None  # (flat, slot items) of the state the last step returned

    def _checked_params(self, params):
        cache = self._step_cache
        if cache is not None and _same_leaves(params, cache[1], cache[0]):
            return cache[1:]
        flat, backend = self._prepare(params)
        layouts = backend.layouts(flat.leaves)
        layout = self._layout(flat)
        self._step_cache = (list(flat.leaves), flat, backend, layouts, layout)
        return flat, backend, layouts, layout

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
            self._check_state(state, flat, backend)

    def __getstate__(self):
        # Caches hold tensors and compiled functions: not part of a rule's definition.
        return {k: v for k, v in self.__dict__.items() if k not in _CACHES}

    def skips_nonfinite(self, backend, names, grads, t: int) -> bool:
        """Apply the ``on_nonfinite`` policy: True when this step must be skipped."""
        if self.on_nonfinite == "apply":
            return False
        bad = [n for n, g in zip(names, grads) if not backend.all_finite(g)]
        if bad and self.on_nonfinite == "raise":
            raise DecayError(
                f"Non-finite gradient (inf or nan) for parameter(s) {bad} at step {t}. "
                "Nothing was updated. Use on_nonfinite='skip' to skip such steps."
            )
        return bool(bad)

    def compute(self, backend, params, grads, slots, hypers, decayed):
        """New values and slots for each tensor; pure, nothing is written.

        ``slots[i]`` is a dict slot name -> tensor, ``hypers[i]`` the numbers from
        :meth:`hyper_at` for its step, ``decayed[i]`` whether the mask decays it. This is
        the whole update; :meth:`step` and the framework
        integrations only gather its inputs and write its outputs."""
        values, new_slots = [], []
        for p, g, leaf_slots, h, is_decayed in zip(params, grads, slots, hypers, decayed):
            dtype = backend.dtype_name(p)
            p_val = backend.read(p)
            if dtype in LOW_PRECISION:
                # Compute in float32 and round once at the end, as PyTorch's fused kernels do.
                p_val, g = backend.cast(p_val, "float32"), backend.cast(g, "float32")
            p_val, g = self._apply_decay(backend, p_val, g, h, is_decayed)
            p_val, leaf_slots = self._update(backend, p_val, g, leaf_slots, h)
            if dtype in LOW_PRECISION:
                p_val = backend.cast(p_val, dtype)
            values.append(p_val)
            new_slots.append(leaf_slots)
        return values, new_slots

    # -- the math ------------------------------------------------------------------
    def _apply_decay(self, backend, p, g, h, decayed: bool):
        """Weight decay in the update: coupled (added to the gradient) or decoupled
        (θ shrunk before the step, as PyTorch AdamW and Keras 3 do).

        Coupled: g ← g + λ_t·θ, and with ``regularizer``: g ← g + ∇penalty(θ).
        Decoupled: θ ← θ·(1 − s_t·λ_t), s_t as chosen by ``decay_scaled_by``."""
        if not decayed:
            return p, g
        if self.regularizer is not None:
            g = g + self.regularizer.leaf_grad(backend, p)
        if h["_decays"]:
            if self.decoupled:
                p = p * h["decoupled_keep"]
            else:
                g = g + p * h["weight_decay"]
        return p, g

    def _update(self, backend, p, g, slots: dict, h: dict):
        """The rule's own math for one tensor: returns (new θ, new slots)."""
        raise NotImplementedError

    def kernel_spec(self, h: dict, decayed: bool):
        """This step as the arguments of a PyTorch-style fused kernel, or None.

        Fast paths (torch's fused kernels, NumPy's in-place loops) implement two
        canonical updates — SGD(lr, coupled weight_decay, momentum, dampening, nesterov)
        and Adam(lr, betas, eps, weight_decay coupled or decoupled, amsgrad) — and every
        variant of decay that maps onto one by rescaling a coefficient is mapped here,
        once. Variants that do not map (an L1 penalty in the update, ...) return None
        and run on the generic path."""
        return None

    def _coupled_penalty_coefficient(self, decayed: bool):
        """The regularizer's gradient as a coupled coefficient (L2(lam) → 2·lam), 0.0
        without one, None when it is not linear in θ (L1, elastic net with l1 > 0)."""
        if not decayed or self.regularizer is None:
            return 0.0
        from ..penalties import L2, ElasticNet

        if isinstance(self.regularizer, L2):
            return 2.0 * self.regularizer.lam
        if isinstance(self.regularizer, ElasticNet) and self.regularizer.l1 == 0:
            return 2.0 * self.regularizer.l2
        return None

    # -- checks --------------------------------------------------------------------
    def _check_grads(self, backend, flat, g_leaves):
        grads_backend = backend_of_tensors([(f"grads[{n!r}]", g) for n, g in zip(flat.names, g_leaves)], "grads")
        if grads_backend is not backend:
            raise DecayError(
                f"`params` are {backend.name} tensors but `grads` are {grads_backend.name} tensors. "
                "Convert them to one framework before calling decay."
            )
        for name, p, g in zip(flat.names, flat.leaves, g_leaves):
            if backend.same_layout(p, g):
                continue
            if backend.shape(p) != backend.shape(g):
                raise DecayError(
                    f"The gradient of parameter {name!r} has shape {backend.shape(g)} but the "
                    f"parameter has shape {backend.shape(p)}. Pass grads in the same order and "
                    "shapes as params."
                )
            if backend.dtype_name(p) != backend.dtype_name(g):
                raise DecayError(
                    f"The gradient of parameter {name!r} is {backend.dtype_name(g)} but the "
                    f"parameter is {backend.dtype_name(p)}. Cast the gradient to the parameter's dtype."
                )
            if backend.device(p) != backend.device(g):
                raise DecayError(
                    f"The gradient of parameter {name!r} is on {backend.device(g)} but the "
                    f"parameter is on {backend.device(p)}. Move them to one device."
                )

    def _check_state(self, state, flat, backend):
        """The state must be one this rule made for these params: same slots, one
        tensor per parameter of its shape and backend, a valid count."""
        if not isinstance(state, RuleState):
            raise DecayError(
                f"`state` must be the RuleState returned by init() or step(). "
                f"Received a {type(state).__name__}."
            )
        _check_count(state)
        hypers = self._hyper_sets()
        group_of, _ = self._layout(flat)
        needed = {s for h in hypers for s in self.slots_for(h)}
        if set(state.slots) != needed:
            raise DecayError(
                f"`state` holds slots {sorted(state.slots)} but {self.name} needs {sorted(needed)}. "
                "Was it made by another rule? Call init() with this rule."
            )
        for slot, per_leaf in state.slots.items():
            if len(per_leaf) != len(flat.leaves):
                raise DecayError(
                    f"`state` was made for {len(per_leaf)} parameters but {len(flat.leaves)} were "
                    "passed. Call init() with these params."
                )
            for name, p, x, g in zip(flat.names, flat.leaves, per_leaf, group_of):
                wanted = slot in self.slots_for(hypers[g])
                if wanted != (x is not None) or (
                    x is not None and (not backend.is_tensor(x) or backend.shape(x) != backend.shape(p))
                ):
                    raise DecayError(
                        f"`state` slot {slot!r} does not fit parameter {name!r} (expected a "
                        f"{backend.name} tensor of shape {backend.shape(p)}). Call init() with these params."
                    )

    # -- saving and loading state ------------------------------------------------------
    def state_dict(self, state: RuleState) -> dict:
        """The state as plain NumPy arrays and numbers (picklable, ``np.savez``-able)."""
        slots = {}
        for slot, per_leaf in state.slots.items():
            arrays = []
            for x in per_leaf:
                arrays.append(None if x is None else backend_of_tensors([(slot, x)], "state").to_numpy(x))
            slots[slot] = arrays
        return {"rule": self.name, "count": int(state.count), "skipped": int(state.skipped), "slots": slots}

    def load_state_dict(self, saved: dict, params) -> RuleState:
        """A state for ``params`` (on their backend, dtype and device) from
        :meth:`state_dict`'s output, possibly saved from another backend.

        Everything is checked before any tensor is made: a state of another rule, for
        other shapes, or damaged (missing entries, non-float arrays) is
        refused with a :class:`DecayError`."""
        template = self.init(params)
        if not isinstance(saved, dict):
            raise DecayError(f"Saved state must be the dict from state_dict(). Received a {type(saved).__name__}.")
        if saved.get("rule") != self.name:
            raise DecayError(
                f"This state was saved by rule {saved.get('rule')!r}, not {self.name!r}. Load it "
                "into the rule that saved it."
            )
        saved_slots = saved.get("slots")
        if not isinstance(saved_slots, dict) or set(saved_slots) != set(template.slots):
            got = sorted(saved_slots) if isinstance(saved_slots, dict) else saved_slots
            raise DecayError(
                f"Saved state has slots {got!r} but this rule needs {sorted(template.slots)}. "
                "Were momentum/amsgrad settings changed?"
            )
        count, skipped = saved.get("count"), saved.get("skipped", 0)
        for key, value in (("count", count), ("skipped", skipped)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise DecayError(f"Saved state has an invalid `{key}`: {value!r}. It must be an integer >= 0.")
        flat, backend = self._prepare(params)
        checked = {}
        for slot, per_leaf in template.slots.items():
            arrays = saved_slots[slot]
            if not isinstance(arrays, (list, tuple)) or len(arrays) != len(per_leaf):
                size = len(arrays) if isinstance(arrays, (list, tuple)) else type(arrays).__name__
                raise DecayError(
                    f"Saved slot {slot!r} holds {size} tensors but params has {len(per_leaf)}."
                )
            checked[slot] = []
            for name, like, array in zip(flat.names, per_leaf, arrays):
                if (like is None) != (array is None):
                    raise DecayError(f"Saved slot {slot!r} does not match parameter {name!r}.")
                if like is not None:
                    array = np.asarray(array)
                    if array.dtype.kind != "f" or tuple(array.shape) != backend.shape(like):
                        raise DecayError(
                            f"Saved slot {slot!r} for parameter {name!r} is a {array.dtype} array of "
                            f"shape {tuple(array.shape)}; expected floats of shape {backend.shape(like)}."
                        )
                checked[slot].append((like, array))
        slots = {
            slot: tuple(None if like is None else backend.from_numpy(array, like) for like, array in pairs)
            for slot, pairs in checked.items()
        }
        return RuleState(int(count), slots, int(skipped))

    # -- saving and loading the rule itself ----------------------------------------------
    def get_config(self) -> dict:
        """The rule as plain data (``rules.from_config`` rebuilds it). Schedules must be
        ``decay.schedules`` objects and masks serializable ones; a plain Python callable
        cannot be saved and is refused with an error."""
        config = {"rule": self.name}
        for key, value in self._kwargs.items():
            if key == "regularizer":
                value = None if value is None else value.get_config()
            elif key == "mask":
                value = mask_to_config(value)
            elif key == "groups":
                value = None if not value else [_group_to_config(g) for g in value]
            else:
                value = _value_to_config(key, value)
            config[key] = value
        return config

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items() if not k.startswith("_"))
        extra = []
        if self.decoupled:
            extra.append(f"decoupled=True, decay_scaled_by={self.decay_scaled_by!r}")
        if self.regularizer is not None:
            extra.append(f"regularizer={self.regularizer!r}")
        return f"{self.name}({', '.join([args] + extra)})"


def _base_lr(lr) -> float:
    """lr_0 of the paper's schedule multiplier η_t = lr_t / lr_0."""
    if not callable(lr):
        base = lr
    else:
        base = getattr(lr, "base", None)
        if base is None:
            base = lr(0)
    base = float(base)
    if not (base > 0 and math.isfinite(base)):
        raise DecayError(
            "With decay_scaled_by='schedule_multiplier' the base learning rate `lr` must be > 0 "
            f"(the decay is scaled by lr_t / lr_0). Received: lr_0={base!r}. Give the schedule "
            "a positive `base` attribute (decay.schedules do) or start it above 0."
        )
    return base


def _value_to_config(key, value):
    if isinstance(value, schedules.Schedule):
        return {"schedule": value.get_config()}
    if callable(value):
        raise DecayError(
            f"Cannot save `{key}`={value!r}: a plain callable has no config. Use a "
            "decay.schedules schedule, which can be saved."
        )
    return list(value) if isinstance(value, tuple) else value


def _group_to_config(group):
    if callable(group["params"]):
        raise DecayError("Cannot save a group selected by a callable; select it by a list of names.")
    return {k: (list(v) if k == "params" else _value_to_config(k, v)) for k, v in group.items()}


def value_from_config(value):
    if isinstance(value, dict) and set(value) == {"schedule"}:
        return schedules.from_config(value["schedule"])
    return value


def rule_kwargs_from_config(config: dict) -> dict:
    kwargs = {k: value_from_config(v) for k, v in config.items() if k != "rule"}
    if kwargs.get("regularizer") is not None:
        kwargs["regularizer"] = penalty_from_config(kwargs["regularizer"])
    kwargs["mask"] = mask_from_config(kwargs.get("mask"))
    if kwargs.get("groups"):
        kwargs["groups"] = [{k: value_from_config(v) for k, v in g.items()} for g in kwargs["groups"]]
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return kwargs


def normalized_weight_decay(lam_norm: float, batch_size: int, train_size: int, epochs: float) -> float:
    """The AdamW paper's normalized weight decay: λ = λ_norm · √(b / (B·T)).

    ``b`` is the batch size, ``B`` the number of training examples and ``T`` the number
    of epochs of the run (or of one restart period with warm restarts). It makes the
    best λ independent of how long one trains (Loshchilov & Hutter, ICLR 2019, §B.1)."""
    from ..validation import check_number

    lam_norm = check_number("lam_norm", lam_norm)
    b = check_number("batch_size", batch_size, minimum=1)
    big_b = check_number("train_size", train_size, minimum=1)
    t = check_number("epochs", epochs)
    if t <= 0:
        raise DecayError(f"`epochs` must be > 0. Received: epochs={epochs!r}.")
    return lam_norm * math.sqrt(b / (big_b * t))
