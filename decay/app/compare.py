"""The comparison job behind ``decay compare``: the same model, the same initial
weights and the same batches on every backend, with weight decay in one chosen place,
and optionally each framework's own optimizer configured through the conversion.

Every row trains through the library's own pieces: one model definition
(:mod:`decay.app.models`, backpropagated by hand on NumPy and by autograd or
``tf.GradientTape`` on the frameworks), its ``fit`` loop, the rule's ``init``/``step``
and the penalty's ``grad``. All rows are evaluated the same way afterwards (NumPy
float64 on the final weights), so the table compares training, not evaluation code.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import L2, adafactor, adam, get_backend, lamb, lion, muon, schedules, sgd
from .. import rules as _rules
from ..errors import DecayError
from ..tolerances import relative_error, rtol
from . import datasets, monitor, native, preflight
from .models import MLP, LinearRegression, LogisticRegression
from .training import fit

MODELS = ("mlp", "linear", "logistic")
#: The classic optimizers, each with its factory's (PyTorch's) defaults but the lr.
CLASSIC_OPTIMIZERS = ("rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam")
OPTIMIZERS = ("adam", "sgd", "momentum", "nesterov") + CLASSIC_OPTIMIZERS + ("lion", "lamb", "muon", "adafactor")
DECAY_MODES = ("loss", "coupled", "decoupled") + monitor.VARIANT_MODES
SCHEDULES = ("constant", "cosine", "step", "exponential", "warmup-cosine")
SCHEMA = "decay.compare/2"
# The command line's lr when none is given. Nesterov's momentum is stable only at smaller
# steps (lr·L < 2(1+μ)/(1+2μ) on a quadratic, against 2(1+μ) for heavy ball): at 0.1 it
# diverges on the built-in data set with a constant lr.
DEFAULT_LR = {"nesterov": 0.05}


def default_lr(optimizer: str) -> float:
    return DEFAULT_LR.get(optimizer, Config.lr)


@dataclass
class Config:
    """Everything that defines a comparison run (the defaults are the built-in job)."""

    backends: list = None  # None: every installed backend
    model: str = "mlp"
    dataset: str = datasets.DEFAULT
    optimizer: str = "momentum"
    lr: float = 0.1
    weight_decay: float = 0.03
    decay_mode: str = "coupled"
    schedule: str = "constant"
    steps: int = 1000
    batch_size: int | None = None  # None: the full training set
    dtype: str = "float64"
    seed: int = 0
    natives: bool = False
    native: str | None = None  # --native "torch.optim.AdamW(...)": the user's own optimizer
    hidden: int = 32
    monitor: bool = False  # per-layer norms of the reference run (decay/app/monitor.py)


@dataclass
class Row:
    backend: str
    kind: str  # "decay" or "native"
    optimizer: str
    train_loss: float
    test_loss: float
    param_norm: float
    max_abs_diff: float  # trained weights against the reference row's
    relative_error: float  # the same, relative: the drift of the trajectories
    ms_per_step: float
    losses: list = field(repr=False)
    exact: bool | None = None  # natives: what the conversion claims
    note: str = ""
    finite: bool = True  # every loss and weight finite
    diverged_at: int | None = None  # the first step whose loss is not finite
    same_gradients: float | None = None  # relative difference to NumPy's decay, fed NumPy's gradients
    params: dict = field(default=None, repr=False)


@dataclass
class Result:
    config: Config
    rows: list
    reference: str
    tolerance: float
    agree: bool  # decay's update agrees on every backend given the same gradients, all finite
    dataset_description: str
    replay_error: float | None = None  # the largest same_gradients of decay's rows
    drift: float = 0.0  # the largest relative_error of decay's rows
    diverged: bool = False  # some row's losses or weights are not finite
    missing: list = field(default_factory=list)  # (backend, pip extra) not installed, not run
    # For the plot of a 1-D data set: the model trained without decay (NumPy).
    undecayed: dict = field(default=None, repr=False)
    model: object = field(default=None, repr=False)
    data: object = field(default=None, repr=False)
    monitor: dict = None  # --monitor: monitor.Monitored.to_json()

    def to_json(self) -> dict:
        rows = []
        for row in self.rows:
            data = asdict(row)
            data.pop("params")
            rows.append(data)
        return {
            "schema": SCHEMA,
            "config": asdict(self.config),
            "dataset": self.dataset_description,
            "reference": self.reference,
            "tolerance": self.tolerance,
            "agree": self.agree,
            "diverged": self.diverged,
            "replay_relative_error": self.replay_error,
            "drift": self.drift,
            "not_installed": {name: preflight.install_hint(extra) for name, extra in self.missing},
            "rows": rows,
            **({"monitor": self.monitor} if self.monitor is not None else {}),
        }


# -- building the job ----------------------------------------------------------------------
def build_model(config: Config, data: datasets.Dataset):
    n_features = data.X_train.shape[1]
    if config.model == "linear":
        if data.task != "regression":
            raise DecayError(f"--model linear is for regression; {data.name!r} is {data.task}. Use --model logistic.")
        return LinearRegression(n_features, data.n_outputs)
    if config.model == "logistic":
        if data.task == "regression":
            raise DecayError(f"--model logistic is for classification; {data.name!r} is regression. Use --model linear.")
        return LogisticRegression(n_features, data.n_outputs if data.task == "multiclass" else 2)
    return MLP(n_features, hidden=(config.hidden,), n_outputs=data.n_outputs, task=data.task)


def build_schedule(config: Config):
    lr, steps = config.lr, config.steps
    if config.schedule == "constant":
        return lr
    if config.schedule == "cosine":
        return schedules.cosine(lr, steps)
    if config.schedule == "step":
        return schedules.step(lr, max(1, steps // 3), 0.3)
    if config.schedule == "exponential":
        return schedules.exponential(lr, 0.01, steps)
    return schedules.warmup(schedules.cosine(lr, max(1, steps - steps // 10)), steps // 10)


def build_rule(config: Config):
    """The rule and the penalty placed in the loss (None unless decay_mode is "loss").

    ``weight_decay`` is PyTorch's coefficient λ in every mode: in the loss it becomes
    L2(λ/2), whose gradient λθ is what coupled decay adds — so "loss" and "coupled"
    train the same numbers, and "decoupled" shows what changes."""
    lr = build_schedule(config)
    wd = config.weight_decay
    if config.decay_mode in monitor.VARIANT_MODES:
        return monitor.variant_rule(config, lr, wd), None
    coupled = wd if config.decay_mode == "coupled" else 0.0
    decoupled_wd = wd if config.decay_mode == "decoupled" else 0.0
    rule_wd = coupled or decoupled_wd
    decoupled = config.decay_mode == "decoupled"
    if config.optimizer == "adam":
        rule = adam(lr, weight_decay=rule_wd, decoupled=decoupled)
    elif config.optimizer in ("lion", "lamb", "muon", "adafactor"):  # the modern rules, Keras's versions
        rule = _modern_rule(config.optimizer, lr, rule_wd, decoupled)
    elif config.optimizer in CLASSIC_OPTIMIZERS:
        rule = getattr(_rules, config.optimizer)(lr, weight_decay=rule_wd, decoupled=decoupled)
    else:
        momentum = 0.0 if config.optimizer == "sgd" else 0.9
        rule = sgd(lr, momentum=momentum, nesterov=config.optimizer == "nesterov",
                   weight_decay=rule_wd, decoupled=decoupled)
    # In the loss: the L2 penalty whose coupled_weight_decay() is λ (its gradient is
    # λθ). That is linear in the penalty's c, so c = λ / L2(1).coupled_weight_decay().
    penalty = L2(wd / L2(1.0).coupled_weight_decay()) if config.decay_mode == "loss" and wd > 0 else None
    return rule, penalty


def _modern_rule(name, lr, wd, decoupled):
    """Lion, LAMB, Adafactor or Muon in Keras's convention, which Keras's own optimizer
    reproduces; Muon's non-matrix weights go to its second rule (AdamW, Keras's ε̂)."""
    if name == "adafactor":
        return adafactor(lr, weight_decay=wd, decoupled=decoupled, convention="keras")
    if name == "lion":
        return lion(lr, weight_decay=wd, decoupled=decoupled)
    if name == "lamb":
        return lamb(lr, weight_decay=wd, decoupled=decoupled, convention="keras")
    rule = muon(lr, weight_decay=wd, decoupled=decoupled, convention="keras")
    return rule.with_others(rule.adamw_for_others(weight_decay=wd))


def validate(config: Config) -> None:
    checks = [
        ("model", config.model, MODELS),
        ("optimizer", config.optimizer, OPTIMIZERS),
        ("decay-mode", config.decay_mode, DECAY_MODES),
        ("schedule", config.schedule, SCHEDULES),
        ("dataset", config.dataset, datasets.NAMES),
        ("dtype", config.dtype, ("float32", "float64")),
    ]
    for name, value, choices in checks:
        if value not in choices:
            raise DecayError(f"--{name} must be one of {', '.join(choices)}. Received: {value!r}.")
    for name, value in (("lr", config.lr), ("weight-decay", config.weight_decay)):
        if not np.isfinite(value) or value < 0:
            raise DecayError(f"--{name} must be a finite number >= 0. Received: {value!r}.")
    if config.steps < 1:
        raise DecayError(f"--steps must be >= 1. Received: {config.steps!r}.")
    if config.batch_size is not None and config.batch_size < 1:
        raise DecayError(f"--batch-size must be >= 1. Received: {config.batch_size!r}.")
    if config.seed < 0:
        raise DecayError(f"--seed must be >= 0. Received: {config.seed!r}.")
    task = datasets.TASKS[config.dataset]
    if config.model == "linear" and task != "regression":
        raise DecayError(f"--model linear is for regression; {config.dataset!r} is {task}. Use --model logistic.")
    if config.model == "logistic" and task == "regression":
        raise DecayError(f"--model logistic is for classification; {config.dataset!r} is regression. "
                         "Use --model linear.")
    if config.dataset != "sine":
        preflight.package("sklearn", f"--dataset {config.dataset}")


# -- training: models.fit on every backend ------------------------------------------------------
class Progress:
    """Where the run is (``label``, ``step``, the finished ``rows``), for a Ctrl-C to
    report, and a one-line progress bar on stderr when stderr is a terminal."""

    def __init__(self, enabled=True):
        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.done, self.step, self.steps = 1, 0, 0, 0
        self.label, self.rows = "", []

    def start(self, label, steps):
        self.label, self.step, self.steps = label, 0, steps

    def advance(self, *_):  # also models.fit's on_step(t, loss, grads)
        self.done += 1
        self.step += 1
        if self.enabled and (self.done % 25 == 0 or self.done == self.total):
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def train(backend, model, params0, rule, penalty, data, config, on_step=None):
    """:func:`decay.app.models.fit` on ``backend`` (a name) from the NumPy weights
    ``params0``, on the training set with ``config``'s steps and batches: the model's
    one loss, differentiated by hand on NumPy and by autodiff on the frameworks. Returns
    the trained weights as NumPy arrays and the per-step losses."""
    backend = get_backend(backend)
    params = {k: backend.tensor(v) for k, v in params0.items()}
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported as such
        params, losses = fit(model, params, rule, data.X_train, data.y_train, config.steps,
                             batch_size=config.batch_size, penalty=penalty, on_step=on_step)
    return {k: backend.to_numpy(v) for k, v in params.items()}, losses.tolist()


def limit_threads(backends) -> None:
    """One intra-op thread for the frameworks: the models here are tiny, and a pool of
    threads per framework spends more time waiting for busy cores than computing
    (measured on a busy 2-core machine: torch 21-39 ms per step with its default pool,
    0.65 ms with one thread). Process-wide, so only the command line calls it."""
    if "torch" in backends:
        import torch

        torch.set_num_threads(1)
    if "tensorflow" in backends:
        import tensorflow as tf

        try:  # only possible before TensorFlow's runtime starts
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass


# -- the job ----------------------------------------------------------------------------------------
def run(config: Config, progress: Progress | bool = True) -> Result:
    """Train every row, replay NumPy's gradients through every optimizer, compare.

    Everything that can be refused is refused before a framework is imported: options,
    backends, the data set's package, ``--native``'s text."""
    names, spec = prepare(config)
    bar = progress if isinstance(progress, Progress) else Progress(progress)
    data = datasets.load(config.dataset)
    model = build_model(config, data)
    params0 = model.init_params(config.seed, config.dtype)
    make_rule = (lambda: _rule_of(spec)) if spec is not None else (lambda: build_rule(config))
    rule, penalty = make_rule()

    runs = [(name, "decay", f"decay.{rule.get_config()['rule']}", lambda: make_rule()[0]) for name in names]
    monitored = _monitor_first(config, runs, make_rule)
    runs += _native_runs(config, spec, rule, names)
    bar.total = config.steps * (len(runs) + 1)
    for name, kind, label, factory in runs:
        bar.start(label if kind == "native" else f"decay on {name}", config.steps)
        optimizer = factory()
        start = time.perf_counter()
        params, losses = train(name, model, params0, optimizer, penalty, data, config, bar.advance)
        row = _row(name, kind, label, model, data, params, losses, time.perf_counter() - start, config.steps)
        if kind == "native":
            row.exact, row.note = optimizer.exact, optimizer.note
        bar.rows.append(row)
    rows = bar.rows
    bar.start("same gradients", config.steps)
    errors = _replay(model, params0, make_rule, penalty, data, config, runs, bar.advance)
    bar.close()

    for row, error in zip(rows, errors):
        row.same_gradients = error
    decay_rows = [row for row in rows if row.kind == "decay"]
    result = Result(config, rows, rows[0].backend, rtol(config.dtype, config.steps), True, data.description,
                    model=model, data=data)
    result.missing = preflight.missing_backends() if not config.backends else []
    result.drift = _differences(rows)
    result.diverged = not all(row.finite for row in rows)
    result.replay_error = max(row.same_gradients for row in decay_rows)
    result.agree = not result.diverged and result.replay_error <= result.tolerance
    if monitored is not None:
        result.monitor = monitored.to_json(runs[0][0])
    if data.raw is not None and config.weight_decay > 0 and spec is None:
        plain_rule, _ = build_rule(replace(config, weight_decay=0.0))
        result.undecayed, _ = train("numpy", model, params0, plain_rule, None, data, config)
    return result


def prepare(config: Config):
    """Check everything that needs no framework; ``(backend names, --native spec or None)``."""
    validate(config)
    names = preflight.backends(config.backends)
    spec = native.parse(config.native) if config.native else None
    if spec is not None and spec.backend not in names:
        preflight.backends([spec.backend])  # not installed: the error names the extra
        raise DecayError(f"--native {spec.label} trains on the {spec.backend} backend; add it to --backends.")
    return names, spec


def _rule_of(spec):
    """The decay rule equal to the user's ``--native`` optimizer (no penalty in the loss)."""
    from .. import from_native

    return from_native(spec.construct()), None


