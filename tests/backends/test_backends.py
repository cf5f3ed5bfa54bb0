"""Backend lookup by name and by tensor, its errors, and that `import decay` stays light."""

import subprocess
import sys
import threading

import numpy as np
import pytest

import decay
from decay.backends import backend_name_of

from conftest import needs_backends


def test_import_decay_loads_no_framework():
    code = (
        "import sys, decay, decay.schedules, decay.tolerances;"
        "print(' '.join(m for m in ('torch', 'tensorflow', 'keras', 'jax', 'optax', 'decay.optax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import decay loaded: {out.stdout.strip()}"


def test_detection_does_not_import_frameworks():
    code = (
        "import sys, numpy as np, decay;"
        "decay.get_backend(np.zeros(2));"
        "print(' '.join(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_available_backends_lists_installed(backend):
    assert backend.name in decay.available_backends()


ALIASES = {
    "numpy": ["numpy", "np", "NumPy"],
    "torch": ["torch", "pytorch", "PyTorch"],
    "tensorflow": ["tensorflow", "tf", "TF"],
    "jax": ["jax", "jnp", "JAX"],
}


def test_names_and_aliases(backend):
    for alias in ALIASES[backend.name]:
        assert decay.get_backend(alias) is backend


def test_detect_from_native_tensors(native, dtype):
    p = native.param([1.0, 2.0], dtype)
    g = native.grad([1.0, 2.0], dtype)
    assert decay.get_backend(p) is native.backend
    assert decay.get_backend(g) is native.backend


def test_unknown_name_lists_known_ones():
    with pytest.raises(decay.DecayError) as info:
        decay.get_backend("jaxx")
    message = str(info.value)
    assert "jaxx" in message
    for name in ("numpy", "torch", "tensorflow", "jax", "np", "pytorch", "tf", "jnp"):
        assert repr(name) in message


def test_error_is_a_value_error():
    assert issubclass(decay.DecayError, ValueError)


def test_unknown_tensor_type_names_the_type():
    with pytest.raises(decay.DecayError, match="list"):
        decay.get_backend([1.0, 2.0])
    assert backend_name_of(3.0) is None


def test_missing_framework_names_the_extra():
    # A fresh interpreter in which importing torch fails as if it were not installed.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None\n"
        "import decay\n"
        "try:\n"
        "    decay.get_backend('torch')\n"
        "except decay.DecayError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'decay[torch]'" in out.stdout, out.stdout + out.stderr


def test_two_backends_in_one_call_name_both():
    torch = pytest.importorskip("torch")
    params = {"a": np.zeros(2), "b": torch.zeros(2)}
    with pytest.raises(decay.DecayError) as info:
        decay.L2(0.1).penalty(params)
    assert "numpy" in str(info.value) and "torch" in str(info.value)
    rule = decay.sgd(0.1)
    with pytest.raises(decay.DecayError, match="numpy.*torch|torch.*numpy"):
        rule.init(params)
    p = np.zeros(2)
    with pytest.raises(decay.DecayError, match="numpy.*torch|torch.*numpy"):
        rule.step(p, torch.zeros(2), rule.init(p))


def test_lookup_is_thread_safe(backend):
    results = []

    def look():
        for _ in range(200):
            results.append(decay.get_backend(backend.name))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1600 and all(r is backend for r in results)


@needs_backends("torch", "tensorflow", why="the race loads every known backend")
def test_first_lookup_from_many_threads_loads_each_backend_once():
    # In a fresh interpreter, where no adapter is loaded yet: 8 threads race to load
    # every backend; each must get the one shared instance.
    code = (
        "import threading, decay\n"
        "from decay.backends import known_backends\n"
        "names = known_backends()\n"
        "seen = {n: set() for n in names}\n"
        "barrier = threading.Barrier(8)\n"
        "def work():\n"
        "    barrier.wait()\n"
        "    for n in names:\n"
        "        seen[n].add(id(decay.get_backend(n)))\n"
        "threads = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(sorted(len(v) for v in seen.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([1] * len(decay.known_backends()))
