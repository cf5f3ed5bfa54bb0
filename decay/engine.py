"""The one step engine: every path to an update runs through here.

``Rule.step``, ``decay.torch.Optimizer.step`` and ``decay.keras.Optimizer`` (eagerly and
inside ``model.fit``'s compiled step) run the same sequence:

1. the ``on_nonfinite`` policy (:func:`skips_nonfinite`);
2. each group's numbers for the step, schedules evaluated and checked
   (:func:`coefficients`): one typed :class:`Hyper` record per group;
3. the leaves split into parts that share a group, a step count, a decay placement
   and a compute dtype (:func:`partition`);
4. per part, the path: a native kernel the rule declares (:meth:`Rule.fused`) where
   the backend has it and its preconditions hold, else the rule's one definition
   (:func:`update`), run by the backend in place, block by block, or compiled;
5. the write-back into the caller's tensors (:func:`run`).

The records here are the contracts between the layers: :class:`Hyper` (one group's
numbers for one step, one meaning per field), :class:`DecayPlan` (where weight decay
sits for a part) and :class:`FusedCall` (a native kernel call a rule declares).
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import NamedTuple

from ._memory import check_step_inputs
from .errors import DecayError

LOW_PRECISION = ("float16", "bfloat16")


@dataclass(frozen=True)
class Hyper:
    """One group's numbers for one step, computed in Python float64 before anything is
    written. Rules subclass it with their own fields. A ``bool`` field is a structural
    choice (fixed per group); every other field is a number that compiled paths pass in
    per step, as a 0-d float64 tensor."""

    lr: float  #: the learning rate lr_t
    weight_decay: float  #: λ_t
    coupled: float  #: g ← g + coupled·θ: λ_t when coupled, plus the regularizer's L2 part
    decay_factor: float  #: decoupled: θ ← θ·(1 − decay_factor), s_t·λ_t
    step_size: float  #: θ ← θ − step_size·u, u the rule's direction


#: The state slot holding the reference θ₀ of ``decay_toward`` (one tensor per parameter).
REFERENCE_SLOT = "decay_toward"


class DecayPlan(NamedTuple):
    """Where weight decay sits for the leaves of one part (fixed per group and mask)."""

    coupled: bool = False  #: add ``Hyper.coupled``·θ to the gradient
    penalty: object = None  #: a non-linear penalty (L1) whose gradient is added to it
    decoupled: bool = False  #: shrink θ by ``Hyper.decay_factor`` before the update
    #: decoupled, cautious (Chen et al., 2025): shrink only where u⊙θ ≥ 0, which needs the
    #: rule's direction u first, so no declared kernel can run it (the definition runs)
    cautious: bool = False
    #: the weight decay λ pulls toward the reference θ₀ (slot ``REFERENCE_SLOT``) instead
    #: of 0 (L2-SP): coupled g ← g + λ_t·(θ − θ₀), decoupled θ ← θ − f·(θ − θ₀)
    toward: bool = False
    #: the decoupled decay is the rule's: the engine does not shrink θ and calls
    #: ``direction(..., decay=True)``, which puts it inside the step (LAMB's trust ratio;
    #: the rule refuses cautious and toward with it)
    in_direction: bool = False


class FusedCall(NamedTuple):
    """A framework kernel that computes a whole step of a rule, declared by the rule
    next to its math (:meth:`decay.rules.Rule.fused`). The backend calls
    ``kernel(params, grads, *slot lists, [steps]*, **scalars)``."""

    kernel: str  #: the kernel's name in the framework (``"_fused_adamw_"``)
    slots: tuple  #: slot names passed as lists after params and grads, in order ("" = [])
    scalars: dict  #: the kernel's keyword arguments
    step: int | None = None  #: the 1-based step, passed as one tensor per parameter
    includes_decay: bool = True  #: False: the engine applies the DecayPlan first


class Part(NamedTuple):
    """Leaves updated together: one group's record, one decay plan, one compute dtype."""

    index: tuple | None  #: positions of its leaves (None: all leaves, in order)
    hyper: int  #: which of the step's Hyper records it uses
    plan: DecayPlan
    slots: tuple  #: the slot names its leaves have
    compute: str | None  #: "float32" for float16/bfloat16 leaves, else None
    plain: bool = False  #: the rule's direction is the gradient itself (Rule.direction_is_gradient)


