"""JAX: decay's step (one jitted function per structure, called by ``rule.step``) and
``decay.optax.transformation`` inside the caller's ``jax.jit``, against optax's own
``adamw`` / ``sgd`` chains under ``jax.jit``, on float32 parameters.

Run: python benchmarks/bench_jax.py [--repeats 11] [--layouts 10x1M 200x50k]

Target (issue 17): <= 1.1x optax under jit, on 10 tensors of 1M and 200 of 50k.
Nothing is donated on either side (decay's step is functional: the caller keeps its
arrays). Writes benchmarks/results/jax.json (jax-<platform>.json off the CPU).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import BYTES, LAYOUTS, interleaved_medians, table, write  # noqa: E402

LR, WD, MU = 0.01, 1e-4, 0.9
LR_A, WD_A = 1e-3, 1e-2

# name: (optax transformation, decay rule, bytes per parameter)
CASES = {
    "sgd_momentum_coupled": (
        lambda: optax.chain(optax.add_decayed_weights(WD), optax.sgd(LR, momentum=MU)),
        lambda: decay.sgd(LR, momentum=MU, weight_decay=WD), BYTES["sgd_momentum"],
    ),
    "adamw": (
        lambda: optax.adamw(LR_A, weight_decay=WD_A),
        lambda: decay.adamw(LR_A, weight_decay=WD_A), BYTES["adamw"],
    ),
}


def jitted(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def runner(step, params, state, grads):
    box = [params, state]

    def run():
        box[0], box[1] = step(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--layouts", nargs="+", default=["10x1M", "200x50k"])
    args = parser.parse_args()
    rows, results = [], []
    for layout in args.layouts:
        count, size = LAYOUTS[layout]
        rng = np.random.default_rng(0)
        params = [jnp.asarray(rng.normal(size=size).astype(np.float32)) for _ in range(count)]
        grads = [jnp.asarray(rng.normal(size=size).astype(np.float32) * 1e-3) for _ in range(count)]
        for name, (make_tx, make_rule, per_param) in CASES.items():
            tx = make_tx()
            rule = make_rule()
            ours_tx = decay.optax.transformation(make_rule())
            fns = {
                "optax": runner(jitted(tx), params, tx.init(params), grads),
                # rule.step called eagerly: its numbers in Python, the update one jitted call
                "decay": runner(lambda p, s, g, rule=rule: rule.step(p, g, s), params, rule.init(params), grads),
                # decay.optax.transformation inside the caller's jit (numbers by host callback)
                "decay.optax": runner(jitted(ours_tx), params, ours_tx.init(params), grads),
            }
            t = interleaved_medians(fns, args.repeats)
            ratio, ratio_tx = t["decay"] / t["optax"], t["decay.optax"] / t["optax"]
            gbps = per_param * count * size / min(t.values()) / 1e9
            rows.append((layout, name, *(f"{t[k] * 1e3:.2f}" for k in ("optax", "decay", "decay.optax")),
                         f"{ratio:.2f}", f"{ratio_tx:.2f}", f"{gbps:.0f}",
                         "ok" if max(ratio, ratio_tx) <= 1.1 else "missed"))
            results.append({"layout": layout, "case": name, "median_s": t, "ratio_vs_optax": ratio,
                            "ratio_transformation_vs_optax": ratio_tx, "fastest_GB_per_s": gbps})
    platform = jax.devices()[0].platform
    print(f"jax {jax.__version__}, optax {optax.__version__}, {platform}; medians of {args.repeats} interleaved runs")
    print(table(rows, ["layout", "case", "optax ms", "decay ms", "decay.optax ms", "decay/optax (<=1.1)",
                       "decay.optax/optax", "fastest GB/s", ""]))
    path = write("jax" if platform == "cpu" else f"jax-{platform}",
                 {"jax": jax.__version__, "optax": optax.__version__, "platform": platform, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
