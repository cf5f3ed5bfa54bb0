"""Shared fixtures: the same test body runs on every backend and dtype.

``DECAY_REQUIRE_BACKENDS`` (comma-separated, or "all") names the backends a run must
cover: a required backend that cannot be imported fails the run instead of skipping.
CI sets it to every backend.
"""

from __future__ import annotations

import contextlib

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX reads this once, when it is first imported: float64 arrays are float64 only with
# x64 on. Set for the whole run (not per test with jax.experimental.enable_x64) so that
# float32 tests run on float32 arrays in the same mode, and jitted steps compiled by one
# test are reused by the next. tests/backends/test_jax.py checks x64 off in a subprocess.
os.environ.setdefault("JAX_ENABLE_X64", "1")
# Keep JAX on the CPU in the shared suite (a GPU build would otherwise take the device).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compilation is most of a JAX test's time, and many tests compile the same program
# (the same step on the same shapes, by another rule object or another jit): JAX's
# persistent cache, in a directory of this run, compiles each program once (about a third
# less CPU time on the JAX tests, measured). Cached executables are the compiled ones:
# the numbers cannot change.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="decay-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import numpy as np
import pytest

import decay
from decay.backends import known_backends

BACKENDS = known_backends()
DTYPES = ["float32", "float64"]


def required_backends() -> list[str]:
    raw = os.environ.get("DECAY_REQUIRE_BACKENDS", "").strip()
    if raw == "all":
        return list(BACKENDS)
    return [name.strip() for name in raw.split(",") if name.strip()]


def pytest_sessionstart(session):
    missing = []
    for name in required_backends():
        try:
            decay.get_backend(name)
        except Exception as exc:  # report every missing backend at once
            missing.append(f"{name}: {exc}")
    if missing:
        raise pytest.UsageError(
            "DECAY_REQUIRE_BACKENDS names backends that cannot be used here:\n  " + "\n  ".join(missing)
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """With DECAY_REQUIRE_BACKENDS set (as in CI) a skipped test fails the run: a
    suite that goes green by skipping proves nothing."""
    if not required_backends():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(
            f"FAILED: {len(skipped)} test(s) skipped while DECAY_REQUIRE_BACKENDS is set; "
            "every test must run in this mode:",
            red=True,
        )
        for report in skipped[:20]:
            reporter.write_line(f"  {report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def needs_backends(*names, why):
    """A mark for a test that needs these backends' frameworks (found without importing
    them): it skips, saying which are missing and why they are needed, where one is not
    installed. With DECAY_REQUIRE_BACKENDS set the run fails instead (above)."""
    missing = [name for name in names if name not in decay.available_backends()]
    return pytest.mark.skipif(bool(missing), reason=f"{' and '.join(missing)} not installed: {why}")


def backend_or_skip(name):
    """The adapter; a backend not installed skips the test, or fails it where required."""
    try:
        return decay.get_backend(name)
    except decay.DecayError as exc:
        if name in required_backends():
            pytest.fail(f"required backend {name!r} is not available: {exc}")
        pytest.skip(f"backend {name!r} not installed (set DECAY_REQUIRE_BACKENDS to make this fail)")


def _disable_reduced_precision(name):
    if name == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    elif name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A backend adapter, one per known backend."""
    adapter = backend_or_skip(request.param)
    _disable_reduced_precision(request.param)
    return adapter


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


class Native:
    """Moves NumPy arrays onto a backend as the kind of tensor users optimize:
    NumPy arrays, torch tensors, tf.Variables (or tf.Tensors with ``variable=False``),
    JAX arrays."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def param(self, array, dtype, variable=True):
        array = np.asarray(array, dtype=np.float64).astype(dtype)
        if self.name == "numpy":
            return array.copy()
        if self.name == "torch":
            import torch

            return torch.tensor(array)
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(array)
        import tensorflow as tf

        return tf.Variable(array) if variable else tf.constant(array)

    def grad(self, array, dtype):
        return self.param(array, dtype, variable=False)

    def numpy(self, x):
        return self.backend.to_numpy(x)


@pytest.fixture
def native(backend):
    return Native(backend)


@contextlib.contextmanager
def keras_floatx(name):
    """Keras's floatx and its global dtype policy set together, and both restored. Keras
    caches the policy from floatx the first time a layer asks for it
    (``keras.config.dtype_policy()``); after that, set_floatx alone no longer changes the
    dtype of layers built later, so which test first built a layer in a process (an
    xdist worker) would decide the dtype of every later test's layers."""
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(name)
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)

