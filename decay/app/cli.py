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
from dataclasses import asdict

import numpy as np

from .. import __version__
from ..errors import DecayError
from ..tolerances import relative_error, rtol
from . import compare, datasets, example, plots, preflight
from .sweep import DEFAULT_GRID


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
# Options that --native replaces: their defaults are filled in after parsing, so that
# an explicit one next to --native is refused rather than ignored.
_RULE_OPTIONS = {"optimizer": "--optimizer", "lr": "--lr", "weight_decay": "--weight-decay",
                 "decay_mode": "--decay-mode", "schedule": "--schedule"}


def _add_training_options(p, defaults: compare.Config, sweep: bool = False):
    p.add_argument("--backends", nargs="+", metavar="NAME",
                   help="backends to run: numpy, torch, tensorflow, jax (aliases np, pytorch, tf, jnp); jax "
                        "only when named, its steps cost ~40x NumPy's on these tiny models "
                        "(default: every installed one but jax)")
    p.add_argument("--model", choices=compare.MODELS, default=defaults.model,
                   help=f"model to train (default: {defaults.model})")
    p.add_argument("--dataset", choices=datasets.NAMES, default=defaults.dataset,
                   help="data set; 'sine' ships with decay, the others with scikit-learn "
                        f"(pip install 'decay[datasets]') (default: {defaults.dataset})")
    p.add_argument("--optimizer", choices=compare.OPTIMIZERS, default=None,
                   help=f"update rule; momentum and nesterov use 0.9 (default: {defaults.optimizer})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: {defaults.lr}; {compare.DEFAULT_LR['nesterov']} for nesterov, "
                        "whose momentum is stable at smaller steps only)")
    if not sweep:  # sweep's weight decays are its --grid
        p.add_argument("--weight-decay", type=float, default=None,
                       help="PyTorch-convention coefficient lambda; in the loss it is L2(lambda/2) "
                            f"(default: {defaults.weight_decay})")
    p.add_argument("--decay-mode", choices=compare.DECAY_MODES, default=None,
                   help="where the decay lives; cautious, corrected and toward-init are decoupled decay "
                        "in the variants no framework ships (masked by sign agreement; scaled by "
                        f"lr_t^2/lr_max; toward the initial weights) (default: {defaults.decay_mode})")
    p.add_argument("--schedule", choices=compare.SCHEDULES, default=None,
                   help=f"learning-rate schedule (default: {defaults.schedule})")
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"updates (default: {defaults.steps})")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the full training set)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=defaults.dtype,
                   help=f"parameter dtype (default: {defaults.dtype})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"initial weights' seed (default: {defaults.seed})")
    p.add_argument("--report", metavar="FILE.json", help="write the results as JSON (schema in docs/command-line.md)")
    p.add_argument("--plot", metavar="FILE.png", help="write a plot (needs matplotlib: pip install 'decay[plot]')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args, **extra) -> compare.Config:
    defaults = compare.Config()
    rule = {name: getattr(defaults, name) if getattr(args, name, None) is None else getattr(args, name)
            for name in _RULE_OPTIONS}
    if getattr(args, "lr", None) is None:
        rule["lr"] = compare.default_lr(rule["optimizer"])
    return compare.Config(
        backends=args.backends, model=args.model, dataset=args.dataset, steps=args.steps,
        batch_size=args.batch_size, dtype=args.dtype, seed=args.seed, monitor=getattr(args, "monitor", False),
        **rule, **extra,
    )


def _check_outputs(args) -> None:
    """Output files and the plotting package, before any work (exit 2)."""
    if args.report:
        preflight.output_path("--report", args.report)
    if args.plot:
        preflight.output_path("--plot", args.plot, plots.SUFFIXES)
        preflight.package("matplotlib")


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _cmd_compare(args) -> int:
    if args.native:
        given = [flag for name, flag in _RULE_OPTIONS.items() if getattr(args, name) is not None]
        if given or args.natives:
            raise DecayError(f"--native sets the optimizer and adds the frameworks' rows; drop "
                             f"{', '.join(given + (['--natives'] if args.natives else []))}.")
    config = _config(args, natives=args.natives, native=args.native)
    _check_outputs(args)
    names, _ = compare.prepare(config)
    compare.limit_threads(names)
    bar = compare.Progress(not args.quiet)
    try:
        result = compare.run(config, progress=bar)
    except KeyboardInterrupt:
        bar.close()
        _interrupted(args, bar, {"schema": compare.SCHEMA, "config": asdict(config),
                                 "rows": [_row_json(row) for row in bar.rows]})
        raise
    print(compare.format_table(result))
    if args.report:
        _write_json(args.report, result.to_json())
    if args.plot:
        plots.compare(result, args.plot)
    return 0 if result.agree else 1


def _row_json(row) -> dict:
    data = asdict(row)
    data.pop("params")
    return data


def _interrupted(args, bar, report) -> None:
    """Ctrl-C: say where the run stopped, and write what is finished when a report was
    asked for (``"interrupted"`` says where)."""
    where = f"step {bar.step} of {bar.steps} ({bar.label})"
    print(f"decay: interrupted at {where}", file=sys.stderr)
    if args.report:
        report["interrupted"] = {"label": bar.label, "step": bar.step, "steps": bar.steps}
        _write_json(args.report, report)
        print(f"decay: partial report written to {args.report}", file=sys.stderr)


def _cmd_sweep(args) -> int:
    from . import sweep

    config = _config(args)
    _check_outputs(args)
    names, _ = compare.prepare(config)
    compare.limit_threads(names)
    bar = compare.Progress(not args.quiet)
    try:
        result = sweep.run(config, grid=args.grid, folds=args.folds, progress=bar)
    except KeyboardInterrupt:
        bar.close()
        _interrupted(args, bar, {"schema": sweep.SCHEMA, "config": asdict(config), "folds": args.folds,
                                 "points": [dict(asdict(p), gap=p.gap) for p in bar.rows]})
        raise
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
    backends = preflight.backends(args.backends)
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
    parser.add_argument("--version", action="store_true", help="print the version and the installed backends")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    defaults = compare.Config()

    p = sub.add_parser("compare", help="train the same model on every backend and compare (the default)",
                       description="Train the same model from the same initial weights on every installed "
                                   "backend and print train/test loss, |theta|, the largest difference to the "
                                   "reference backend and ms per step. The verdict comes from replaying "
                                   "NumPy's gradients through every row: exit 1 when decay's update differs "
                                   "between backends or the training diverges; the drift of the trajectories "
                                   "is reported and does not fail the run.")
    _add_training_options(p, defaults)
    p.add_argument("--natives", action="store_true",
                   help="add rows for each installed framework's own optimizer, configured through decay.to_native")
    p.add_argument("--native", metavar="'OPTIMIZER(...)'",
                   help="your own optimizer, as in your code, e.g. \"torch.optim.AdamW(lr=1e-3, "
                        "weight_decay=0.05)\" or \"keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)\" "
                        "(parsed, never evaluated): trained natively, as decay's equivalent on every backend, "
                        "and as the other framework's equivalent")
    p.add_argument("--monitor", action="store_true",
                   help="record per-layer weight norms and gradient-norm/weight-norm ratios of the first "
                        "backend's run, in the JSON report and the plot")
    p.set_defaults(func=_cmd_compare, flags=p.flags)

    p = sub.add_parser("sweep", help="choose weight decay by k-fold cross-validation over a grid",
                       description="k-fold cross-validation of the weight decay over a grid: mean/std "
                                   "validation loss per lambda, the best lambda, and the train-test gap.")
    _add_training_options(p, defaults, sweep=True)
    p.add_argument("--grid", nargs="+", type=float, default=None, metavar="LAMBDA",
                   help=f"weight decays to try (default: {' '.join(f'{v:g}' for v in DEFAULT_GRID)})")
    p.add_argument("--folds", type=int, default=5, help="k of k-fold (default: 5)")
    p.set_defaults(func=_cmd_sweep, flags=p.flags)

    p = sub.add_parser("convert", help="the same optimizer settings in another framework, exact or not",
                       description="Print the target framework's code for the same update, and whether it "
                                   "is exact (with the reason when it is not).")
    p.add_argument("--from", dest="source", choices=("torch", "keras", "optax", "decay"), required=True,
                   help="whose conventions the settings below follow")
    p.add_argument("--to", dest="target", choices=("torch", "keras", "optax"), required=True, help="target framework")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax",
                                            "nadam", "radam", "lion", "lamb", "muon", "adafactor"), required=True)
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


def _version() -> str:
    """``decay --version``: decay's version, then every backend with its framework's
    version, or the extra that installs it."""
    lines = [f"decay {__version__}"]
    for name, version, extra in preflight.versions():
        lines.append(f"  {name:<11} {version}" if version else
                     f"  {name:<11} not installed ({preflight.install_hint(extra)})")
    return "\n".join(lines)


def main(argv=None) -> int:
    # The commands compare float64 numbers; JAX arrays are float64 only with x64 on, which
    # JAX reads when it is first imported (a user's own setting wins).
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(_version())
        return 0
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["compare"] + argv  # the default command takes its options directly
    args = parser.parse_args(argv)
    if args.command == "sweep" and args.grid is None:
        args.grid = DEFAULT_GRID
    with _native_stderr_silenced():
        try:
            return args.func(args)
        except DecayError as exc:
            message = str(exc)  # --native's text names its own settings, not the flags
            print(f"decay: error: {message if message.startswith('--native') else _with_flags(message, args.flags)}",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130  # what was finished is printed (and written) where it stopped
        except Exception as exc:  # a real failure: say what, keep it to one line plus the type
            print(f"decay: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
