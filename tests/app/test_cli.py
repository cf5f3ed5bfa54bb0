"""The command line, run as users run it: subprocesses, exit codes, output and JSON
checked against the library computed independently in this process."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import decay
from decay.app import compare, datasets
from decay.app.cli import main
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
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    assert "usage: decay" in capsys.readouterr().out


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
        (["compare", "--backends", "mxnet"], "Unknown backend 'mxnet'"),
        (["compare", "--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0"),
        (["compare", "--steps", "0"], "--steps must be >= 1"),
        (["compare", "--optimizer", "rprop"], "invalid choice"),
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


SITECUSTOMIZE = """
import builtins, importlib.abc, importlib.util, os, sys
MISSING = set(filter(None, os.environ.get("DECAY_TEST_MISSING", "").split(",")))
TRIP = set(filter(None, os.environ.get("DECAY_TEST_TRIP", "").split(",")))
class Missing(importlib.abc.MetaPathFinder):  # as if not installed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in MISSING else _find(name, *a)
_import = builtins.__import__
def tripwire(name, globals=None, locals=None, fromlist=(), level=0):  # installed; importing it is the failure
    if level == 0 and name.split(".")[0] in TRIP:
        raise SystemExit(f"TRIPWIRE: {name} imported")
    return _import(name, globals, locals, fromlist, level)
builtins.__import__ = tripwire
"""


def restricted(tmp_path, missing=(), trip=()):
    """The environment of a subprocess where ``missing`` packages are not installed and
    importing one of ``trip`` ends the process with "TRIPWIRE"."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(tmp_path) + os.pathsep + ROOT, "DECAY_TEST_MISSING": ",".join(missing),
            "DECAY_TEST_TRIP": ",".join(trip)}


# Runs each command line of argv[1] (JSON) through decay's main in this one process and
# prints [exit code, stderr] for each: one interpreter for many refusals.
DRIVER = """
import json, os, sys, tempfile
from decay.app.cli import main
out = []
for args in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile("w+") as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        sys.stderr = open(os.dup(2), "w", buffering=1)
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stderr.close()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = sys.__stderr__
        err.seek(0)
        out.append([code, err.read()])
print(json.dumps(out))
"""


