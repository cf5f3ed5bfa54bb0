"""The frameworks' own optimizers in ``decay compare``: ``--natives`` (each framework's
equivalent of decay's rule, from :func:`decay.to_native`) and ``--native "SPEC"`` (the
user's own PyTorch or Keras optimizer, written as in their code).

``SPEC`` is parsed, never evaluated: ``torch.optim.AdamW(lr=1e-3, weight_decay=0.05)``
must be one call of a class in ``torch.optim`` or ``keras.optimizers`` (``tf.keras.``
too), whose arguments are keyword arguments with literal values (numbers, strings,
booleans, None, tuples and lists of them, read by :func:`ast.literal_eval`). Nothing
the user writes runs as code; :func:`parse` imports no framework.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass

from ..errors import DecayError

# Where each spelling's classes live, and the framework (decay.to_native's name) and
# backend that train them.
_FRAMEWORKS = {
    "torch.optim": ("torch", "torch", "torch"),
    "keras.optimizers": ("keras", "keras", "tensorflow"),
    "tf.keras.optimizers": ("keras", "keras", "tensorflow"),
    "tensorflow.keras.optimizers": ("keras", "keras", "tensorflow"),
}
_EXAMPLE = 'torch.optim.AdamW(lr=1e-3, weight_decay=0.05) or keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)'


@dataclass(frozen=True)
class NativeSpec:
    """A parsed ``--native`` argument: ``module.name(**kwargs)``."""

    text: str
    module: str  # "torch.optim" or "keras.optimizers"
    name: str  # the class, e.g. "AdamW"
    kwargs: dict
    framework: str  # "torch" or "keras" (decay.to_native's names)
    backend: str  # the decay backend that trains it: "torch" or "tensorflow"

    @property
    def label(self) -> str:
        return f"{self.module}.{self.name}"

    def construct(self, params=None):
        """The optimizer itself (imports its framework). Torch's needs ``params``."""
        module = importlib.import_module(self.module if self.framework == "torch" else "keras.optimizers")
        cls = getattr(module, self.name, None)
        if not isinstance(cls, type):
            raise DecayError(f"--native: {self.label} is not an optimizer class of {self.module}. Received: {self.text!r}.")
        try:
            if self.framework == "torch":
                return cls(params if params is not None else [_torch_placeholder()], **self.kwargs)
            return cls(**self.kwargs)
        except (TypeError, ValueError) as exc:
            raise DecayError(f"--native: {self.label} refused its arguments: {exc}. Received: {self.text!r}.") from None


def _torch_placeholder():
    import torch

    return torch.zeros(1, dtype=torch.float64, requires_grad=True)


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def parse(text: str) -> NativeSpec:
    """``--native``'s argument as a :class:`NativeSpec`, or a DecayError naming what is
    wrong (exit 2 on the command line). Imports nothing."""
    bad = f"--native takes one optimizer constructor with keyword arguments, e.g. {_EXAMPLE}. Received: {text!r}."
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise DecayError(bad) from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise DecayError(bad)
    dotted = _dotted(call.func)
    module, _, name = (dotted or "").rpartition(".")
    if module not in _FRAMEWORKS or not re.fullmatch(r"[A-Z]\w*", name):
        raise DecayError(
            f"--native: the optimizer must be a class of torch.optim or keras.optimizers "
            f"(e.g. {_EXAMPLE}). Received: {text!r}."
        )
    if call.args:
        raise DecayError(
            f"--native: pass the optimizer's settings as keyword arguments (compare supplies the "
            f"parameters), e.g. {_EXAMPLE}. Received: {text!r}."
        )
    kwargs = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise DecayError(f"--native: '**' is not accepted; write each setting as name=value. Received: {text!r}.")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, SyntaxError, TypeError):
            raise DecayError(
                f"--native: {keyword.arg}= must be a literal (a number, string, boolean, None, or a "
                f"tuple of them); expressions and names are not evaluated. Received: {text!r}."
            ) from None
    framework, _, backend = _FRAMEWORKS[module]
    return NativeSpec(text, "torch.optim" if framework == "torch" else "keras.optimizers", name, kwargs,
                      framework, backend)


