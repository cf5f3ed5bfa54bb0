"""Shared by the benchmark scripts: timing by medians, side by side, and JSON output.

Machines here are shared and noisy: every number is a median of repeated runs, and
every target is a ratio of two medians measured in the same run, interleaved so that
load changes hit both sides alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The three layouts of issue 8: 10M float32 parameters in 10 and in 200 tensors, and
# 1,000 tensors of 1,000 parameters (per-tensor overhead).
LAYOUTS = {"10x1M": (10, 1_000_000), "200x50k": (200, 50_000), "1000x1k": (1000, 1_000)}
# Bytes moved per float32 parameter per step: SGD reads θ and g and writes θ (12);
# momentum adds the buffer read and written (20); Adam/AdamW two moments (28).
BYTES = {"sgd": 12, "sgd_momentum": 20, "adamw": 28, "l2_value": 4}


def interleaved_medians(functions: dict, repeats: int = 15, warmup: int = 2) -> dict:
    """Median seconds per call of each function, calls interleaved round-robin."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def write(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    payload = {"machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    return path


def table(rows, headers) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return "\n".join(out)
