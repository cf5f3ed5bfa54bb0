"""The ``decay`` command line (also ``python -m decay``)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import example
from .backends import available_backends
from .errors import DecayError
from .tolerances import relative_error, rtol


def _cmd_example(args) -> int:
    backends = args.backends or available_backends()
    expected = example.closed_form()
    print(
        f"The article's example: x0={list(example.X0)}, loss sum(x^2), L2 lambda={example.LAM}, "
        f"lr={example.LR}, {example.STEPS} steps"
    )
    print(f"closed form x0*(1-0.022)^100 = {np.array2string(expected, precision=10)}\n")
    print(f"{'backend':<11} {'placement':<10} {'x after 100 steps':<44} {'rel. error':>10}  ok")
    worst_ok = True
    for name in backends:
        for placement in example.PLACEMENTS:
            x = example.run(name, placement, args.dtype)
            error = relative_error(x, expected)
            ok = error <= rtol(args.dtype, example.STEPS)
            worst_ok &= ok
            print(
                f"{name:<11} {placement:<10} {np.array2string(x, precision=10):<44} "
                f"{error:>10.2e}  {'yes' if ok else 'NO'}"
            )
    return 0 if worst_ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decay", description="Weight decay defined once, with the same numbers on every backend."
    )
    sub = parser.add_subparsers(dest="command")
    ex = sub.add_parser(
        "example", help="the article's worked example on every installed backend (the default)"
    )
    ex.add_argument("--backends", nargs="+", help="backends to run (default: every installed one)")
    ex.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ex.set_defaults(func=_cmd_example)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["example"] + argv  # the default command takes its options directly
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DecayError as exc:
        print(f"decay: error: {exc}", file=sys.stderr)
        return 2