# -- 1. the non-finite policy -----------------------------------------------------------
def skips_nonfinite(policy: str, backend, names, grads, t: int) -> bool:
    """Apply ``on_nonfinite``: True when this step must be skipped."""
    if policy == "apply":
        return False
    bad = [n for n, g in zip(names, grads) if not backend.all_finite(g)]
    if bad and policy == "raise":
        raise DecayError(
            f"Non-finite gradient (inf or nan) for parameter(s) {bad} at step {t}. "
            "Nothing was updated. Use on_nonfinite='skip' to skip such steps."
        )
    return bool(bad)


# -- 2. the numbers -------------------------------------------------------------------------
def coefficients(rule, groups: list, steps) -> list:
    """One :class:`Hyper` per (group, step) pair of ``steps`` (or per group at one int
    step), every schedule evaluated and checked."""
    if isinstance(steps, int):
        return [rule.coefficients(group, steps) for group in groups]
    return [rule.coefficients(groups[g], t) for g, t in steps]


_SPLITS: dict = {}


def _split_fields(cls) -> tuple:
    """(static field names, dynamic field names) of a Hyper class, by the sample types."""
    split = _SPLITS.get(cls)
    if split is None:
        names = [f.name for f in dataclasses.fields(cls)]
        static = tuple(n for n in names if cls.__dataclass_fields__[n].type in ("bool", bool))
        split = _SPLITS[cls] = (static, tuple(n for n in names if n not in static))
    return split


def flatten_hypers(hypers: list) -> tuple:
    """(a hashable key of everything fixed, the per-step numbers as one float list)."""
    key, values = [], []
    for h in hypers:
        static, dynamic = _split_fields(type(h))
        key.append((type(h), tuple(getattr(h, n) for n in static)))
        values.extend(float(getattr(h, n)) for n in dynamic)
    return tuple(key), values


def rebuild_hypers(hypers: list, values) -> list:
    """``hypers`` with their per-step numbers taken from ``values`` (a float64 tensor
    inside a compiled step), in :func:`flatten_hypers`' order."""
    out, at = [], 0
    for h in hypers:
        dynamic = _split_fields(type(h))[1]
        out.append(dataclasses.replace(h, **{n: values[at + i] for i, n in enumerate(dynamic)}))
        at += len(dynamic)
    return out


# -- 3. the parts -------------------------------------------------------------------------------
def partition(rule, groups: list, group_of, decayed, dtypes, steps=None, shapes=None) -> tuple:
    """The leaves split into :class:`Part` s, in first-seen order. ``steps`` (one int
    per leaf, optional) splits leaves of one group at different step counts; the Part's
    ``hyper`` then indexes the returned pairs (group, step) instead of the groups.
    ``shapes`` (one per leaf) are needed by a rule whose slots follow the parameter's
    shape (:meth:`Rule.slot_shapes`): leaves with different slots go to different parts,
    so that a part's leaves all have its ``slots``."""
    follow = rule.slots_follow_shape
    if follow and shapes is None:
        raise TypeError(f"engine.partition needs the leaves' shapes for rule {rule.name!r}.")
    keys = {}
    for i, (g, d, dtype) in enumerate(zip(group_of, decayed, dtypes)):
        slots = tuple(rule.state_slot_shapes(groups[g], shapes[i])) if follow else None
        key = (g, bool(d), dtype in LOW_PRECISION, None if steps is None else steps[i], slots)
        keys.setdefault(key, []).append(i)
    parts, pairs = [], []
    for (g, d, low, t, slots), index in keys.items():
        if steps is None:
            hyper = g
        else:
            hyper = len(pairs)
            pairs.append((g, t))
        group = groups[g]
        plan = rule.decay_plan(group, d)
        # The fold of a coupled decay into one scaling (update) knows only decay toward 0.
        plain = rule.direction_is_gradient(group) and not (plan.cautious or plan.toward)
        parts.append(Part(
            None if len(keys) == 1 else tuple(index), hyper, plan,
            tuple(rule.state_slot_names(group)) if slots is None else slots, "float32" if low else None, plain,
        ))
    return tuple(parts), pairs


