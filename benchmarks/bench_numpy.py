"""NumPy: decay's in-place steps against the memory-bandwidth floor.

Run: python benchmarks/bench_numpy.py [--repeats 15] [--steps-memory 4000]

The floor of a step is parameters x bytes moved per parameter / copy bandwidth, with
the bandwidth measured in the same run, interleaved with each case (np.copyto of a
40 MB buffer: read + write).
Target (issue 8): decay's step <= 1.5x the floor, and peak memory that does not grow
with the number of steps. Writes benchmarks/results/numpy.json.
"""

import argparse
import os
import statistics
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import BYTES, LAYOUTS, interleaved_medians, table, write  # noqa: E402

RULES = {
    "sgd": lambda: decay.sgd(0.01, weight_decay=1e-4),
    "sgd_decoupled": lambda: decay.sgd(0.01, weight_decay=1e-4, decoupled=True),
    "sgd_momentum": lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4),
    "sgd_momentum_decoupled": lambda: decay.sgd(0.01, momentum=0.9, weight_decay=1e-4, decoupled=True),
    "adamw": lambda: decay.adamw(1e-3, weight_decay=1e-2),
}
TRAFFIC = {"sgd": BYTES["sgd"], "sgd_decoupled": BYTES["sgd"], "sgd_momentum": BYTES["sgd_momentum"],
           "sgd_momentum_decoupled": BYTES["sgd_momentum"], "adamw": BYTES["adamw"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps-memory", type=int, default=4000)
    args = parser.parse_args()

    # The copy that gives the floor is timed interleaved with every case (bandwidth on a
    # shared machine drifts by tens of percent within a minute).
    src = np.ones(10_000_000, dtype=np.float32)
    dst = np.empty_like(src)
    bandwidths = []

    rows, results = [], []
    for layout, (count, size) in LAYOUTS.items():
        rng = np.random.default_rng(0)
        params = [rng.normal(size=size).astype(np.float32) for _ in range(count)]
        grads = [rng.normal(size=size).astype(np.float32) * 1e-3 for _ in range(count)]
        for name, make in RULES.items():
            rule = make()
            box = [rule.init(params)]

            def step(rule=rule, box=box):
                _, box[0] = rule.step(params, grads, box[0])

            t = interleaved_medians({"copy": lambda: np.copyto(dst, src), "decay": step}, args.repeats)
            bandwidth = 2 * src.nbytes / t["copy"]  # bytes read + written per second
            bandwidths.append(bandwidth)
            t = t["decay"]
            floor = count * size * TRAFFIC[name] / bandwidth
            ratio = t / floor
            rows.append((layout, name, f"{t * 1e3:.2f}", f"{floor * 1e3:.2f}", f"{ratio:.2f}",
                         "ok" if ratio <= 1.5 else "over 1.5x"))
            results.append({"layout": layout, "rule": name, "median_s": t, "floor_s": floor, "ratio": ratio,
                            "bandwidth_bytes_per_s": bandwidth})
    print(f"copy bandwidth (np.copyto, 40 MB, timed beside each case): {min(bandwidths) / 1e9:.1f}-"
          f"{max(bandwidths) / 1e9:.1f} GB/s")
    print(table(rows, ["layout", "rule", "decay ms", "floor ms", "ratio", "target <= 1.5x"]))

    # Peak memory over many steps must not grow. Python keeps free lists of small objects
    # (tuples, dicts) that tracemalloc counts as allocated until they fill, so compare
    # the peak at half the steps with the peak at the end, after they have filled.
    params = [np.ones(100_000, dtype=np.float32) for _ in range(4)]
    grads = [np.full(100_000, 1e-3, dtype=np.float32) for _ in range(4)]
    rule = decay.adamw(1e-3)
    state = rule.init(params)
    tracemalloc.start()
    half, peaks = args.steps_memory // 2, {}
    for n in range(1, args.steps_memory + 1):
        _, state = rule.step(params, grads, state)
        if n in (half, args.steps_memory):
            peaks[n] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grows = peaks[args.steps_memory] > 1.05 * peaks[half] + 16_384
    print(f"peak traced memory after {half} steps: {peaks[half] / 1e3:.1f} kB, after {args.steps_memory}: "
          f"{peaks[args.steps_memory] / 1e3:.1f} kB ({'grows' if grows else 'does not grow'}; "
          "the parameters' own 1.6 MB are not traced allocations of the step)")
    path = write("numpy", {"bandwidth_bytes_per_s": statistics.median(bandwidths), "steps": results,
                           "peak_memory_bytes": {str(k): v for k, v in peaks.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
