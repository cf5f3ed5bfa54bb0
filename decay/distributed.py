"""Weight decay when training is spread over processes or devices.

Decay itself needs nothing here. Elementwise decay (coupled, decoupled, masked) is
local to each parameter, so ``decay.torch.Optimizer`` runs unchanged inside
``DistributedDataParallel`` (every rank steps on the averaged gradient) and as the
``optimizer_class`` of ``ZeroRedundancyOptimizer`` (each rank steps on its shard; pass
``names=dict(model.named_parameters())`` so masks by name still apply to the shards),
and ``decay.keras.Optimizer`` runs inside ``tf.distribute.MirroredStrategy``.

Two things do need care, and this module has one helper for each:

* :func:`sharded_penalty` — the *value* of a penalty over parameters that are sharded
  across ranks needs an all-reduce (each rank only sees its shard).
* :func:`scale_penalty` — ``tf.distribute`` *sums* the replicas' gradients, so a
  penalty added to every replica's loss in a custom loop must be divided by the replica
  count, or its gradient is counted once per replica (``tf.nn.scale_regularization_loss``).
  PyTorch's DDP *averages* gradients, so there a penalty needs no scaling.

No framework is imported until a function is called.
"""

from __future__ import annotations

import numbers
import sys

from .backends import backend_name_of
from .errors import DecayError
from .penalties import Penalty


def _check_torch_leaves(leaves) -> None:
    kinds = {backend_name_of(x) for x in leaves}
    if kinds - {"torch"}:
        if "tensorflow" in kinds:
            raise DecayError(
                "sharded_penalty() is for torch.distributed, where parameters are sharded. "
                "Under tf.distribute's mirrored strategies every replica holds every variable: "
                "use penalty.penalty(model.trainable_weights) there."
            )
        raise DecayError(
            "sharded_penalty() needs torch tensors (this rank's shard). Received "
            f"{sorted(str(k) for k in kinds)} tensors; for one process use penalty.penalty(params)."
        )


def sharded_penalty(penalty: Penalty, params, group=None):
    """The penalty of the parameters of *all* ranks: ``Σ_ranks penalty(shard_r)``.

    Every rank passes its own shard (``params``: a tensor, a list/dict of tensors, or a
    ``ZeroRedundancyOptimizer``, whose shard on this rank is its local optimizer's
    ``param_groups``), or, under FSDP2 (``fully_shard``), the model's DTensor parameters,
    whose local shards are this rank's; each computes the penalty of its shard in float64 and one
    ``torch.distributed.all_reduce(SUM)`` over ``group`` (default: the whole world)
    adds them up. Every rank of the group must call it. Outside
    ``torch.distributed`` (not initialized) it returns the local value.

    Returns a float64 0-d tensor, the same on every rank, **detached**: it is for
    logging and reporting (the regularization term of a logged loss, a weight norm).
    It is deliberately not differentiable — the gradient of an L2 penalty with
    respect to a shard is local (``2·lam·θ`` for each parameter of the shard), so
    put decay in the rule (``decay.adamw(..., weight_decay=...)``, or the rule's
    ``regularizer=``), which each rank applies to its own shard with no
    communication. (Backpropagating through a summing all-reduce would also multiply
    the gradient by the number of ranks, since every rank's loss would contain the
    whole sum.)

    Under DDP every rank holds every parameter: call ``penalty.penalty(params)``
    there; passing all parameters here would count them once per rank.

    Example::

        zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=decay.torch.Optimizer,
                                       rule=rule, names=dict(model.named_parameters()))
        ...
        l2 = decay.distributed.sharded_penalty(decay.L2(1e-4), zero)  # same on every rank
    """
    if not isinstance(penalty, Penalty):
        raise DecayError(
            "`penalty` must be a decay penalty such as decay.L2(lam), decay.L1(lam) or "
            f"decay.ElasticNet(l1, l2). Received: penalty={penalty!r}."
        )
    leaves = _shard_leaves(params)
    _check_torch_leaves(leaves)
    import torch
    import torch.distributed as dist

    from .backends import get_backend

    backend = get_backend("torch")
    distributed = dist.is_available() and dist.is_initialized()
    if leaves:
        device = leaves[0].device
    elif distributed and dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64, device=device)
        for leaf in leaves:
            local, replicas = _local_part(leaf)
            value = penalty.leaf_value(backend, local.detach().to(device=device, dtype=torch.float64))
            total = total + (value if replicas == 1 else value / replicas)
        if distributed:
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total