def _monitor_first(config, runs, make_rule):
    """With ``--monitor``: the first row trains through a :class:`monitor.Monitored` rule
    (its replay copy, made by the same factory later, is a plain rule). Returns it."""
    if not config.monitor:
        return None
    monitored, plain = monitor.Monitored(make_rule()[0]), runs[0][3]
    made = []

    def factory():
        made.append(None)
        return monitored if len(made) == 1 else plain()

    runs[0] = runs[0][:3] + (factory,)
    return monitored


def _native_runs(config, spec, rule, names):
    """``(backend, "native", label, factory)`` for the rows of the frameworks' optimizers."""
    runs = []
    if spec is not None:
        runs.append((spec.backend, "native", spec.label, lambda: native.NativeOptimizer.from_spec(spec)))
    # Muon's pair of rules has no one native optimizer to convert to (Keras's Muon's Adam differs).
    if (spec is not None or config.natives) and hasattr(rule, "decoupled"):
        for name, optimizer, label in native.conversions(rule, names, skip={spec.framework} if spec else ()):
            runs.append((name, "native", label, lambda optimizer=optimizer: optimizer))
    return runs


def _differences(rows) -> float:
    """Fill in each row's difference to the first (the reference) and whether it is
    finite; the largest relative difference of a finite decay row (the drift)."""
    reference = rows[0].params
    flat_ref = np.concatenate([reference[k].ravel() for k in reference])
    drift = 0.0
    for row in rows:
        flat = np.concatenate([row.params[k].ravel() for k in reference]).astype(np.float64)
        losses = np.asarray(row.losses, dtype=np.float64)
        row.finite = bool(np.all(np.isfinite(flat)) and np.all(np.isfinite(losses)))
        bad = np.flatnonzero(~np.isfinite(losses))
        row.diverged_at = int(bad[0]) if bad.size else None
        with np.errstate(invalid="ignore", over="ignore"):
            row.max_abs_diff = float(np.max(np.abs(flat - flat_ref)))
        row.relative_error = relative_error(flat, flat_ref)
        if row.kind == "decay" and row.finite:
            drift = max(drift, row.relative_error)
    return drift


