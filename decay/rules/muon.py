"""Muon (Jordan et al., 2024; Liu et al., 2025, "Muon is Scalable for LLM Training"):
momentum orthogonalized by a Newton–Schulz iteration, for 2-D weights only."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..engine import Hyper
from ..errors import DecayError
from ..validation import check_choice, check_flag, check_number
from .adam import adamw
from . import _checks
from .base import Rule

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic, every framework's default
ADJUSTMENTS = ("original", "width", "match_rms_adamw", "none")
NS_DTYPES = (None, "bfloat16", "float16", "float32", "float64")
#: convention -> its defaults: momentum form, ε, how ε enters, lr adjustment, λ
CONVENTIONS = {
    "torch": dict(momentum_form="ema", eps=1e-7, eps_clamps=True, adjust_lr="original", weight_decay=0.1),
    "keras": dict(momentum_form="sum", eps=1e-7, eps_clamps=False, adjust_lr="match_rms_adamw", weight_decay=0.004),
    "optax": dict(momentum_form="ema_debiased", eps=1e-8, eps_clamps=False, adjust_lr="width", weight_decay=0.0),
}


@dataclass(frozen=True)
class MuonHyper(Hyper):
    momentum: float  #: μ: b ← μ·b + grad_weight·g
    grad_weight: float  #: 1 − μ (an average: torch, optax) or 1 (a sum: Keras)
    buffer_coef: float  #: u = buffer_coef·b + grad_coef·g, before the orthogonalization
    grad_coef: float
    eps: float
    a: float
    b: float
    c: float


def _adjustment(kind: str, rms: float, rows: int, cols: int) -> float:
    """The per-matrix scale of the orthogonalized update (A rows, B columns)."""
    if kind == "original":  # torch: √max(1, A/B)
        return math.sqrt(max(1.0, rows / cols))
    if kind == "width":  # optax (weights stored (fan_in, fan_out)): √max(1, B/A)
        return math.sqrt(max(1.0, cols / rows))
    if kind == "match_rms_adamw":  # Moonshot: rms·√max(A, B)
        return rms * math.sqrt(max(rows, cols))
    return 1.0


class Muon(Rule):
    """Muon, for 2-D parameters. With gradient ``g`` (after coupled decay), k = t + 1::

        b ← μ·b + w·g                     w = 1 − μ (torch, optax) or 1 (Keras)
        u ← c_b·b + c_g·g                 nesterov: torch c_b = μ, c_g = 1 − μ;
                                          Keras μ, 1; optax μ/(1 − μ^(k+1)), (1 − μ)/(1 − μ^k);
                                          without: c_b = 1 (optax 1/(1 − μ^k)), c_g = 0
        X ← u (transposed when it has more rows than columns)
        X ← X / (‖X‖_F + ε)               (torch: X / max(‖X‖_F, ε))
        repeat ns_steps times:  A ← X·Xᵀ;  X ← a·X + (b·A + c·A·A)·X
        θ ← θ·(1 − s_t·λ_t) − lr_t · scale(A, B) · X   (X transposed back)

    ``scale``: "original" √max(1, A/B) (torch's default), "width" √max(1, B/A)
    (optax's default: its weights are (fan_in, fan_out)), "match_rms_adamw"
    rms·√max(A, B) (Moonshot; Keras's default with rms 0.2, torch's and optax's option),
    "none". The Newton–Schulz iteration is one definition on every backend, in the
    parameters' dtype (Keras, optax) or in ``ns_dtype``: ``"bfloat16"`` is
    torch.optim.Muon's — u is cast to it, normalized (norm, clamp, division) and
    iterated in it (each ``b·A + c·A·A`` and ``a·X + B·X`` one rounded product, as
    ``torch.addmm``), and cast back to the parameters' dtype before the lr scale;
    the momentum buffer stays in the parameters' dtype.

    Only 2-D parameters: anything else raises :class:`DecayError` before any write.
    Give the others to a second rule, as every framework does: :meth:`adamw_for_others`.
    """

    name = "muon"
    hyper_names = ("lr", "weight_decay", "momentum")
    Hyper = MuonHyper
    elementwise = False  # norms and matrix products

    def __init__(self, *, nesterov=True, momentum_form="ema", ns_coefficients=NS_COEFFICIENTS, ns_steps=5,
                 eps=1e-7, eps_clamps=True, adjust_lr="original", rms_rate=0.2, convention=None, ns_dtype=None, **kwargs):
        self.nesterov = check_flag("nesterov", nesterov)
        self.momentum_form = check_choice("momentum_form", momentum_form, ("ema", "sum", "ema_debiased"))
        if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
            raise DecayError(
                f"`ns_coefficients` must be three numbers (a, b, c). Received: ns_coefficients={ns_coefficients!r}."
            )
        self.ns_coefficients = tuple(float(x) for x in ns_coefficients)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 0 <= ns_steps < 100:
            raise DecayError(f"`ns_steps` must be an integer in [0, 100). Received: ns_steps={ns_steps!r}.")
        self.ns_steps = ns_steps
        self.eps = check_number("eps", eps)
        self.eps_clamps = check_flag("eps_clamps", eps_clamps)
        self.adjust_lr = check_choice("adjust_lr", "none" if adjust_lr is None else adjust_lr, ADJUSTMENTS)
        self.rms_rate = check_number("rms_rate", rms_rate)
        self.ns_dtype = check_choice("ns_dtype", ns_dtype, NS_DTYPES)
        self.convention = convention
        super().__init__(**kwargs)
        self._kwargs.update(
            nesterov=self.nesterov, momentum_form=self.momentum_form, ns_coefficients=self.ns_coefficients,
            ns_steps=ns_steps, eps=self.eps, eps_clamps=self.eps_clamps, adjust_lr=self.adjust_lr,
            rms_rate=self.rms_rate, convention=convention, ns_dtype=self.ns_dtype,
        )

    def __repr__(self):
        # What decay.muon(...) takes: the convention sets the momentum form and ε's place.
        return (f"{super().__repr__()[:-1]}, nesterov={self.nesterov!r}, ns_steps={self.ns_steps!r}, "
                f"eps={self.eps!r}, convention={self.convention!r}, adjust_lr={self.adjust_lr!r}, "
                f"rms_rate={self.rms_rate!r}"
                + (f", ns_dtype={self.ns_dtype!r})" if self.ns_dtype is not None else ")"))

    def check_group(self, hyper):
        hyper = super().check_group(hyper)
        hyper["momentum"] = check_number("momentum", hyper["momentum"], below=1.0)
        return hyper

    def check_leaves(self, backend, leaves):
        # Before any part is written, on every path (Rule.step and both integrations).
        bad = [backend.shape(x) for x in leaves if len(backend.shape(x)) != 2]
        if bad:
            raise DecayError(
                f"Muon updates 2-D parameters only; received parameters of shapes {bad}. Give the "
                "others to a second rule, as the frameworks do: rule.with_others() or "
                "rule.adamw_for_others() (see decay.muon)."
            )
        if self.ns_dtype is not None:
            backend.check_dtype(self.ns_dtype)  # NumPy's bfloat16 needs ml_dtypes

    def coefficients(self, group, t):
        mu, k = group["momentum"], t + 1
        grad_weight = 1.0 if self.momentum_form == "sum" else 1.0 - mu
        if self.momentum_form == "ema_debiased":  # optax: bias-corrected b̂ and ĝ
            buffer_coef = mu / (1.0 - mu ** (k + 1)) if self.nesterov else 1.0 / (1.0 - mu**k)
            grad_coef = (1.0 - mu) / (1.0 - mu**k) if self.nesterov else 0.0
        else:
            buffer_coef = mu if self.nesterov else 1.0
            grad_coef = grad_weight if self.nesterov else 0.0
        a, b, c = self.ns_coefficients
        return MuonHyper(
            **self.common_fields(group, t), momentum=mu, grad_weight=grad_weight, buffer_coef=buffer_coef,
            grad_coef=grad_coef, eps=self.eps, a=a, b=b, c=c,
        )

    def slot_names(self, group):
        return ("momentum_buffer",)

    def direction(self, ops, h, params, grads, slots):
        shapes = [tuple(ops.shape(p)) for p in params]  # 2-D: checked by check_leaves
        buf = slots["momentum_buffer"]
        if self.momentum_form == "ema":  # torch's own ops: buf.lerp_(g, 1 − μ), g.lerp(buf, μ)
            ops.lerp_(buf, grads, h.grad_weight)
            u = ops.clone(grads) if self.nesterov else ops.mul(buf, 1.0)
            if self.nesterov:
                ops.lerp_(u, buf, h.momentum)
        else:
            ops.mul_(buf, h.momentum)
            ops.add_(buf, grads, alpha=h.grad_weight)
            u = ops.mul(buf, h.buffer_coef)
            if self.nesterov:
                ops.add_(u, grads, alpha=h.grad_coef)
        x = self.orthogonalize(ops, h, u, shapes)
        scales = [_adjustment(self.adjust_lr, self.rms_rate, r, c) for r, c in shapes]
        if any(s != 1.0 for s in scales):  # x·1 is x: a pass saved on square and wide matrices
            ops.mul_(x, scales)
        return x

    def orthogonalize(self, ops, h, u: list, shapes: list) -> list:
        """Newton–Schulz: X ≈ U·Vᵀ of u = U·S·Vᵀ, on the wide orientation of each matrix."""
        tall = [r > c for r, c in shapes]
        x = [ops.transpose(m) if t else m for m, t in zip(u, tall)]
        ns = self.ns_dtype
        if ns is not None:  # torch: grad.bfloat16(), then everything below in bfloat16
            back = [ops.dtype_name(m) for m in x]
            x = ops.cast_all(x, ns)
        norms = ops.norm_all(x)
        if self.eps_clamps:
            floor = ops.mul(norms, 0.0)
            ops.add_(floor, h.eps)
            ops.maximum_(norms, floor)  # torch: X / max(‖X‖, ε)
        else:
            ops.add_(norms, h.eps)  # Keras, optax: X / (‖X‖ + ε)
        x = ops.div(x, norms)
        for _ in range(self.ns_steps):
            gram = ops.matmul_all(x, ops.transpose_all(x))
            if ns is not None:  # NumPy's bfloat16 products come back in float32
                gram = ops.cast_all(gram, ns)
            poly = ops.addmm_all(gram, gram, gram, beta=h.b, alpha=h.c)  # torch.addmm, as torch
            x = ops.addmm_all(x, poly, x, beta=h.a)
            if ns is not None:
                x = ops.cast_all(x, ns)
        if ns is not None:  # torch adds the bfloat16 update into the parameters
            x = ops.cast_all(x, back)
        return [ops.transpose(m) if t else m for m, t in zip(x, tall)]

    def adamw_for_others(self, lr=None, betas=(0.9, 0.999), weight_decay=None, eps=None, **kwargs):
        """The second rule for the parameters Muon does not take (biases, norms,
        embeddings, anything not 2-D), as this rule's convention configures it:

        - torch (its documented composition with ``torch.optim.AdamW``): ε = 1e-8,
          λ = 0.01 (AdamW's defaults), lr as given;
        - Keras (``Muon``'s own Adam for excluded variables): ε̂ = 1e-7 added outside
          the bias correction, λ = ``adam_weight_decay`` 0.004, lr = Muon's lr;
        - optax (``optax.contrib.muon``'s ``adamw``): ε = Muon's ε (1e-8), λ =
          ``adam_weight_decay`` 0, lr = ``adam_learning_rate`` or Muon's lr. optax
          passes Muon's ``nesterov`` on to it: with ``nesterov=True`` (its default) its
          AdamW is a Nesterov (NAdam) one, which decay has no rule for; equal with
          ``nesterov=False``.

        ``lr`` defaults to this rule's lr; the others to the convention's values."""
        convention = self.convention or "torch"
        keras = convention == "keras"
        defaults = {"torch": (1e-8, 0.01), "keras": (1e-7, 0.004), "optax": (self.eps, 0.0)}[convention]
        return adamw(
            lr=self.defaults["lr"] if lr is None else lr, betas=betas,
            eps=defaults[0] if eps is None else eps,
            weight_decay=defaults[1] if weight_decay is None else weight_decay, epsilon_hat=keras, **kwargs,
        )

    def with_others(self, others=None) -> "MuonPair":
        """This rule on the 2-D parameters and ``others`` (default
        :meth:`adamw_for_others`) on the rest, as one ``init``/``step`` pair over a dict."""
        return MuonPair(self, self.adamw_for_others() if others is None else others)

    @staticmethod
    def split(params: dict) -> tuple:
        """``(matrices, others)``: a dict of parameters split by whether Muon takes them
        (2-D), for the two rules. Keras also gives embeddings to its Adam
        (``exclude_embeddings``): move them to ``others`` by name."""
        matrices = {n: p for n, p in params.items() if len(getattr(p, "shape", ())) == 2}
        return matrices, {n: p for n, p in params.items() if n not in matrices}


class MuonPair:
    """Muon on a dict's 2-D parameters and a second rule on the others (Keras's Muon and
    optax's ``contrib.muon`` do the same inside one optimizer): ``init(params)``,
    ``step(params, grads, state)`` with ``state`` the pair of the two rules' states.
    The second rule's checks run before Muon writes, so a bad gradient changes nothing."""

    name = "muon"

    def __init__(self, muon_rule: Muon, others: Rule):
        if not isinstance(muon_rule, Muon) or not isinstance(others, Rule):
            raise DecayError("MuonPair takes a decay.muon rule and a second decay rule (e.g. decay.adamw).")
        self.muon, self.others = muon_rule, others

    def _split(self, params, what):
        if not isinstance(params, dict):
            raise DecayError(f"`{what}` must be a dict name -> tensor (Muon splits it by shape).")
        return Muon.split(params)

    def init(self, params) -> tuple:
        matrices, rest = self._split(params, "params")
        return self.muon.init(matrices), self.others.init(rest)

    def step(self, params, grads, state):
        matrices, rest = self._split(params, "params")
        if not isinstance(grads, dict) or set(grads) != set(params):
            raise DecayError("`grads` must be a dict with the same names as `params`.")
        if not isinstance(state, tuple) or len(state) != 2:
            raise DecayError("`state` must be the pair returned by MuonPair.init() or step().")
        g_rest = {n: grads[n] for n in rest}
        # Check the second rule's part before Muon writes anything (step checks first).
        flat, backend, *_ = self.others._checked_params(rest)
        _checks.check_grads(backend, flat, list(g_rest.values()))
        self.others._check_state_cached(state[1], flat, backend)
        matrices, s_muon = self.muon.step(matrices, {n: grads[n] for n in matrices}, state[0])
        rest, s_rest = self.others.step(rest, g_rest, state[1])
        merged = {**matrices, **rest}
        return {n: merged[n] for n in params}, (s_muon, s_rest)

    def get_config(self) -> dict:
        return {"rule": "muon", "muon": self.muon.get_config(), "others": self.others.get_config()}

    def __repr__(self):
        return f"{self.muon!r}.with_others({self.others!r})"


def muon(
    lr=1e-3,
    momentum=0.95,
    weight_decay=None,
    nesterov: bool = True,
    ns_coefficients=NS_COEFFICIENTS,
    ns_steps: int = 5,
    eps=None,
    decoupled: bool = True,
    regularizer=None,
    *,
    convention: str = "torch",
    adjust_lr=None,
    rms_rate: float = 0.2,
    ns_dtype=None,
    decay_scaled_by: str = "lr",
    mask=None,
    groups=None,
    on_nonfinite: str = "apply",
    cautious_decay: bool = False,
    lr_max=None,
    decay_toward=None,
) -> Muon:
    """Muon for 2-D weights (see :class:`Muon` for the math). ``convention`` picks a
    framework's version; ``weight_decay``, ``eps`` and ``adjust_lr`` override its
    defaults:

    - ``"torch"`` — ``torch.optim.Muon(lr, weight_decay=0.1, momentum, nesterov,
      ns_coefficients, eps=1e-7, ns_steps, adjust_lr_fn)``: an averaged buffer
      b ← μ·b + (1 − μ)·g, X / max(‖X‖, ε), scale "original" (or ``adjust_lr=
      "match_rms_adamw"``). torch orthogonalizes in bfloat16: ``ns_dtype=
      "bfloat16"`` gives its numbers exactly (float32 and float64 parameters, every
      step); the default ``None`` orthogonalizes in the parameters' dtype (1.5e-3
      relative from torch's after 100 steps: docs/conventions.md).
    - ``"keras"`` — ``keras.optimizers.Muon(learning_rate, weight_decay=0.004,
      momentum, ns_steps, nesterov, rms_rate=0.2, muon_a/b/c)``: a summed buffer
      b ← μ·b + g, X / (‖X‖ + 1e-7), scale rms_rate·√max(A, B) (``rms_rate=None`` in
      Keras is ``adjust_lr="none"`` here). Its Newton–Schulz runs in the weights'
      dtype: ``ns_dtype=None``.
    - ``"optax"`` — ``optax.contrib.muon(learning_rate, ns_coeffs, ns_steps, beta,
      eps=1e-8, weight_decay=0, nesterov, consistent_rms=None)``: an averaged buffer
      with bias correction, X / (‖X‖ + ε), scale "width" (``consistent_rms=r`` is
      ``adjust_lr="match_rms_adamw", rms_rate=r``). In the updates' dtype:
      ``ns_dtype=None``.

    Decoupled decay θ·(1 − lr_t·λ) in all three. The non-matrix parameters go to
    ``rule.adamw_for_others(...)``, a second rule configured as the framework does;
    ``Muon.split(params)`` separates them::

        rule = decay.muon(0.02, convention="keras")
        others = rule.adamw_for_others()
        matrices, rest = decay.rules.Muon.split(params)
    """
    check_choice("convention", convention, tuple(CONVENTIONS))
    d = CONVENTIONS[convention]
    return Muon(
        lr=lr, momentum=momentum, weight_decay=d["weight_decay"] if weight_decay is None else weight_decay,
        decoupled=decoupled, regularizer=regularizer, nesterov=nesterov, momentum_form=d["momentum_form"],
        ns_coefficients=ns_coefficients, ns_steps=ns_steps, eps=d["eps"] if eps is None else eps,
        eps_clamps=d["eps_clamps"], adjust_lr=d["adjust_lr"] if adjust_lr is None else adjust_lr,
        rms_rate=rms_rate, convention=convention, ns_dtype=ns_dtype, decay_scaled_by=decay_scaled_by, mask=mask,
        groups=groups, on_nonfinite=on_nonfinite, cautious_decay=cautious_decay, lr_max=lr_max, decay_toward=decay_toward,
    )
