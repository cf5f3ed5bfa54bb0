"""Backend lookup: by name, or from a native tensor without importing other frameworks.

Each adapter lives in its own module (``numpy_backend``, ``torch_backend``,
``tensorflow_backend``, ``jax_backend``) that imports its framework at module level; this registry
imports an adapter module only when that backend is asked for by name, or when a
tensor of its framework is seen (so the framework is already in ``sys.modules``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading

from ..errors import DecayError
from .base import Backend

# name -> (adapter module, class name, framework module, pip extra)
_REGISTRY = {
    "numpy": ("decay.backends.numpy_backend", "NumpyBackend", "numpy", None),
    "torch": ("decay.backends.torch_backend", "TorchBackend", "torch", "torch"),
    "tensorflow": ("decay.backends.tensorflow_backend", "TensorflowBackend", "tensorflow", "tensorflow"),
    "jax": ("decay.backends.jax_backend", "JaxBackend", "jax", "jax"),
}
_ALIASES = {"np": "numpy", "pytorch": "torch", "tf": "tensorflow", "jnp": "jax"}
# Root module of a tensor's type -> backend name. Keras 3 variables on the TensorFlow
# backend behave as TensorFlow tensors.
# JAX arrays are jaxlib's (``jaxlib._jax.ArrayImpl``), its tracers jax's.
_TYPE_ROOTS = {
    "numpy": "numpy", "torch": "torch", "tensorflow": "tensorflow", "keras": "tensorflow",
    "jax": "jax", "jaxlib": "jax",
}

_lock = threading.RLock()
_instances: dict[str, Backend] = {}
_type_cache: dict[type, str] = {}


def known_backends() -> list[str]:
    """Every backend name decay knows, installed or not."""
    return list(_REGISTRY)


def available_backends() -> list[str]:
    """The backends whose framework is installed here (found without importing it)."""
    return [name for name, spec in _REGISTRY.items() if importlib.util.find_spec(spec[2]) is not None]


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        known = ", ".join(f"{n!r}" for n in list(_REGISTRY) + list(_ALIASES))
        raise DecayError(f"Unknown backend {name!r}. Known backends: {known}.")
    return key


def _load(name: str) -> Backend:
    backend = _instances.get(name)  # the common case, without taking the lock
    if backend is not None:
        return backend
    with _lock:
        backend = _instances.get(name)
        if backend is not None:
            return backend
        module_name, class_name, framework, extra = _REGISTRY[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if importlib.util.find_spec(framework) is not None:
                raise  # installed but broken: the original error says more
            raise DecayError(
                f"Backend {name!r} needs {framework}, which is not installed. "
                f"Install it with: pip install 'decay[{extra}]'"
            ) from exc
        backend = getattr(module, class_name)()
        _instances[name] = backend
        return backend


def _name_of_type(tp: type) -> str | None:
    cached = _type_cache.get(tp)
    if cached is not None:
        return cached
    found = None
    for klass in tp.__mro__:
        root = (klass.__module__ or "").split(".")[0]
        if root in _TYPE_ROOTS:
            found = _TYPE_ROOTS[root]
            break
    if found is not None:
        # Only trust the guess if the adapter agrees (e.g. a keras variable on the
        # torch backend is not a TensorFlow tensor).
        if found != "numpy" and _REGISTRY[found][2] not in sys.modules:
            return None
        with _lock:
            _type_cache[tp] = found
    return found


def backend_name_of(x) -> str | None:
    """The backend name of a native tensor, or None; never imports a framework."""
    name = _name_of_type(type(x))
    if name is None:
        return None
    if not _load(name).is_tensor(x):
        return None
    return name


def get_backend(name_or_tensor) -> Backend:
    """The backend adapter for a name ("numpy", "torch", "tensorflow", "jax", or the
    aliases "np", "pytorch", "tf", "jnp") or for a native tensor (NumPy array, torch
    tensor, tf.Tensor, tf.Variable, jax.Array). Detection from a tensor never imports a framework that
    is not already loaded."""
    if isinstance(name_or_tensor, str):
        return _load(_canonical(name_or_tensor))
    if isinstance(name_or_tensor, Backend):
        return name_or_tensor
    name = backend_name_of(name_or_tensor)
    if name is None:
        raise DecayError(
            f"Cannot find a backend for an object of type {type(name_or_tensor).__module__}."
            f"{type(name_or_tensor).__qualname__}. Pass a NumPy array, a torch tensor, a "
            "TensorFlow tensor/variable or a JAX array, or a backend name: "
            + ", ".join(repr(n) for n in _REGISTRY)
            + "."
        )
    return _load(name)


def backend_of_tensors(tensors, what: str = "params") -> Backend:
    """The one backend of several tensors; an error names both when they mix."""
    found = None
    first_index = None
    checked = {}  # type -> name: is_tensor once per type, not once per tensor
    for index, tensor in tensors:
        tp = type(tensor)
        name = checked.get(tp, False)
        if name is False:
            name = backend_name_of(tensor)
            checked[tp] = name
        if name is None:
            raise DecayError(
                f"`{what}` entry {index!r} is a {type(tensor).__module__}.{type(tensor).__qualname__}, "
                "not a tensor of a known backend. Pass NumPy arrays, torch tensors, "
                "TensorFlow tensors/variables or JAX arrays."
            )
        if found is None:
            found, first_index = name, index
        elif name != found:
            raise DecayError(
                f"`{what}` mixes two backends: entry {first_index!r} is {found} and entry {index!r} "
                f"is {name}. Convert them to one framework before calling decay."
            )
    return _load(found)


__all__ = ["Backend", "available_backends", "known_backends", "get_backend", "backend_name_of", "backend_of_tensors"]