# -- 4. the update of one part: the one definition -----------------------------------------------
class Scratch(list):
    """Gradients the engine formed itself (g + λθ for a coupled decay): a rule's
    :meth:`~decay.rules.Rule.direction` may write into them (Adamax's |g| in place, as
    torch's does), where it must leave the caller's gradients as they are."""


def _with_penalty(ops, plan: DecayPlan, params: list, grads: list) -> list:
    """g + ∇penalty(θ) for the plan's non-linear penalty (new tensors), or ``grads``."""
    if plan.penalty is None:
        return grads
    return [g + plan.penalty.leaf_grad(ops, p) for g, p in zip(grads, params)]


def apply_decay(ops, plan: DecayPlan, h: Hyper, params: list, grads: list, reference=None) -> list:
    """Weight decay in the update, for every rule alike; returns the gradients to use.

    Coupled: g ← g + ∇penalty(θ) (its non-linear part) + coupled·θ; decoupled:
    θ ← θ·(1 − decay_factor), after the gradient is formed (a penalty's gradient is
    taken at the θ of the step). The caller's gradients are never written. With
    ``plan.toward`` the λ part pulls toward ``reference`` (θ₀, a list) instead of 0;
    with ``plan.cautious`` the decoupled shrink is left to :func:`_cautious_step`."""
    grads = _with_penalty(ops, plan, params, grads)
    if plan.coupled:
        grads = Scratch(ops.add(grads, params, alpha=h.coupled))
        if plan.toward and not plan.decoupled:  # λ is the coupled part: g + λ·(θ − θ₀)
            ops.add_(grads, reference, alpha=-h.weight_decay)
    if plan.decoupled and not plan.cautious and not plan.in_direction:
        ops.mul_(params, 1.0 - h.decay_factor)
        if plan.toward:  # θ·(1 − f) + f·θ₀ = θ − f·(θ − θ₀)
            ops.add_(params, reference, alpha=h.decay_factor)
    return grads


def _numerator(ops, numerator) -> list:
    """A direction's numerator as one list: given as terms ((x, c), ...), Σ c·x."""
    if not isinstance(numerator, tuple):
        return numerator
    (x, c), *rest = numerator
    out = ops.mul(x, c)
    for y, d in rest:
        ops.add_(out, y, alpha=d)
    return out


def _cautious_step(ops, plan: DecayPlan, h: Hyper, params: list, direction, reference) -> None:
    """θ ← θ − f·𝟙[u⊙d ≥ 0]⊙d − s·u, with d = θ (or θ − θ₀ toward a reference), u the
    rule's direction and f = ``decay_factor`` (Chen et al., 2025: f = η_t·λ).

    The indicator is built from the vocabulary's sign: sign(sign(x) + ½) is +1 where
    x ≥ 0 (0 included) and −1 where x < 0, so (that + 1)·d is 2·𝟙[x ≥ 0]·d exactly,
    and the factor ½ goes into the scalar."""
    if isinstance(direction, tuple):
        direction = ops.div(_numerator(ops, direction[0]), direction[1])
    d = params if reference is None else ops.add(params, reference, alpha=-1.0)
    mask = ops.sign_all(ops.mul(direction, d))
    ops.add_(mask, 0.5)
    mask = ops.sign_all(mask)
    ops.add_(mask, 1.0)
    ops.mul_(mask, d)  # 2·𝟙[u⊙d ≥ 0]⊙d, read from θ before it is written
    ops.add_(params, mask, alpha=-0.5 * h.decay_factor)
    ops.add_(params, direction, alpha=-h.step_size)


