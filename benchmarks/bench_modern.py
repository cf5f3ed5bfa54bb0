"""Lion, LAMB, Adafactor and Muon: decay's steps against each framework's own implementation.

Run: python benchmarks/bench_modern.py [--repeats 5] [--rules adafactor ...]

On 10 float32 tensors of 1M elements (Adafactor: 10 matrices of 1000x1000, so that its
second moment is factored; Muon: 10 matrices, 256x256 unless --muon-side), interleaved
medians of:

- PyTorch: decay's ``rule.step`` on torch tensors against torch's own optimizer where
  torch has one (``torch.optim.Adafactor(foreach=True)``, the same arithmetic;
  ``torch.optim.Muon``, which orthogonalizes in bfloat16: decay's default in float32,
  and ``ns_dtype="bfloat16"``, torch's arithmetic) and otherwise a hand-written ``torch._foreach_*``
  step of the same math (Lion; LAMB, whose per-tensor norms are one ``_foreach_norm``);
- TensorFlow: decay's compiled step on tf.Variables against Keras's
  ``apply_gradients`` (Lion, Lamb, Adafactor, Muon);
- NumPy: decay's step alone (no NumPy reference exists).

Targets (issue 16): ≤ 1.1× torch's, ≥ 5× faster than Keras's ``apply_gradients``.
Writes benchmarks/results/modern.json.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import interleaved_medians, table, write  # noqa: E402

LR, WD = 1e-3, 0.1


def torch_lion_foreach(params, grads, m, b1=0.9, b2=0.99):
    """Lion with torch's multi-tensor functions (what a torch.optim Lion would run), at
    its fastest: the sign taken in place (a second new list costs its page faults)."""
    import torch

    torch._foreach_mul_(params, 1 - LR * WD)
    c = torch._foreach_mul(m, b1)
    torch._foreach_add_(c, grads, alpha=1 - b1)
    torch._foreach_sign_(c)
    torch._foreach_add_(params, c, alpha=-LR)
    torch._foreach_mul_(m, b2)
    torch._foreach_add_(m, grads, alpha=1 - b2)


def torch_lamb_foreach(params, grads, m, v, k, b1=0.9, b2=0.999, eps=1e-6):
    import torch

    torch._foreach_mul_(m, b1)
    torch._foreach_add_(m, grads, alpha=1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, (1 - b2**k) ** 0.5)
    torch._foreach_add_(denom, eps)
    u = torch._foreach_div(m, denom)
    torch._foreach_div_(u, 1 - b1**k)
    torch._foreach_add_(u, params, alpha=WD)
    wn, un = torch._foreach_norm(params), torch._foreach_norm(u)
    ratio = [torch.where((a > 0) & (b > 0), a / b, torch.ones_like(a)) for a, b in zip(wn, un)]
    torch._foreach_mul_(u, ratio)
    torch._foreach_add_(params, u, alpha=-LR)


def shapes(rule_name, count, size, muon_side):
    if rule_name == "adafactor":  # factored: square matrices of `size` elements
        side = int(round(size**0.5))
        return [(side, side)] * count
    return [(muon_side, muon_side)] * count if rule_name == "muon" else [(size,)] * count


def torch_cases(name, rule, arrays, grads_np):
    import torch

    out = {}
    params = [torch.tensor(a) for a in arrays]
    grads = [torch.tensor(g) for g in grads_np]
    state = [rule.init(params)]

    def decay_step():
        _, state[0] = rule.step(params, grads, state[0])

    out["decay (torch)"] = decay_step
    ref = [torch.tensor(a) for a in arrays]
    if name in ("muon", "adafactor"):
        for p, g in zip(ref, grads):
            p.grad = g
        if name == "muon":
            opt = torch.optim.Muon(ref, lr=LR, weight_decay=WD)
        else:  # foreach: torch's multi-tensor implementation (its default is the per-tensor loop)
            opt = torch.optim.Adafactor(ref, lr=LR, weight_decay=WD, foreach=True)
        out[f"torch.optim.{type(opt).__name__}"] = opt.step
        if name == "muon":
            bf_params = [torch.tensor(a) for a in arrays]
            bf_rule = decay.muon(LR, weight_decay=WD, ns_dtype="bfloat16")
            bf_state = [bf_rule.init(bf_params)]

            def bf_step():
                _, bf_state[0] = bf_rule.step(bf_params, grads, bf_state[0])

            out["decay (torch, ns_dtype=bfloat16)"] = bf_step
    elif name == "lion":
        m = [torch.zeros_like(p) for p in ref]
        out["torch foreach (hand-written)"] = lambda: torch_lion_foreach(ref, grads, m)
    else:
        m, v = [torch.zeros_like(p) for p in ref], [torch.zeros_like(p) for p in ref]
        out["torch foreach (hand-written)"] = lambda: torch_lamb_foreach(ref, grads, m, v, 1)
    return out


def tf_cases(name, rule, arrays, grads_np):
    import keras
    import tensorflow as tf

    out = {}
    variables = [tf.Variable(a) for a in arrays]
    grads = [tf.constant(g) for g in grads_np]
    state = [rule.init(variables)]

    def decay_step():
        _, state[0] = rule.step(variables, grads, state[0])

    out["decay (tensorflow)"] = decay_step
    native = {"lion": lambda: keras.optimizers.Lion(LR, weight_decay=WD),
              "lamb": lambda: keras.optimizers.Lamb(LR, weight_decay=WD),
              "adafactor": lambda: keras.optimizers.Adafactor(LR, weight_decay=WD),
              "muon": lambda: keras.optimizers.Muon(LR, weight_decay=WD)}[name]()
    kv = [keras.Variable(a) for a in arrays]
    out["keras apply_gradients"] = lambda: native.apply_gradients(zip(grads, kv))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--size", type=int, default=1_000_000)
    # 1000x1000 is the 1M, but five Newton–Schulz steps on it cost ~30 GFLOP per
    # matrix: minutes per repeat on a shared 2-core CPU. Smaller here by default.
    parser.add_argument("--muon-side", type=int, default=256)
    parser.add_argument("--rules", nargs="+", default=["lion", "lamb", "adafactor", "muon"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rules = {"lion": lambda: decay.lion(LR, weight_decay=WD), "lamb": lambda: decay.lamb(LR, weight_decay=WD),
             "adafactor": lambda: decay.adafactor(LR, weight_decay=WD),
             "muon": lambda: decay.muon(LR, weight_decay=WD)}
    rules = {name: rules[name] for name in args.rules}
    rows, results = [], {}
    for name, make in rules.items():
        arrays = [rng.normal(size=s).astype(np.float32) for s in shapes(name, args.count, args.size, args.muon_side)]
        grads = [rng.normal(size=a.shape).astype(np.float32) for a in arrays]
        funcs = {}
        funcs.update(torch_cases(name, make(), arrays, grads))
        funcs.update(tf_cases(name, make(), arrays, grads))
        np_params, np_rule = [a.copy() for a in arrays], make()
        np_state = [np_rule.init(np_params)]

        def np_step(p=np_params, r=np_rule, s=np_state, g=grads):
            _, s[0] = r.step(p, g, s[0])

        funcs["decay (numpy)"] = np_step
        medians = interleaved_medians(funcs, repeats=args.repeats, warmup=2)
        results[name] = medians
        torch_ref = next(v for k, v in medians.items() if k.startswith("torch"))
        rows.append([name, f"{torch_ref * 1e3:.1f}", f"{medians['decay (torch)'] * 1e3:.1f}",
                     f"{medians['decay (torch)'] / torch_ref:.2f}", f"{medians['keras apply_gradients'] * 1e3:.1f}",
                     f"{medians['decay (tensorflow)'] * 1e3:.1f}",
                     f"{medians['keras apply_gradients'] / medians['decay (tensorflow)']:.1f}x",
                     f"{medians['decay (numpy)'] * 1e3:.1f}"])
    headers = ["rule", "torch ref ms", "decay torch ms", "ratio (<= 1.1)", "keras ms", "decay tf ms",
               "vs keras (>= 5x)", "decay numpy ms"]
    print(table(rows, headers))
    if "muon" in results:
        bf = results["muon"]["decay (torch, ns_dtype=bfloat16)"] / results["muon"]["torch.optim.Muon"]
        print(f"muon, decay ns_dtype='bfloat16' (torch's arithmetic) / torch.optim.Muon: {bf:.2f}")
    print(write("modern" if len(rules) == 4 else "modern-" + "-".join(rules), {"layout": f"{args.count}x{args.size}", "muon": f"{args.count}x{args.muon_side}x{args.muon_side}",
                           "repeats": args.repeats, "medians_s": results}))


if __name__ == "__main__":
    main()
