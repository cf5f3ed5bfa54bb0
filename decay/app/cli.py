"""The ``decay`` command line (also ``python -m decay``).

Commands: ``compare`` (the default), ``sweep``, ``convert`` and ``example``. Exit codes:
0 success, 1 a real failure (backends that disagree, an unexpected error), 2 bad usage
(an unknown backend or option value, a negative λ, a backend that is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys

import numpy as np

from .. import available_backends
from ..errors import DecayError
from ..tolerances import relative_error, rtol
from . import compare, datasets, example, plots


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit code 2; and it keeps which
    flag sets which argument (``flags``), for :func:`_with_flags`."""

    def __init__(self, *args, **kwargs):
        self.flags = {}  # before argparse's __init__, which adds --help through add_argument
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.flags[action.dest] = action.option_strings[-1]
        return action

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _with_flags(message: str, flags: dict) -> str:
    """The library names the arguments of its functions (`momentum`), never a
    command-line flag; add the flags that set them here, so the user sees what to change."""
    names = [a or b for a, b in re.findall(r"`(\w+)`|\b(\w+)=", message)]  # `lr` or "Received: lr=-1"
    named = dict.fromkeys(flags[name] for name in names if name in flags)
    return f"{message} (option{'s' if len(named) > 1 else ''}: {', '.join(named)})" if named else message


