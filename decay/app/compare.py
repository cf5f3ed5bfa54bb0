"""The comparison job behind ``decay compare``: the same model, the same initial
weights and the same batches on every backend, with weight decay in one chosen place,
and optionally each framework's own optimizer configured through the conversion.

NumPy trains :mod:`decay.models` with hand-written gradients; PyTorch and TensorFlow
compute the same loss with their own autodiff (autograd, ``tf.GradientTape``). All
rows are evaluated the same way afterwards (NumPy float64 on the final weights), so
the table compares training, not evaluation code.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import schedules
from . import datasets
from ..backends import available_backends, get_backend
from ..errors import DecayError
from .models import MLP, LinearRegression, LogisticRegression, batches
from ..penalties import L2
from ..rules import adam, sgd
from ..tolerances import relative_error, rtol

MODELS = ("mlp", "linear", "logistic")
OPTIMIZERS = ("adam", "sgd", "momentum", "nesterov")
DECAY_MODES = ("loss", "coupled", "decoupled")
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
    coupled = wd if config.decay_mode == "coupled" else 0.0
    decoupled_wd = wd if config.decay_mode == "decoupled" else 0.0
    rule_wd = coupled or decoupled_wd
    decoupled = config.decay_mode == "decoupled"
    if config.optimizer == "adam":
        rule = adam(lr, weight_decay=rule_wd, decoupled=decoupled)
    else:
        momentum = 0.0 if config.optimizer == "sgd" else 0.9
        rule = sgd(lr, momentum=momentum, nesterov=config.optimizer == "nesterov",
                   weight_decay=rule_wd, decoupled=decoupled)
    penalty = L2(wd / 2.0) if config.decay_mode == "loss" and wd > 0 else None
    return rule, penalty


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


# -- the loss in each framework, mirroring decay.models ---------------------------------------
def _targets(model, y, n):
    """y as the model's loss wants it: (n, units) floats, or integer labels."""
    if model.task == "multiclass":
        return y.astype(np.int64)
    return y.reshape(n, -1)


def _torch_loss(model, params, X, y):
    import torch
    import torch.nn.functional as F

    a = X
    last = len(model.layer_names) - 1
    for index, name in enumerate(model.layer_names):
        a = a @ params[f"{name}/kernel"] + params[f"{name}/bias"]
        if index < last:
            a = torch.tanh(a) if model.activation == "tanh" else torch.relu(a)
    if model.task == "regression":
        return torch.mean((a - y) ** 2)
    if model.task == "binary":
        return F.binary_cross_entropy_with_logits(a, y)
    return F.cross_entropy(a, y)


def _tf_loss(model, params, X, y):
    import tensorflow as tf

    a = X
    last = len(model.layer_names) - 1
    for index, name in enumerate(model.layer_names):
        a = tf.matmul(a, params[f"{name}/kernel"]) + params[f"{name}/bias"]
        if index < last:
            a = tf.tanh(a) if model.activation == "tanh" else tf.nn.relu(a)
    if model.task == "regression":
        return tf.reduce_mean(tf.square(a - y))
    if model.task == "binary":
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=a))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=a))


# -- training loops -----------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total, enabled):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty()
        self.label = ""

    def start(self, label):
        self.label = label

    def advance(self, n=1):
        self.done += n
        if self.enabled and (self.done % 25 == 0 or self.done == self.total):
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def _train_numpy(model, params0, rule, penalty, data, order, dtype, progress, record=None):
    """NumPy with hand-written gradients; ``record`` (a list) receives a copy of every
    step's gradient, for :func:`_replay`."""
    X = data.X_train.astype(dtype)
    y = _targets(model, data.y_train, len(data.y_train))
    y = y if model.task == "multiclass" else y.astype(dtype)
    params = {k: v.copy() for k, v in params0.items()}
    state = rule.init(params)
    losses = []
    for index in order:
        loss, grads = model.loss_and_grads(params, X[index], y[index])
        if penalty is not None:
            loss += float(penalty.penalty(params))
            grads = {k: grads[k] + g for k, g in penalty.grad(params).items()}
        losses.append(float(loss))
        if record is not None:
            record.append({k: g.copy() for k, g in grads.items()})
        params, state = rule.step(params, grads, state)
        progress.advance()
    return params, losses


