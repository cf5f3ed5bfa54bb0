"""RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam: decay against torch.optim and Keras.

Run: python benchmarks/bench_classic.py [--repeats 7] [--layouts 10x1M 200x50k] [--no-keras]

PyTorch (CPU): for each rule and layout it times, interleaved, torch.optim with
foreach=True and (Adagrad only: torch has no other fused kernel among these)
fused=True — the faster is the reference — decay's rule.step and
decay.torch.Optimizer.step, on the same float32 tensors. Target (issue 15): decay
<= 1.1x the reference.

Keras (TensorFlow): keras.optimizers.<X>.apply_gradients (eager, as Keras runs it
outside model.fit) against decay's rule.step on the same tf.Variables (TensorFlow's
compiled step). Target: decay >= 5x faster. Writes benchmarks/results/classic.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import LAYOUTS, interleaved_medians, table, write  # noqa: E402

WD = 1e-4
# name: (decay rule, torch.optim class name and kwargs, whether torch has fused=True,
#        Keras class name and kwargs or None, the decay rule with Keras's conventions)
CASES = {
    "rmsprop": (lambda: decay.rmsprop(1e-3, momentum=0.9, weight_decay=WD),
                ("RMSprop", dict(lr=1e-3, momentum=0.9, weight_decay=WD)), False,
                ("RMSprop", dict(learning_rate=1e-3, momentum=0.9, weight_decay=WD)),
                lambda: decay.rmsprop(1e-3, alpha=0.9, eps=1e-7, momentum=0.9, eps_inside_sqrt=True,
                                      weight_decay=WD, decoupled=True)),
    "adagrad": (lambda: decay.adagrad(1e-2, weight_decay=WD),
                ("Adagrad", dict(lr=1e-2, weight_decay=WD)), True,
                ("Adagrad", dict(learning_rate=1e-2, weight_decay=WD)),
                lambda: decay.adagrad(1e-2, initial_accumulator_value=0.1, eps=1e-7, eps_inside_sqrt=True,
                                      weight_decay=WD, decoupled=True)),
    "adadelta": (lambda: decay.adadelta(1.0, weight_decay=WD),
                 ("Adadelta", dict(lr=1.0, weight_decay=WD)), False,
                 ("Adadelta", dict(learning_rate=1.0, weight_decay=WD)),
                 lambda: decay.adadelta(1.0, rho=0.95, eps=1e-7, weight_decay=WD, decoupled=True)),
    "adamax": (lambda: decay.adamax(2e-3, weight_decay=WD),
               ("Adamax", dict(lr=2e-3, weight_decay=WD)), False,
               ("Adamax", dict(learning_rate=2e-3, weight_decay=WD)),
               lambda: decay.adamax(2e-3, eps=1e-7, eps_inside_max=False, weight_decay=WD, decoupled=True)),
    "nadam": (lambda: decay.nadam(2e-3, weight_decay=WD, decoupled=True),
              ("NAdam", dict(lr=2e-3, weight_decay=WD, decoupled_weight_decay=True)), False,
              ("Nadam", dict(learning_rate=2e-3, weight_decay=WD)),
              lambda: decay.nadam(2e-3, eps=1e-7, momentum_schedule="keras", weight_decay=WD, decoupled=True)),
    "radam": (lambda: decay.radam(1e-3, weight_decay=WD, decoupled=True),
              ("RAdam", dict(lr=1e-3, weight_decay=WD, decoupled_weight_decay=True)), False, None, None),
}


def torch_sides(torch, make_rule, native, has_fused, count, size) -> dict:
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(size, generator=gen) for _ in range(count)]
    grads = [torch.randn(size, generator=gen).mul_(1e-3) for _ in range(count)]
    cls, kwargs = getattr(torch.optim, native[0]), native[1]

    def tensors():
        ts = [b.clone() for b in base]
        for t, g in zip(ts, grads):
            t.grad = g
        return ts

    sides = {"foreach": cls(tensors(), foreach=True, **kwargs).step}
    if has_fused:
        sides["fused"] = cls(tensors(), fused=True, **kwargs).step
    rule, rule_p = make_rule(), tensors()
    box = [rule.init(rule_p)]

    def rule_step():
        _, box[0] = rule.step(rule_p, grads, box[0])

    sides["decay"] = rule_step
    sides["decay.torch"] = decay.torch.Optimizer(tensors(), make_rule()).step
    return sides


def keras_sides(keras, tf, native, make_rule, count, size) -> dict:
    rng = tf.random.Generator.from_seed(0)
    base = [rng.normal([size]) for _ in range(count)]
    grads = [rng.normal([size]) * 1e-3 for _ in range(count)]
    native_vars = [keras.Variable(b) for b in base]
    opt = getattr(keras.optimizers, native[0])(**native[1])
    opt.build(native_vars)
    rule, rule_vars = make_rule(), [tf.Variable(b) for b in base]
    box = [rule.init(rule_vars)]

    def rule_step():
        _, box[0] = rule.step(rule_vars, grads, box[0])

    return {"keras": lambda: opt.apply_gradients(zip(grads, native_vars)), "decay": rule_step}


def run_torch(args, rows, results):
    import torch

    # One thread: on a busy shared machine torch's intra-op pool spins (a 100-step test went
    # from 0.15 s to 10 s); both sides run under the same setting.
    torch.set_num_threads(1)
    for layout in args.layouts:
        count, size = LAYOUTS[layout]
        for name, (make_rule, native, has_fused, _, _) in CASES.items():
            medians = interleaved_medians(torch_sides(torch, make_rule, native, has_fused, count, size), args.repeats)
            ref_name = min((k for k in ("fused", "foreach") if k in medians), key=medians.get)
            ref = medians[ref_name]
            ratio, ratio_opt = medians["decay"] / ref, medians["decay.torch"] / ref
            rows.append([layout, name, f"{ref * 1e3:.2f} ({ref_name})", f"{medians['decay'] * 1e3:.2f}",
                         f"{ratio:.2f}", f"{ratio_opt:.2f}", "yes" if max(ratio, ratio_opt) <= 1.1 else "no"])
            results.append({"framework": "torch", "layout": layout, "rule": name, "reference": ref_name,
                            "medians_s": medians, "ratio": ratio, "ratio_optimizer": ratio_opt})


def run_keras(args, rows, results):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    for layout in args.keras_layouts:
        count, size = LAYOUTS[layout]
        for name, (_, _, _, native, make_rule) in CASES.items():
            if native is None:
                continue
            medians = interleaved_medians(keras_sides(keras, tf, native, make_rule, count, size), args.keras_repeats)
            speedup = medians["keras"] / medians["decay"]
            rows.append([layout, name, f"{medians['keras'] * 1e3:.1f}", f"{medians['decay'] * 1e3:.2f}",
                         f"{speedup:.1f}", "yes" if speedup >= 5 else "no"])
            results.append({"framework": "keras", "layout": layout, "rule": name, "medians_s": medians,
                            "speedup": speedup})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layouts", nargs="+", default=["10x1M", "200x50k"])
    parser.add_argument("--keras-layouts", nargs="+", default=["200x50k"])
    parser.add_argument("--keras-repeats", type=int, default=5)
    parser.add_argument("--no-keras", action="store_true")
    args = parser.parse_args()
    results, torch_rows, keras_rows = [], [], []
    run_torch(args, torch_rows, results)
    print(table(torch_rows, ["layout", "rule", "torch ms (which)", "decay ms", "decay/torch",
                             "decay.torch/torch", "<=1.1x"]))
    if not args.no_keras:
        run_keras(args, keras_rows, results)
        print()
        print(table(keras_rows, ["layout", "rule", "keras ms", "decay ms", "speedup", ">=5x"]))
    print("\nwrote", write("classic", {"repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
