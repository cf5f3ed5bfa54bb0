"""``compare --decay-mode cautious|corrected|toward-init``, ``compare --monitor`` and
``convert --variant``, run in-process on NumPy (fast), checked against the library used
directly."""

import json

import numpy as np
import pytest

import decay
from decay.app import cli, datasets
from decay.app.models import MLP, fit

STEPS = 30


def _train(config_rule, steps, on_step=None):
    data = datasets.load("sine")
    model = MLP(data.X_train.shape[1], hidden=(32,), n_outputs=data.n_outputs, task=data.task)
    params0 = model.init_params(0, "float64")
    return params0, fit(model, params0, config_rule(), data.X_train, data.y_train, steps, on_step=on_step)


@pytest.mark.parametrize("mode, options", [
    ("cautious", dict(cautious_decay=True)),
    ("corrected", dict(decay_scaled_by="corrected")),
    ("toward-init", dict(decay_toward="init")),
])
def test_variant_modes_and_monitor(tmp_path, capsys, mode, options):
    report = tmp_path / "r.json"
    rc = cli.main(["compare", "--backends", "numpy", "--decay-mode", mode, "--schedule", "cosine", "--steps",
                   str(STEPS), "--monitor", "--report", str(report), "--quiet"])
    assert rc == 0, capsys.readouterr()
    result = json.loads(report.read_text())

    def rule():
        return decay.sgd(decay.schedules.cosine(0.1, STEPS), momentum=0.9, weight_decay=0.03, decoupled=True,
                         **options)

    grads = []
    params0, (final, _) = _train(rule, STEPS, on_step=lambda t, loss, g: grads.append(g))
    row = result["rows"][0]
    got = np.sqrt(sum(float(np.sum(v * v)) for v in final.values()))
    assert row["param_norm"] == pytest.approx(got, rel=1e-12)  # the mode trains this rule
    layers = result["monitor"]["layers"]
    assert set(layers) == set(params0)
    (before_last, _) = _train(rule, STEPS - 1)[1]
    for name, entry in layers.items():
        assert len(entry["ratio"]) == STEPS
        assert entry["weight_norm"][0] == pytest.approx(np.linalg.norm(params0[name]), rel=1e-14)
        assert entry["weight_norm"][-1] == pytest.approx(np.linalg.norm(before_last[name]), rel=1e-12)
        assert entry["grad_norm"] == pytest.approx([np.linalg.norm(g[name]) for g in grads], rel=1e-12)
        for r, w, g in zip(entry["ratio"], entry["weight_norm"], entry["grad_norm"]):
            assert r is None if w == 0 else r == pytest.approx(g / w, rel=1e-14)


def test_convert_says_a_variant_is_not_exact(capsys):
    assert cli.main(["convert", "--from", "torch", "--optimizer", "adamw", "--lr", "0.001", "--to", "keras",
                     "--variant", "corrected"]) == 0
    out = capsys.readouterr().out
    assert "# exact: no" in out and "lr_t²/lr_max" in out
    # SGD's torch decay is coupled: cautious decay needs decoupled, a usage error.
    assert cli.main(["convert", "--from", "torch", "--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "0.1",
                     "--to", "keras", "--variant", "cautious"]) == 2
