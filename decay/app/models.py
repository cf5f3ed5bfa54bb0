"""Small models, written once, that train on NumPy, PyTorch and TensorFlow: linear
regression, logistic regression and a multilayer perceptron. On NumPy the gradients
are backpropagated by hand, so decay trains without any framework; on PyTorch and
TensorFlow the same loss is differentiated by the framework's autodiff (the few
functions that takes are in :mod:`decay.app.model_functions`). ``decay.models`` is this module.

Every model is a stack of dense layers ``z = a @ W + b`` followed by a loss, with the
parameters in a flat dict named the way Keras names them:

============================ ================================= =======================
model                         parameters                         kernel shape
============================ ================================= =======================
LinearRegression              ``dense/kernel``, ``dense/bias``   (n_features, n_outputs)
LogisticRegression            ``dense/kernel``, ``dense/bias``   (n_features, 1 or C)
MLP                           ``dense_0/kernel`` … ``dense_L/…`` (in, out) per layer
============================ ================================= =======================

Kernels are (in, out) as in Keras; PyTorch's ``nn.Linear.weight`` is the transpose
(``linear.weight = kernel.T``, ``linear.bias = bias``).

Losses are means over the batch, the default reduction of Keras and of PyTorch:

- regression: ``mean((pred − y)²)`` over samples *and* outputs, no ½
  (``nn.MSELoss()``, ``keras.losses.MeanSquaredError()``);
- binary: one logit per output, ``mean(log(1 + e^z) − y·z)``
  (``nn.BCEWithLogitsLoss()``, Keras ``BinaryCrossentropy(from_logits=True)``);
- multiclass: C logits, ``mean(logsumexp(z) − z_y)`` with integer labels
  (``nn.CrossEntropyLoss()``, Keras ``SparseCategoricalCrossentropy(from_logits=True)``).

Kernels start Glorot-uniform, U(−√(6/(in+out)), +√(6/(in+out))) (Keras's default
``kernel_initializer``), biases at zero. The draw is made in float64 from
``np.random.default_rng(seed)`` and then cast, so a seed gives the same weights in
every dtype (up to rounding). PyTorch and Keras draw differently: copy these values
into them to compare.

The arithmetic runs in the parameters' framework and dtype (float32 or float64):
inputs (NumPy arrays) are cast to it, and predictions and gradients come back in it.

Example::

    >>> import numpy as np, decay
    >>> from decay.app.models import LinearRegression, fit
    >>> X = np.random.default_rng(0).normal(size=(64, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    >>> model = LinearRegression(3)
    >>> params = model.init_params(seed=0)
    >>> params, losses = fit(model, params, decay.sgd(0.1), X, y, steps=200)
    >>> bool(losses[-1] < 1e-6 * losses[0])
    True
"""

from __future__ import annotations

import numbers

import numpy as np

from ..backends import backend_of_tensors
from ..errors import DecayError
from .model_functions import ops_for

TASKS = ("regression", "binary", "multiclass")
_COMPILED = {}  # (backend, repr(model)) -> the compiled loss and gradient: repr names the architecture
ACTIVATIONS = ("tanh", "relu")
DTYPES = ("float32", "float64")


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DecayError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}.")
    return int(value)


