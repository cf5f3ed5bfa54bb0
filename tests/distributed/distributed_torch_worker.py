"""PyTorch side of tests/distributed/test_distributed_torch.py: what each of the 2 ranks runs.

``torch.multiprocessing.spawn(worker, args=(2, port, out_dir), nprocs=2)`` starts
the ranks; they meet over gloo on 127.0.0.1:port (``GLOO_SOCKET_IFNAME=lo`` keeps
gloo's own connections on the loopback interface). Each rank trains the float64 MLP
below with every global batch split between the ranks — rank r takes rows
``[r·8, r·8 + 8)`` of each batch of 16 — and writes its final weights, what its
ZeroRedundancyOptimizer shard holds, and the sharded penalty values to
``out_dir/rank{r}.npz`` and ``out_dir/rank{r}.json``. The test compares them with a
single process trained on the whole batches (:func:`train_single`), in its own process.
"""

from __future__ import annotations

import datetime
import json
import os

import numpy as np
import torch
import torch.distributed.optim

import decay
import decay.distributed

GLOBAL_BATCH, STEPS, LAM = 16, 10, 0.01
# Mask by dict: every name of the MLP below (torch's "<index>.<weight|bias>").
DICT_MASK = {"0.weight": True, "0.bias": False, "2.weight": False, "2.bias": False}


def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 4))
    y = np.sin(x @ np.array([1.0, -2.0, 0.5, 0.3]))[:, None] + 0.1 * rng.normal(size=(STEPS * GLOBAL_BATCH, 1))
    return torch.tensor(x), torch.tensor(y)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()


def ddp_rules():
    """name -> (rule, uses a torch lr scheduler)."""
    return {
        "adamw_exclude_bias_cosine": (
            decay.adamw(0.05, weight_decay=0.1, mask=decay.masks.exclude_names("bias")), True,
        ),
        "sgd_nesterov_coupled": (decay.sgd(0.05, momentum=0.9, weight_decay=0.01, nesterov=True), False),
    }


def zero_rules(masked=True):
    """The rules run with ZeroRedundancyOptimizer (``masked=False``: the same without
    their masks, to show that the masks matter)."""
    exclude_bias = decay.masks.exclude_names("bias") if masked else None
    dict_mask = dict(DICT_MASK) if masked else None
    return {
        "adamw_exclude_bias": decay.adamw(0.05, weight_decay=0.1, mask=exclude_bias),
        "sgd_momentum_dict_mask": decay.sgd(0.05, momentum=0.9, weight_decay=0.05, mask=dict_mask),
    }


def batches(rank=None, world_size=1):
    """Each step's batch: the whole global batch, or rank's contiguous slice of it."""
    x, y = data()
    local = GLOBAL_BATCH // world_size
    for step in range(STEPS):
        start = step * GLOBAL_BATCH + (0 if rank is None else rank * local)
        stop = start + (GLOBAL_BATCH if rank is None else local)
        yield x[start:stop], y[start:stop]


def _train(module, optimizer, scheduler, rank=None, world_size=1):
    for xb, yb in batches(rank, world_size):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(module(xb), yb).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def train_single(rule, scheduled=False):
    """One process, whole batches: the reference. Returns the model and optimizer."""
    model = mlp()
    optimizer = decay.torch.Optimizer(model.named_parameters(), rule)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS) if scheduled else None
    _train(model, optimizer, scheduler)
    return model, optimizer


def _weights(model):
    return {name: p.detach().numpy().copy() for name, p in model.named_parameters()}


def worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
    )
    try:
        arrays, facts = {}, {"ddp": {}, "zero": {}}
        for name, (rule, scheduled) in ddp_rules().items():
            model = mlp()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            optimizer = decay.torch.Optimizer(model.named_parameters(), rule)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS) if scheduled else None
            _train(ddp, optimizer, scheduler, rank, world_size)
            arrays.update({f"ddp/{name}/{k}": v for k, v in _weights(model).items()})

        for name, rule in zero_rules().items():
            model = mlp()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            names = dict(model.named_parameters())
            zero = torch.distributed.optim.ZeroRedundancyOptimizer(
                ddp.parameters(), optimizer_class=decay.torch.Optimizer, rule=rule, names=names
            )
            _train(ddp, zero, None, rank, world_size)
            arrays.update({f"zero/{name}/{k}": v for k, v in _weights(model).items()})
            name_of = {id(p): n for n, p in names.items()}
            shard = [name_of[id(p)] for g in zero.optim.param_groups for p in g["params"]]
            with_state = [name_of[id(p)] for p, s in zero.optim.state.items() if s]
            facts["zero"][name] = {
                "shard": shard,
                "with_state": with_state,
                "decayed": dict(zip(shard, zero.optim._decayed(zero.optim.param_groups[0], [names[n] for n in shard]))),
            }
            for p_name, p in names.items():
                if p in zero.optim.state:
                    for slot, value in zero.optim.state[p].items():
                        arrays[f"zero_state/{name}/{p_name}/{slot}"] = np.array(value.numpy() if torch.is_tensor(value) else value)
            penalty = decay.L2(LAM)
            value = decay.distributed.sharded_penalty(penalty, zero)
            facts["zero"][name]["penalty"] = float(value)
            facts["zero"][name]["penalty_requires_grad"] = bool(value.requires_grad)
            facts["zero"][name]["penalty_of_shard_list"] = float(
                decay.distributed.sharded_penalty(penalty, [names[n] for n in shard])
            )
            facts["zero"][name]["penalty_local_only"] = float(penalty.penalty([names[n] for n in shard]).detach())
            # A checkpoint: the shards' states gathered on rank 0, in torch's layout. (Only
            # with the dict mask: ZeroRedundancyOptimizer copies its keyword arguments, the
            # rule included, into every param group and pickles them here, and the
            # closure behind exclude_names() does not pickle.)
            if isinstance(rule.mask, dict):
                zero.consolidate_state_dict(to=0)
            if rank == 0 and isinstance(rule.mask, dict):
                consolidated = zero.state_dict()
                for index, state in consolidated["state"].items():
                    for slot, value in state.items():
                        arrays[f"zero_consolidated/{name}/{index}/{slot}"] = np.asarray(value)
        facts["rank"] = rank
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **arrays)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(facts, f, indent=1)
    finally:
        torch.distributed.destroy_process_group()
