"""The per-step shared-memory check (decay/_memory.py): what it adds to a step.

Run: python benchmarks/bench_memory_check.py [--repeats 31]

On 200 float32 tensors of 50k and 1,000 of 1k (torch and NumPy), times, interleaved,
rule.step and decay.torch.Optimizer.step with the check as shipped and with it replaced
by a no-op, and the check alone (as a step runs it: the parameters' ranges remembered
from the last step); prints medians and the overhead per step.
"""

import argparse
import itertools
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from decay import _memory, engine  # noqa: E402
from common import interleaved_medians  # noqa: E402

LAYOUTS = {"200x50k": (200, 50_000), "1000x1k": (1000, 1_000)}
CHECK = engine.check_step_inputs


def _sides(lib, make_rule, n, size):
    rng = np.random.default_rng(0)
    values = [rng.normal(size=size).astype(np.float32) for _ in range(n)]
    grads_np = [rng.normal(size=size).astype(np.float32) for _ in range(n)]
    wrap = torch.from_numpy if lib == "torch" else np.array
    params, grads = [wrap(v.copy()) for v in values], [wrap(g) for g in grads_np]
    rule = make_rule()
    box = [rule.init(params)]

    def rule_step():
        _, box[0] = rule.step(params, grads, box[0])

    sides = {"rule.step": rule_step}
    if lib == "torch":
        opt_params = [torch.from_numpy(v.copy()).requires_grad_() for v in values]
        for p, g in zip(opt_params, grads):
            p.grad = g
        opt = decay.torch.Optimizer(opt_params, make_rule())
        sides["torch.Optimizer"] = opt.step
    backend = decay.get_backend(lib)
    names, cache = [str(i) for i in range(n)], {}
    sides["check alone"] = lambda: _memory.check_step_inputs(backend, names, params, grads, grads, cache)
    return sides


def _without_check(fn):
    def run():
        engine.check_step_inputs = lambda *a: None
        try:
            fn()
        finally:
            engine.check_step_inputs = CHECK
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rules = {"sgd": lambda: decay.sgd(0.01, weight_decay=1e-4),
             "adamw": lambda: decay.adamw(1e-3, weight_decay=1e-2)}
    for lib, (layout, (n, size)), (rule_name, make_rule) in itertools.product(
            ("torch", "numpy"), LAYOUTS.items(), rules.items()):
        sides = _sides(lib, make_rule, n, size)
        timed = {}
        for name, fn in sides.items():
            timed[name] = fn
            if name != "check alone":
                timed[name + " (no check)"] = _without_check(fn)
        t = interleaved_medians(timed, args.repeats)
        for name in sides:
            if name == "check alone":
                print(f"{lib:5} {layout:7} {rule_name:5} {name:22} {t[name] * 1e6:9.1f} us")
                continue
            with_check, without = t[name], t[name + " (no check)"]
            print(f"{lib:5} {layout:7} {rule_name:5} {name:22} {with_check * 1e3:8.3f} ms vs {without * 1e3:8.3f} ms "
                  f"without: {(with_check - without) * 1e6:+7.1f} us ({with_check / without:.3f}x)")


if __name__ == "__main__":
    main()
