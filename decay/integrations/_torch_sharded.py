"""decay.torch.Optimizer's sharded parameters: FSDP2's and tensor parallelism's DTensors,
stepped as this rank's local shards."""

from __future__ import annotations

import itertools
import sys

import torch

from ..errors import DecayError


# -- sharded parameters (FSDP2's DTensors) ------------------------------------------------------
def _dtensor_type():
    """torch's DTensor class when torch.distributed.tensor is in use (a DTensor parameter
    means it was imported); None otherwise, without importing it."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _check_sharding(rule, params) -> None:
    """A rule that is not elementwise (LAMB's and Muon's norms, Adafactor's row and column
    means) reads whole tensors: a rank holding a shard of one cannot step it alone."""
    if rule.elementwise:
        return
    dtensor = _dtensor_type()
    if dtensor is not None and any(isinstance(p, dtensor) for p in params):
        raise DecayError(
            f"decay.{rule.name} takes norms or means over whole tensors, which a rank holding a shard "
            "(FSDP2's fully_shard, tensor parallelism) does not have; nothing was updated. Use an "
            "elementwise rule (sgd, adam, adamw, lion, ...) on sharded parameters."
        )


def _local_shards(params, grads, columns):
    """(params, grads, columns) as this rank's local tensors when the parameters are
    DTensors (FSDP2's ``fully_shard``, tensor parallelism), else None.

    Every update decay runs is elementwise, so a rank can update its shard of θ from its
    shard of g and of the slots when all three are laid out alike (the same mesh and
    placements). Run on the local tensors, the step takes the plain-tensor fast path
    (torch's fused or foreach kernels, one call for all shards) instead of dispatching
    every operation through DTensor; the local tensors share the DTensors' memory, so
    the parameters and the state (still DTensors, as torch.optim keeps them under FSDP2,
    for distributed checkpoints) are updated in place. Any other layout (a gradient
    placed otherwise than its parameter) is left to DTensor's own dispatch."""
    dtensor = _dtensor_type()
    if dtensor is None or not any(map(isinstance, params, itertools.repeat(dtensor))):
        return None
    local_params, local_grads = [], []
    local_columns = {n: [] for n in columns}
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(p, dtensor):
            if isinstance(g, dtensor) or any(isinstance(c[i], dtensor) for c in columns.values()):
                return None
            local_params.append(p)
            local_grads.append(g)
            for n, column in columns.items():
                local_columns[n].append(column[i])
            continue
        if not _laid_out_alike(g, p, dtensor):
            return None
        local_params.append(p.to_local())
        local_grads.append(g.to_local())
        for n, column in columns.items():
            x = column[i]
            if x is not None and not _laid_out_alike(x, p, dtensor):
                return None
            local_columns[n].append(None if x is None else x.to_local())
    return local_params, local_grads, local_columns


def _laid_out_alike(x, p, dtensor) -> bool:
    """Whether DTensor ``x`` is sharded as ``p`` (the same mesh and placements). FSDP2
    hands out the same mesh and placement objects, so identity answers first: the
    comparisons cost microseconds per tensor at every step."""
    if not isinstance(x, dtensor):
        return False
    mesh, placements = x.device_mesh, x.placements
    return ((mesh is p.device_mesh or mesh == p.device_mesh)
            and (placements is p.placements or placements == p.placements))


def _as_dtensor(local, like):
    """A new local slot tensor as a DTensor laid out as its parameter ``like``."""
    if not isinstance(like, _dtensor_type()):
        return local
    return _dtensor_type().from_local(local, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())


def _finite_on_every_rank(local_grads) -> bool:
    """Whether every rank's shards of the gradients are finite: one all-reduce, so that
    ``on_nonfinite`` skips (or raises) on every rank together — a rank skipping alone
    would leave its shards a step behind the others'. Over the default process group,
    as every rank steps its optimizer under FSDP2."""
    import torch.distributed as dist

    device = local_grads[0].device if local_grads else "cpu"  # NCCL reduces device tensors only
    bad = torch.tensor([0.0 if all(bool(torch.isfinite(g).all()) for g in local_grads) else 1.0], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return not bool(bad)