def _local_part(leaf):
    """(this rank's part of ``leaf``, how many ranks hold that same part).

    A DTensor (FSDP2's ``fully_shard``, tensor parallelism) contributes its local shard;
    where it is replicated over a mesh dimension (HSDP's replicas) every replica holds
    the same shard, so its value is divided by their count before the sum over ranks.
    A plain tensor is this rank's own."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    if dtensor is None or not isinstance(leaf, dtensor):
        return leaf, 1
    replicas = 1
    for size, placement in zip(leaf.device_mesh.shape, leaf.placements):
        if placement.is_partial():
            raise DecayError(
                f"sharded_penalty() received a DTensor with a pending reduction ({leaf.placements}): "
                "its local values are partial sums, not parameter values. Pass the parameters "
                "(Shard or Replicate placements), e.g. model.parameters() under fully_shard."
            )
        if placement.is_replicate():
            replicas *= size
    return leaf.to_local(), replicas


def _shard_leaves(params) -> list:
    """The tensors of this rank's shard, as a flat list (empty when the rank has none)."""
    optimizer = getattr(params, "optim", None)
    if optimizer is not None and hasattr(optimizer, "param_groups"):
        # ZeroRedundancyOptimizer: its own param_groups hold every parameter; the local
        # optimizer's hold this rank's shard.
        return [p for g in optimizer.param_groups for p in g["params"]]
    if hasattr(params, "param_groups"):
        raise DecayError(
            "sharded_penalty() was given an optimizer that does not shard parameters "
            f"({type(params).__qualname__}). Pass this rank's shard of tensors, or a "
            "torch.distributed.optim.ZeroRedundancyOptimizer."
        )
    if isinstance(params, dict):
        return list(params.values())
    if backend_name_of(params) is not None:
        return [params]
    try:
        return list(params)
    except TypeError:
        raise DecayError(
            "`params` must be this rank's tensors (a tensor, a list or dict of tensors) or a "
            f"ZeroRedundancyOptimizer. Received a {type(params).__module__}.{type(params).__qualname__}."
        ) from None


def scale_penalty(value, num_replicas=None):
    """``value / num_replicas``: a penalty ready to add to each replica's loss in a
    custom ``tf.distribute`` loop, as ``tf.nn.scale_regularization_loss`` does.

    The strategy sums the replicas' gradients (``apply_gradients`` all-reduces with
    SUM), so the data loss is divided by the *global* batch size and a penalty, which
    every replica adds in full, must be divided by the replica count; unscaled, its
    gradient — the weight decay — is counted ``num_replicas`` times.

    ``value``: a scalar tensor, or a list of them (summed first, as
    ``tf.nn.scale_regularization_loss`` does). ``num_replicas``: by default the current
    strategy's ``num_replicas_in_sync`` (1 outside a strategy); must then be called in
    replica context (inside ``strategy.run``). Pass it explicitly for other engines
    that sum gradients. PyTorch's DDP averages gradients: add the penalty unscaled
    there (this function refuses a torch tensor without ``num_replicas``).

    Example::

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example_loss(y, model(x))) / GLOBAL_BATCH
                loss += decay.distributed.scale_penalty(decay.L2(1e-4)(model.trainable_weights))
            ...
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise DecayError("scale_penalty() received an empty list. Pass a scalar penalty value.")
        total = value[0]
        for x in value[1:]:
            total = total + x
        value = total
    if num_replicas is not None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
            raise DecayError(f"`num_replicas` must be an integer >= 1. Received: num_replicas={num_replicas!r}.")
        return value / int(num_replicas)
    kind = backend_name_of(value)
    if kind == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            raise DecayError(
                "scale_penalty() was called in cross-replica context; call it inside the "
                "function given to strategy.run (replica context), where each replica's loss "
                "is built, or pass num_replicas."
            )
        return value / tf.distribute.get_strategy().num_replicas_in_sync
    if kind == "torch":
        raise DecayError(
            "scale_penalty() without num_replicas is for tf.distribute, which sums gradients. "
            "PyTorch's DistributedDataParallel averages them: add the penalty to the loss "
            "unscaled. If your loop sums gradients over N processes, pass num_replicas=N."
        )
    raise DecayError(
        "scale_penalty() finds the replica count from tf.distribute; for a value of type "
        f"{type(value).__module__}.{type(value).__qualname__} pass num_replicas explicitly."
    )
