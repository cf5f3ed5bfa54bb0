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

import operator

import torch

from .. import engine
from ..backends import get_backend
from ..engine import LOW_PRECISION
from ..errors import DecayError
from ..masks import resolve_mask
from ..rules import Rule

_IS_SPARSE = operator.attrgetter("is_sparse")


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
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, group_of, decayed, hypers = [], [], [], [], []
        for group in self.param_groups:
            chosen = [p for p in group["params"] if p.grad is not None]
            if not chosen:
                continue
            hyper = self._checked(group)
            # torch checked each .grad's shape, dtype and device when it was assigned.
            grads_now = [p.grad for p in chosen]
            if any(map(_IS_SPARSE, grads_now)):
                raise DecayError("decay.torch.Optimizer does not support sparse gradients.")
            group_of.extend([len(hypers)] * len(chosen))
            hypers.append(hyper)
            decayed.extend(self._decayed(group, chosen))
            params.extend(chosen)
            grads.extend(grads_now)
        if not params:
            return loss
        states = self._states_for(params, hypers, group_of)
        steps = [s["step"] for s in states]
        uniform = steps.count(steps[0]) == len(steps)
        names = sorted({n for h in hypers for n in self.rule.slot_names(h)})
        columns = {n: [s.get(n) for s in states] for n in names}
        skipped, _, columns = engine.step(
            self.rule, self._backend, params, grads, columns, groups=hypers, group_of=group_of,
            decayed=decayed, steps=steps[0] if uniform else steps,
            parts=self._parts(params, hypers, group_of, decayed) if uniform else None,
            names=[f"param {i}" for i in range(len(params))] if self.rule.on_nonfinite != "apply" else (),
            fast=self.rule.use_fast_path,
        )
        if skipped:
            self.skipped_steps += 1
            return loss
        for n, column in columns.items():
            for state, x in zip(states, column):
                if x is not None and state[n] is not x:
                    state[n] = x
        for state in states:
            state["step"] += 1
        return loss

    def _parts(self, params, hypers, group_of, decayed):
        """The engine's partition of these parameters, remembered while the same
        parameters (with grads) and the same validated groups come back."""
        key = (tuple(map(id, params)), tuple(map(id, hypers)))
        cached = self._parts_cache
        if cached is None or cached[0] != key:
            dtypes = [self._backend.dtype_name(p) for p in params]
            cached = self._parts_cache = (key, engine.partition(self.rule, hypers, group_of, decayed, dtypes)[0])
        return cached[1]

    def _states_for(self, params, hypers, group_of) -> list:
        """The parameters' states, each created on first use (zero slots, step 0)."""
        states = [self.state[p] for p in params]
        if not all(states):
            for p, state, g in zip(params, states, group_of):
                if state:
                    continue
                # A Python int: it is read and advanced for every parameter at every step,
                # which costs microseconds as a tensor. (torch.optim keeps a CPU tensor;
                # an int saves and loads the same way.)
                state["step"] = 0
                starts = self.rule.slot_initial_values(hypers[g])
                for slot in self.rule.slot_names(hypers[g]):
                    dtype = torch.float32 if self._backend.dtype_name(p) in LOW_PRECISION else p.dtype
                    state[slot] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                    if starts.get(slot, 0.0):
                        state[slot].fill_(float(starts[slot]))
        return states

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
        super().load_state_dict(state_dict)
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        self._restore_float32_slots(state_dict)

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


def _without_own_arguments(params):
    """ZeroRedundancyOptimizer copies the keyword arguments it passes on (``rule=``,
    ``names=``) into every param group; they are the optimizer's, not the group's
    hyperparameters, and would be pickled into every checkpoint."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [{k: v for k, v in group.items() if k not in ("rule", "names")} for group in params]
    return params
