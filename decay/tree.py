"""Parameter structures: one tensor, a list/tuple of tensors, or a dict name -> tensor;
with JAX arrays, any pytree (nested dicts, lists, tuples, registered nodes).

Rules and penalties work on a flat list of leaves with a name each; these helpers
flatten a structure, check that grads match params, and rebuild the structure.

JAX structures are flattened by ``jax.tree_util``, as optax and Flax do: dict keys in
sorted order (so the state, which is positional, matches the params that ``jax.jit``
rebuilds with sorted keys), and a leaf's name is its path joined by "/"
(``"Dense_0/kernel"``), Flax's ``flatten_dict(sep="/")`` convention, which masks match on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import NamedTuple

from .errors import DecayError


class Flat(NamedTuple):
    kind: str  # "single", "list", "tuple", "dict" or "pytree" (JAX)
    keys: tuple  # dict keys, or list indices (a pytree: its treedef, top-level dict order)
    names: tuple  # str(key): what masks and groups match on
    leaves: list


def _first_leaf(tree):
    """The first leaf of nested dicts/lists/tuples (cheap: one path down)."""
    while isinstance(tree, (dict, list, tuple)) and tree:
        tree = next(iter(tree.values())) if isinstance(tree, dict) else tree[0]
    return tree


def _is_jax(x) -> bool:
    return type(x).__module__.startswith(("jaxlib", "jax."))


def _jax_flatten(tree, what: str):
    """A Flat of kind "pytree" when ``tree`` is a JAX structure (every leaf a JAX array
    or tracer), else None. JAX is in ``sys.modules`` whenever such arrays exist."""
    jax = sys.modules.get("jax")
    if jax is None or _is_jax(tree) or not _is_jax(_first_leaf(tree)):
        return None
    if type(tree) in (dict, list, tuple) and not any(
        isinstance(v, (dict, list, tuple)) for v in (tree.values() if type(tree) is dict else tree)
    ):
        return None  # flat: in the caller's order, as on every backend (state_dicts move)
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not pairs or not all(_is_jax(leaf) for _, leaf in pairs):
        return None  # mixed: the backend check names the odd entry
    names = tuple("/".join(_key_name(k) for k in path) for path, _ in pairs)
    # A top-level dict comes back in the caller's key order (nested ones sorted, as JAX does).
    order = tuple(tree) if type(tree) is dict else None
    return Flat("pytree", (treedef, order), names, [leaf for _, leaf in pairs])


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey / FlattenedIndexKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def same_pytree(tree, flat: Flat, leaves) -> bool:
    """Whether ``tree`` has ``flat``'s treedef and holds the very same leaves."""
    jax = sys.modules["jax"]
    new, treedef = jax.tree_util.tree_flatten(tree)
    return treedef == flat.keys[0] and len(new) == len(leaves) and all(a is b for a, b in zip(new, leaves))


def flatten(tree, what: str = "params") -> Flat:
    if "jax" in sys.modules:
        flat = _jax_flatten(tree, what)
        if flat is not None:
            return flat
    if isinstance(tree, Mapping):
        keys = tuple(tree.keys())
        for key in keys:
            if not isinstance(key, str):
                raise DecayError(
                    f"`{what}` dict keys must be parameter names (str). Received key {key!r} "
                    f"of type {type(key).__name__}."
                )
        leaves = [tree[k] for k in keys]
        kind = "dict"
    elif isinstance(tree, (list, tuple)):
        keys = tuple(range(len(tree)))
        leaves = list(tree)
        kind = "tuple" if isinstance(tree, tuple) else "list"
    else:
        return Flat("single", (0,), ("0",), [tree])
    if not leaves:
        raise DecayError(f"`{what}` is empty. Pass at least one tensor to optimize.")
    for key, leaf in zip(keys, leaves):
        # Concrete types first: an abstract Mapping check costs more than the rest of a step.
        if isinstance(leaf, (dict, list, tuple)) or (not hasattr(leaf, "shape") and isinstance(leaf, Mapping)):
            raise DecayError(
                f"`{what}` entry {key!r} is a {type(leaf).__name__}; decay takes one tensor, a "
                "flat list/tuple of tensors or a flat dict name -> tensor. Flatten nested "
                "structures first (e.g. dict(model.named_parameters()))."
            )
    names = _index_names(len(keys)) if kind != "dict" else tuple(keys)
    return Flat(kind, keys, names, leaves)


_INDEX_NAMES: dict = {}


def _index_names(n: int) -> tuple:
    """("0", "1", …): the names of a list's entries, built once per length."""
    names = _INDEX_NAMES.get(n)
    if names is None:
        names = _INDEX_NAMES[n] = tuple(str(i) for i in range(n))
    return names


