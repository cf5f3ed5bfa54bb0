"""Keras 3 on its JAX and torch backends, in subprocesses (the backend is fixed when
keras is imported): tests/integrations/keras_backend_worker.py."""

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import needs_backends

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("keras_backend_worker.py")


@pytest.mark.parametrize(
    "keras_backend",
    [pytest.param("jax", marks=needs_backends("jax", "tensorflow", why="Keras on JAX (decay.keras imports TF)")),
     pytest.param("torch", marks=needs_backends("torch", "tensorflow", why="Keras on torch (decay.keras imports TF)"))],
)
def test_optimizer_and_regularizer_in_fit_on_keras_backend(keras_backend):
    env = dict(os.environ, KERAS_BACKEND=keras_backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and f"ok {keras_backend}" in out.stdout, out.stdout + out.stderr[-3000:]