def _replay(model, params0, make_rule, penalty, data, config, runs, on_step=None) -> list:
    """Tell decay's update from the frameworks' gradients: train on NumPy and feed each
    step's gradients to a copy of every row's optimizer on its backend, in lockstep
    (nothing is stored per step). Returns each row's relative difference to NumPy's
    decay at the end (inf where not finite). Equal numbers here mean the update rules
    agree, whatever the trajectories did."""
    copies = []
    for name, _, _, factory in runs:
        backend = get_backend(name)
        like = {k: backend.tensor(v) for k, v in params0.items()}
        optimizer = factory()
        copies.append([backend, like, optimizer, optimizer.init(like)])

    def feed(t, loss, grads):
        for copy in copies:
            backend, like, optimizer, state = copy
            native_grads = {k: backend.tensor(np.asarray(g), variable=False) for k, g in grads.items()}
            copy[1], copy[3] = optimizer.step(like, native_grads, state)
        if on_step is not None:
            on_step(t, loss, grads)

    expected, _ = train("numpy", model, params0, make_rule()[0], penalty, data, config, on_step=feed)
    flat_expected = np.concatenate([v.ravel() for v in expected.values()])
    errors = []
    for backend, like, _, _ in copies:
        got = np.concatenate([backend.to_numpy(like[k]).ravel() for k in expected]).astype(np.float64)
        finite = np.all(np.isfinite(got)) and np.all(np.isfinite(flat_expected))
        errors.append(relative_error(got, flat_expected) if finite else float("inf"))
    return errors


