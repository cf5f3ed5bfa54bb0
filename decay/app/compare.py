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

import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import L2, adam, available_backends, get_backend, lamb, lion, muon, schedules, sgd, to_native
from .. import rules as _rules
from ..errors import DecayError
from ..tolerances import relative_error, rtol
from . import datasets, monitor
from .models import MLP, LinearRegression, LogisticRegression, fit

MODELS = ("mlp", "linear", "logistic")
#: The classic optimizers, each with its factory's (PyTorch's) defaults but the lr.
CLASSIC_OPTIMIZERS = ("rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam")
OPTIMIZERS = ("adam", "sgd", "momentum", "nesterov") + CLASSIC_OPTIMIZERS + ("lion", "lamb", "muon")
DECAY_MODES = ("loss", "coupled", "decoupled") + monitor.VARIANT_MODES
SCHEDULES = ("constant", "cosine", "step", "exponential", "warmup-cosine")
SCHEMA = "decay.compare/1"


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
    max_abs_diff: float
    relative_error: float
    ms_per_step: float
    losses: list = field(repr=False)
    exact: bool | None = None
    note: str = ""
    params: dict = field(default=None, repr=False)


@dataclass
class Result:
    config: Config
    rows: list
    reference: str
    tolerance: float
    agree: bool
    dataset_description: str
    replay_error: float | None = None  # decay's update on identical gradients, when run
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
            "replay_relative_error": self.replay_error,
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
    elif config.optimizer in ("lion", "lamb", "muon"):  # the modern rules, Keras's versions
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
    """Lion, LAMB or Muon in Keras's convention, which Keras's own optimizer reproduces;
    Muon's non-matrix weights go to its second rule (AdamW, Keras's ε̂)."""
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


# -- training: models.fit on every backend ------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total, enabled):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty()
        self.label = ""

    def start(self, label):
        self.label = label

    def advance(self, *_):  # also models.fit's on_step(t, loss, grads)
        self.done += 1
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
    params, losses = fit(model, params, rule, data.X_train, data.y_train, config.steps,
                         batch_size=config.batch_size, penalty=penalty, on_step=on_step)
    return {k: backend.to_numpy(v) for k, v in params.items()}, losses.tolist()


class _NativeOptimizer:
    """A framework's own optimizer, built by decay's conversion, behind a rule's
    init/step, so that its row trains through the same :func:`train` as decay's rows."""

    def __init__(self, conversion):
        self.conversion = conversion

    def init(self, params):
        if self.conversion.framework == "optax":
            tx = self.conversion.build()
            return tx, tx.init(params)
        if self.conversion.framework == "torch":
            built = self.conversion.build(list(params.values()))
        else:
            built = self.conversion.build(params)  # by name, for a mask
        return built if isinstance(built, tuple) else (built, None)  # torch: (optimizer, lr scheduler)

    def step(self, params, grads, state):
        optimizer, scheduler = state
        penalty = self.conversion.penalty
        if penalty is not None:
            # The conversion moved part of the decay into the loss (Keras: coupled decay
            # is an L2 kernel regularizer). It is trained on but not reported, so the
            # row's losses stay comparable with the decay rows'.
            grads = {k: grads[k] + g for k, g in penalty.grad(params).items()}
        if self.conversion.framework == "optax":  # functional: new params and state
            import optax

            tx, opt_state = state
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), (tx, opt_state)
        if self.conversion.framework == "torch":
            for param, grad in zip(params.values(), grads.values()):
                param.grad = grad
            optimizer.step()
        else:
            optimizer.apply_gradients(zip(grads.values(), params.values()))
        if scheduler is not None:
            scheduler.step()
        return params, state


# -- the job ----------------------------------------------------------------------------------------
def run(config: Config, progress: bool = True) -> Result:
    validate(config)
    # JAX only when named: the models' steps run op by op there (not jitted), ~100x NumPy's.
    names = config.backends or [n for n in available_backends() if n != "jax"]
    backends = []
    for name in names:
        backend = get_backend(name)  # unknown or not installed: a DecayError naming the extra
        if backend.name not in backends:
            backends.append(backend.name)
    data = datasets.load(config.dataset)
    model = build_model(config, data)
    params0 = model.init_params(config.seed, config.dtype)
    rule, penalty = build_rule(config)

    # Muon's pair of rules has no one native optimizer to convert to (Keras's Muon's Adam differs).
    conversions = _native_conversions(rule, backends) if config.natives and hasattr(rule, "decoupled") else []
    bar = _Progress(config.steps * (len(backends) + len(conversions)), progress)
    rows = []
    runs = [(name, "decay", f"decay.{rule.get_config()['rule']}", rule) for name in backends]
    runs += [(name, "native", label, _NativeOptimizer(conversion)) for name, conversion, label in conversions]
    if config.monitor:
        runs[0] = runs[0][:3] + (monitor.Monitored(rule),)
    for name, kind, label, optimizer in runs:
        bar.start(label if kind == "native" else f"decay on {name}")
        start = time.perf_counter()
        params, losses = train(name, model, params0, optimizer, penalty, data, config, bar.advance)
        row = _row(name, kind, label, model, data, params, losses, time.perf_counter() - start, config.steps)
        if kind == "native":
            row.exact = bool(optimizer.conversion.exact)
            row.note = optimizer.conversion.reason or optimizer.conversion.note or ""
        rows.append(row)
    bar.close()

    result = Result(config, rows, rows[0].backend, rtol(config.dtype, config.steps), True, data.description,
                    model=model, data=data)
    result.agree = _differences(rows, result.tolerance)
    if config.monitor:
        result.monitor = runs[0][3].to_json(runs[0][0])
    if data.raw is not None and config.weight_decay > 0:
        plain_rule, _ = build_rule(replace(config, weight_decay=0.0))
        result.undecayed, _ = train("numpy", model, params0, plain_rule, None, data, config)
    if not result.agree:
        result.replay_error = _replay(model, params0, rule, penalty, data, config, backends)
    return result


