"""`decay compare` on its built-in default, end to end, as a user runs it.

Run: python benchmarks/bench_compare.py [--repeats 3]

Target (issue 8): under 30 seconds on a 2-core machine. Writes
benchmarks/results/compare.json.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "decay", "--quiet"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"decay compare (default): median {median:.1f} s over {args.repeats} runs "
          f"({', '.join(f'{t:.1f}' for t in times)}); target < 30 s: {'ok' if median < 30 else 'missed'}")
    print(f"wrote {write('compare', {'seconds': times, 'median_s': median})}")


if __name__ == "__main__":
    main()
