"""Data sets for the comparison command: one that ships inside the package, and real
ones that an installed package ships (scikit-learn's digits and diabetes).

``load(name)`` returns a :class:`Dataset` of NumPy arrays, already split into a
training and a test part and standardized with training statistics, so every backend
trains on exactly the same numbers.
"""

from __future__ import annotations

import importlib.resources
from typing import NamedTuple

import numpy as np

from ..errors import DecayError

DEGREE = 12  # polynomial features of the built-in data set


class Dataset(NamedTuple):
    name: str
    task: str  # "regression", "binary" or "multiclass"
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int  # regression outputs, or classes for multiclass
    description: str
    features: object = None  # raw 1-D inputs -> standardized features, where the data has them
    raw: tuple = None  # (x_train, x_test) raw 1-D inputs, for plots


def _sine():
    """20 noisy samples of sin(πx) with polynomial features x, x², …, x¹²: a model
    with this many features interpolates the noise unless it is regularized — the
    textbook picture of overfitting (Bishop, PRML §1.1)."""
    text = importlib.resources.files(__package__).joinpath("data/sine.csv").read_text(encoding="utf-8")
    rows = [line.split(",") for line in text.splitlines() if line and not line.startswith(("#", "split"))]
    split = np.array([r[0] for r in rows])
    x = np.array([float(r[1]) for r in rows])
    y = np.array([float(r[2]) for r in rows])
    train = split == "train"
    features = _polynomial(x)
    return features[train], y[train], features[~train], y[~train], "regression", 1, (x[train], x[~train])


def _polynomial(x):
    return np.stack([np.asarray(x, dtype=np.float64) ** k for k in range(1, DEGREE + 1)], axis=1)


def _sklearn(loader_name):
    try:
        from sklearn import datasets as sk
    except ImportError:
        raise DecayError(
            "This data set ships with scikit-learn, which is not installed. "
            "Install it with: pip install 'decay[datasets]'"
        ) from None
    data = getattr(sk, loader_name)()
    X, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target)
    # A fixed split, the same for every backend: every other sample is for testing.
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    return X, y, train, test


def _digits():
    X, y, train, test = _sklearn("load_digits")
    return X[train], y[train].astype(np.int64), X[test], y[test].astype(np.int64), "multiclass", 10, None


def _diabetes():
    X, y, train, test = _sklearn("load_diabetes")
    y = (y - y[train].mean()) / y[train].std()
    return X[train], y[train], X[test], y[test], "regression", 1, None


_LOADERS = {
    "sine": (_sine, "built-in: 20 noisy samples of sin(pi x), 12 polynomial features (ships with decay)"),
    "digits": (_digits, "scikit-learn digits: 8x8 images, 10 classes, 898/899 split"),
    "diabetes": (_diabetes, "scikit-learn diabetes: 10 features, standardized target, 221/221 split"),
}
NAMES = tuple(_LOADERS)
TASKS = {"sine": "regression", "digits": "multiclass", "diabetes": "regression"}  # known before loading
DEFAULT = "sine"


def load(name: str = DEFAULT) -> Dataset:
    """A data set by name (``decay.datasets.NAMES``), features standardized with the
    training part's mean and standard deviation."""
    if name not in _LOADERS:
        raise DecayError(f"Unknown data set {name!r}. Known data sets: {', '.join(NAMES)}.")
    loader, description = _LOADERS[name]
    X_train, y_train, X_test, y_test, task, n_outputs, raw = loader()
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    features = None
    if raw is not None:
        def features(x, mean=mean, std=std):
            return (_polynomial(x) - mean) / std
    return Dataset(name, task, X_train, y_train, X_test, y_test, n_outputs, description, features, raw)
