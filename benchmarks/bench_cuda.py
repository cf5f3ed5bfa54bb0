"""CUDA: decay's PyTorch backend gives the CPU's numbers, at the device's bandwidth.

Run (on a machine with an NVIDIA GPU; TensorFlow is not needed):
    python benchmarks/bench_cuda.py [--params 100000000] [--out DIR]

Two checks, one run:

1. Same numbers. Every SGD/Adam variant runs 50 steps through ``rule.step`` and through
   ``decay.torch.Optimizer`` on CPU and on CUDA from the same start and gradients, in
   float32 and float64; the CUDA result must be within ``decay.tolerances.rtol(dtype,
   steps)`` of the CPU one. float64 CUDA is also checked against decay's NumPy backend.
2. Bandwidth. On ``--params`` float32 parameters (default 100M, in 10 tensors) it
   measures the device-to-device copy bandwidth (bytes read + written per second), then
   times torch.optim (fused and foreach), ``rule.step`` and ``decay.torch.Optimizer``.
   Each step moves a known number of bytes (benchmarks/common.py BYTES: 12 per parameter for
   SGD with decay, 20 with momentum, 28 for Adam/AdamW); issue 8's target is that
   decay's SGD and AdamW steps reach >= 80% of the copy bandwidth. Timing: CUDA events
   around ``--chain`` back-to-back steps (as in a training loop, launch overhead overlaps
   the previous step's kernels), median over ``--repeats``.

Writes ``cuda.json`` (into ``--out``, default benchmarks/results/) naming the device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from bench_torch import side_steps  # noqa: E402
from common import RESULTS, machine, table  # noqa: E402
from decay.tolerances import relative_error, rtol  # noqa: E402

# name: (decay rule factory, torch.optim factory or None, bytes moved per parameter)
CASES = {
    "sgd": (lambda: decay.sgd(0.01),
            lambda p, **k: torch.optim.SGD(p, lr=0.01, **k), 12),
    "sgd_coupled": (lambda: decay.sgd(0.01, weight_decay=1e-4),
                    lambda p, **k: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4, **k), 12),
    "sgd_decoupled": (lambda: decay.sgd(0.01, weight_decay=1e-4, decoupled=True),
                      lambda p, **k: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4, **k), 12),
    "sgd_momentum": (lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4),
                     lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4, **k), 20),
    "sgd_nesterov": (lambda: decay.sgd(0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
                     lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True,
                                                    weight_decay=1e-4, **k), 20),
    # torch has no kernel for this one: its reference is fused SGD with coupled momentum.
    "sgd_momentum_decoupled": (lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4, decoupled=True),
                               lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9,
                                                              weight_decay=1e-4, **k), 20),
    "adam": (lambda: decay.adam(1e-3, weight_decay=1e-2),
             lambda p, **k: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2, **k), 28),
    "adamw": (lambda: decay.adamw(1e-3, weight_decay=1e-2),
              lambda p, **k: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, **k), 28),
    "adamw_amsgrad": (lambda: decay.adamw(1e-3, weight_decay=1e-2, amsgrad=True),
                      lambda p, **k: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, amsgrad=True, **k), 36),
}
# The ones issue 8 sets the 80% target for; the others are reported alongside.
TARGETED = ("sgd", "sgd_coupled", "sgd_decoupled", "adamw")


def same_numbers(device, steps=50):
    """CPU vs CUDA (and float64 CUDA vs NumPy) after ``steps`` updates, every case."""
    shapes = [(257,), (33, 65), (4, 3, 5), (1,)]
    rows = []
    for name, (make_rule, _, _) in CASES.items():
        for dtype in ("float32", "float64"):
            rng = np.random.default_rng(7)
            start = [rng.standard_normal(s) for s in shapes]
            grads = [[rng.standard_normal(s) * 0.1 for s in shapes] for _ in range(steps)]
            results = {}
            for where in ("cpu", device):
                # rule.step through the backend
                rule = make_rule()
                params = [torch.tensor(x, dtype=getattr(torch, dtype), device=where) for x in start]
                state = rule.init(params)
                for gs in grads:
                    g = [torch.tensor(x, dtype=getattr(torch, dtype), device=where) for x in gs]
                    params, state = rule.step(params, g, state)
                results[("rule", where)] = [p.cpu().double().numpy() for p in params]
                # the torch.optim.Optimizer integration
                params = [torch.nn.Parameter(torch.tensor(x, dtype=getattr(torch, dtype), device=where))
                          for x in start]
                opt = decay.torch.Optimizer(params, make_rule())
                for gs in grads:
                    for p, x in zip(params, gs):
                        p.grad = torch.tensor(x, dtype=getattr(torch, dtype), device=where)
                    opt.step()
                results[("optimizer", where)] = [p.detach().cpu().double().numpy() for p in params]
            if dtype == "float64":
                rule = make_rule()
                params = [x.copy() for x in start]
                state = rule.init(params)
                for gs in grads:
                    params, state = rule.step(params, [x.copy() for x in gs], state)
                results[("numpy", "cpu")] = params
            bound = rtol(dtype, steps)
            for what, a, b in [("rule cuda vs cpu", ("rule", device), ("rule", "cpu")),
                               ("optimizer cuda vs cpu", ("optimizer", device), ("optimizer", "cpu")),
                               ("rule cuda vs numpy", ("rule", device), ("numpy", "cpu"))]:
                if b not in results:
                    continue
                err = max(relative_error(x, y) for x, y in zip(results[a], results[b]))
                rows.append({"case": name, "dtype": dtype, "compare": what, "error": err,
                             "bound": bound, "ok": bool(err <= bound)})
    return rows


def event_timer(device):
    if device == "cuda":
        def measure(fn, chain):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(chain):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / chain
    else:
        def measure(fn, chain):
            t0 = time.perf_counter()
            for _ in range(chain):
                fn()
            return (time.perf_counter() - t0) / chain
    return measure


def medians(functions, measure, chain, repeats, warmup=2):
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in functions}
    for _ in range(repeats):
        for k, fn in functions.items():  # interleaved: load changes hit every side alike
            times[k].append(measure(fn, chain))
    return {k: statistics.median(v) for k, v in times.items()}


def copy_bandwidth(device, size, count, measure, chain, repeats, randn):
    """Bytes read + written per second by a device-to-device copy: on the benchmark's
    layout and on one contiguous block, the faster of the two (the stricter floor)."""
    src, dst = randn(), randn()
    big_src = torch.empty(size * count, device=device)
    big_dst = torch.empty_like(big_src)
    copy = medians({"foreach_copy": lambda: torch._foreach_copy_(dst, src),
                    "copy": lambda: big_dst.copy_(big_src)}, measure, chain, repeats)
    return copy, 2 * 4 * size * count / min(copy.values())


def time_case(make_rule, make_native, randn, measure, chain, repeats):
    """Median seconds per step of torch.optim (fused, foreach), rule.step and
    decay.torch.Optimizer, each on its own copy of the same parameters and gradients."""
    grads = randn(1e-3)
    return medians(side_steps(make_rule, make_native, randn(), grads), measure, chain, repeats)


def bandwidth(device, n_params, count, chain, repeats):
    size = n_params // count
    measure = event_timer(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(scale=1.0):
        return [torch.randn(size, generator=gen, device=device).mul_(scale) for _ in range(count)]

    copy, copy_bw = copy_bandwidth(device, size, count, measure, chain, repeats, randn)
    rows = []
    for name, (make_rule, make_native, per_param) in CASES.items():
        t = time_case(make_rule, make_native, randn, measure, chain, repeats)  # frees its tensors on return
        if device == "cuda":
            torch.cuda.empty_cache()
        moved = per_param * size * count
        row = {"case": name, "bytes_per_param": per_param, "median_s": t,
               "fraction_of_copy": {k: moved / v / copy_bw for k, v in t.items()},
               "ratio_to_torch": {k: v / min(t["fused"], t["foreach"]) for k, v in t.items()},
               "targeted": name in TARGETED}
        row["ok"] = (min(row["fraction_of_copy"]["decay"], row["fraction_of_copy"]["decay.torch"]) >= 0.8
                     if name in TARGETED else None)
        rows.append(row)
    return {"copy_median_s": copy, "copy_bytes": 2 * 4 * size * count, "copy_bandwidth_Bps": copy_bw,
            "layout": f"{count}x{size}", "chain": chain, "repeats": repeats, "cases": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--params", type=int, default=100_000_000)
    parser.add_argument("--tensors", type=int, default=10)
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_cuda.py: no CUDA device is visible to torch (torch.cuda.is_available() is False).")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    payload = {"machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": name,
               "torch": torch.__version__, "numpy": np.__version__}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cuda.json")

    def save():
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")

    t0 = time.perf_counter()
    checks = same_numbers(args.device)
    payload["same_numbers"] = checks
    save()
    print(f"same numbers ({time.perf_counter() - t0:.1f} s): "
          f"{sum(c['ok'] for c in checks)}/{len(checks)} within tolerance")
    print(table([(c["case"], c["dtype"], c["compare"], f"{c['error']:.2e}", f"{c['bound']:.1e}",
                  "ok" if c["ok"] else "OVER") for c in checks],
                ["case", "dtype", "compare", "rel. error", "bound", ""]), flush=True)

    t0 = time.perf_counter()
    bw = bandwidth(args.device, args.params, args.tensors, args.chain, args.repeats)
    payload["bandwidth"] = bw
    save()
    copy_bw = bw["copy_bandwidth_Bps"]
    print(f"\nbandwidth ({time.perf_counter() - t0:.1f} s), {args.params:,} float32 parameters as "
          f"{bw['layout']}, copy {copy_bw / 1e9:.0f} GB/s (read + written)")
    rows = []
    for r in bw["cases"]:
        f, ms = r["fraction_of_copy"], r["median_s"]
        rows.append((r["case"], r["bytes_per_param"],
                     *(f"{ms[k] * 1e3:.3f} ({f[k]:.0%})" for k in ("fused", "foreach", "decay", "decay.torch")),
                     f"{r['ratio_to_torch']['decay']:.2f}", f"{r['ratio_to_torch']['decay.torch']:.2f}",
                     {True: "ok", False: "UNDER 80%", None: "-"}[r["ok"]]))
    print(table(rows, ["case", "B/param", "fused ms (of copy bw)", "foreach ms", "decay ms", "decay.torch ms",
                       "ratio", "ratio opt", ">=80%"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
