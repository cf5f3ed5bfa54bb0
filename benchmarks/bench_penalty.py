"""An L2 penalty value over all parameters against the fastest native reduction.

Run: python benchmarks/bench_penalty.py [--repeats 15]

NumPy: decay.L2(lam).penalty(params) vs sum(np.dot(p, p)); PyTorch: vs
torch._foreach_norm (squared and summed). Target (issue 8): <= 1.2x. Writes
benchmarks/results/penalty.json.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import decay  # noqa: E402
from common import LAYOUTS, interleaved_medians, table, write  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    penalty = decay.L2(1e-4)
    rows, results = [], []
    for layout, (count, size) in LAYOUTS.items():
        rng = np.random.default_rng(0)
        arrays = [rng.normal(size=size).astype(np.float32) for _ in range(count)]
        tensors = [torch.from_numpy(a) for a in arrays]
        t = interleaved_medians({
            "numpy_native": lambda: sum(float(np.dot(a, a)) for a in arrays),
            "numpy_decay": lambda: float(penalty.penalty(arrays)),
            "torch_native": lambda: float(torch.stack(torch._foreach_norm(tensors)).square().sum()),
            "torch_decay": lambda: float(penalty.penalty(tensors)),
        }, args.repeats)
        r_np, r_t = t["numpy_decay"] / t["numpy_native"], t["torch_decay"] / t["torch_native"]
        rows.append((layout, f"{t['numpy_native'] * 1e3:.2f}", f"{t['numpy_decay'] * 1e3:.2f}", f"{r_np:.2f}",
                     f"{t['torch_native'] * 1e3:.2f}", f"{t['torch_decay'] * 1e3:.2f}", f"{r_t:.2f}"))
        results.append({"layout": layout, "median_s": t, "ratio_numpy": r_np, "ratio_torch": r_t})
    print(table(rows, ["layout", "np.dot ms", "decay np ms", "ratio", "foreach_norm ms", "decay torch ms", "ratio"]))
    path = write("penalty", {"cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