def refusals(tmp_path, cases, missing):
    """Each case's (exit code, stderr), with ``missing`` not installed and torch,
    TensorFlow and Keras booby-trapped: importing one ends the process."""
    env = dict(os.environ, **restricted(tmp_path, missing=missing, trip=["torch", "tensorflow", "keras"]))
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([args for args, _ in cases])],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0 and "TRIPWIRE" not in out.stdout + out.stderr, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_refused_before_any_framework_is_imported(tmp_path):
    cases = [
        (["--dataset", "digits"], "--dataset digits needs scikit-learn, which is not installed. "
                                  "Install it with: pip install 'decay[datasets]'"),
        (["sweep", "--dataset", "diabetes"], "pip install 'decay[datasets]'"),
        (["--plot", "x.png"], "--plot needs matplotlib, which is not installed. "
                              "Install it with: pip install 'decay[plot]'"),
        (["sweep", "--plot", "s.png"], "pip install 'decay[plot]'"),
        (["--report", "no/such/folder/r.json"], "does not exist; create it first"),
        (["--plot", "tests"], "is a folder; give a file name"),
        (["--plot", "picture.gif"], "must end in .png"),
        (["--native", "__import__('os').system('true')"], "class of torch.optim or keras.optimizers"),
        (["--native", "torch.optim.SGD(lr=0.1)", "--lr", "0.1"], "drop --lr"),
        (["--native", "torch.optim.SGD(lr=0.1)", "--backends", "numpy"], "add it to --backends"),
        (["--model", "linear", "--dataset", "digits"], "Use --model logistic"),
        (["--steps", "0"], "--steps must be >= 1"),
    ]
    for (args, message), (code, stderr) in zip(cases, refusals(tmp_path, cases, ["sklearn", "matplotlib"])):
        assert code == 2 and message in stderr, (args, code, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_backend_not_installed_names_the_extra(tmp_path):
    cases = [(["compare", "--backends", "torch"], "Install it with: pip install 'decay[torch]'"),
             (["--native", "torch.optim.SGD(lr=0.1)"], "pip install 'decay[torch]'"),
             (["example", "--backends", "tf"], "pip install 'decay[tensorflow]'")]
    for (args, message), (code, stderr) in zip(cases, refusals(tmp_path, cases, ["torch", "tensorflow"])):
        assert code == 2 and message in stderr, (args, code, stderr)


def test_a_numpy_only_install_names_what_is_missing(tmp_path):
    env = restricted(tmp_path, missing=["torch", "tensorflow"])
    out = cli("compare", "--steps", "5", "--natives", env=env, check_rc=0)
    assert ("not installed, not run: torch (pip install 'decay[torch]'), "
            "tensorflow (pip install 'decay[tensorflow]')") in out.stdout
    assert "--natives adds the optimizers of installed frameworks only" in out.stdout
    out = cli("--version", env=env, check_rc=0)
    lines = out.stdout.splitlines()
    assert lines[0] == f"decay {decay.__version__}"
    assert f"numpy       {np.__version__}" in out.stdout
    assert "  torch       not installed (pip install 'decay[torch]')" in lines


def test_version_lists_the_installed_backends(capsys):
    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"decay {decay.__version__}"
    for name in decay.available_backends():
        framework = decay.backends._REGISTRY[name][2]
        version = np.__version__ if framework == "numpy" else importlib.metadata.version(framework)
        assert f"  {name:<11} {version}" in lines


def interrupt_at(monkeypatch, label, step):
    """Ctrl-C (a KeyboardInterrupt, as Python raises it) at ``step`` of the row ``label``."""
    advance = compare.Progress.advance

    def advancing(self, *args):
        advance(self, *args)
        if self.label == label and self.step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(compare.Progress, "advance", advancing)


def test_ctrl_c_says_where_writes_the_partial_report_and_exits_130(tmp_path, monkeypatch, capfd):
    interrupt_at(monkeypatch, "same gradients", 7)  # after the training rows, in the replay
    report = tmp_path / "r.json"
    assert main(["compare", "--backends", "numpy", "--steps", "50", "--report", str(report)]) == 130
    err = capfd.readouterr().err
    assert "decay: interrupted at step 7 of 50 (same gradients)" in err
    assert f"partial report written to {report}" in err
    result = json.loads(report.read_text())
    assert result["interrupted"] == {"label": "same gradients", "step": 7, "steps": 50}
    _, _, _, losses = sine_reference(50)
    assert len(result["rows"]) == 1
    np.testing.assert_allclose(result["rows"][0]["losses"], losses, rtol=1e-12)


def test_memory_does_not_grow_with_the_steps_asked_for(monkeypatch, capfd):
    # A billion steps asked for, interrupted at the 5th: nothing was sized by the billion
    # (8 bytes a step would be 8 GB).
    import tracemalloc

    interrupt_at(monkeypatch, "decay on numpy", 5)
    tracemalloc.start()
    try:
        assert main(["compare", "--backends", "numpy", "--steps", str(10**9)]) == 130
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "interrupted at step 5 of 1000000000" in capfd.readouterr().err
    assert peak < 20e6, peak


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


def _subparser(name):
    from decay.app.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_help_defaults_are_what_runs(command):
    # Every "(default: X)" of --help against the configuration the command builds.
    from decay.app.cli import _config
    from decay.app.sweep import DEFAULT_GRID

    parser = _subparser(command)
    args = parser.parse_args([])
    config = _config(args)
    checked = set()
    for action in parser._actions:
        match = re.search(r"\(default: ([^)]*)\)", " ".join((action.help or "").split()))
        if not match:
            continue
        shown, dest = match.group(1), action.dest
        checked.add(dest)
        if dest == "backends":
            assert shown == "every installed one but jax"
            assert compare.prepare(config)[0] == [b for b in decay.available_backends() if b != "jax"]
        elif dest == "batch_size":
            assert shown == "the full training set" and config.batch_size is None
        elif dest == "grid":
            assert shown.split() == [f"{v:g}" for v in DEFAULT_GRID]
        elif dest == "lr":
            assert shown.startswith(f"{config.lr}; 0.05 for nesterov")
            nesterov = _config(parser.parse_args(["--optimizer", "nesterov"]))
            assert nesterov.lr == 0.05
        elif dest == "folds":
            assert shown == str(args.folds)
        else:
            assert shown == str(getattr(config, dest)), (dest, shown)
    expected = {"model", "dataset", "optimizer", "lr", "decay_mode", "schedule", "steps", "dtype", "seed",
                "backends", "batch_size"}
    assert expected | ({"grid", "folds"} if command == "sweep" else {"weight_decay"}) == checked
    assert not any(a.dest == "weight_decay" for a in parser._actions) or command == "compare"


def test_sweep_runs_the_same_backends_as_compare_by_default(monkeypatch):
    # compare's default: every installed backend but JAX (named with --backends).
    from decay.app import sweep

    trained = []

    def fake_train(name, model, params0, rule, penalty, data, config, on_step=None):
        trained.append(name)
        return {k: v.copy() for k, v in params0.items()}, []

    monkeypatch.setattr(compare, "train", fake_train)
    result = sweep.run(compare.Config(steps=1), grid=[0.0], folds=2)
    default = [b for b in decay.available_backends() if b != "jax"]
    assert list(dict.fromkeys(trained)) == default == list(result.best)
