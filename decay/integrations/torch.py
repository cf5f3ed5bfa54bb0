"""decay inside a PyTorch training loop: ``decay.torch.Optimizer(params, rule)``.

A real :class:`torch.optim.Optimizer`: it takes ``model.parameters()``,
``model.named_parameters()`` (names feed the rule's mask) or param groups with their own
hyperparameters; ``zero_grad``, ``step(closure)``, ``state_dict``/``load_state_dict``
and ``add_param_group`` behave as in torch, and torch's ``lr_scheduler`` classes drive
``group["lr"]``. Nothing here does math.

Per-parameter state uses torch's own slot names (``step``, ``momentum_buffer``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), so its layout matches torch's SGD,
Adam and AdamW. The step is :func:`decay.engine.step`, the same as ``Rule.step``'s.
"""

from __future__ import annotations

import itertools
import operator

import torch

from .. import engine
from ..backends import get_backend
from ..engine import LOW_PRECISION
from ..errors import DecayError
from .._memory import check_disjoint
from ..masks import resolve_mask
from ..rules import Rule
from ..rules._reference import pick_reference, reference_slots
from ..validation import check_updatable, dense_grads
from ._torch_sharded import _as_dtensor, _check_sharding, _dtensor_type, _finite_on_every_rank, _local_shards

_IS_SPARSE = operator.attrgetter("is_sparse")
_IS_CONTIGUOUS = torch.Tensor.is_contiguous