def _row(backend, kind, optimizer, model, data, params, losses, elapsed, steps) -> Row:
    evaluation = {k: v.astype(np.float64) for k, v in params.items()}
    with np.errstate(all="ignore"):  # a diverged row: its numbers are reported as they are
        return Row(
            backend=backend,
            kind=kind,
            optimizer=optimizer,
            train_loss=model.loss(evaluation, data.X_train, data.y_train),
            test_loss=model.loss(evaluation, data.X_test, data.y_test),
            param_norm=float(np.sqrt(sum(float(np.sum(v * v)) for v in evaluation.values()))),
            max_abs_diff=0.0,
            relative_error=0.0,
            ms_per_step=1000.0 * elapsed / steps,
            losses=losses,
            params=params,
        )


# -- the table ---------------------------------------------------------------------------------------
def _number(value) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.1e}")


def format_table(result: Result) -> str:
    config = result.config
    if config.native:
        setting = f"optimizer: {config.native}"
    else:
        setting = (f"optimizer: {config.optimizer}, lr: {config.lr} ({config.schedule}), weight decay "
                   f"{config.weight_decay} ({config.decay_mode}"
                   + (", as L2(lambda/2) in the loss)" if config.decay_mode == "loss" else ")"))
    lines = [
        f"data: {result.dataset_description}",
        f"model: {config.model}, {setting}, {config.steps} steps, {config.dtype}",
        "",
        f"{'backend':<11} {'optimizer':<26} {'train loss':>11} {'test loss':>11} {'|theta|':>9} "
        f"{'drift':>8} {'same grads':>10} {'ms/step':>8}",
    ]
    for row in result.rows:
        lines.append(
            f"{row.backend:<11} {row.optimizer:<26} {row.train_loss:>11.6f} {row.test_loss:>11.6f} "
            f"{row.param_norm:>9.4f} {_number(row.relative_error):>8} {_number(row.same_gradients):>10} "
            f"{row.ms_per_step:>8.3f}"
        )
    lines += ["", f"drift: the trained weights against {result.reference}'s; same grads: the same when every "
                  f"row is fed NumPy's gradients (relative, after {config.steps} steps)."]
    lines += _verdict(result)
    if result.missing:
        lines.append("not installed, not run: " + ", ".join(
            f"{name} ({preflight.install_hint(extra)})" for name, extra in result.missing))
        if config.natives:
            lines.append("--natives adds the optimizers of installed frameworks only.")
    return "\n".join(lines)


