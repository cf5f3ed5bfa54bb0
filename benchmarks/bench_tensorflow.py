"""TensorFlow: decay's step on tf.Variables against Keras's apply_gradients with the
same weight_decay, and against a hand-written XLA-compiled update of the same math.

Run: python benchmarks/bench_tensorflow.py [--repeats 15]

Targets (issue 8): decay >= 5x faster than Keras's apply_gradients, and <= 1.2x the
hand-written XLA update. Writes benchmarks/results/tensorflow.json.
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
from common import LAYOUTS, interleaved_medians, table, write  # noqa: E402

LR, WD, MU = 0.01, 1e-4, 0.9


def hand_written_sgd(variables, buffers):
    """Keras-convention decoupled SGD with momentum, written directly, XLA-compiled."""

    @tf.function(jit_compile=True)
    def step(grads):
        for v, b, g in zip(variables, buffers, grads):
            v.assign(v * (1.0 - LR * WD))
            b.assign(b * MU + g)
            v.assign_sub(b * LR)

    return step


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
        keras_vars = [keras.Variable(b) for b in base]
        keras_opt = keras.optimizers.SGD(LR, momentum=MU, weight_decay=WD)
        keras_opt.build(keras_vars)
        ours = [tf.Variable(b) for b in base]
        rule = decay.sgd(LR, momentum=MU, weight_decay=WD, decoupled=True)
        box = [rule.init(ours)]
        hand_vars = [tf.Variable(b) for b in base]
        hand_bufs = [tf.Variable(tf.zeros_like(b)) for b in base]
        hand = hand_written_sgd(hand_vars, hand_bufs)

        def decay_step():
            _, box[0] = rule.step(ours, grads, box[0])

        t = interleaved_medians({
            "keras": lambda: keras_opt.apply_gradients(zip(grads, keras_vars)),
            "xla": lambda: hand(grads),
            "decay": decay_step,
        }, args.repeats)
        speedup, ratio = t["keras"] / t["decay"], t["decay"] / t["xla"]
        ok = "ok" if speedup >= 5 and ratio <= 1.2 else "missed"
        rows.append((layout, f"{t['keras'] * 1e3:.2f}", f"{t['xla'] * 1e3:.2f}", f"{t['decay'] * 1e3:.2f}",
                     f"{speedup:.1f}x", f"{ratio:.2f}", ok))
        results.append({"layout": layout, "median_s": t, "speedup_vs_keras": speedup, "ratio_vs_xla": ratio})
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}; SGD momentum {MU}, decoupled weight decay {WD}")
    print(table(rows, ["layout", "keras ms", "hand XLA ms", "decay ms", "vs keras (>=5x)", "vs XLA (<=1.2)", ""]))
    path = write("tensorflow", {"tensorflow": tf.__version__, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
