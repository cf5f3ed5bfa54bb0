"""Checkpoints of a rule's state in one ``.npz`` file, loadable on any backend.

The file is a zip archive (``np.savez``) whose entries carry CRC checksums, so a
truncated or corrupted file is detected on load. It is written to a temporary file
first and renamed, so an interrupted save never leaves a half-written checkpoint under
the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import DecayError

FORMAT = "decay-state-1"


def save(path, rule, state) -> None:
    """Write ``rule``'s ``state`` to ``path`` (an ``.npz`` file)."""
    saved = rule.state_dict(state)
    arrays = {}
    layout = {}
    for slot, per_leaf in saved["slots"].items():
        layout[slot] = [a is not None for a in per_leaf]
        for i, array in enumerate(per_leaf):
            if array is not None:
                arrays[f"slot/{slot}/{i}"] = array
    meta = {
        "format": FORMAT,
        "rule": saved["rule"],
        "count": saved["count"],
        "skipped": saved["skipped"],
        "layout": layout,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path, rule, params):
    """The state saved at ``path``, for ``params`` on their backend, dtype and device.

    Refuses a missing, truncated, corrupted or incompatible file (another rule, other
    shapes) with a :class:`decay.DecayError`; nothing is loaded then."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DecayError(f"No checkpoint at {path!r}.") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DecayError(f"The checkpoint {path!r} is truncated or corrupted ({exc}).") from None
    try:
        meta = json.loads(entries.pop("meta").tobytes().decode("utf-8"))
    except Exception:
        raise DecayError(f"The checkpoint {path!r} has no readable metadata: not a decay checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DecayError(f"{path!r} is not a {FORMAT} checkpoint (format: {meta.get('format')!r}).")
    slots = {}
    for slot, present in meta.get("layout", {}).items():
        per_leaf = []
        for i, has in enumerate(present):
            key = f"slot/{slot}/{i}"
            if has and key not in entries:
                raise DecayError(f"The checkpoint {path!r} is missing {key!r}: it is damaged.")
            per_leaf.append(entries[key] if has else None)
        slots[slot] = per_leaf
    saved = {"rule": meta.get("rule"), "count": meta.get("count"), "skipped": meta.get("skipped", 0), "slots": slots}
    return rule.load_state_dict(saved, params)
