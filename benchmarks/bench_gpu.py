"""Every rule on a GPU: NumPy's numbers on CUDA (torch) and on JAX, and speed against torch.optim.

Run on a machine with an NVIDIA GPU (TensorFlow is not needed):
    python benchmarks/bench_gpu.py numbers [--backend torch|jax] [--steps 20]
    python benchmarks/bench_gpu.py speed [--repeats 15]

``numbers``: every case of the shared suite's grid (``tests/core/rule_cases.py``: each rule,
option and decay placement) runs ``--steps`` float64 steps from the same start and gradients
through ``rule.step`` on the GPU and, for torch, through ``decay.torch.Optimizer`` on CUDA;
each result must be within ``decay.tolerances.rtol(float64, steps)`` of decay's NumPy backend
on the CPU. JAX runs the compiled subset (``rule_cases.compiled_cases``), as the suite does.

``speed``: the classic rules (issue 15) and Lion, LAMB, Muon, Adafactor (issue 16) against torch.optim's
fastest implementation of the same optimizer on CUDA (``fused=True`` where torch has it,
else ``foreach=True``; Lion and LAMB against a hand-written ``torch._foreach_*`` step, as
in bench_modern.py), float32, at 10 tensors of 1M and 200 of 50k; Muon on 10 matrices of
1024x1024 against ``torch.optim.Muon`` (decay's float32 default and ``ns_dtype="bfloat16"``,
torch's arithmetic), Adafactor on the same matrices against ``torch.optim.Adafactor(foreach=True)``. Each side is timed to a ``torch.cuda.synchronize``;
medians of interleaved runs. Target: decay <= 1.1x the reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "core"))

import decay  # noqa: E402
from common import LAYOUTS, interleaved_medians, table  # noqa: E402
from decay.tolerances import relative_error, rtol  # noqa: E402

SHAPES = {"layer.weight": (6, 5), "layer.bias": (5,), "scale": ()}


def _problem(shapes, steps):
    rng = np.random.default_rng(7)
    start = {n: rng.normal(size=s) for n, s in shapes.items()}
    grads = [{n: rng.normal(size=s) for n, s in shapes.items()} for _ in range(steps)]
    return start, grads


def _numpy_run(rule, start, grads):
    params = {n: v.copy() for n, v in start.items()}
    state = rule.init(params)
    for g in grads:
        params, state = rule.step(params, {n: v.copy() for n, v in g.items()}, state)
    return params


def _torch_runs(rule_name, kwargs, start, grads, make, device="cuda"):
    import torch

    dev = torch.device(device)
    params = {n: torch.tensor(v, device=dev) for n, v in start.items()}
    rule = make(rule_name, kwargs)
    state = rule.init(params)
    for g in grads:
        params, state = rule.step(params, {n: torch.tensor(v, device=dev) for n, v in g.items()}, state)
    out = {f"rule.step {device}": {n: p.cpu().numpy() for n, p in params.items()}}
    named = [(n, torch.nn.Parameter(torch.tensor(v, device=dev))) for n, v in start.items()]
    opt = decay.torch.Optimizer(named, make(rule_name, kwargs))
    for g in grads:
        for n, p in named:
            p.grad = torch.tensor(g[n], device=dev)
        opt.step()
    out[f"decay.torch {device}"] = {n: p.detach().cpu().numpy() for n, p in named}
    return out


def _jax_runs(rule_name, kwargs, start, grads, make):
    import jax.numpy as jnp

    params = {n: jnp.asarray(v) for n, v in start.items()}
    rule = make(rule_name, kwargs)
    state = rule.init(params)
    for g in grads:
        params, state = rule.step(params, {n: jnp.asarray(v) for n, v in g.items()}, state)
    return {"rule.step jax": {n: np.asarray(p) for n, p in params.items()}}


def _device_name(torch, device):
    return torch.cuda.get_device_name() if device == "cuda" else device


def numbers(args):
    from rule_cases import PARAM_SHAPES, cases, compiled_cases, make

    if args.backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        print(f"jax {jax.__version__} on {jax.devices()[0]}")
        run, subset = _jax_runs, compiled_cases()
    else:
        import torch

        print(f"torch {torch.__version__} on {_device_name(torch, args.device)}")
        run, subset = partial(_torch_runs, device=args.device), None
    bound = rtol("float64", args.steps)
    worst, failures, count = 0.0, [], 0
    t0 = time.perf_counter()
    for case, (rule_name, kwargs) in cases().items():
        if subset is not None and case not in subset:
            continue
        start, grads = _problem(PARAM_SHAPES.get(rule_name, SHAPES), args.steps)
        expected = _numpy_run(make(rule_name, kwargs), start, grads)
        for what, got in run(rule_name, kwargs, start, grads, make).items():
            err = max(relative_error(got[n], expected[n]) for n in expected)
            worst = max(worst, err)
            count += 1
            if not err <= bound:
                failures.append((case, what, err))
                print(f"FAIL {case} {what}: relative error {err:.3g} > {bound:.3g}")
    print(f"{count} runs ({args.backend}, float64, {args.steps} steps) in {time.perf_counter() - t0:.0f} s; "
          f"worst relative error {worst:.3g} (bound {bound:.3g}); failures {len(failures)}")
    return 1 if failures else 0




def speed(args):
    import torch
    import bench_classic
    import bench_modern

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()
        return run

    def tensors(shapes, gen):
        return [torch.randn(s, generator=gen, device=args.device) for s in shapes]

    def sides(make_rule, shapes, native):
        gen = torch.Generator(device=args.device).manual_seed(0)
        base, grads = tensors(shapes, gen), [g.mul_(1e-3) for g in tensors(shapes, gen)]

        def fresh():
            ts = [b.clone() for b in base]
            for t, g in zip(ts, grads):
                t.grad = g
            return ts

        out = native(fresh, grads)
        rule, rule_p = make_rule(), fresh()
        box = [rule.init(rule_p)]

        def rule_step():
            _, box[0] = rule.step(rule_p, grads, box[0])

        out["decay"] = rule_step
        out["decay.torch"] = decay.torch.Optimizer(fresh(), make_rule()).step
        return {k: timed(f) for k, f in out.items()}

    def torch_optim(cls_name, kwargs, has_fused):
        def native(fresh, grads):
            cls = getattr(torch.optim, cls_name)
            out = {"foreach": cls(fresh(), foreach=True, **kwargs).step}
            if has_fused:
                try:  # torch's fused Adagrad runs on the CPU only
                    opt = cls(fresh(), fused=True, **kwargs)
                    opt.step()
                    out["fused"] = opt.step
                except RuntimeError as e:
                    print(f"{cls_name}(fused=True) on {args.device}: {str(e).splitlines()[0][:80]}")
            return out
        return native

    def lion(fresh, grads):
        ref = fresh()
        m = [torch.zeros_like(p) for p in ref]
        return {"foreach (hand-written)": lambda: bench_modern.torch_lion_foreach(ref, grads, m)}

    def lamb(fresh, grads):
        ref = fresh()
        m, v = [torch.zeros_like(p) for p in ref], [torch.zeros_like(p) for p in ref]
        return {"foreach (hand-written)": lambda: bench_modern.torch_lamb_foreach(ref, grads, m, v, 1)}

    def muon(fresh, grads):
        return {"torch.optim.Muon (bf16)": torch.optim.Muon(fresh(), lr=1e-3, weight_decay=0.1).step}

    plan = []
    for layout in args.layouts:
        count, size = LAYOUTS[layout]
        for name, (make_rule, (cls_name, kwargs), has_fused, _, _) in bench_classic.CASES.items():
            plan.append((layout, name, make_rule, [(size,)] * count, torch_optim(cls_name, kwargs, has_fused)))
        plan.append((layout, "lion", lambda: decay.lion(1e-3, weight_decay=0.1), [(size,)] * count, lion))
        plan.append((layout, "lamb", lambda: decay.lamb(1e-3, weight_decay=0.1), [(size,)] * count, lamb))
    side = args.muon_side
    plan.append((f"10x{side}x{side}", "muon", lambda: decay.muon(1e-3, weight_decay=0.1), [(side, side)] * 10, muon))
    plan.append((f"10x{side}x{side}", "muon bf16", lambda: decay.muon(1e-3, weight_decay=0.1, ns_dtype="bfloat16"),
                 [(side, side)] * 10, muon))

    def adafactor(fresh, grads):
        return {"foreach": torch.optim.Adafactor(fresh(), lr=1e-2, weight_decay=0.1, foreach=True).step}

    plan.append((f"10x{side}x{side}", "adafactor", lambda: decay.adafactor(1e-2, weight_decay=0.1),
                 [(side, side)] * 10, adafactor))
    rows = []
    for layout, name, make_rule, shapes, native in plan:
        t = interleaved_medians(sides(make_rule, shapes, native), args.repeats, warmup=3)
        ref_name = min((k for k in t if not k.startswith("decay")), key=t.get)
        ref = t[ref_name]
        ratio, ratio_opt = t["decay"] / ref, t["decay.torch"] / ref
        rows.append((layout, name, f"{ref * 1e3:.3f} ({ref_name})", f"{t['decay'] * 1e3:.3f}",
                     f"{t['decay.torch'] * 1e3:.3f}", f"{ratio:.2f}", f"{ratio_opt:.2f}",
                     "ok" if max(ratio, ratio_opt) <= 1.1 else "over 1.1x"))
        print(" ".join(rows[-1]), flush=True)
    print(f"torch {torch.__version__} on {_device_name(torch, args.device)}; medians of {args.repeats} interleaved runs")
    print(table(rows, ["layout", "rule", "torch ms (reference)", "decay ms", "decay.torch ms", "ratio",
                       "ratio opt", "target"]))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["numbers", "speed"])
    parser.add_argument("--backend", choices=["torch", "jax"], default="torch")
    parser.add_argument("--device", default="cuda", help="torch device (cpu: a dry run of the script)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--muon-side", type=int, default=1024)
    parser.add_argument("--layouts", nargs="+", default=["10x1M", "200x50k"])
    args = parser.parse_args()
    return numbers(args) if args.part == "numbers" else speed(args)


if __name__ == "__main__":
    sys.exit(main())
