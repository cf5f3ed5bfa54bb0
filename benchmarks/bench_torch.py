"""PyTorch: decay's steps against torch.optim's fastest implementation of the same math.

Run: python benchmarks/bench_torch.py [--repeats 15] [--device cpu|cuda]

For each layout (10M float32 parameters in 10 and in 200 tensors; 1,000 tensors of
1,000) it times, interleaved, torch.optim with fused=True and foreach=True (the faster
of the two is the reference), decay's rule.step on the same tensors, and
decay.torch.Optimizer.step. Targets (issue 8): decay <= 1.1x the reference; for SGD with
momentum and decoupled decay, which torch has no kernel for, <= 1.5x torch's fused SGD
with momentum. Writes benchmarks/results/torch-<device>.json.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import LAYOUTS, interleaved_medians, table, write  # noqa: E402

# name: (decay rule, torch optimizer factory or None, target ratio, reference label)
CASES = {
    "sgd_coupled": (lambda: decay.sgd(0.01, weight_decay=1e-4),
                    lambda p, **k: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4, **k), 1.1),
    "sgd_decoupled": (lambda: decay.sgd(0.01, weight_decay=1e-4, decoupled=True),
                      lambda p, **k: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4, **k), 1.1),
    "sgd_momentum": (lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4),
                     lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4, **k), 1.1),
    "sgd_momentum_decoupled": (lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4, decoupled=True),
                               lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4, **k), 1.5),
    "adamw": (lambda: decay.adamw(1e-3, weight_decay=1e-2),
              lambda p, **k: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, **k), 1.1),
}


def side_steps(make_rule, make_native, base, grads) -> dict:
    """One step function per side, each on its own copy of ``base`` (moved to the grads'
    device) with ``grads``: torch.optim with fused=True and with foreach=True, decay's
    rule.step, and decay.torch.Optimizer."""

    def tensors():
        ts = [b.clone().to(g.device) for b, g in zip(base, grads)]
        for t, g in zip(ts, grads):
            t.grad = g
        return ts

    fused_p, foreach_p, rule_p, opt_p = tensors(), tensors(), tensors(), tensors()
    fused = make_native(fused_p, fused=True)
    foreach = make_native(foreach_p, foreach=True)
    rule = make_rule()
    box = [rule.init(rule_p)]
    opt = decay.torch.Optimizer(opt_p, make_rule())

    def rule_step():
        _, box[0] = rule.step(rule_p, grads, box[0])

    return {"fused": fused.step, "foreach": foreach.step, "decay": rule_step, "decay.torch": opt.step}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    args = parser.parse_args()
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    rows, results = [], []
    for layout in args.layouts:
        count, size = LAYOUTS[layout]
        for name, (make_rule, make_native, target) in CASES.items():
            gen = torch.Generator(device="cpu").manual_seed(0)
            base = [torch.randn(size, generator=gen) for _ in range(count)]
            grads = [torch.randn(size, generator=gen).mul_(1e-3).to(args.device) for _ in range(count)]

            sides = side_steps(make_rule, make_native, base, grads)

            def timed(fn):
                def run():
                    fn()
                    sync()
                return run

            t = interleaved_medians({k: timed(fn) for k, fn in sides.items()}, args.repeats)
            reference = min(t["fused"], t["foreach"])
            ratio, ratio_opt = t["decay"] / reference, t["decay.torch"] / reference
            ok = "ok" if max(ratio, ratio_opt) <= target else f"over {target}x"
            rows.append((layout, name, f"{t['fused'] * 1e3:.2f}", f"{t['foreach'] * 1e3:.2f}",
                         f"{t['decay'] * 1e3:.2f}", f"{t['decay.torch'] * 1e3:.2f}",
                         f"{ratio:.2f}", f"{ratio_opt:.2f}", ok))
            results.append({"layout": layout, "case": name, "median_s": t, "ratio": ratio,
                            "ratio_optimizer": ratio_opt, "target": target})
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(table(rows, ["layout", "case", "fused ms", "foreach ms", "decay ms", "decay.torch ms",
                       "ratio", "ratio opt", "target"]))
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    path = write(f"torch-{args.device}", {"device": device, "torch": torch.__version__, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
