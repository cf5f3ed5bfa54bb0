"""FSDP2: one sharded optimizer step, decay against torch's AdamW, 2 ranks on CPU (gloo).

Run: python benchmarks/bench_fsdp2.py [--repeats 10]

Each rank builds float32 MLPs of square Linear layers, ``fully_shard`` per layer and at
the root, runs one forward/backward so every parameter holds its shard of the gradient,
and then times ``optimizer.step()`` alone, interleaved round-robin, on a copy of the
model per side:

- ``decay``: ``decay.torch.Optimizer(decay.adamw(...))`` — the step runs on the local
  shards (torch's ``_fused_adamw_``, one call for all shards);
- ``decay_on_dtensors``: the same with the local-shard path switched off, so every
  kernel is dispatched through DTensor (what the step did before);
- ``torch_default`` (torch's choice on CPU: a Python loop over parameters),
  ``torch_foreach`` and ``torch_fused``: ``torch.optim.AdamW`` on the DTensors.

The ratio is decay over the fastest torch variant, of medians and of minimums (on a
shared machine the minimum is the steadier figure). Layouts: 16 tensors of 262k
parameters (8 layers 512 wide) and 200 tensors of 4k (100 layers 64 wide: per-tensor
overhead). Rank 0's times are reported; writes benchmarks/results/fsdp2-cpu.json.
"""

import argparse
import datetime
import os
import socket
import statistics
import sys
import time
import traceback

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
import decay.integrations.torch as decay_torch  # noqa: E402
from common import table, write  # noqa: E402

LAYOUTS = {"16x262k": (8, 512), "200x4k": (100, 64)}
WORLD = 2


def sharded_mlp(layers, width):
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    return model


class NoLocalShards:
    """decay.torch.Optimizer with the local-shard path off: DTensor dispatch throughout."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self):
        saved, decay_torch._local_shards = decay_torch._local_shards, lambda *args: None
        try:
            self.optimizer.step()
        finally:
            decay_torch._local_shards = saved


def optimizers(layers, width):
    """side -> its step function, each on its own sharded model."""
    make = {
        "decay": lambda m: decay.torch.Optimizer(m.parameters(), decay.adamw(1e-3, weight_decay=1e-2)),
        "decay_on_dtensors": lambda m: NoLocalShards(
            decay.torch.Optimizer(m.parameters(), decay.adamw(1e-3, weight_decay=1e-2))),
        "torch_default": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-2),
        "torch_foreach": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-2, foreach=True),
        "torch_fused": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-2, fused=True),
    }
    steps = {}
    for side, build in make.items():
        model = sharded_mlp(layers, width)  # (FSDP2 refuses deepcopy)
        model(torch.randn(32, width)).square().mean().backward()  # every shard gets its gradient
        steps[side] = build(model).step
    return steps


def timed(steps: dict, repeats: int) -> dict:
    """side -> (median, minimum) seconds per step, the sides interleaved in alternating
    order. On a loaded machine the median moves with the load; the minimum is each
    side's cost undisturbed."""
    for step in steps.values():
        step(), step()
    times = {side: [] for side in steps}
    order = list(steps)
    for i in range(repeats):
        for side in order if i % 2 else order[::-1]:
            start = time.perf_counter()
            steps[side]()
            times[side].append(time.perf_counter() - start)
    return {side: (statistics.median(ts), min(ts)) for side, ts in times.items()}


def rank_main(rank, port, repeats, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        results = {}
        for layout, (layers, width) in LAYOUTS.items():
            results[layout] = timed(optimizers(layers, width), repeats)
        if rank == 0:
            out.put(results)
    except Exception:
        out.put({"error": f"rank {rank}: {traceback.format_exc()}"})  # main would wait forever
        raise
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    out = context.SimpleQueue()
    processes = [context.Process(target=rank_main, args=(rank, port, args.repeats, out)) for rank in range(WORLD)]
    for p in processes:
        p.start()
    results = out.get()
    for p in processes:
        p.join(timeout=None if "error" not in results else 5)
        if p.is_alive():
            p.terminate()
    if "error" in results:
        raise SystemExit(results["error"])
    rows, payload = [], {}
    for layout, timings in results.items():
        payload[layout] = {}
        for which, at in (("median", 0), ("min", 1)):
            ms = {side: t[at] * 1e3 for side, t in timings.items()}
            ratio = ms["decay"] / min(v for k, v in ms.items() if k.startswith("torch_"))
            payload[layout][which] = {**ms, "ratio_vs_fastest_torch": ratio}
            rows.append([layout, which] + [f"{v:.2f}" for v in ms.values()] + [f"{ratio:.2f}x"])
    headers = ["layout", "of runs"] + [f"{k} ms" for k in results[next(iter(results))]] + ["decay / fastest torch"]
    print(table(rows, headers))
    path = write("fsdp2-cpu", {"world": WORLD, "dtype": "float32", "repeats": args.repeats,
                               "unit": "ms per optimizer step on rank 0", "results": payload})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
