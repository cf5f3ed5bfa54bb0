"""Argument checks shared by rules, penalties and schedules.

Messages follow one pattern: what must hold, the value received, and how to fix it.
"""

from __future__ import annotations

import math
import numbers

from ._memory import check_disjoint
from .errors import DecayError


def _is_numpy_bool(value) -> bool:
    return type(value).__module__.partition(".")[0] == "numpy" and type(value).__name__ in ("bool_", "bool")


def _as_number(value):
    """``value`` as a Python number when it is one: a real number, or a 0-d NumPy array
    or framework tensor of a real (not boolean) dtype, which torch.optim accepts as lr.
    None otherwise (bools, strings, arrays of other shapes)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return value
    if _is_numpy_bool(value):
        return None
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None or tuple(shape) != ():
        return None
    kind = str(dtype).replace("torch.", "").replace("tf.", "").replace("<dtype: '", "").rstrip("'>")
    if not (kind.startswith("float") or kind.startswith("bfloat") or kind.startswith("int") or kind.startswith("uint")):
        return None  # bool, complex, strings
    try:
        return float(value)
    except Exception:  # a symbolic tensor (inside a graph) has no value here
        return None


def check_number(name: str, value, *, minimum: float = 0.0, below: float | None = None) -> float:
    """A finite real number >= minimum (and < below when given), returned as float. A
    0-d array or tensor counts as its number (torch.optim accepts a tensor lr); a bool,
    a string or an array of another shape is refused."""
    number = _as_number(value)
    if number is None:
        raise DecayError(
            f"`{name}` must be a real number (a 0-d array or tensor counts as its value). "
            f"Received: {name}={value!r}. Pass a float such as {name}=0.01."
        )
    number = float(number)
    if not math.isfinite(number):
        raise DecayError(f"`{name}` must be finite. Received: {name}={value!r}.")
    if number < minimum:
        raise DecayError(f"`{name}` must be >= {minimum:g}. Received: {name}={value!r}.")
    if below is not None and number >= below:
        raise DecayError(f"`{name}` must be < {below:g}. Received: {name}={value!r}.")
    return number


def check_number_or_schedule(name: str, value):
    """A number >= 0, or a callable step -> number checked each time it is used."""
    if callable(value):
        return value
    return check_number(name, value)


def scheduled_value(name: str, value, step: int) -> float:
    """The value of a number-or-schedule at ``step``, checked before it is used."""
    if not callable(value):
        return value
    try:
        result = value(step)
    except DecayError:
        raise
    except Exception as exc:  # a user's callable: report which argument and step failed
        raise DecayError(f"The schedule given as `{name}` failed at step {step}: {exc!r}.") from exc
    number = _as_number(result)
    if number is None:
        # True, "0.01" or a 1-element array would pass float(): refused, like a constant.
        raise DecayError(
            f"The schedule given as `{name}` must return a number; at step {step} it "
            f"returned {result!r} (a {type(result).__name__}). Nothing was updated; make it "
            "return a float."
        )
    result = float(number)
    if not math.isfinite(result) or result < 0:
        raise DecayError(
            f"The schedule given as `{name}` returned {result!r} at step {step}; it must return "
            "a finite number >= 0. Nothing was updated."
        )
    return result


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise DecayError(f"`{name}` must be one of {listed}. Received: {name}={value!r}.")
    return value


def check_flag(name: str, value) -> bool:
    """A boolean option: True or False (NumPy's bool too), never a string or a number
    that Python would read as one (``"False"`` is true)."""
    if isinstance(value, bool):
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise DecayError(f"`{name}` must be True or False. Received: {name}={value!r}.")


def user_callable(what: str, fn, *args, step=None):
    """Call a user's callable (a mask, a group selector, a schedule); an exception it
    raises becomes a :class:`DecayError` that names it (and the step), chained to the
    original."""
    try:
        return fn(*args)
    except DecayError:
        raise
    except Exception as exc:
        at = "" if step is None else f" at step {step}"
        raise DecayError(f"{what} raised{at}: {exc!r}. Nothing was updated; fix the callable.") from exc


def check_bool_result(what: str, value) -> bool:
    """A mask's or a group selector's answer: a bool (NumPy's too), nothing that merely
    converts to one (``"no"`` would read as True)."""
    if isinstance(value, bool):
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise DecayError(f"{what} must be True or False; it returned {value!r} (a {type(value).__name__}).")


def check_updatable(names, leaves, backend, what: str = "params") -> None:
    """Parameters an in-place update can be defined on: each tensor once (the same tensor
    twice would be stepped twice on one backend and once on another), none whose
    elements share memory (an expanded, stride-0 view: torch refuses to write it), and no
    two that are overlapping views of one storage (see :mod:`decay._memory`)."""
    if len(set(map(id, leaves))) != len(leaves):
        seen, twice = {}, []
        for name, leaf in zip(names, leaves):
            if id(leaf) in seen:
                twice.append((seen[id(leaf)], name))
            seen.setdefault(id(leaf), name)
        raise DecayError(
            f"`{what}` holds the same tensor more than once: {twice}. Each parameter must appear "
            "once (torch.optim refuses a parameter in two groups too); pass it once."
        )
    for name, leaf in zip(names, leaves):
        if backend.overlaps_itself(leaf):
            raise DecayError(
                f"Parameter {name!r} has elements that share memory (shape {backend.shape(leaf)}, "
                f"strides {getattr(leaf, 'strides', None) or leaf.stride()}), such as an expanded or "
                "stride-0 view: it cannot be updated in place. Pass a tensor that owns its "
                "memory, e.g. x.clone() (torch) or x.copy() (NumPy)."
            )
    check_disjoint(backend, [f"parameter {n!r}" for n in names], leaves)  # overlapping views of one storage


def check_slot_fits(backend, slot: str, name: str, param, x) -> None:
    """A state tensor fits its parameter: the dtype the engine keeps it in (the
    parameter's, float32 for float16/bfloat16), the parameter's device, memory of its own
    (a slot on the meta device, of another dtype, expanded, or the parameter itself
    would make the step fail halfway, do nothing, or write the wrong memory)."""
    dtype = backend.dtype_name(param)
    wanted = "float32" if dtype in ("float16", "bfloat16") else dtype
    problem = None
    if backend.dtype_name(x) != wanted:
        problem = f"is {backend.dtype_name(x)}, not {wanted}"
    elif backend.device(x) != backend.device(param):
        problem = f"is on {backend.device(x)}, not on the parameter's {backend.device(param)}"
    elif x is param or backend.overlaps_itself(x):
        problem = "shares memory with the parameter or with itself"
    if problem is not None:
        raise DecayError(
            f"`state` slot {slot!r} of parameter {name!r} {problem}. Nothing was updated. "
            "Call init() with these params, or load the state with load_state_dict(), "
            "which converts it."
        )


def dense_grads(rule, backend, names, grads, decay_acts=None) -> list:
    """``grads`` with sparse gradients made dense, where the rule takes them (SGD and
    Adagrad, as torch.optim.SGD and Adagrad do: their sparse step is the dense
    gradient's, bit for bit); refused for a rule that does not (torch.optim.Adam refuses
    them too), and for a parameter that weight decay or a penalty acts on
    (``decay_acts``, one flag per gradient): torch.optim.SGD and Adagrad raise for a
    sparse gradient with ``weight_decay != 0``. Checked before anything is written."""
    sparse = [i for i, g in enumerate(grads) if backend.is_sparse(g)]
    if not sparse:
        return grads
    if not rule.sparse_gradients:
        raise DecayError(
            f"The gradients of {[names[i] for i in sparse]} are sparse; {rule.name} does not take sparse "
            "gradients (torch.optim refuses them for this rule too). Pass dense gradients (g.to_dense()) "
            "or use decay.sgd or decay.adagrad, which take them."
        )
    decayed = [names[i] for i in sparse if decay_acts is not None and decay_acts[i]]
    if decayed:
        raise DecayError(
            f"The gradients of {decayed} are sparse, and weight decay (or a penalty) acts on those "
            f"parameters; torch.optim.SGD and Adagrad refuse sparse gradients with weight_decay != 0. "
            "Nothing was updated. Pass dense gradients (g.to_dense()), set weight_decay=0 for them "
            "(a mask or a param group), or give the embedding its own rule without decay."
        )
    return [backend.to_dense(g) if backend.is_sparse(g) else g for g in grads]


def check_betas_and_eps(hyper: dict) -> dict:
    """``hyper["betas"]`` validated as a pair in [0, 1) and ``hyper["eps"]`` as a number
    ≥ 0 (the Adam-family rules' shared hyperparameters)."""
    betas = hyper["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise DecayError(f"`betas` must be a pair (beta1, beta2). Received: betas={betas!r}.")
    hyper["betas"] = (check_number("betas[0]", betas[0], below=1.0), check_number("betas[1]", betas[1], below=1.0))
    hyper["eps"] = check_number("eps", hyper["eps"])
    return hyper
