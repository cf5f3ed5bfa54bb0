"""What each of the 2 ranks of tests/distributed/test_fsdp2.py runs: FSDP2 (``fully_shard``).

``torch.multiprocessing.spawn(worker, args=(2, port, out_dir, phase), nprocs=2)`` starts
the ranks; they meet over gloo on 127.0.0.1:port. Every scenario builds the float64 net
below, shards it with ``fully_shard`` per layer and at the root, and trains it with
each global batch of 16 split 8 + 8 between the ranks (rank r takes rows
``[r·8, r·8 + 8)``). FSDP2 reduce-scatters the gradients (mean over ranks), so each
rank steps on its shard of the mean gradient of the whole batch.

``phase="train"`` runs every scenario (:func:`scenarios`), the mixed-precision run, a
non-finite gradient on one rank, and saves a distributed checkpoint (DCP) of the
checkpointed scenario after ``SAVE_AT`` steps; ``phase="resume"`` (new processes)
loads that checkpoint and finishes the run. Rank 0 writes the gathered weights
(``full_tensor()``) to ``out_dir/<phase>.npz``; every rank writes what it saw (mask
decisions, kernels run, penalty values) to ``out_dir/<phase>_rank<r>.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

import decay
import decay.distributed
from decay.backends import get_backend

GLOBAL_BATCH, STEPS, SAVE_AT, LAM, MP_STEPS = 16, 50, 25, 0.01, 20
CHECKPOINTED = "adamw_timm_cosine"
# timm_default by full shape: the LayerNorm's weight "1.weight" is 1-D (not decayed
# although its name is not a bias); "3.weight" has shape (1, 8), so rank 1's shard of
# it is empty (0, 8) and its bias' shard (0,).
TIMM_DECAYED = {"0.weight": True, "0.bias": False, "1.weight": False, "1.bias": False,
                "3.weight": True, "3.bias": False}


def data(dtype=torch.float64):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 4))
    y = np.sin(x @ np.array([1.0, -2.0, 0.5, 0.3]))[:, None] + 0.1 * rng.normal(size=(STEPS * GLOBAL_BATCH, 1))
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


def net(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).to(dtype)


class RecordingMask:
    """timm_default, recording the shape and type each decision was made from."""

    def __init__(self):
        self.seen = {}

    def __call__(self, name, tensor):
        decided = decay.masks.timm_default(name, tensor)
        local = tensor.to_local().shape if isinstance(tensor, DTensor) else tensor.shape
        self.seen[name] = {"shape": list(tensor.shape), "local_shape": list(local),
                           "type": type(tensor).__name__, "decayed": decided}
        return decided


def timm_groups(model):
    """torch.optim's way to the same mask: two param groups."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if TIMM_DECAYED[n]]},
            {"params": [p for n, p in named if not TIMM_DECAYED[n]], "weight_decay": 0.0}]


def scenarios():
    """name -> (build optimizer(model) -> (optimizer, mask or None), torch lr scheduler or None)."""
    def decay_opt(rule_of_mask, masked=False):
        def build(model):
            mask = RecordingMask() if masked else None
            return decay.torch.Optimizer(model.named_parameters(), rule_of_mask(mask)), mask
        return build

    cosine = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)  # noqa: E731
    return {
        "sgd_momentum_coupled": (decay_opt(lambda m: decay.sgd(0.05, momentum=0.9, weight_decay=0.01)), None),
        "sgd_momentum_decoupled": (
            decay_opt(lambda m: decay.sgd(0.05, momentum=0.9, weight_decay=0.01, decoupled=True)), None),
        "adamw_timm": (decay_opt(lambda m: decay.adamw(0.01, weight_decay=0.1, mask=m), masked=True), None),
        CHECKPOINTED: (decay_opt(lambda m: decay.adamw(0.01, weight_decay=0.1, mask=m), masked=True), cosine),
        # foreach=True: torch's multi-tensor AdamW, as it runs under FSDP2 on GPUs (on CPU
        # torch defaults to a Python loop, which is slower here and gives the same numbers).
        "torch_adamw_cosine": (lambda model: (torch.optim.AdamW(timm_groups(model), lr=0.01, weight_decay=0.1,
                                                                foreach=True), None), cosine),
    }


def batches(rank=None, world_size=1, start=0, stop=STEPS, dtype=torch.float64):
    """Each step's batch: the whole global batch, or rank's contiguous slice of it."""
    x, y = data(dtype)
    local = GLOBAL_BATCH // world_size
    for step in range(start, stop):
        begin = step * GLOBAL_BATCH + (0 if rank is None else rank * local)
        end = begin + (GLOBAL_BATCH if rank is None else local)
        yield x[begin:end], y[begin:end]


