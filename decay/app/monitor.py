"""``compare --decay-mode cautious|corrected|toward-init`` and ``compare --monitor``.

The three modes put decoupled weight decay in the variants no framework ships
(:mod:`decay.rules._decay`): ``cautious`` (Chen et al., 2025: decay only where the update
and θ agree in sign), ``corrected`` (Defazio, 2025, AdamC: the shrink scaled by
lr_t²/lr_max instead of lr_t) and ``toward-init`` (L2-SP: decay toward the initial
weights instead of 0).

``--monitor`` records, at every step of the reference backend's run, each layer's weight
norm ‖θ‖, gradient norm ‖g‖ and their ratio ‖g‖/‖θ‖ — the quantity the corrected decay
keeps from rising as the lr schedule ends — into the JSON report and the plot.
"""

from __future__ import annotations

import numpy as np

from .. import adam, sgd
from ..backends import backend_of_tensors

VARIANT_MODES = ("cautious", "corrected", "toward-init")


_OPTIONS = {
    "cautious": dict(cautious_decay=True),
    "corrected": dict(decay_scaled_by="corrected"),
    "toward-init": dict(decay_toward="init"),
}


def variant_rule(config, lr, wd):
    """The rule of a variant mode: decoupled decay λ = ``wd``, the variant on top."""
    options = _OPTIONS[config.decay_mode]
    if config.optimizer == "adam":
        return adam(lr, weight_decay=wd, decoupled=True, **options)
    momentum = 0.0 if config.optimizer == "sgd" else 0.9
    return sgd(lr, momentum=momentum, nesterov=config.optimizer == "nesterov", weight_decay=wd,
               decoupled=True, **options)


class Monitored:
    """A rule's ``init``/``step`` that records per-layer norms before each update."""

    def __init__(self, rule):
        self.rule = rule
        self.layers: dict = {}

    def init(self, params):
        return self.rule.init(params)

    def step(self, params, grads, state):
        backend = backend_of_tensors(list(params.items()))
        for name in params:
            theta = np.linalg.norm(backend.to_numpy(params[name]).astype(np.float64))
            grad = np.linalg.norm(backend.to_numpy(grads[name]).astype(np.float64))
            entry = self.layers.setdefault(name, {"weight_norm": [], "grad_norm": [], "ratio": []})
            entry["weight_norm"].append(float(theta))
            entry["grad_norm"].append(float(grad))
            entry["ratio"].append(float(grad / theta) if theta > 0 else None)  # JSON has no inf
        return self.rule.step(params, grads, state)

    def to_json(self, backend: str) -> dict:
        """``{"backend", "layers": {name: {"weight_norm", "grad_norm", "ratio"}}}``, one
        value per step, measured before that step's update."""
        return {"backend": backend, "layers": self.layers}


def with_variant(rule, variant):
    """``rule`` rebuilt with a variant mode's option (``convert --variant``)."""
    from ..rules import from_config

    return from_config({**rule.get_config(), **_OPTIONS[variant]})


def plot(ax_norms, ax_ratio, monitor: dict) -> None:
    """Per-layer weight norms, and ‖g‖/‖θ‖ (log scale), against the step."""
    for name, entry in monitor["layers"].items():
        steps = np.arange(1, len(entry["weight_norm"]) + 1)
        ax_norms.plot(steps, entry["weight_norm"], label=name, linewidth=1.2)
        ax_ratio.plot(steps, [np.nan if r is None else r for r in entry["ratio"]], label=name, linewidth=1.2)
    ax_norms.set_title(f"weight norm per layer ({monitor['backend']})", fontsize=10)
    ax_ratio.set_title("gradient norm / weight norm per layer", fontsize=10)
    ax_ratio.set_yscale("log")
    for ax in (ax_norms, ax_ratio):
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
