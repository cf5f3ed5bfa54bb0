"""TensorFlow: decay's step on tf.Variables against Keras's apply_gradients with the
same weight_decay, and against a hand-written XLA-compiled update of the same math.

Run: python benchmarks/bench_tensorflow.py [--repeats 15]

Targets (issue 8): decay >= 5x faster than Keras's apply_gradients, and <= 1.2x the
hand-written XLA update (the faster of its tf.function and ConcreteFunction calls).
Writes benchmarks/results/tensorflow.json.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import BYTES, LAYOUTS, interleaved_medians, table, write  # noqa: E402

LR, WD, MU = 0.01, 1e-4, 0.9  # SGD
LR_A, WD_A, B1, B2, EPS = 1e-3, 1e-2, 0.9, 0.999, 1e-8  # AdamW


def hand_written_sgd(variables):
    """Keras-convention decoupled SGD with momentum, written directly, XLA-compiled: one
    fused assign per variable and per buffer (20 bytes per parameter)."""
    buffers = [tf.Variable(tf.zeros_like(v)) for v in variables]

    @tf.function(jit_compile=True)
    def step(grads):
        for v, b, g in zip(variables, buffers, grads):
            new_b = b * MU + g
            b.assign(new_b)
            v.assign(v * (1.0 - LR * WD) - new_b * LR)

    return step


def hand_written_adamw(variables):
    """AdamW as decay.adamw and torch.optim.AdamW compute it (θ shrunk by lr·λ, ε added
    to the bias-corrected √v), written directly, XLA-compiled (28 bytes per parameter)."""
    ms = [tf.Variable(tf.zeros_like(v)) for v in variables]
    vs = [tf.Variable(tf.zeros_like(v)) for v in variables]
    count = tf.Variable(0.0, dtype=tf.float32)

    @tf.function(jit_compile=True)
    def step(grads):
        count.assign_add(1.0)
        step_size = LR_A / (1.0 - B1**count)
        root_c2 = tf.sqrt(1.0 - B2**count)
        for p, m, v, g in zip(variables, ms, vs, grads):
            new_m = m * B1 + g * (1.0 - B1)
            new_v = v * B2 + g * g * (1.0 - B2)
            m.assign(new_m)
            v.assign(new_v)
            p.assign(p * (1.0 - LR_A * WD_A) - step_size * new_m / (tf.sqrt(new_v) / root_c2 + EPS))

    return step


# name: (Keras optimizer, decay rule, hand-written update, bytes moved per parameter)
CASES = {
    "sgd_momentum_decoupled": (
        lambda: keras.optimizers.SGD(LR, momentum=MU, weight_decay=WD),
        lambda: decay.sgd(LR, momentum=MU, weight_decay=WD, decoupled=True),
        hand_written_sgd, BYTES["sgd_momentum"],
    ),
    "adamw": (
        lambda: keras.optimizers.AdamW(LR_A, weight_decay=WD_A, beta_1=B1, beta_2=B2, epsilon=EPS),
        lambda: decay.adamw(LR_A, weight_decay=WD_A, betas=(B1, B2), eps=EPS),
        hand_written_adamw, BYTES["adamw"],
    ),
}


def hand_written_variants(make, base, grads):
    """The hand-written update called three ways. tf.function's call matches every
    argument against the traced signature (~10 µs per tensor); the ConcreteFunction from
    get_concrete_function (public API) does less; ``_call_flat`` (private, what decay's
    fast path calls) skips it. The target is against the faster public one."""
    made = [make([tf.Variable(b) for b in base]) for _ in range(3)]
    concrete = made[1].get_concrete_function([tf.TensorSpec(g.shape, g.dtype) for g in grads])
    flat = made[2].get_concrete_function([tf.TensorSpec(g.shape, g.dtype) for g in grads])
    captured = flat.captured_inputs
    return {
        "xla": lambda: made[0](grads),
        "xla_concrete": lambda: concrete(grads),
        "xla_flat_private": lambda: flat._call_flat(grads, captured),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    args = parser.parse_args()
    rows, results = [], []
    for layout in args.layouts:
        count, size = LAYOUTS[layout]
        rng = np.random.default_rng(0)
        base = [rng.normal(size=size).astype(np.float32) for _ in range(count)]
        grads = [tf.constant(rng.normal(size=size).astype(np.float32) * 1e-3) for _ in range(count)]
        for name, (make_keras, make_rule, make_hand, per_param) in CASES.items():
            keras_vars = [keras.Variable(b) for b in base]
            keras_opt = make_keras()
            keras_opt.build(keras_vars)
            ours = [tf.Variable(b) for b in base]
            rule = make_rule()
            box = [rule.init(ours)]

            def decay_step(rule=rule, box=box, ours=ours):
                _, box[0] = rule.step(ours, grads, box[0])

            t = interleaved_medians({
                "keras": lambda opt=keras_opt, v=keras_vars: opt.apply_gradients(zip(grads, v)),
                **hand_written_variants(make_hand, base, grads),
                "decay": decay_step,
            }, args.repeats)
            best = min(t["xla"], t["xla_concrete"])  # the best hand-written update through public API
            speedup, ratio = t["keras"] / t["decay"], t["decay"] / best
            # On large tensors the best update runs at memory bandwidth, so Keras's time
            # over the fastest one bounds any speedup.
            fastest = min(t["xla"], t["xla_concrete"], t["xla_flat_private"], t["decay"])
            gbps = per_param * count * size / fastest / 1e9
            ok = "ok" if speedup >= 5 and ratio <= 1.2 else "missed"
            rows.append((layout, name, *(f"{t[k] * 1e3:.2f}" for k in ("keras", "xla", "xla_concrete", "xla_flat_private", "decay")),
                         f"{speedup:.1f}x", f"{ratio:.2f}", f"{t['keras'] / fastest:.1f}x", f"{gbps:.0f}", ok))
            results.append({"layout": layout, "case": name, "median_s": t, "speedup_vs_keras": speedup,
                            "ratio_vs_xla": ratio, "keras_over_fastest": t["keras"] / fastest,
                            "fastest_GB_per_s": gbps})
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}; SGD momentum {MU}, decoupled weight decay "
          f"{WD}; AdamW lr {LR_A}, weight decay {WD_A}")
    print(table(rows, ["layout", "case", "keras ms", "XLA ms", "XLA concrete ms", "XLA private ms", "decay ms",
                       "vs keras (>=5x)", "vs XLA (<=1.2)", "keras/fastest", "fastest GB/s", ""]))
    print("XLA: the hand-written update through tf.function; concrete: through its ConcreteFunction "
          "(vs XLA is against the faster of these two); private: through _call_flat (for reference). "
          "keras/fastest: the most any implementation gains over Keras here.")
    path = write("tensorflow", {"tensorflow": tf.__version__, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