def _verdict(result: Result) -> list:
    config, tol = result.config, result.tolerance
    lines = []
    for row in result.rows:
        if not row.finite:
            where = f"at step {row.diverged_at}" if row.diverged_at is not None else "in its weights"
            lines.append(f"DIVERGED: {row.optimizer} on {row.backend} is not finite {where}.")
    if result.diverged:
        lines.append("The training diverged, so no agreement can be claimed (try a smaller --lr).")
    elif result.agree:
        lines.append(f"decay's update agrees on every backend: {_number(result.replay_error)} given the same "
                     f"gradients (tolerance {tol:.1e}, {config.dtype}, {config.steps} steps).")
    else:
        lines.append(f"DECAY'S UPDATE DIFFERS between backends: {_number(result.replay_error)} given the same "
                     f"gradients (tolerance {tol:.1e}). That is a bug in decay; please report it.")
    if result.drift > tol and not result.diverged:
        lines.append(f"The trajectories drift apart by up to {result.drift:.1e}: each framework computes the "
                     "gradients with its own round-off, which training amplifies. This is not a difference "
                     "in the update and does not fail the run.")
    for row in result.rows:
        if row.kind == "native" and row.finite:
            verdict = "exact" if row.exact else "not exact"
            lines.append(f"{row.optimizer}: {verdict}, {_number(row.same_gradients)} from decay given the same "
                         "gradients" + (f" - {row.note}" if row.note else ""))
    return lines
