"""The command line, run as users run it: subprocesses, exit codes, output and JSON
checked against the library computed independently in this process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import decay
from decay.app import datasets
from decay.app.models import MLP, fit
from decay.app.sweep import fold_indices

from conftest import needs_backends

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/app/ -> the repo


def cli(*args, env=None, check_rc=None):
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-m", "decay", *args], capture_output=True, text=True, env=full_env,
                         cwd=ROOT, timeout=600)
    if check_rc is not None:
        assert out.returncode == check_rc, f"rc={out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


@pytest.mark.parametrize("command", [[], ["compare"], ["sweep"], ["convert"], ["example"]])
def test_help_on_every_command(command):
    out = cli(*command, "--help", check_rc=0)
    assert "usage: decay" in out.stdout


def sine_reference(steps, lr=0.1, weight_decay=0.03):
    """The default job's NumPy row, computed here with the library directly."""
    data = datasets.load("sine")
    model = MLP(data.X_train.shape[1], hidden=(32,), n_outputs=1, task="regression")
    params0 = model.init_params(0)
    rule = decay.sgd(lr, momentum=0.9, weight_decay=weight_decay)
    params, losses = fit(model, params0, rule, data.X_train, data.y_train, steps=steps)
    return model, data, params, losses


@needs_backends("torch", "tensorflow", why="compare --natives runs every backend and both frameworks' optimizers")
def test_compare_table_report_and_plot(tmp_path):
    report, picture = tmp_path / "r.json", tmp_path / "p.png"
    out = cli("compare", "--steps", "30", "--natives", "--report", str(report), "--plot", str(picture),
              check_rc=0)
    # Not a terminal: no progress bar, nothing on stderr.
    assert out.stderr == ""
    result = json.loads(report.read_text())
    assert result["schema"] == "decay.compare/2"
    assert result["agree"] is True and result["diverged"] is False and result["not_installed"] == {}
    backends = [r["backend"] for r in result["rows"] if r["kind"] == "decay"]
    assert backends == ["numpy", "torch", "tensorflow"]
    natives = {r["optimizer"]: r for r in result["rows"] if r["kind"] == "native"}
    assert set(natives) == {"torch.optim.SGD", "keras.optimizers.SGD"}
    assert all(r["exact"] is True for r in natives.values())

    model, data, params, losses = sine_reference(30)
    numpy_row = result["rows"][0]
    np.testing.assert_allclose(numpy_row["losses"], losses, rtol=1e-12)
    np.testing.assert_allclose(numpy_row["train_loss"], model.loss(params, data.X_train, data.y_train), rtol=1e-12)
    np.testing.assert_allclose(numpy_row["test_loss"], model.loss(params, data.X_test, data.y_test), rtol=1e-12)
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in params.values()))
    np.testing.assert_allclose(numpy_row["param_norm"], norm, rtol=1e-12)
    tol = decay.tolerances.rtol("float64", 30)
    for row in result["rows"]:
        assert row["finite"] is True and row["diverged_at"] is None
        if row["kind"] == "decay" or row["optimizer"] == "torch.optim.SGD":
            assert row["same_gradients"] <= tol
        assert f"{row['train_loss']:.6f}" in out.stdout
    # Keras computes in float32 hyperparameters: the same gradients give float32-close weights.
    assert natives["keras.optimizers.SGD"]["same_gradients"] <= 1e-6
    assert "decay's update agrees on every backend" in out.stdout
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_diverging_run_never_agrees_and_exits_1(tmp_path):
    report = tmp_path / "r.json"
    out = cli("compare", "--backends", "numpy", "--lr", "1e4", "--steps", "40", "--report", str(report), check_rc=1)
    assert "DIVERGED: decay.sgd on numpy is not finite at step" in out.stdout
    assert "no agreement can be claimed" in out.stdout and "agrees" not in out.stdout
    result = json.loads(report.read_text())
    assert result["agree"] is False and result["diverged"] is True
    row = result["rows"][0]
    assert row["finite"] is False and not np.isfinite(row["losses"][row["diverged_at"]])
    assert np.all(np.isfinite(row["losses"][: row["diverged_at"]]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "--backends", "jax"], "Unknown backend 'jax'"),
        (["compare", "--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0"),
        (["compare", "--steps", "0"], "--steps must be >= 1"),
        (["compare", "--optimizer", "rmsprop"], "invalid choice"),
        (["compare", "--model", "linear", "--dataset", "digits", "--backends", "numpy"], "Use --model logistic"),
        (["sweep", "--folds", "1", "--backends", "numpy"], "--folds"),
        (["convert", "--from", "keras", "--optimizer", "sgd", "--lr", "0.1", "--dampening", "0.5", "--to", "torch"],
         "no dampening"),
        (["convert", "--from", "torch", "--optimizer", "sgd", "--lr", "-1", "--to", "keras"], "`lr`"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args, message):
    out = cli(*args, check_rc=2)
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_backend_not_installed_names_the_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, importlib.abc, importlib.util\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, Block())\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'torch' else _find(name, *a)\n"
    )
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + ROOT}
    out = cli("compare", "--backends", "torch", env=env, check_rc=2)
    assert "pip install 'decay[torch]'" in out.stderr


def test_sweep_table_report_and_plot(tmp_path):
    report, picture = tmp_path / "s.json", tmp_path / "s.png"
    out = cli("sweep", "--backends", "numpy", "--grid", "0", "0.03", "--folds", "2", "--steps", "40",
              "--report", str(report), "--plot", str(picture), check_rc=0)
    result = json.loads(report.read_text())
    assert result["schema"] == "decay.sweep/1" and result["folds"] == 2
    # Recompute every fold here with the library's model and rule.
    data = datasets.load("sine")
    model = MLP(data.X_train.shape[1], hidden=(32,), n_outputs=1, task="regression")
    params0 = model.init_params(0)
    for point in result["points"]:
        rule = decay.sgd(0.1, momentum=0.9, weight_decay=point["weight_decay"])
        scores = []
        for train, val in fold_indices(len(data.y_train), 2, 0):
            params, _ = fit(model, params0, rule, data.X_train[train], data.y_train[train], steps=40)
            scores.append(model.loss(params, data.X_train[val], data.y_train[val]))
        np.testing.assert_allclose(point["val_mean"], np.mean(scores), rtol=1e-12)
        np.testing.assert_allclose(point["val_std"], np.std(scores), rtol=1e-12, atol=1e-15)
    best = min(result["points"], key=lambda p: p["val_mean"])["weight_decay"]
    assert result["best"] == {"numpy": best}
    assert f"best weight decay on numpy: {best:g}" in out.stdout
    assert picture.read_bytes()[:4] == b"\x89PNG"


def test_convert_prints_code_and_exactness():
    out = cli("convert", "--from", "torch", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
              "--weight-decay", "5e-4", "--to", "keras", check_rc=0)
    assert "keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)" in out.stdout
    assert "keras.regularizers.L2(0.00025)" in out.stdout  # coupled 5e-4 is L2(5e-4 / 2) in the loss
    assert "# exact: yes" in out.stdout
    out = cli("convert", "--from", "keras", "--optimizer", "adam", "--lr", "0.001", "--to", "torch", check_rc=0)
    assert "# exact: no" in out.stdout and "ε" in out.stdout


@needs_backends("torch", "tensorflow", why="the example command is checked on every backend")
def test_example_command_runs_every_backend():
    out = cli("example", check_rc=0)
    for name in ("numpy", "torch", "tensorflow"):
        assert out.stdout.count(f"\n{name} ") == 3
