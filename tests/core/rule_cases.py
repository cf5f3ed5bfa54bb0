"""The option grid the shared suite runs every rule over.

Every rule in ``decay.rules.RULES`` must have an entry here (a test fails otherwise):
adding a rule means adding its options, and the suite then checks every fast path and
declared kernel against the rule's one definition, step by step, on every backend.
"""

from __future__ import annotations

import itertools

import decay

LR, WD = 0.05, 0.02


class Warmup:
    """A picklable lr schedule that is not a decay.schedules object (a user's callable)."""

    def __init__(self, peak):
        self.peak = peak

    def __call__(self, t):
        return self.peak * min(1.0, (t + 1) / 4)


# Weight decay in every place decay supports, as rule keyword arguments.
DECAY_MODES = {
    "none": {},
    "coupled": {"weight_decay": WD},
    "decoupled-lr": {"weight_decay": WD, "decoupled": True},
    "decoupled-schedule": {"weight_decay": WD, "decoupled": True, "decay_scaled_by": "schedule_multiplier"},
    "decoupled-none": {"weight_decay": WD, "decoupled": True, "decay_scaled_by": "none"},
    "L2": {"regularizer": decay.L2(0.01)},
    "L2-and-decoupled": {"regularizer": decay.L2(0.01), "weight_decay": WD, "decoupled": True},
    "coupled-and-L2": {"regularizer": decay.L2(0.01), "weight_decay": WD},
    "elastic-net": {"regularizer": decay.ElasticNet(0.001, 0.01)},
    "masked": {"weight_decay": WD, "decoupled": True, "mask": decay.masks.exclude_names("bias")},
}

RULE_OPTIONS = {
    "sgd": {
        "plain": dict(lr=LR),
        "momentum": dict(lr=LR, momentum=0.9),
        "dampening": dict(lr=LR, momentum=0.9, dampening=0.3),
        "nesterov": dict(lr=LR, momentum=0.9, nesterov=True),
        "scheduled": dict(lr=Warmup(LR), momentum=0.9),
    },
    "adam": {
        "default": dict(lr=LR),
        "amsgrad": dict(lr=LR, amsgrad=True),
        "epsilon_hat": dict(lr=LR, eps=1e-7, epsilon_hat=True),
        "scheduled": dict(lr=Warmup(LR), amsgrad=True),
    },
    "adamw": {
        "default": dict(lr=LR),
        "epsilon_hat": dict(lr=LR, eps=1e-7, epsilon_hat=True),
        "scheduled": dict(lr=Warmup(LR)),
    },
    # The classic optimizers (issue 15). RAdam's default β2 rectifies from step 6 of 8.
    # RMSprop's first steps move by lr/√(1 − α) (10·lr): lr/10 keeps them Adam-sized, so
    # that a weight near zero after them is not a cancellation that float32 cannot hold.
    "rmsprop": {
        "momentum-centered": dict(lr=LR / 10, momentum=0.9, centered=True),
        "keras": dict(lr=LR / 10, alpha=0.9, eps=1e-7, eps_inside_sqrt=True, momentum=0.5,
                      initial_accumulator_value=0.1),
        "scheduled": dict(lr=Warmup(LR / 10)),
    },
    "adagrad": {  # its first option runs torch's fused kernel in every decay mode
        "torch": dict(lr=LR, lr_decay=0.01, initial_accumulator_value=0.1),
        "keras": dict(lr=LR, initial_accumulator_value=0.1, eps=1e-7, eps_inside_sqrt=True),
        "scheduled": dict(lr=Warmup(LR), lr_decay=0.05),
    },
    "adadelta": {
        "default": dict(lr=0.5),
        "scheduled": dict(lr=Warmup(1.0), rho=0.95, eps=1e-7),
    },
    "adamax": {
        "default": dict(lr=LR),
        "keras": dict(lr=LR, eps=1e-7, eps_inside_max=False),
        "scheduled": dict(lr=Warmup(LR), betas=(0.8, 0.99)),
    },
    "nadam": {
        "torch": dict(lr=LR, momentum_decay=0.01),
        "keras": dict(lr=LR, eps=1e-7, momentum_schedule="keras"),
        "constant-scheduled": dict(lr=Warmup(LR), momentum_schedule="constant"),
    },
    "radam": {
        "default": dict(lr=LR),
        "scheduled": dict(lr=Warmup(LR), betas=(0.8, 0.99), eps=1e-6),
    },
}
# The modern rules (issue 16), added as one block: one option each, the most complete
# (the others differ in coefficients, or, for LAMB's Keras placement, in the engine's
# shared decoupled step; each case is one more XLA compilation on TensorFlow).
RULE_OPTIONS.update({
    "lion": {"scheduled": dict(lr=Warmup(LR), betas=(0.9, 0.99))},
    "lamb": {"scheduled": dict(lr=Warmup(LR), betas=(0.9, 0.99))},
    # Two Newton–Schulz steps: enough to compare the fast path with the definition.
    "muon": {"optax-scheduled": dict(lr=Warmup(LR), convention="optax", adjust_lr="match_rms_adamw", ns_steps=2)},
    # Adafactor: torch's (floors, RMS(θ) read before the decay, relative step) crosses
    # every mode; optax's the other branches (ε added to g², the two largest axes,
    # momentum) with Keras's order of decay and RMS(θ).
    "adafactor": {
        "torch-scheduled": dict(lr=Warmup(LR)),
        "optax-momentum": dict(lr=LR, convention="optax", min_dim_size_to_factor=2, momentum=0.9,
                               param_rms_after_decay=True),
    },
})
# Muon takes 2-D parameters only: its cases run on matrices (one tall, one wide, one square).
PARAM_SHAPES = {"muon": {"layer.weight": (6, 5), "layer.bias": (1, 5), "scale": (3, 3)}}
# Adafactor factors matrices and 3-D tensors (torch: the last two axes; optax: the two
# largest, here axes 2 and 0) and keeps a full accumulator for the vector.
PARAM_SHAPES["adafactor"] = {"layer.weight": (6, 2, 5), "layer.bias": (5,), "scale": (3, 4)}