def train(model, optimizer, scheduler, rank=None, world_size=1, start=0, stop=STEPS, dtype=torch.float64,
          after_backward=None):
    for step, (xb, yb) in enumerate(batches(rank, world_size, start, stop, dtype), start):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        if after_backward is not None:
            after_backward(step)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def sharded(model, mp_policy=None):
    """fully_shard per layer with parameters, then at the root (the LayerNorm's go there)."""
    kwargs = {} if mp_policy is None else {"mp_policy": mp_policy}
    for index in (0, 3):
        fully_shard(model[index], **kwargs)
    fully_shard(model, **kwargs)
    return model


def gathered(model) -> dict:
    """Every parameter whole, on every rank (a collective)."""
    # (NumPy has no bfloat16; float32 holds every bfloat16 value exactly.)
    return {n: _numpy(p.full_tensor()) for n, p in model.named_parameters()}


def _numpy(tensor):
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


class PathRecorder:
    """Which of the backend's paths each step took, and on what tensor types."""

    def __init__(self):
        self.backend = get_backend("torch")
        self.calls = []
        self._fused, self._elementwise = self.backend.run_fused, self.backend.run_elementwise

        def run_fused(call, ready, params, grads, slots):
            self.calls.append(("fused " + call.kernel, sorted({type(p).__name__ for p in params + grads})))
            return self._fused(call, ready, params, grads, slots)

        def run_elementwise(fn, params, grads, slots):
            self.calls.append(("foreach definition", sorted({type(p).__name__ for p in params + grads})))
            return self._elementwise(fn, params, grads, slots)

        self.backend.run_fused, self.backend.run_elementwise = run_fused, run_elementwise

    def take(self):
        seen = sorted({(path, tuple(types)) for path, types in self.calls})
        self.calls = []
        return [[path, list(types)] for path, types in seen]


def _checkpoint_state(model, optimizer, scheduler):
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict()}


def run_train(rank, world_size, out_dir, arrays, facts):
    recorder = PathRecorder()
    for name, (build, make_scheduler) in scenarios().items():
        started = time.perf_counter()
        model = sharded(net())
        optimizer, mask = build(model)
        scheduler = make_scheduler(optimizer) if make_scheduler else None
        stop = SAVE_AT if name == CHECKPOINTED else STEPS
        train(model, optimizer, scheduler, rank, world_size, stop=stop)
        if name == CHECKPOINTED:
            dcp.save(_checkpoint_state(model, optimizer, scheduler), checkpoint_id=os.path.join(out_dir, "ckpt"))
            arrays.update({f"{name}/at_save/{k}": v for k, v in gathered(model).items()})
            train(model, optimizer, scheduler, rank, world_size, start=SAVE_AT)
            arrays.update(_gathered_state(name, model, optimizer))
        arrays.update({f"{name}/{k}": v for k, v in gathered(model).items()})
        facts[name] = {"paths": recorder.take(), "mask": None if mask is None else mask.seen,
                       "param_types": sorted({type(p).__name__ for p in model.parameters()}),
                       "seconds": time.perf_counter() - started}
        if name == "sgd_momentum_coupled":
            value = decay.distributed.sharded_penalty(decay.L2(LAM), model.parameters())
            facts[name]["penalty"] = float(value)
            facts[name]["penalty_type"] = type(value).__name__
            facts[name]["penalty_of_dict"] = float(decay.distributed.sharded_penalty(
                decay.L2(LAM), dict(model.named_parameters())))
            facts[name].update(penalty_of_placements(model))
    for run in (run_mixed_precision, run_nonfinite_on_one_rank):
        started = time.perf_counter()
        run(rank, world_size, arrays, facts)
        facts[run.__name__] = time.perf_counter() - started


REPLICATED = [1.0, -2.0, 3.0]


def penalty_of_placements(model) -> dict:
    """sharded_penalty of a replicated DTensor (every rank holds all of it: counted
    once) next to the sharded parameters, and of a Partial one (refused)."""
    from torch.distributed.tensor import Partial, Replicate, distribute_tensor

    mesh = next(model.parameters()).device_mesh
    replicated = distribute_tensor(torch.tensor(REPLICATED, dtype=torch.float64), mesh, [Replicate()])
    out = {"penalty_with_replicated": float(decay.distributed.sharded_penalty(
        decay.L2(LAM), list(model.parameters()) + [replicated]))}
    partial = DTensor.from_local(torch.ones(2, dtype=torch.float64), mesh, [Partial()])
    try:
        decay.distributed.sharded_penalty(decay.L2(LAM), [partial])
        out["partial_refused"] = ""
    except decay.DecayError as error:
        out["partial_refused"] = str(error)
    return out