class Optimizer(torch.optim.Optimizer):
    """Run a decay rule as a torch optimizer.

    ``rule`` gives the defaults; a param group may override any of the rule's
    hyperparameters (``rule.hyper_names``), e.g.
    ``[{"params": decay_params}, {"params": no_decay, "weight_decay": 0.0}]``. A group's
    ``lr`` may be a number (which torch's lr schedulers change) or a decay schedule /
    callable of the step (evaluated at each parameter's step count) — use one of the
    two, not both.

    ``names=dict(model.named_parameters())`` names parameters given unnamed (for
    example by ``ZeroRedundancyOptimizer``, which passes it on to each shard's
    optimizer), so masks by name still apply.

    ``on_nonfinite="skip"`` on the rule skips the whole step when any gradient is inf or
    nan (nothing is written, step counts do not advance) and counts it in
    :attr:`skipped_steps`; ``"raise"`` raises :class:`decay.DecayError`.

    Example::

        model = torch.nn.Linear(4, 1)
        opt = decay.torch.Optimizer(model.named_parameters(),
                                    decay.adamw(1e-3, weight_decay=0.05, mask=decay.masks.timm_default))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
    """

    def __init__(self, params, rule: Rule, names=None):
        if not isinstance(rule, Rule):
            raise DecayError(
                f"`rule` must be a decay rule such as decay.sgd(...) or decay.adamw(...). "
                f"Received a {type(rule).__module__}.{type(rule).__qualname__}."
            )
        if rule.groups:
            raise DecayError(
                "The rule has `groups=`; with decay.torch.Optimizer give groups as torch param "
                "groups instead: [{'params': [...], 'lr': ...}, ...]."
            )
        self.rule = rule
        self.skipped_steps = 0
        self._decayed_cache = {}
        self._groups = {}  # id(group) -> (group, its values, validated hyperparameters)
        self._parts_cache = None
        # Names by parameter identity, for masks when params arrive unnamed (e.g. the
        # shards ZeroRedundancyOptimizer hands out): names=dict(model.named_parameters()).
        self._names = {}
        if names is not None:
            items = names.items() if isinstance(names, dict) else names
            self._names = {id(p): str(n) for n, p in items}
        self._mask = rule.mask
        if isinstance(rule.mask, dict) and self._names:
            # Checked against every name once: a shard holds only some of them.
            resolve_mask(rule.mask, list(self._names.values()), [None] * len(self._names))
            self._mask = lambda name, tensor, table=dict(rule.mask): bool(table.get(name, True))
        self._backend = get_backend("torch")
        defaults = {k: rule.defaults[k] for k in rule.hyper_names}
        super().__init__(_without_own_arguments(params), defaults)

    # -- param groups: validated when added ------------------------------------------
    def add_param_group(self, param_group):
        params = param_group.get("params") if isinstance(param_group, dict) else None
        if isinstance(params, (set, frozenset)):
            raise DecayError("A param group's `params` is a set, whose order changes between runs (torch.optim "
                             "refuses it too). Pass a list, e.g. list(model.parameters()).")
        if params is not None:
            # torch.optim only warns for a parameter listed twice in one group (and raises
            # a plain ValueError across groups); decay refuses both, before anything changes.
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            if params and isinstance(params[0], tuple):  # named_parameters() pairs
                names, tensors = [str(n) for n, _ in params], [p for _, p in params]
            else:
                names, tensors = [f"param {i}" for i in range(len(params))], params
            if all(isinstance(p, torch.Tensor) for p in tensors):
                existing = [p for g in getattr(self, "param_groups", ()) for p in g["params"]]
                check_updatable(["(an earlier group)"] * len(existing) + names, existing + tensors, self._backend)
            param_group = {**param_group, "params": params}
        super().add_param_group(param_group)
        self._checked(self.param_groups[-1])

    def _checked(self, group: dict) -> dict:
        """The group's hyperparameters, validated by the rule when the group is added and
        again only when one of them has been changed since (a torch lr scheduler sets
        ``group["lr"]``), so that a bad value is refused before anything is written."""
        current = tuple(group[k] for k in self.rule.hyper_names)
        cached = self._groups.get(id(group))
        if cached is not None and cached[0] is group and all(map(operator.is_, cached[1], current)):
            return cached[2]
        hyper = self.rule.check_group(dict(zip(self.rule.hyper_names, current)))
        if "_lr0" in hyper and "initial_lr" in group:
            # A torch lr scheduler keeps the base lr here: the paper's η_t = lr_t / lr_0.
            hyper["_lr0"] = float(group["initial_lr"])
        if "_lr_max" in hyper and self.rule.lr_max is None and "initial_lr" in group:
            # ... and the peak of a decreasing schedule, for decay_scaled_by="corrected"
            # (a scheduler that rises above it, OneCycleLR, needs lr_max=).
            hyper["_lr_max"] = float(group["initial_lr"])
        self._groups[id(group)] = (group, current, hyper)
        return hyper

    def _decayed(self, group: dict, params: list) -> list:
        """Whether each of ``params`` is decayed; remembered per group, since neither
        the mask nor the names change between steps."""
        key = tuple(map(id, params))
        cached = self._decayed_cache.get(id(group))
        if cached is not None and cached[0] == key:
            return cached[1]
        decayed = self._resolve_decayed(group, params)
        self._decayed_cache[id(group)] = (key, decayed)
        return decayed

    def _resolve_decayed(self, group: dict, params: list) -> list:
        names = group.get("param_names")
        if names is None and self._names:
            names = [self._names.get(id(p), "") for p in group["params"]]
        if names is None:
            if isinstance(self._mask, dict):
                raise DecayError(
                    "The rule's mask names parameters, but the optimizer was given unnamed "
                    "parameters. Pass model.named_parameters() instead of model.parameters()."
                )
            names = [""] * len(group["params"])
        by_param = dict(zip(map(id, group["params"]), names))
        chosen = [by_param[id(p)] for p in params]
        return resolve_mask(self._mask, chosen, params)

    # -- the step: the engine's, over every group at once ------------------------------------
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._backend.no_grad():  # cheaper than torch.no_grad()'s decorator, per step
            return self._step(loss)

    def _with_grads(self):
        """(params, grads, group_of, decayed, hypers, fit) over every group: the
        parameters that have a gradient, their gradients (sparse ones made dense where
        the rule takes them), each one's group index and decay, each group's
        hyperparameters, and whether every gradient is dense and contiguous (with the
        shape, dtype and device torch checked when ``.grad`` was assigned, that is the
        torch backend's ``grads_fit``)."""
        params, grads, group_of, decayed, hypers, fit = [], [], [], [], [], True
        for group in self.param_groups:
            chosen = group["params"]
            grads_now = [p.grad for p in chosen]
            if any(map(operator.is_, grads_now, itertools.repeat(None))):
                chosen = [p for p, g in zip(chosen, grads_now) if g is not None]
                grads_now = [g for g in grads_now if g is not None]
            if not chosen:
                continue
            hyper = self._checked(group)
            # torch checked each .grad's shape, dtype and device when it was assigned.
            dense = _all_contiguous(grads_now)
            fit = fit and dense
            if not dense and any(map(_IS_SPARSE, grads_now)):
                # SGD, Adagrad take them (made dense), as torch.optim's
                grads_now = dense_grads(self.rule, self._backend, [f"param {len(params) + i}" for i in range(len(chosen))],
                                        grads_now, self.rule.decay_acts([hyper], [0] * len(chosen),
                                                                        self._decayed(group, chosen)))
            group_of.extend([len(hypers)] * len(chosen))
            hypers.append(hyper)
            decayed.extend(self._decayed(group, chosen))
            params.extend(chosen)
            grads.extend(grads_now)
        return params, grads, group_of, decayed, hypers, fit

    def _step(self, loss):
        params, grads, group_of, decayed, hypers, fit = self._with_grads()
        if not params:
            return loss
        _check_sharding(self.rule, params)
        initializing = not self.state and _is_state_initialization(self.param_groups, grads)
        states, fresh = self._states_for(params, hypers, group_of)
        if initializing:
            for p, state in fresh:
                self.state[p] = state
            return loss
        steps = [s["step"] for s in states]
        uniform = steps.count(steps[0]) == len(steps)
        parts, names, sharded = self._plan(params, hypers, group_of, decayed)
        parts = parts if uniform else None
        columns = {n: [s.get(n) for s in states] for n in names}
        run_params, run_grads, run_columns = params, grads, columns
        shards = _local_shards(params, grads, columns) if sharded else None
        if shards is not None:
            run_params, run_grads, run_columns = shards
            if self.rule.on_nonfinite != "apply" and not _finite_on_every_rank(run_grads):
                if self.rule.on_nonfinite == "raise":
                    raise DecayError(
                        f"Non-finite gradient (inf or nan) on some rank at step {min(steps)}. Nothing "
                        "was updated on any rank. Use on_nonfinite='skip' to skip such steps."
                    )
                self.skipped_steps += 1
                return loss
        skipped, _, out_columns = engine.step(
            self.rule, self._backend, run_params, run_grads, run_columns, groups=hypers, group_of=group_of,
            decayed=decayed, steps=steps[0] if uniform else steps, parts=parts,
            names=[f"param {i}" for i in range(len(params))] if self.rule.on_nonfinite != "apply" else (),
            fast=self.rule.use_fast_path, owner=self, grads_fit=fit and shards is None,
        )
        if skipped:
            self.skipped_steps += 1
            return loss
        for n, column in out_columns.items():
            if all(map(operator.is_, column, run_columns[n])):  # updated in place (fast paths): nothing new
                continue
            for p, state, x, given in zip(params, states, column, run_columns[n]):
                if x is not None and x is not given:  # a new slot tensor (a slot created by the rule)
                    state[n] = x if shards is None else _as_dtensor(x, p)
        for state in states:
            state["step"] += 1
        for p, state in fresh:
            self.state[p] = state
        return loss

    def _plan(self, params, hypers, group_of, decayed):
        """(the engine's partition of these parameters, the slot names, whether any is a
        DTensor), remembered while the same parameters (with grads) and the same
        validated groups come back: per step this costs one pass of ids."""
        key = (tuple(map(id, params)), tuple(map(id, hypers)))
        cached = self._parts_cache
        if cached is None or cached[0] != key:
            dtypes = [self._backend.dtype_name(p) for p in params]
            shapes = [tuple(p.shape) for p in params]
            parts = engine.partition(self.rule, hypers, group_of, decayed, dtypes, shapes=shapes)[0]
            names = sorted({n for h in hypers for n in self.rule.state_slot_names(h)})
            dtensor = _dtensor_type()
            sharded = dtensor is not None and any(map(isinstance, params, itertools.repeat(dtensor)))
            cached = self._parts_cache = (key, (parts, names, sharded))
        return cached[1]

    def _states_for(self, params, hypers, group_of) -> tuple:
        """The parameters' states, each created on first use (zero slots, step 0), and the
        (param, state) pairs created now."""
        # .get, not [] (a defaultdict): a state is entered only after a step succeeds,
        # so a step that fails leaves optimizer.state as it was (step writes new ones).
        states, fresh = list(map(self.state.get, params)), []
        if not all(states):
            for i, (p, state, g) in enumerate(zip(params, states, group_of)):
                if state:
                    continue
                states[i] = state = {}
                fresh.append((p, state))
                # A Python int: it is read and advanced for every parameter at every step,
                # which costs microseconds as a tensor. (torch.optim keeps a CPU tensor;
                # an int saves and loads the same way.)
                new = {"step": 0}
                starts = self.rule.slot_initial_values(hypers[g])
                for slot, shape in self.rule.state_slot_shapes(hypers[g], tuple(p.shape)).items():
                    dtype = torch.float32 if self._backend.dtype_name(p) in LOW_PRECISION else p.dtype
                    if shape == tuple(p.shape):
                        new[slot] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                    else:
                        new[slot] = torch.zeros(shape, dtype=dtype, device=p.device)
                    if starts.get(slot, 0.0):
                        new[slot].fill_(float(starts[slot]))
                if self.rule.decay_toward is not None:
                    self._set_reference(p, new)  # may refuse it: then no state is left half made
                state.update(new)
        return states, fresh

    def _set_reference(self, p, state):
        """θ₀ of ``decay_toward`` for a new state: "init" is ``p`` now (before its first
        update); tensors are matched to every parameter of the optimizer by name
        (``named_parameters()``) or by position, as ``Rule.init`` matches them."""
        every, names = [], []
        for group in self.param_groups:
            given = group.get("param_names") or [self._names.get(id(q), str(len(every) + i))
                                                 for i, q in enumerate(group["params"])]
            every.extend(group["params"])
            names.extend(given)
        index = next(i for i, q in enumerate(every) if q is p)
        toward = pick_reference(self.rule.decay_toward, names, len(every), index)
        slot = engine.REFERENCE_SLOT
        state[slot] = reference_slots(toward, self._backend, [names[index]], [p], [state[slot]])[0]

    # -- saving -------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["decay"] = {"rule": self.rule.name, "skipped_steps": self.skipped_steps}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("decay", None) or {}
        saved_rule = extra.get("rule")
        if saved_rule is not None and saved_rule != self.rule.name:
            raise DecayError(
                f"This optimizer state was saved with rule {saved_rule!r} but this optimizer runs "
                f"{self.rule.name!r}. Build the optimizer with the same rule."
            )
        self._check_loadable(state_dict)
        super().load_state_dict(state_dict)
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        for state in self.state.values():
            state["step"] = _as_step(state["step"])
        self._restore_float32_slots(state_dict)

    def _check_loadable(self, state_dict):
        """Refuse, before anything is loaded, a state this rule could not step: another
        optimizer's (other slots, as torch.optim.Adam's into an SGD), other shapes, bad
        hyperparameters or step counts. torch.optim would load it and fail, or compute
        nonsense, at the next step."""
        groups, saved = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(saved, dict) or len(groups) != len(self.param_groups):
            raise DecayError(
                f"The state to load has {len(groups) if isinstance(groups, list) else 'no'} param groups; this "
                f"optimizer has {len(self.param_groups)}. Load a state_dict() of an optimizer built on the same groups."
            )
        for index, (group, mine) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(group, dict) or len(group.get("params", ())) != len(mine["params"]):
                raise DecayError(f"Param group {index} of the state to load does not have this group's parameters.")
            hyper = self.rule.check_group({k: group.get(k, mine[k]) for k in self.rule.hyper_names})
            for saved_id, p in zip(group["params"], mine["params"]):
                entry = saved.get(saved_id)
                if entry is None:
                    continue
                shapes = self.rule.state_slot_shapes(hyper, tuple(p.shape))
                wanted = {"step", *shapes}
                if not isinstance(entry, dict) or set(entry) != wanted:
                    got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                    raise DecayError(
                        f"The state to load holds {got} for a parameter of group {index}; {self.rule.name} "
                        f"keeps {sorted(wanted)}. Was it saved by another optimizer? Load a state saved "
                        "with this rule."
                    )
                _check_loaded_entry(entry, p, shapes, index)
        self._check_loaded_memory(groups, saved)

    def _check_loaded_memory(self, groups, saved):
        """torch keeps a loaded tensor as is when it has its parameter's dtype and device:
        such a slot must not share memory with a parameter or another slot (the step
        would write it twice), refused before anything is loaded, as rule.step refuses it."""
        labels, tensors = [], []
        for index, (group, mine) in enumerate(zip(groups, self.param_groups)):
            for position, (saved_id, p) in enumerate(zip(group["params"], mine["params"])):
                labels.append(f"parameter {position} of group {index}")
                tensors.append(p)
                for key, value in (saved.get(saved_id) or {}).items():
                    if (key != "step" and isinstance(value, torch.Tensor) and value.dtype == p.dtype
                            and value.device == p.device):
                        labels.append(f"the loaded state {key!r} of parameter {position} of group {index}")
                        tensors.append(value)
        check_disjoint(self._backend, labels, tensors)

    def _restore_float32_slots(self, state_dict):
        """torch casts loaded state to each parameter's dtype; decay keeps the slots of
        float16/bfloat16 parameters in float32, so put back the saved float32 values
        (a round trip through bfloat16 would lose their low bits)."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            if p.dtype not in (torch.float16, torch.bfloat16):
                continue
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if key != "step" and isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(dtype=torch.float32, device=p.device, copy=True)


def _all_contiguous(tensors) -> bool:
    """Whether every tensor is dense and contiguous: the usual gradients, told in one
    pass cheaper than reading ``is_sparse`` (a sparse COO tensor is not contiguous; other
    sparse layouts have no contiguity and raise)."""
    try:
        return all(map(_IS_CONTIGUOUS, tensors))
    except RuntimeError:
        return False


def _as_step(step):
    """A step count as an int: torch.optim keeps it as a float tensor."""
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_complex():
        value = step.item()
        return int(value) if float(value).is_integer() else value
    return step


def _check_loaded_entry(entry: dict, p, shapes: dict, index: int) -> None:
    step = _as_step(entry["step"])
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise DecayError(f"The state to load has step={entry['step']!r} for a parameter of group {index}; "
                         "it must be an integer >= 0.")
    for key, value in entry.items():
        if key != "step" and (not isinstance(value, torch.Tensor) or not value.is_floating_point()
                              or tuple(value.shape) != shapes[key] or value.layout != torch.strided):
            raise DecayError(
                f"The state to load has {key!r} = a {type(value).__name__} "
                f"{getattr(value, 'dtype', '')} {tuple(getattr(value, 'shape', ()))} for a parameter of shape "
                f"{tuple(p.shape)} in group {index}; it must be a dense float tensor of shape {shapes[key]}."
            )


def _without_own_arguments(params):
    """ZeroRedundancyOptimizer copies the keyword arguments it passes on (``rule=``,
    ``names=``) into every param group; they are the optimizer's, not the group's
    hyperparameters, and would be pickled into every checkpoint."""
    if isinstance(params, (set, frozenset)):
        raise DecayError("`params` is a set, whose order changes between runs (torch.optim refuses it too). "
                         "Pass a list, e.g. list(model.parameters()).")
    params = list(params)
    if params and isinstance(params[0], dict):
        return [{k: v for k, v in group.items() if k not in ("rule", "names")} for group in params]
    return params


def _is_state_initialization(param_groups, grads) -> bool:
    """Whether this first step is the one torch.distributed.checkpoint's
    ``get_state_dict`` runs to create the state of an optimizer that has not stepped:
    every lr set to 0 and every gradient zero. torch.optim's rules move nothing then;
    decay's decoupled decay with ``decay_scaled_by="none"`` would still shrink θ by λ,
    so the state is created and nothing is written (the step count stays 0)."""
    if not all(isinstance(g["lr"], (int, float, torch.Tensor)) and float(g["lr"]) == 0.0 for g in param_groups):
        return False
    return all(not bool(g.any()) for g in grads)