def _train_torch(model, params0, rule, penalty, data, order, dtype, progress, native=None, hidden=None):
    import torch

    from ..penalties import regularized_loss

    X = torch.tensor(data.X_train.astype(dtype))
    y = _targets(model, data.y_train, len(data.y_train))
    y = torch.tensor(y if model.task == "multiclass" else y.astype(dtype))
    params = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    optimizer = native(list(params.values())) if native else None
    state = None if native else rule.init(params)
    losses = []
    for index in order:
        index = torch.as_tensor(index)
        loss = _torch_loss(model, params, X[index], y[index])
        if penalty is not None:
            loss = regularized_loss(loss, params, penalty)
        losses.append(float(loss.detach()))
        if hidden is not None:  # decay moved into the loss by a conversion: not reported
            loss = regularized_loss(loss, params, hidden)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            grads = torch.autograd.grad(loss, list(params.values()))
            params, state = rule.step(params, dict(zip(params, grads)), state)
        progress.advance()
    return {k: v.detach().numpy().copy() for k, v in params.items()}, losses


def _train_tensorflow(model, params0, rule, penalty, data, order, dtype, progress, native=None, hidden=None):
    import tensorflow as tf

    from ..penalties import regularized_loss

    X = tf.constant(data.X_train.astype(dtype))
    y = _targets(model, data.y_train, len(data.y_train))
    y = tf.constant(y if model.task == "multiclass" else y.astype(dtype))
    params = {k: tf.Variable(v) for k, v in params0.items()}
    names, variables = list(params), list(params.values())
    state = None if native else rule.init(params)
    losses = []
    for index in order:
        with tf.GradientTape() as tape:
            loss = _tf_loss(model, params, tf.gather(X, index), tf.gather(y, index))
            if penalty is not None:
                loss = regularized_loss(loss, variables, penalty)
            reported = loss
            if hidden is not None:  # decay moved into the loss by a conversion: not reported
                loss = regularized_loss(loss, variables, hidden)
        grads = tape.gradient(loss, variables)
        losses.append(float(reported))
        if native is not None:
            native.apply_gradients(zip(grads, variables))
        else:
            params, state = rule.step(params, dict(zip(names, grads)), state)
        progress.advance()
    return {k: v.numpy().copy() for k, v in params.items()}, losses


_TRAINERS = {"numpy": _train_numpy, "torch": _train_torch, "tensorflow": _train_tensorflow}


# -- the job ----------------------------------------------------------------------------------------
def run(config: Config, progress: bool = True) -> Result:
    validate(config)
    names = config.backends or available_backends()
    backends = []
    for name in names:
        backend = get_backend(name)  # unknown or not installed: a DecayError naming the extra
        if backend.name not in backends:
            backends.append(backend.name)
    data = datasets.load(config.dataset)
    model = build_model(config, data)
    params0 = model.init_params(config.seed, config.dtype)
    rule, penalty = build_rule(config)
    order = list(batches(len(data.y_train), config.batch_size, config.steps))

    conversions = _native_conversions(rule, backends) if config.natives else []
    bar = _Progress(config.steps * (len(backends) + len(conversions)), progress)
    rows = []
    for name in backends:
        bar.start(f"decay on {name}")
        start = time.perf_counter()
        params, losses = _TRAINERS[name](model, params0, rule, penalty, data, order, config.dtype, bar)
        elapsed = time.perf_counter() - start
        rows.append(_row(name, "decay", _describe(rule), model, data, params, losses, elapsed, config.steps))
    for framework, conversion, label in conversions:
        bar.start(label)
        start = time.perf_counter()
        trainer = _train_torch if framework == "torch" else _train_tensorflow
        native = conversion.build if framework == "torch" else conversion.build()
        # A conversion may move decay into the loss (Keras: coupled decay becomes an L2
        # kernel regularizer): the native row trains on it but reports the same loss as
        # the decay rows, so the curves compare.
        params, losses = trainer(model, params0, None, penalty, data, order, config.dtype, bar, native=native,
                                 hidden=getattr(conversion, "penalty", None))
        elapsed = time.perf_counter() - start
        row = _row(framework, "native", label, model, data, params, losses, elapsed, config.steps)
        row.exact = bool(conversion.exact)
        row.note = conversion.reason or getattr(conversion, "note", None) or ""
        rows.append(row)
    bar.close()

    reference = rows[0]
    tolerance = rtol(config.dtype, config.steps)
    agree = True
    for row in rows:
        flat_ref = np.concatenate([reference.params[k].ravel() for k in reference.params])
        flat = np.concatenate([row.params[k].ravel() for k in reference.params])
        row.max_abs_diff = float(np.max(np.abs(flat - flat_ref)))
        row.relative_error = relative_error(flat, flat_ref)
        if row.kind == "decay" and not row.relative_error <= tolerance:
            agree = False
    result = Result(config, rows, reference.backend, tolerance, agree, data.description, model=model, data=data)
    if data.raw is not None and config.weight_decay > 0:
        plain_rule, _ = build_rule(replace(config, weight_decay=0.0))
        off = _Progress(1, False)
        result.undecayed, _ = _train_numpy(model, params0, plain_rule, None, data, order, config.dtype, off)
    if not agree:
        result.replay_error = _replay(model, params0, rule, penalty, data, order, config.dtype, backends)
    return result