def _differences(rows, tolerance) -> bool:
    """Fill in each row's difference to the first (the reference); whether every decay
    row is within ``tolerance`` of it."""
    reference = rows[0].params
    flat_ref = np.concatenate([reference[k].ravel() for k in reference])
    agree = True
    for row in rows:
        flat = np.concatenate([row.params[k].ravel() for k in reference])
        row.max_abs_diff = float(np.max(np.abs(flat - flat_ref)))
        row.relative_error = relative_error(flat, flat_ref)
        if row.kind == "decay" and not row.relative_error <= tolerance:
            agree = False
    return agree


def _replay(model, params0, rule, penalty, data, config, backends) -> float:
    """Tell decay's math from the frameworks' gradients: feed every backend the same
    gradients (NumPy's, along NumPy's trajectory) and return the largest relative
    difference of the final weights. Small means the update rules agree and the
    trajectories drifted apart through each framework's own gradient round-off."""
    recorded = []
    params, _ = train("numpy", model, params0, rule, penalty, data, config,
                      on_step=lambda t, loss, grads: recorded.append({k: g.copy() for k, g in grads.items()}))
    expected = np.concatenate([v.ravel() for v in params.values()])
    worst = 0.0
    for name in backends:
        backend = get_backend(name)
        like = {k: backend.tensor(v) for k, v in params0.items()}
        replay_state = rule.init(like)
        for grads in recorded:
            native_grads = {k: backend.tensor(g, variable=False) for k, g in grads.items()}
            like, replay_state = rule.step(like, native_grads, replay_state)
        got = np.concatenate([backend.to_numpy(like[k]).ravel() for k in params])
        worst = max(worst, relative_error(got, expected))
    return worst


def _native_conversions(rule, backends):
    """(backend, conversion, label) for each framework's own optimizer that is installed."""
    out = []
    for framework, backend in (("torch", "torch"), ("keras", "tensorflow"), ("optax", "jax")):
        if backend in backends:
            conversion = to_native(rule, framework, strict=False)
            # The label is the first constructor the code calls (an lr scheduler may follow).
            out.append((backend, conversion, re.search(r"[\w.]+(?=\()", conversion.code).group()))
    return out


def _row(backend, kind, optimizer, model, data, params, losses, elapsed, steps) -> Row:
    evaluation = {k: v.astype(np.float64) for k, v in params.items()}
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


def format_table(result: Result) -> str:
    config = result.config
    lines = [
        f"data: {result.dataset_description}",
        f"model: {config.model}, optimizer: {config.optimizer}, lr: {config.lr} ({config.schedule}), "
        f"weight decay {config.weight_decay} in the {config.decay_mode}"
        + (" (as L2(lambda/2))" if config.decay_mode == "loss" else "")
        + f", {config.steps} steps, {config.dtype}",
        "",
        f"{'backend':<11} {'optimizer':<26} {'train loss':>11} {'test loss':>11} {'|theta|':>9} "
        f"{'max|dtheta|':>12} {'ms/step':>8}",
    ]
    for row in result.rows:
        lines.append(
            f"{row.backend:<11} {row.optimizer:<26} {row.train_loss:>11.6f} {row.test_loss:>11.6f} "
            f"{row.param_norm:>9.4f} {row.max_abs_diff:>12.3e} {row.ms_per_step:>8.3f}"
        )
    lines.append("")
    lines.append(
        f"max|dtheta| is against {result.reference}. decay backends must agree to a relative "
        f"{result.tolerance:.1e} ({config.dtype}, {config.steps} steps): "
        + ("they do." if result.agree else "THEY DO NOT.")
    )
    if result.replay_error is not None:
        same = result.replay_error <= result.tolerance
        lines.append(
            f"Given identical gradients, decay's update agrees across backends to {result.replay_error:.1e}"
            + (
                ": the drift comes from each framework's gradient round-off (BLAS summation order), "
                "amplified by the training dynamics."
                if same
                else ": the update rules themselves differ - please report this."
            )
        )
    for row in result.rows:
        if row.kind == "native":
            verdict = "exact" if row.exact else "not exact"
            lines.append(f"{row.optimizer}: {verdict}" + (f" - {row.note}" if row.note else ""))
    return "\n".join(lines)