def flatten_like(tree, ref: Flat, what: str = "grads", ref_what: str = "params") -> list:
    """Leaves of ``tree`` in ``ref``'s order; an error if the structures differ."""
    if ref.kind == "pytree":
        return _flatten_like_pytree(tree, ref, what, ref_what)
    if ref.kind in ("list", "tuple") and isinstance(tree, (list, tuple)) and len(tree) == len(ref.leaves):
        return list(tree)  # the common case; each leaf's type is checked by the rule
    flat = flatten(tree, what)
    if flat.kind != ref.kind and {flat.kind, ref.kind} != {"list", "tuple"}:
        raise DecayError(
            f"`{what}` is a {_describe(flat)} but `{ref_what}` is a {_describe(ref)}. "
            f"Pass `{what}` with the same structure as `{ref_what}`."
        )
    if flat.kind == "dict":
        if set(flat.keys) != set(ref.keys):
            missing = sorted(set(ref.names) - set(flat.names))
            extra = sorted(set(flat.names) - set(ref.names))
            raise DecayError(
                f"`{what}` and `{ref_what}` have different names: missing from `{what}`: "
                f"{missing}; not in `{ref_what}`: {extra}."
            )
        by_key = dict(zip(flat.keys, flat.leaves))
        return [by_key[k] for k in ref.keys]
    if len(flat.leaves) != len(ref.leaves):
        raise DecayError(
            f"`{what}` has {len(flat.leaves)} tensors but `{ref_what}` has {len(ref.leaves)}. "
            "Pass one gradient per parameter."
        )
    return flat.leaves


def _flatten_like_pytree(tree, ref: Flat, what: str, ref_what: str) -> list:
    jax = sys.modules["jax"]
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if treedef != ref.keys[0]:
        raise DecayError(
            f"`{what}` has structure {treedef} but `{ref_what}` has {ref.keys[0]}. Pass `{what}` "
            f"with the same structure as `{ref_what}` (jax.grad of the same function gives it)."
        )
    return leaves


def unflatten(ref: Flat, leaves, like=None):
    """``leaves`` in ``ref``'s structure; a dict gets the key order of ``like`` (the
    caller's dict, whose keys may come in another order) when given."""
    if ref.kind == "pytree":
        treedef, order = ref.keys
        out = treedef.unflatten(list(leaves))
        return out if order is None else {k: out[k] for k in order}
    if ref.kind == "single":
        return leaves[0]
    if ref.kind == "dict":
        by_key = dict(zip(ref.keys, leaves))
        return by_key if like is None or tuple(like) == ref.keys else {k: by_key[k] for k in like}
    return tuple(leaves) if ref.kind == "tuple" else list(leaves)


def _describe(flat: Flat) -> str:
    if flat.kind == "single":
        return "single tensor"
    if flat.kind == "pytree":
        return f"pytree of {len(flat.leaves)}"
    return f"{flat.kind} of {len(flat.leaves)}"


def reorder_by_name(columns: dict, names: tuple, wanted: tuple, what: str) -> dict:
    """Per-leaf ``columns`` (name -> one entry per leaf, in ``names`` order) put in the
    order of ``wanted``: a state follows the names of a dict of params, not positions."""
    if sorted(names) != sorted(wanted):
        raise DecayError(
            f"{what} was made for parameters {sorted(names)} but `params` has {sorted(wanted)}. "
            "Pass the params it was made for (matched by name), or call init()."
        )
    at = {n: i for i, n in enumerate(names)}
    order = [at[n] for n in wanted]
    return {key: tuple(column[i] for i in order) if isinstance(column, (list, tuple)) else column
            for key, column in columns.items()}


def state_by_name(state, flat):
    """``state`` with its slots in the order of ``flat``'s names, when it was made for a
    dict of params whose keys came in another order; refused for other names."""
    names = getattr(state, "names", None)
    if names is None or flat.kind not in ("dict", "pytree") or names is flat.names or names == flat.names:
        return state
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        raise DecayError(f"`state.names` must be the parameter names init() recorded. Received: {names!r}.")
    return state._replace(slots=reorder_by_name(state.slots, names, flat.names, "`state`"), names=flat.names)


def saved_by_name(saved: dict, slots: dict, flat) -> dict:
    """A saved state's slots (``Rule.state_dict``) in the order of ``flat``'s names."""
    names = saved.get("names")
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
                              or len(set(names)) != len(names)):
        raise DecayError(f"Saved state has invalid `names`: {names!r}. It must list distinct parameter names.")
    if names is None or flat.kind not in ("dict", "pytree") or tuple(names) == flat.names:
        return slots
    return reorder_by_name(slots, tuple(names), flat.names, "Saved state")
