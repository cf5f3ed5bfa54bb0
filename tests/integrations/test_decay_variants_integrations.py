"""The weight-decay variants through ``decay.torch.Optimizer`` and ``decay.keras.Optimizer``
(eager and traced), against the NumPy float64 loops written from the papers
(tests/variant_reference.py), every step of 100: masks by name, torch's own lr
scheduler, references matched by name, and saving/restoring the optimizer."""

from __future__ import annotations

import numpy as np
import pytest

import decay
import variant_reference as ref
from conftest import needs_backends
from decay.tolerances import assert_close

STEPS, PEAK, LAM = 100, 0.05, 0.5
SHAPES = {"w": (4, 3), "b": (3,)}
LR = ref.cosine_lr(PEAK, STEPS)
NO_BIAS = {"w": True, "b": False}


def _problem():
    rng = np.random.default_rng(5)
    params = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(size=s) for n, s in SHAPES.items()} for _ in range(STEPS)]
    center = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    return params, grads, center


def _check(got: dict, want: dict, steps, what):
    for n in SHAPES:
        assert_close(got[n], want[n], "float64", steps=steps, what=f"{what} {n}")


# -- PyTorch --------------------------------------------------------------------------------------
TORCH_CASES = {
    "adamw-cautious-mask-by-name": (
        lambda c: decay.adamw(decay.schedules.cosine(PEAK, STEPS), weight_decay=LAM, cautious_decay=True,
                              mask=decay.masks.exclude_names("b")),
        False, lambda p, g, c: ref.adamw(p, g, LR, LAM, cautious=True, decayed=NO_BIAS),
    ),
    # torch's CosineAnnealingLR drives group["lr"]; lr_max is the scheduler's initial_lr.
    "adamw-corrected-torch-scheduler": (
        lambda c: decay.adamw(PEAK, weight_decay=LAM, decay_scaled_by="corrected"),
        True, lambda p, g, c: ref.adamw(p, g, LR, LAM, corrected_max=PEAK),
    ),
    "sgd-nesterov-coupled-toward-init": (
        lambda c: decay.sgd(decay.schedules.cosine(PEAK, STEPS), momentum=0.9, nesterov=True, weight_decay=LAM,
                            decay_toward="init"),
        False, lambda p, g, c: ref.sgd(p, g, LR, LAM, momentum=0.9, nesterov=True, coupled=True, toward=p),
    ),
    "adamw-cautious-toward-by-name": (
        lambda c: decay.adamw(decay.schedules.cosine(PEAK, STEPS), weight_decay=LAM, cautious_decay=True,
                              decay_toward=c),
        False, lambda p, g, c: ref.adamw(p, g, LR, LAM, cautious=True, toward=c),
    ),
}


@needs_backends("torch", why="decay.torch.Optimizer")
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_torch_optimizer_equals_the_paper(case):
    import torch

    make, scheduled, reference = TORCH_CASES[case]
    params, grads, center = _problem()
    want = reference(params, grads, center)
    net = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in params.items()}
    opt = decay.torch.Optimizer(list(net.items()), make({n: torch.tensor(v) for n, v in center.items()}))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS) if scheduled else None
    half = STEPS // 2
    for t, g in enumerate(grads):
        if t == half and sched is None:  # save and restore mid-run: the reference travels with the state
            saved = opt.state_dict()
            opt = decay.torch.Optimizer(list(net.items()), make(center))
            opt.load_state_dict(saved)
        for n, p in net.items():
            p.grad = torch.tensor(g[n])
        opt.step()
        if sched is not None:
            sched.step()
    _check({n: p.detach().numpy() for n, p in net.items()}, want, STEPS, case)


# -- Keras ------------------------------------------------------------------------------------------
KERAS_CASES = {
    "adamw-cautious-corrected-mask-eager": (
        lambda c: decay.adamw(decay.schedules.cosine(PEAK, STEPS), weight_decay=LAM, cautious_decay=True,
                              decay_scaled_by="corrected", mask=decay.masks.exclude_names("b")),
        False, lambda p, g, c: ref.adamw(p, g, LR, LAM, cautious=True, corrected_max=PEAK, decayed=NO_BIAS),
    ),
    "sgd-momentum-coupled-toward-init-traced": (
        lambda c: decay.sgd(decay.schedules.cosine(PEAK, STEPS), momentum=0.9, weight_decay=LAM,
                            decay_toward="init"),
        True, lambda p, g, c: ref.sgd(p, g, LR, LAM, momentum=0.9, coupled=True, toward=p),
    ),
    "adamw-toward-by-path-traced": (
        lambda c: decay.adamw(decay.schedules.cosine(PEAK, STEPS), weight_decay=LAM, cautious_decay=True,
                              decay_toward=c),
        True, lambda p, g, c: ref.adamw(p, g, LR, LAM, cautious=True, toward=c),
    ),
}


@needs_backends("tensorflow", why="decay.keras.Optimizer")
@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_keras_optimizer_equals_the_paper(case):
    import keras
    import tensorflow as tf

    make, traced, reference = KERAS_CASES[case]
    params, grads, center = _problem()
    want = reference(params, grads, center)
    variables = [keras.Variable(params[n], dtype="float64", name=n) for n in SHAPES]
    opt = decay.keras.Optimizer(make({v.path: center[n] for v, n in zip(variables, SHAPES)}))

    def apply(gw, gb):
        opt.apply_gradients(zip([gw, gb], variables))

    step = tf.function(apply) if traced else apply
    for g in grads:
        step(tf.constant(g["w"]), tf.constant(g["b"]))
    _check({n: v.numpy() for n, v in zip(SHAPES, variables)}, want, STEPS, case)


@needs_backends("tensorflow", why="decay.keras.Optimizer")
def test_keras_config_keeps_the_variants_and_the_reference():
    # What model.save writes for the optimizer: plain JSON, the reference as numbers.
    import json

    _, _, center = _problem()
    rule = decay.adamw(decay.schedules.cosine(PEAK, STEPS), weight_decay=LAM, cautious_decay=True,
                       decay_scaled_by="corrected", lr_max=0.1, decay_toward=center)
    config = json.loads(json.dumps(decay.keras.Optimizer(rule).get_config()))
    again = decay.keras.Optimizer.from_config(config).rule
    assert again.cautious_decay and again.decay_scaled_by == "corrected" and again.lr_max == 0.1
    for n in SHAPES:
        np.testing.assert_array_equal(again.decay_toward[n], center[n])