class DenseModel:
    """Dense layers, an activation between them and a loss on the last one's output.

    The three public models configure this; the forward pass, the loss and the
    backward pass are written once here."""

    def __init__(self, sizes, names, activation: str, task: str):
        self.sizes = tuple(sizes)
        self.layer_names = tuple(names)
        if activation not in ACTIVATIONS:
            raise DecayError(
                f"`activation` must be one of {list(ACTIVATIONS)}. Received: activation={activation!r}."
            )
        if task not in TASKS:
            raise DecayError(f"`task` must be one of {list(TASKS)}. Received: task={task!r}.")
        self.activation = activation
        self.task = task
        self.n_features = self.sizes[0]
        self.n_units = self.sizes[-1]

    # -- parameters --------------------------------------------------------------
    def param_shapes(self) -> dict:
        """Name -> shape of every parameter, in layer order (kernel before bias)."""
        shapes = {}
        for name, fan_in, fan_out in zip(self.layer_names, self.sizes[:-1], self.sizes[1:]):
            shapes[f"{name}/kernel"] = (fan_in, fan_out)
            shapes[f"{name}/bias"] = (fan_out,)
        return shapes

    def init_params(self, seed: int, dtype: str = "float64") -> dict:
        """Glorot-uniform kernels and zero biases, drawn in float64 from
        ``np.random.default_rng(seed)`` layer by layer, then cast to ``dtype``.

        ``W ~ U(−r, r)`` with ``r = √(6 / (fan_in + fan_out))``, as Keras's
        ``GlorotUniform``; same seed, same values."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise DecayError(
                f"`seed` must be an integer >= 0 so that the weights are reproducible. "
                f"Received: seed={seed!r}."
            )
        dtype = _check_dtype(dtype)
        rng = np.random.default_rng(int(seed))
        params = {}
        for name, (fan_in, fan_out) in zip(self.layer_names, zip(self.sizes[:-1], self.sizes[1:])):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            params[f"{name}/kernel"] = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)
            params[f"{name}/bias"] = np.zeros(fan_out, dtype=dtype)
        return params

    # -- the computation, written once for every framework ------------------------------
    def forward(self, params, X):
        """The last layer's raw output, shape (n, units), in the params' framework:
        predictions for regression, logits for classification."""
        params, ops, dtype = self._check_params(params)
        X = ops.constant(self._check_X(X, dtype), _first(params))
        return self._forward(params, X, ops)[0][-1]

    def predict(self, params, X):
        """Regression: the outputs, (n, n_outputs). Binary: P(y = 1) = sigmoid(logit),
        (n, n_outputs). Multiclass: softmax probabilities, (n, n_classes)."""
        z = self.forward(params, X)
        ops = ops_for(z)
        if self.task == "binary":
            return _sigmoid(z, ops)
        if self.task == "multiclass":
            return ops.exp(z - ops.logsumexp(z))
        return z

    def loss(self, params, X, y) -> float:
        """The mean loss of the task (see the module docstring), as a Python float."""
        params, ops, dtype = self._check_params(params)
        X, y = self._data(X, y, dtype, ops, params)
        with ops.backend.no_grad():
            return float(self._loss(self._forward(params, X, ops)[0][-1], y, ops))

    def loss_and_grads(self, params, X, y):
        """``(loss, grads)``: the loss as a Python float and its gradient with respect to
        every parameter (same names, shapes and dtype, in the params' framework): by the
        backpropagation written here on NumPy, by autograd or ``tf.GradientTape`` on
        PyTorch and TensorFlow."""
        params, ops, dtype = self._check_params(params)
        X, y = self._data(X, y, dtype, ops, params)
        loss, grads = self._loss_and_grads(params, X, y, ops)
        return float(loss), grads

    def _loss_and_grads(self, params, X, y, ops):
        """:meth:`loss_and_grads` on checked, converted inputs, the loss still native
        (what :func:`fit` calls every step)."""
        if ops.value_and_grad is None:
            return self._backprop(params, X, y, ops)
        if ops.compile is None:
            return ops.value_and_grad(lambda p: self._loss(self._forward(p, X, ops)[0][-1], y, ops), params)
        # TensorFlow: traced once per architecture (and batch shape), as Keras's fit does;
        # eager, its Python overhead is most of the step on models this small.
        key = (ops.backend.name, repr(self))
        if key not in _COMPILED:
            _COMPILED[key] = ops.compile(
                lambda p, X, y: ops.value_and_grad(lambda q: self._loss(self._forward(q, X, ops)[0][-1], y, ops), p))
        return _COMPILED[key](params, X, y)

    def _forward(self, params, X, ops):
        """Every layer's input (X, then each hidden activation, then the raw output) and
        every hidden layer's pre-activation, which backprop needs."""
        outputs, pre = [X], []
        a = X
        last = len(self.layer_names) - 1
        for index, name in enumerate(self.layer_names):
            z = a @ params[f"{name}/kernel"] + params[f"{name}/bias"]
            if index < last:
                pre.append(z)
                a = ops.tanh(z) if self.activation == "tanh" else ops.relu(z)
            else:
                a = z
            outputs.append(a)
        return outputs, pre

    def _loss(self, z, y, ops):
        """The mean loss of the raw output ``z``, a native scalar."""
        if self.task == "regression":
            return ops.mean(ops.square(z - y))
        if self.task == "binary":
            # log(1 + e^z) − y·z = −[y·log σ(z) + (1 − y)·log(1 − σ(z))], without overflow.
            return ops.mean(ops.softplus(z) - y * z)
        return ops.mean(ops.logsumexp(z)[:, 0] - ops.pick(z, y))

    def _backprop(self, params, X, y, ops):
        """NumPy's ``(loss, grads)``, by hand: NumPy has no autodiff."""
        outputs, pre = self._forward(params, X, ops)
        z = outputs[-1]
        # The gradient of _loss with respect to z.
        if self.task == "regression":
            dz = (z - y) * (2.0 / z.size)
        elif self.task == "binary":
            dz = (_sigmoid(z, ops) - y) / z.size
        else:
            dz = ops.exp(z - ops.logsumexp(z))
            dz[np.arange(z.shape[0]), y] -= 1
            dz /= z.shape[0]
        dz = dz.astype(z.dtype, copy=False)
        grads = {}
        for index in reversed(range(len(self.layer_names))):
            name = self.layer_names[index]
            a_in = outputs[index]
            grads[f"{name}/kernel"] = a_in.T @ dz
            grads[f"{name}/bias"] = dz.sum(axis=0)
            if index == 0:
                break
            da = dz @ params[f"{name}/kernel"].T
            # Backward of the activation that produced a_in from pre[index - 1].
            if self.activation == "tanh":
                dz = da * (1 - a_in * a_in)
            else:
                dz = da * (pre[index - 1] > 0)  # 0 at z = 0, as torch.relu's backward
        ordered = {name: grads[name].astype(z.dtype, copy=False) for name in self.param_shapes()}
        return self._loss(z, y, ops), ordered

    # -- checks ------------------------------------------------------------------------
    def _check_params(self, params):
        """``(params, the framework's ops, dtype name)``, checked: the names and shapes of
        :meth:`param_shapes`, tensors of one framework, one float dtype."""
        expected = self.param_shapes()
        if not isinstance(params, dict):
            raise DecayError(
                f"{self!r} takes params as a dict name -> array with names {list(expected)}. "
                f"Received a {type(params).__name__}. Use model.init_params(seed)."
            )
        missing = [k for k in expected if k not in params]
        extra = sorted(str(k) for k in params if k not in expected)
        if missing or extra:
            raise DecayError(
                f"{self!r} expects params named {list(expected)}. Received names "
                f"{list(params)}: missing {missing}, unknown {extra}."
            )
        out = {name: params[name] for name in expected}
        backend = backend_of_tensors(out.items())
        for name, shape in expected.items():
            if backend.shape(out[name]) != shape:
                raise DecayError(
                    f"Parameter {name!r} of {self!r} must have shape {shape}. "
                    f"Received shape {backend.shape(out[name])}."
                )
        dtypes = {k: backend.dtype_name(v) for k, v in out.items()}
        if len(set(dtypes.values())) > 1 or not set(dtypes.values()) <= set(DTYPES):
            raise DecayError(
                f"{self!r} needs every parameter in one dtype, float32 or float64. Received "
                f"{dtypes}. Cast them with .astype()."
            )
        return out, ops_for(backend.name), dtypes[next(iter(expected))]

    def _data(self, X, y, dtype, ops, params):
        """X and y checked (as NumPy arrays) and converted to the params' framework."""
        X = self._check_X(X, dtype)
        y = self._check_y(y, X.shape[0], dtype)
        like = _first(params)
        return ops.constant(X, like), ops.constant(y, like)

    def _check_X(self, X, dtype):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DecayError(
                f"X must have shape (n_samples, {self.n_features}) for {self!r}. "
                f"Received shape {X.shape}."
                + (" Reshape a single sample with X[None, :]." if X.ndim == 1 else "")
            )
        if X.shape[0] == 0:
            raise DecayError("X has no samples (shape (0, ...)). Pass at least one row.")
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise DecayError(f"X must hold numbers. Received dtype {X.dtype}.")
        return X.astype(dtype, copy=False)

    def _check_y(self, y, n, dtype):
        y = np.asarray(y)
        units = self.n_units
        if self.task == "multiclass":
            if y.shape != (n,):
                raise DecayError(
                    f"y must hold one integer class label per sample, shape ({n},), for "
                    f"{self!r}. Received shape {y.shape}."
                )
            if not np.issubdtype(y.dtype, np.integer):
                if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
                    raise DecayError(
                        f"y must hold integer class labels 0..{units - 1} for {self!r}. "
                        f"Received dtype {y.dtype} with non-integer values."
                    )
                y = y.astype(np.int64)
            if y.size and (y.min() < 0 or y.max() >= units):
                raise DecayError(
                    f"y must hold class labels in 0..{units - 1} for {self!r}. "
                    f"Received labels from {y.min()} to {y.max()}."
                )
            return y
        if units == 1 and y.shape == (n,):
            y = y[:, None]
        if y.shape != (n, units):
            accepted = f"({n}, {units})" + (f" or ({n},)" if units == 1 else "")
            raise DecayError(
                f"y must have shape {accepted} for {self!r} (one row per sample of X). "
                f"Received shape {y.shape}."
            )
        if self.task == "binary" and y.size and (np.min(y) < 0 or np.max(y) > 1):
            raise DecayError(
                f"y must hold targets in [0, 1] (class 1 has target 1) for {self!r}. "
                f"Received values from {np.min(y)} to {np.max(y)}."
            )
        return y.astype(dtype, copy=False)

    def get_config(self) -> dict:
        raise NotImplementedError


class LinearRegression(DenseModel):
    """``pred = X @ W + b``; loss ``mean((pred − y)²)`` over samples and outputs, no ½
    (``nn.MSELoss()``). Gradient ``∂/∂W = 2·Xᵀ(pred − y)/(n·k)`` for k outputs.

    Params: ``dense/kernel`` (n_features, n_outputs), ``dense/bias`` (n_outputs,).
    ``y`` is (n, n_outputs), or (n,) when n_outputs = 1."""

    def __init__(self, n_features: int, n_outputs: int = 1):
        self.n_outputs = _positive_int("n_outputs", n_outputs)
        super().__init__(
            (_positive_int("n_features", n_features), self.n_outputs), ("dense",), "tanh", "regression"
        )

    def get_config(self):
        return {"model": "LinearRegression", "n_features": self.n_features, "n_outputs": self.n_outputs}

    def __repr__(self):
        return f"LinearRegression(n_features={self.n_features}, n_outputs={self.n_outputs})"


class LogisticRegression(DenseModel):
    """Logistic regression on ``z = X @ W + b``.

    - ``n_classes = 2``: one logit, P(y = 1) = sigmoid(z), loss
      ``mean(log(1 + e^z) − y·z)`` (``nn.BCEWithLogitsLoss()``); ``y`` in {0, 1}
      (or soft targets in [0, 1]), shape (n,) or (n, 1).
    - ``n_classes > 2``: C logits, softmax, loss ``mean(logsumexp(z) − z_y)``
      (``nn.CrossEntropyLoss()``); ``y`` integer labels 0..C−1, shape (n,).

    Params: ``dense/kernel`` (n_features, 1 or C), ``dense/bias`` (1 or C,)."""

    def __init__(self, n_features: int, n_classes: int = 2):
        self.n_classes = _positive_int("n_classes", n_classes, minimum=2)
        units, task = (1, "binary") if self.n_classes == 2 else (self.n_classes, "multiclass")
        super().__init__((_positive_int("n_features", n_features), units), ("dense",), "tanh", task)

    def get_config(self):
        return {"model": "LogisticRegression", "n_features": self.n_features, "n_classes": self.n_classes}

    def __repr__(self):
        return f"LogisticRegression(n_features={self.n_features}, n_classes={self.n_classes})"


class MLP(DenseModel):
    """A multilayer perceptron: ``a₀ = X``, ``aᵢ₊₁ = act(aᵢ @ Wᵢ + bᵢ)`` for the hidden
    layers, and a linear last layer ``z = a_L @ W_L + b_L`` fed to the task's loss:

    - ``"regression"``: MSE as :class:`LinearRegression`, n_outputs units;
    - ``"binary"``: BCE-with-logits as :class:`LogisticRegression` with 2 classes,
      n_outputs independent logits (n_outputs = 1 for a plain binary classifier);
    - ``"multiclass"``: softmax cross-entropy, n_outputs = number of classes (>= 2).

    Params ``dense_0/kernel``, ``dense_0/bias``, …, ``dense_{L}/kernel``,
    ``dense_{L}/bias`` with L = len(hidden); activation ``"tanh"`` or ``"relu"``."""

    def __init__(
        self,
        n_features: int,
        hidden=(16,),
        n_outputs: int = 1,
        activation: str = "tanh",
        task: str = "regression",
    ):
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if not isinstance(hidden, (tuple, list)):
            raise DecayError(f"`hidden` must be a tuple of layer widths. Received: hidden={hidden!r}.")
        self.hidden = tuple(_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        self.n_outputs = _positive_int("n_outputs", n_outputs, minimum=2 if task == "multiclass" else 1)
        sizes = (_positive_int("n_features", n_features),) + self.hidden + (self.n_outputs,)
        names = tuple(f"dense_{i}" for i in range(len(sizes) - 1))
        super().__init__(sizes, names, activation, task)

    def get_config(self):
        return {
            "model": "MLP", "n_features": self.n_features, "hidden": list(self.hidden),
            "n_outputs": self.n_outputs, "activation": self.activation, "task": self.task,
        }

    def __repr__(self):
        return (
            f"MLP(n_features={self.n_features}, hidden={self.hidden}, n_outputs={self.n_outputs}, "
            f"activation={self.activation!r}, task={self.task!r})"
        )


def _check_dtype(dtype) -> str:
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if name not in DTYPES:
        raise DecayError(f"`dtype` must be one of {list(DTYPES)}. Received: dtype={dtype!r}.")
    return name


def _sigmoid(z, ops):
    # exp(−log(1 + e^{−z})): no overflow for either sign of z.
    return ops.exp(-ops.softplus(-z))


def _first(params):
    return next(iter(params.values()))


# Training lives in decay/app/training.py; imported here for the callers of models.fit.
from .training import batches, fit  # noqa: E402,F401