def update(rule, ops, part: Part, h: Hyper, params: list, grads: list, slots: dict) -> None:
    """One part's step, in place on ``params`` and ``slots`` (lists): decay, the rule's
    direction u, θ ← θ − step_size·u."""
    plan = part.plan
    reference = slots.get(REFERENCE_SLOT) if plan.toward else None
    if REFERENCE_SLOT in slots:  # the engine's, not the rule's: the rule never sees it
        slots = {k: v for k, v in slots.items() if k != REFERENCE_SLOT}
    if part.plain and plan.coupled:
        # u = g (the rule says so): θ·(1 − f) − s·(g + c·θ) = θ·(1 − f − s·c) − s·g, the
        # coupled decay folded into one scaling instead of a pass that forms g + c·θ.
        grads = _with_penalty(ops, plan, params, grads)
        shrink = h.step_size * h.coupled + (h.decay_factor if plan.decoupled else 0.0)
        ops.mul_(params, 1.0 - shrink)
        ops.add_(params, grads, alpha=-h.step_size)
        return
    grads = apply_decay(ops, plan, h, params, grads, reference)
    if plan.in_direction:
        direction = rule.direction(ops, h, params, grads, slots, decay=True)
    else:
        direction = rule.direction(ops, h, params, grads, slots)
    if plan.cautious and plan.decoupled:
        _cautious_step(ops, plan, h, params, direction, reference)
    elif isinstance(direction, tuple):  # u = numerator / denominator, divided in the step
        numerator, denominator = direction
        if isinstance(numerator, tuple):  # Σ c·x: one pass per term, no temporary (NAdam)
            for x, c in numerator:
                ops.addcdiv_(params, x, denominator, -h.step_size * c)
        else:
            ops.addcdiv_(params, numerator, denominator, -h.step_size)
    else:
        ops.add_(params, direction, alpha=-h.step_size)


def _kernel_plan(plan: DecayPlan):
    """The plan a declared kernel is asked to run, or None when none can: cautious decay
    needs the rule's direction before the shrink, which a whole-step kernel never
    exposes. Toward a reference, the engine applies the decay itself and the kernel
    runs without any (its own decay pulls toward 0)."""
    if plan.cautious and plan.decoupled:
        return None
    return DecayPlan() if plan.toward else plan


def _run_part(rule, backend, part: Part, h: Hyper, t, params, grads, slots, fast, fit=False) -> None:
    kernel_plan = _kernel_plan(part.plan) if fast and backend.has_fused and part.compute is None else None
    if kernel_plan is not None:
        call = rule.fused(h, kernel_plan, t)
        ready = None if call is None else backend.fused_ready(params, grads, slots, fit)
        if ready is not None:
            if kernel_plan is not part.plan:
                grads = apply_decay(backend, part.plan, h, params, grads, slots[REFERENCE_SLOT])
            if not call.includes_decay:
                grads = apply_decay(backend, kernel_plan, h, params, grads)
            backend.run_fused(call, ready, params, grads, slots)
            return

    if not fast and part.plain:
        part = part._replace(plain=False)  # the plain run is the reference for the fold too

    def run(p, g, s):
        update(rule, backend, part, h, p, g, s)

    if fast and rule.elementwise:
        backend.run_elementwise(run, params, grads, slots)
    else:
        run(params, grads, slots)


def _body(rule, backend, parts, hypers, steps, params: list, grads: list, columns: dict, fast: bool,
          fit=False) -> None:
    """Every part's update, writing into ``params`` and ``columns`` (lists). ``fit``: the
    backend's :meth:`~decay.backends.base.Backend.grads_fit` verdict on ``grads``."""
    for part in parts:
        h = hypers[part.hyper]
        t = steps if isinstance(steps, int) else steps[part.hyper][1]
        index = part.index
        if index is None:
            p, g, s = params, grads, {name: columns[name] for name in part.slots}
        else:
            p, g = [params[i] for i in index], [grads[i] for i in index]
            s = {name: [columns[name][i] for i in index] for name in part.slots}
        dtypes = None
        if part.compute is not None:  # float16/bfloat16: computed in float32, rounded once
            dtypes = [backend.dtype_name(x) for x in p]
            p = [backend.cast(x, part.compute) for x in p]
            g = [backend.cast(x, part.compute) for x in g]
        _run_part(rule, backend, part, h, t, p, g, s, fast, fit)
        if dtypes is not None:
            p = [backend.cast(x, dtype) for x, dtype in zip(p, dtypes)]
        if index is None:
            if p is not params:
                params[:] = p
        else:
            for j, i in enumerate(index):
                params[i] = p[j]
                for name in part.slots:
                    columns[name][i] = s[name][j]