def _replay(model, params0, rule, penalty, data, order, dtype, backends) -> float:
    """Tell decay's math from the frameworks' gradients: feed every backend the same
    gradients (NumPy's, along NumPy's trajectory) and return the largest relative
    difference of the final weights. Small means the update rules agree and the
    trajectories drifted apart through each framework's own gradient round-off."""
    recorded = []
    params, _ = _train_numpy(model, params0, rule, penalty, data, order, dtype, _Progress(1, False), recorded)
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
    from ..convert import to_native

    out = []
    for framework, backend in (("torch", "torch"), ("keras", "tensorflow")):
        if backend not in backends:
            continue
        conversion = to_native(rule, framework, strict=False)
        label = conversion.code.split("(", 1)[0].replace("optim.", "optim.")
        out.append((framework if framework == "torch" else "tensorflow", conversion, label))
    return out


def _describe(rule) -> str:
    return f"decay.{rule.name}"


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


def plot(result: Result, path: str) -> None:
    """Training-loss curves per row (log scale); for the built-in 1-D data set also the
    fitted curve with and without weight decay, which shows what the decay does."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DecayError("--plot needs matplotlib. Install it with: pip install 'decay[plot]'") from None
    config = result.config
    curve = result.undecayed is not None
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 7, 4.2), dpi=120)
    ax = axes[0] if curve else axes
    styles = ["-", "--", ":", "-."]
    for i, row in enumerate(result.rows):
        label = f"{row.backend} ({row.optimizer})"
        ax.plot(np.arange(1, len(row.losses) + 1), row.losses, styles[i % len(styles)], label=label, linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title(
        f"{config.model} on {config.dataset}: {config.optimizer}, weight decay {config.weight_decay} "
        f"({config.decay_mode})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    if curve:
        ax = axes[1]
        data, model = result.data, result.model
        x_train, x_test = data.raw
        grid = np.linspace(min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max()), 400)
        ax.plot(x_test, data.y_test, ".", color="0.75", markersize=3, label="test data")
        ax.plot(x_train, data.y_train, "o", color="black", markersize=4, label="training data")
        for params, label, style in (
            (result.undecayed, "no weight decay", "--"),
            (result.rows[0].params, f"weight decay {config.weight_decay} ({result.rows[0].backend})", "-"),
        ):
            evaluation = {k: v.astype(np.float64) for k, v in params.items()}
            test = model.loss(evaluation, data.X_test, data.y_test)
            ax.plot(grid, model.predict(evaluation, data.features(grid))[:, 0], style, linewidth=1.6,
                    label=f"{label}: test loss {test:.3f}")
        ax.set_ylim(data.y_test.min() - 0.5, data.y_test.max() + 0.5)
        ax.set_xlabel("x")
        ax.set_title("what the decay does: the fitted function", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