# -- native optimizers behind a rule's init/step --------------------------------------------------
class NativeOptimizer:
    """A framework's own optimizer behind a rule's ``init``/``step``, so that its row
    trains through the same loop as decay's rows. ``build(params)`` constructs it (a
    torch optimizer on a list of tensors, or ``(optimizer, scheduler)``; a Keras
    optimizer); ``penalty`` is a decay penalty the conversion moved into the loss."""

    def __init__(self, framework, build, penalty=None, exact=True, note=""):
        self.framework, self._build, self.penalty = framework, build, penalty
        self.exact, self.note = exact, note

    @classmethod
    def from_conversion(cls, conversion):
        return cls(conversion.framework, conversion.build, conversion.penalty, bool(conversion.exact),
                   conversion.reason or conversion.note or "")

    @classmethod
    def from_spec(cls, spec: NativeSpec):
        build = (lambda params: spec.construct(list(params.values()))) if spec.framework == "torch" else (
            lambda params: spec.construct())
        return cls(spec.framework, build, None, True, "your optimizer")

    def init(self, params):
        if self.framework == "optax":  # functional: (transformation, its state)
            tx = self._build()
            return tx, tx.init(params)
        built = self._build(params)
        optimizer, scheduler = built if isinstance(built, tuple) else (built, None)  # torch: and an lr scheduler
        if self.framework == "torch":
            return optimizer, scheduler
        # Keras: apply_gradients traced once, as model.fit runs it (eager, it costs
        # 5-40 ms per call on these tiny models; the numbers are the same).
        import tensorflow as tf

        variables = list(params.values())
        # Built eagerly: Keras's Adafactor names its placeholder slots after the variable
        # ("Variable:0"), which a graph's name scope refuses.
        optimizer.build(variables)
        apply = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
        return optimizer, apply

    def step(self, params, grads, state):
        optimizer, after = state
        if self.penalty is not None:
            # The conversion moved part of the decay into the loss (Keras: coupled decay
            # is an L2 kernel regularizer): its gradient is added here. It is trained on
            # but not reported, so the row's losses stay comparable with decay's rows.
            grads = {k: grads[k] + g for k, g in self.penalty.grad(params).items()}
        if self.framework == "optax":  # new params and state
            import optax

            updates, opt_state = optimizer.update(grads, after, params)
            return optax.apply_updates(params, updates), (optimizer, opt_state)
        if self.framework == "torch":
            for param, grad in zip(params.values(), grads.values()):
                param.grad = grad
            _torch_step_in_dtype(optimizer, next(iter(params.values())).dtype)
            if after is not None:
                after.step()  # the lr scheduler
        else:
            after(list(grads.values()))
        return params, state


def _torch_step_in_dtype(optimizer, dtype) -> None:
    """``optimizer.step()`` with torch's default dtype set to the parameters' float64:
    torch.optim keeps some of its numbers in the default dtype (NAdam's μ product),
    which the conversion's exactness assumes is float64 for a float64 run."""
    import torch

    previous = torch.get_default_dtype()
    if dtype == torch.float64:
        torch.set_default_dtype(torch.float64)
    try:
        optimizer.step()
    finally:
        torch.set_default_dtype(previous)


def label_of(conversion) -> str:
    """The first constructor a conversion's code calls (an lr scheduler may follow)."""
    return re.search(r"[\w.]+(?=\()", conversion.code).group()


def conversions(rule, backends, skip=()):
    """``(backend, NativeOptimizer, label)`` for each installed framework's equivalent of
    ``rule`` (closest one, marked not exact, where none is exact); frameworks in
    ``skip`` are left out."""
    from .. import to_native

    out = []
    for framework, backend in (("torch", "torch"), ("keras", "tensorflow"), ("optax", "jax")):
        if backend in backends and framework not in skip:
            conversion = to_native(rule, framework, strict=False)
            out.append((backend, NativeOptimizer.from_conversion(conversion), label_of(conversion)))
    return out