# -- 5. run and write ------------------------------------------------------------------------------
def run(rule, backend, parts, hypers, params, grads, columns: dict, *, steps=0, fast=True, owner=None,
        aliased=None, grads_fit=False):
    """Run the step for ``parts`` and write the parameters. Returns (params, columns):
    the parameters as :meth:`Backend.write` gives them back (the same objects where
    they are mutable) and the slot lists, updated or with new tensors. ``aliased``: per
    gradient, whether it is its parameter's memory, where the memory check found it;
    ``grads_fit``: see :func:`step`."""
    rule.check_leaves(backend, params)  # the rule's own preconditions, before any write
    columns = {name: list(col) for name, col in columns.items()}
    if fast and backend.compiles and owner is not None:
        key, values = flatten_hypers(hypers)
        structure = (parts, key, tuple(columns), isinstance(steps, int))

        def traced(p, g, c, tensor):
            _body(rule, backend, parts, rebuild_hypers(hypers, tensor), steps, p, g, c, False)

        if backend.run_compiled(owner, structure, traced, params, grads, columns, values):
            return list(params), columns
    work = backend.read_all(params)  # the params themselves where they can be written in place
    shared = backend.grads_alias(grads, work) if aliased is None else aliased
    if any(shared):
        # A gradient that is its parameter or a view of it (step(x, x, ...),
        # p.detach()) would change under the in-place update before it is read: it is
        # read as the value it had, on every backend and path.
        grads = [backend.clone([g])[0] if s else g for g, s in zip(grads, shared)]
    _body(rule, backend, parts, hypers, steps, work, grads, columns, fast, grads_fit)
    if all(map(operator.is_, work, params)):  # all written in place
        return list(params), columns
    return [p if w is p else backend.write(p, w) for p, w in zip(params, work)], columns


def step(rule, backend, params, grads, columns, *, groups, group_of, decayed, steps, names, parts=None,
         fast=True, owner=None, grads_fit=False):
    """The whole sequence for an eager caller. ``steps`` is the step count of every leaf
    (an int) or one per leaf (a list). ``grads_fit``: True where the caller has found
    the gradients fit the parameters by :meth:`Backend.grads_fit
    <decay.backends.base.Backend.grads_fit>` (the backend's per-step checks then skip
    what it verified). Returns (skipped, params, columns); nothing is written when the
    step is skipped or any check fails."""
    t0 = steps if isinstance(steps, int) else min(steps)
    with backend.no_grad():
        given, grads = grads, backend.read_all(grads)
        aliased = check_step_inputs(backend, names, params, given, grads,
                                    None if owner is None else owner.__dict__.setdefault("_memory_cache", {}), grads_fit)
        if skips_nonfinite(rule.on_nonfinite, backend, names, grads, t0):
            return True, params, columns
        if parts is None or not isinstance(steps, int):
            dtypes = [backend.dtype_name(x) for x in params]
            parts, pairs = partition(rule, groups, group_of, decayed, dtypes, None if isinstance(steps, int) else steps,
                                     [backend.shape(x) for x in params])
            steps = steps if isinstance(steps, int) else pairs
        hypers = coefficients(rule, groups, steps)
        out, columns = run(rule, backend, parts, hypers, params, grads, columns, steps=steps, fast=fast, owner=owner,
                           aliased=aliased, grads_fit=grads_fit)
    return False, out, columns
