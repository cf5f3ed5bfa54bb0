"""The Performance tables of docs/performance.md, rendered from the JSON the benchmarks wrote.

Run: python benchmarks/report.py   (prints Markdown; paste it into docs/performance.md)

tests/app/test_readme.py checks that every table printed here appears in that page, so
the numbers there are the measured ones.
"""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load(name: str):
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def markdown(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def torch_cpu(d) -> str:
    rows = []
    for c in d["cases"]:
        t = c["median_s"]
        rows.append((c["layout"], c["case"], ms(min(t["fused"], t["foreach"])), ms(t["decay"]),
                     f"{c['ratio']:.2f}", ms(t["decay.torch"]), f"{c['ratio_optimizer']:.2f}",
                     f"≤ {c['target']}"))
    return markdown(["layout", "case", "torch fastest ms", "decay ms", "ratio", "decay.torch ms", "ratio", "target"], rows)


def tensorflow(d) -> str:
    rows = []
    for c in d["cases"]:
        t = c["median_s"]
        rows.append((c["layout"], c.get("case", "sgd_momentum_decoupled"), ms(t["keras"]),
                     ms(min(t["xla"], t["xla_concrete"])), ms(t["decay"]), f"{c['speedup_vs_keras']:.1f}×",
                     f"{c['ratio_vs_xla']:.2f}", f"{c['keras_over_fastest']:.1f}×"))
    return markdown(["layout", "case", "Keras ms", "hand-written XLA ms", "decay ms", "vs Keras (≥ 5×)",
                     "vs XLA (≤ 1.2)", "Keras ÷ fastest"], rows)


def numpy(d) -> str:
    rows = [(s["layout"], s["rule"], ms(s["median_s"]), ms(s["floor_s"]), f"{s['ratio']:.2f}") for s in d["steps"]]
    return markdown(["layout", "rule", "decay ms", "floor ms", "ratio (≤ 1.5)"], rows)


def penalty(d) -> str:
    rows = []
    for c in d["cases"]:
        t = c["median_s"]
        rows.append((c["layout"], ms(t["numpy_native"]), f"{c['ratio_numpy']:.2f}", ms(t["torch_native"]),
                     f"{c['ratio_torch']:.2f}"))
    return markdown(["layout", "np.dot ms", "decay (NumPy) ratio", "torch._foreach_norm ms", "decay (torch) ratio"], rows)


def cuda(d) -> str:
    bw = d["bandwidth"]
    rows = []
    for c in bw["cases"]:
        t, f = c["median_s"], c["fraction_of_copy"]
        rows.append((c["case"], c["bytes_per_param"], *(f"{ms(t[k])} ({f[k]:.0%})" for k in ("fused", "decay", "decay.torch")),
                     "≥ 80%" if c["targeted"] else "–"))
    return markdown(["case", "bytes/param", "torch fused ms (of copy bw)", "decay ms", "decay.torch ms", "target"], rows)


def cuda_same_numbers(d) -> str:
    worst = {}
    for c in d["same_numbers"]:
        key = (c["dtype"], c["compare"])
        if key not in worst or c["error"] > worst[key][0]:
            worst[key] = (c["error"], c["bound"], c["case"])
    rows = [(dtype, compare, f"{e:.1e} ({case})", f"{b:.1e}") for (dtype, compare), (e, b, case) in sorted(worst.items())]
    return markdown(["dtype", "compared", "largest relative error (case)", "bound, 50 steps"], rows)


def torch_cuda(d) -> str:
    rows = []
    for c in d["cases"]:
        t = c["median_s"]
        rows.append((c["layout"], c["case"], ms(min(t["fused"], t["foreach"])), ms(t["decay"]), f"{c['ratio']:.2f}",
                     ms(t["decay.torch"]), f"{c['ratio_optimizer']:.2f}"))
    return markdown(["layout", "case", "torch fastest ms", "decay ms", "ratio", "decay.torch ms", "ratio"], rows)


def jax_cpu(d) -> str:
    rows = []
    for c in d["cases"]:
        t = c["median_s"]
        rows.append((c["layout"], c["case"], ms(t["optax"]), ms(t["decay"]), f"{c['ratio_vs_optax']:.2f}",
                     ms(t["decay.optax"]), f"{c['ratio_transformation_vs_optax']:.2f}"))
    return markdown(["layout", "case", "optax (jit) ms", "decay ms", "ratio", "decay.optax (jit) ms", "ratio"], rows)


SECTIONS = [
    ("torch-cpu", torch_cpu), ("tensorflow", tensorflow), ("numpy", numpy), ("penalty", penalty),
    ("cuda", cuda_same_numbers), ("cuda", cuda), ("torch-cuda", torch_cuda), ("jax", jax_cpu),
]


def tables() -> list[str]:
    out = []
    for name, render in SECTIONS:
        d = load(name)
        if d is not None:
            out.append(render(d))
    return out


def main():
    for (name, _), text in zip(SECTIONS, tables()):
        print(f"<!-- {name} -->\n{text}\n")
    compare = load("compare")
    if compare is not None:
        print(f"decay compare default: median {compare['median_s']:.1f} s")


if __name__ == "__main__":
    main()