# AdamW's decay is always decoupled: only the modes that keep it so. A rule whose decay
# placement is fixed adds its allowed modes here.
_ADAMW_MODES = ("decoupled-lr", "decoupled-schedule", "decoupled-none", "L2-and-decoupled", "masked")
ALLOWED_MODES = {"adamw": _ADAMW_MODES}
# Rules that take the decay keyword arguments as given (AdamW drops `decoupled`).
_DECOUPLED_ONLY = {"adamw"}

# Rules with a declared kernel map each decay placement into it per option, so every
# option crosses every mode. For the others the engine places the decay before the
# rule's direction, the same code for every rule: their first option crosses every
# mode, the others a few (this keeps the suite's time in check as rules are added).
FULL_GRID = {"sgd", "adam", "adamw"}
SHORT_MODES = ("none", "coupled", "decoupled-lr", "masked")


def _modes(rule_name: str, first: bool) -> tuple:
    allowed = ALLOWED_MODES.get(rule_name, tuple(DECAY_MODES))
    if first or rule_name in FULL_GRID:
        return allowed
    return tuple(m for m in SHORT_MODES if m in allowed) or allowed[:2]


# On the compiling backends (TensorFlow, JAX) each case is one more compilation, and what
# the case checks there is that the traced definition equals the eager one (no declared
# kernels there): the decay placements are the engine's code, traced the same for every
# rule. SGD crosses every placement there; the other rules run every option with these
# modes only.
COMPILED_MODES = ("coupled", "decoupled-lr")
FULL_ON_COMPILED = {"sgd"}


def compiled_cases() -> set:
    """The case names the compiling backends run (see COMPILED_MODES)."""
    out = set()
    for rule_name, options in RULE_OPTIONS.items():
        allowed = ALLOWED_MODES.get(rule_name, tuple(DECAY_MODES))
        modes = allowed if rule_name in FULL_ON_COMPILED else (
            tuple(m for m in COMPILED_MODES if m in allowed) or allowed[:1])
        out.update(f"{rule_name}-{option}-{mode}" for option in options for mode in modes)
    return out


def cases() -> dict:
    """name -> a function making a fresh rule, for every rule x option x decay mode."""
    out = {}
    for rule_name, options in RULE_OPTIONS.items():
        for i, (option, kwargs) in enumerate(options.items()):
            for mode in _modes(rule_name, first=i == 0):
                extra = dict(DECAY_MODES[mode])
                if rule_name in _DECOUPLED_ONLY:
                    extra.pop("decoupled", None)
                out[f"{rule_name}-{option}-{mode}"] = (rule_name, {**kwargs, **extra})
    return out


def make(rule_name: str, kwargs: dict):
    return getattr(decay, rule_name)(**kwargs)