def _gathered_state(name, model, optimizer) -> dict:
    out = {}
    for n, p in model.named_parameters():
        for slot, value in optimizer.state[p].items():
            out[f"{name}/state/{n}/{slot}"] = (value.full_tensor().numpy().copy() if isinstance(value, DTensor)
                                               else np.asarray(value))
    return out


def run_mixed_precision(rank, world_size, arrays, facts):
    """bfloat16 parameters in forward/backward, float32 reduction, float32 shards."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    model = sharded(net(torch.float32), policy)
    optimizer = decay.torch.Optimizer(model.named_parameters(), decay.adamw(0.01, weight_decay=0.1))
    train(model, optimizer, None, rank, world_size, stop=MP_STEPS, dtype=torch.float32)
    arrays.update({f"mixed_precision/{k}": v for k, v in gathered(model).items()})
    facts["mixed_precision"] = {"shard_dtypes": sorted({str(p.dtype) for p in model.parameters()})}
    # bfloat16 shards (the model cast before fully_shard): float32 state, float32 update.
    model = sharded(net(torch.bfloat16))
    optimizer = decay.torch.Optimizer(model.named_parameters(), decay.adamw(0.01, weight_decay=0.1))
    train(model, optimizer, None, rank, world_size, stop=MP_STEPS, dtype=torch.bfloat16)
    arrays.update({f"bfloat16_shards/{k}": v for k, v in gathered(model).items()})
    facts["bfloat16_shards"] = {
        "shard_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        "slot_dtypes": sorted({str(v.dtype) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)}),
    }


def nonfinite_rule(on_nonfinite="skip"):
    """An L1 regularizer: torch has no kernel for its gradient, so this rule runs decay's
    own definition (torch's foreach functions) instead of a fused kernel."""
    return decay.sgd(0.05, momentum=0.9, weight_decay=0.01, regularizer=decay.L1(1e-3), on_nonfinite=on_nonfinite)


def run_nonfinite_on_one_rank(rank, world_size, arrays, facts):
    """A nan in rank 1's shard of one gradient at step 2: every rank skips that step."""
    recorder = PathRecorder()
    model = sharded(net())
    optimizer = decay.torch.Optimizer(model.named_parameters(), nonfinite_rule())

    def poison(step):
        if step == 2 and rank == 1:
            model[0].weight.grad.to_local().view(-1)[0] = float("nan")

    train(model, optimizer, None, rank, world_size, stop=5, after_backward=poison)
    arrays.update({f"nonfinite/{k}": v for k, v in gathered(model).items()})
    facts["nonfinite"] = {"skipped_steps": optimizer.skipped_steps,
                          "steps": sorted({s["step"] for s in optimizer.state.values()})}
    facts["nonfinite_paths"] = recorder.take()


def run_resume(rank, world_size, out_dir, arrays, facts):
    """New processes: a fresh model, optimizer and scheduler, the checkpoint loaded."""
    build, make_scheduler = scenarios()[CHECKPOINTED]
    model = sharded(net())
    optimizer, _ = build(model)
    scheduler = make_scheduler(optimizer)
    state = _checkpoint_state(model, optimizer, scheduler)
    dcp.load(state, checkpoint_id=os.path.join(out_dir, "ckpt"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(state["scheduler"])
    facts["loaded_steps"] = sorted({s["step"] for s in optimizer.state.values()})
    facts["state_types"] = sorted({type(v).__name__ for s in optimizer.state.values() for v in s.values()})
    train(model, optimizer, scheduler, rank, world_size, start=SAVE_AT)
    arrays.update(_gathered_state(CHECKPOINTED, model, optimizer))
    arrays.update({f"{CHECKPOINTED}/{k}": v for k, v in gathered(model).items()})


def worker(rank, world_size, port, out_dir, phase):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        arrays, facts = {}, {"rank": rank}
        (run_train if phase == "train" else run_resume)(rank, world_size, out_dir, arrays, facts)
        if rank == 0:
            np.savez(os.path.join(out_dir, f"{phase}.npz"), **arrays)
        with open(os.path.join(out_dir, f"{phase}_rank{rank}.json"), "w") as f:
            json.dump(facts, f, indent=1)
    finally:
        dist.destroy_process_group()