# -- compare ---------------------------------------------------------------------------------------
def _add_training_options(p, defaults: compare.Config):
    p.add_argument("--backends", nargs="+", metavar="NAME",
                   help="backends to run: numpy, torch, tensorflow, jax (aliases np, pytorch, tf, jnp); "
                        "default: every installed one but jax (its model steps run op by op, ~100 ms each)")
    p.add_argument("--model", choices=compare.MODELS, default=defaults.model,
                   help=f"model to train (default: {defaults.model})")
    p.add_argument("--dataset", choices=datasets.NAMES, default=defaults.dataset,
                   help=f"data set; 'sine' ships with decay, the others need scikit-learn (default: {defaults.dataset})")
    p.add_argument("--optimizer", choices=compare.OPTIMIZERS, default=defaults.optimizer,
                   help=f"update rule; momentum and nesterov use 0.9 (default: {defaults.optimizer})")
    p.add_argument("--lr", type=float, default=defaults.lr, help=f"learning rate (default: {defaults.lr})")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="PyTorch-convention coefficient lambda; in the loss it is L2(lambda/2) "
                        f"(default: {defaults.weight_decay})")
    p.add_argument("--decay-mode", choices=compare.DECAY_MODES, default=defaults.decay_mode,
                   help="where the decay lives; cautious, corrected and toward-init are decoupled decay "
                        "in the variants no framework ships (masked by sign agreement; scaled by "
                        f"lr_t^2/lr_max; toward the initial weights) (default: {defaults.decay_mode})")
    p.add_argument("--schedule", choices=compare.SCHEDULES, default=defaults.schedule,
                   help=f"learning-rate schedule (default: {defaults.schedule})")
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"updates (default: {defaults.steps})")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the full training set)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=defaults.dtype,
                   help=f"parameter dtype (default: {defaults.dtype})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="initial weights' seed (default: 0)")
    p.add_argument("--report", metavar="FILE.json", help="write the results as JSON (schema in the README)")
    p.add_argument("--plot", metavar="FILE.png", help="write a plot (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args, **extra) -> compare.Config:
    return compare.Config(
        backends=args.backends, model=args.model, dataset=args.dataset, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, decay_mode=args.decay_mode, schedule=args.schedule,
        steps=args.steps, batch_size=args.batch_size, dtype=args.dtype, seed=args.seed,
        monitor=getattr(args, "monitor", False), **extra,
    )


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _cmd_compare(args) -> int:
    result = compare.run(_config(args, natives=args.natives), progress=not args.quiet)
    print(compare.format_table(result))
    if args.report:
        _write_json(args.report, result.to_json())
    if args.plot:
        plots.compare(result, args.plot)
    return 0 if result.agree else 1


def _cmd_sweep(args) -> int:
    from . import sweep

    result = sweep.run(_config(args), grid=args.grid, folds=args.folds)
    print(sweep.format_table(result))
    if args.report:
        _write_json(args.report, result.to_json())
    if args.plot:
        plots.sweep(result, args.plot)
    return 0


# -- convert ---------------------------------------------------------------------------------------
def _cmd_convert(args) -> int:
    from ..convert import rule_from_settings, to_native

    rule = rule_from_settings(
        args.source, args.optimizer, lr=args.lr, momentum=args.momentum, dampening=args.dampening,
        nesterov=args.nesterov, weight_decay=args.weight_decay, betas=tuple(args.betas) if args.betas else None,
        eps=args.eps, amsgrad=args.amsgrad,
    )
    if args.variant:
        rule = compare.monitor.with_variant(rule, args.variant)
    conversion = to_native(rule, args.target, strict=False)
    print(f"# {args.source} {args.optimizer} is {rule!r} in decay")
    print(conversion.code)
    if conversion.extra:
        print(f"# and: {conversion.extra}")
    print(f"# exact: {'yes' if conversion.exact else 'no'}")
    if conversion.reason:
        print(f"# why not: {conversion.reason}")
    if getattr(conversion, "note", None):
        print(f"# note: {conversion.note}")
    return 0


# -- example -----------------------------------------------------------------------------------------
def _cmd_example(args) -> int:
    backends = args.backends or available_backends()
    expected = example.closed_form()
    print(
        f"The article's example: x0={list(example.X0)}, loss sum(x^2), L2 lambda={example.LAM}, "
        f"lr={example.LR}, {example.STEPS} steps"
    )
    print(f"closed form x0*(1-0.022)^100 = {np.array2string(expected, precision=10)}\n")
    print(f"{'backend':<11} {'placement':<10} {'x after 100 steps':<44} {'rel. error':>10}  ok")
    all_ok = True
    for name in backends:
        for placement in example.PLACEMENTS:
            x = example.run(name, placement, args.dtype)
            error = relative_error(x, expected)
            ok = error <= rtol(args.dtype, example.STEPS)
            all_ok &= ok
            print(f"{name:<11} {placement:<10} {np.array2string(x, precision=10):<44} {error:>10.2e}  {'yes' if ok else 'NO'}")
    return 0 if all_ok else 1


@contextlib.contextmanager
def _native_stderr_silenced():
    """TensorFlow's C++ notices (absl, oneDNN, CUDA discovery, XLA compilation) go
    straight to file descriptor 2 and ignore TF_CPP_MIN_LOG_LEVEL; a command-line tool
    should not print them. File descriptor 2 is pointed at /dev/null while the command
    runs, and Python's ``sys.stderr`` at a copy of the real one, so decay's messages,
    warnings and tracebacks still reach the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    real_stderr = sys.stderr
    try:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=real_stderr.encoding or "utf-8",
                               errors="backslashreplace")
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        python_stderr, sys.stderr = sys.stderr, real_stderr
        python_stderr.close()
        os.dup2(saved, 2)
        os.close(saved)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="decay",
        description="Weight decay defined once, with the same numbers on NumPy, PyTorch and TensorFlow. "
                    "Without a command, runs `compare` on the built-in data set.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    defaults = compare.Config()

    p = sub.add_parser("compare", help="train the same model on every backend and compare (the default)",
                       description="Train the same model from the same initial weights on every installed "
                                   "backend and print train/test loss, |theta|, the largest difference to the "
                                   "reference backend and ms per step. Exits 1 when backends disagree.")
    _add_training_options(p, defaults)
    p.add_argument("--natives", action="store_true",
                   help="add rows for each framework's own optimizer, configured through decay.convert")
    p.add_argument("--monitor", action="store_true",
                   help="record per-layer weight norms and gradient-norm/weight-norm ratios of the first "
                        "backend's run, in the JSON report and the plot")
    p.set_defaults(func=_cmd_compare, flags=p.flags)

    p = sub.add_parser("sweep", help="choose weight decay by k-fold cross-validation over a grid",
                       description="k-fold cross-validation of the weight decay over a grid: mean/std "
                                   "validation loss per lambda, the best lambda, and the train-test gap.")
    _add_training_options(p, replace_defaults(defaults, steps=1000))
    p.add_argument("--grid", nargs="+", type=float, default=None, metavar="LAMBDA",
                   help="weight decays to try (default: 0 and 1e-4 .. 0.3)")
    p.add_argument("--folds", type=int, default=5, help="k of k-fold (default: 5)")
    p.set_defaults(func=_cmd_sweep, flags=p.flags)

    p = sub.add_parser("convert", help="the same optimizer settings in another framework, exact or not",
                       description="Print the target framework's code for the same update, and whether it "
                                   "is exact (with the reason when it is not).")
    p.add_argument("--from", dest="source", choices=("torch", "keras", "optax", "decay"), required=True,
                   help="whose conventions the settings below follow")
    p.add_argument("--to", dest="target", choices=("torch", "keras", "optax"), required=True, help="target framework")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax",
                                            "nadam", "radam", "lion", "lamb", "muon"), required=True)
    p.add_argument("--lr", type=float, required=True, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--dampening", type=float, default=0.0)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay in the source's convention (default: the source optimizer's default)")
    p.add_argument("--betas", type=float, nargs=2, default=None, metavar=("BETA1", "BETA2"))
    p.add_argument("--eps", type=float, default=None, help="epsilon (default: the source optimizer's default)")
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--variant", choices=("cautious", "corrected", "toward-init"), default=None,
                   help="add a decay variant no framework ships (decoupled decay only): the answer "
                        "says why it is not exact")
    p.set_defaults(func=_cmd_convert, flags=p.flags)

    p = sub.add_parser("example", help="the article's worked example on every installed backend")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to run (default: every installed one)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.set_defaults(func=_cmd_example, flags=p.flags)
    return parser


def replace_defaults(config: compare.Config, **changes) -> compare.Config:
    from dataclasses import replace

    return replace(config, **changes)


def main(argv=None) -> int:
    # The commands compare float64 numbers; JAX arrays are float64 only with x64 on, which
    # JAX reads when it is first imported (a user's own setting wins).
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["compare"] + argv  # the default command takes its options directly
    args = parser.parse_args(argv)
    if args.command == "sweep" and args.grid is None:
        from .sweep import DEFAULT_GRID

        args.grid = DEFAULT_GRID
    with _native_stderr_silenced():
        try:
            return args.func(args)
        except DecayError as exc:
            print(f"decay: error: {_with_flags(str(exc), args.flags)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a real failure: say what, keep it to one line plus the type
            print(f"decay: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
