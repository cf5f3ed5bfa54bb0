"""Checkpoints of a rule's state in one ``.npz`` file, loadable on any backend.

The file is a zip archive (``np.savez``) whose entries carry CRC checksums, so a
truncated or corrupted file is detected on load. It is written to a temporary file
first (in the same folder) and renamed, so a failed or interrupted save never leaves a
half-written checkpoint under the final name and never destroys the previous one. The
file gets the permissions the umask gives (as ``open`` would), not the temporary file's
0600. Every failure names the path the user gave and is a :class:`decay.DecayError`.
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
    """Write ``rule``'s ``state`` to ``path`` (an ``.npz`` file). A state that does not
    fit the rule (another rule's slots) is refused before anything is written."""
    saved = rule.state_dict(state)  # checks that the state fits the rule
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
        "names": saved["names"],
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    given = path
    path = _checked_path(path)
    if os.path.isdir(path):
        raise DecayError(f"Cannot save a checkpoint to {given!r}: it is a directory. Give a file name.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DecayError(f"Cannot save a checkpoint to {given!r}: the folder {folder!r} does not exist. Create it first.")
    try:
        handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    except OSError as exc:
        raise DecayError(f"Cannot save a checkpoint to {given!r}: {exc.strerror or exc}.") from exc
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise DecayError(f"Cannot save a checkpoint to {given!r}: {exc.strerror or exc}. "
                             "The previous file, if any, is unchanged.") from exc
        raise


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, for every thread)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _checked_path(path) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise DecayError(f"A checkpoint path must be a str or os.PathLike. Received: {path!r}.") from None


def load(path, rule, params):
    """The state saved at ``path``, for ``params`` on their backend, dtype and device.

    Refuses a missing, truncated, corrupted or incompatible file (another rule, other
    shapes, malformed metadata, an unsupported compression) with a
    :class:`decay.DecayError` naming ``path``; nothing is loaded then."""
    given = path
    path = _checked_path(path)
    if os.path.isdir(path):
        raise DecayError(f"The checkpoint {given!r} is a directory; give the .npz file saved by decay.checkpoint.save.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DecayError(f"No checkpoint at {given!r}.") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError) as exc:
        # NotImplementedError: a compression zipfile cannot read; RuntimeError: encrypted.
        raise DecayError(f"The checkpoint {given!r} is not a readable .npz file: truncated, corrupted "
                         f"or written by something else ({exc}).") from None
    meta = _meta(given, entries)
    slots = {}
    for slot, present in meta["layout"].items():
        per_leaf = []
        for i, has in enumerate(present):
            key = f"slot/{slot}/{i}"
            if has and key not in entries:
                raise DecayError(f"The checkpoint {given!r} is missing {key!r}: it is damaged.")
            per_leaf.append(entries[key] if has else None)
        slots[slot] = per_leaf
    saved = {"rule": meta.get("rule"), "count": meta.get("count"), "skipped": meta.get("skipped", 0), "slots": slots,
             "names": meta.get("names")}
    try:
        return rule.load_state_dict(saved, params)
    except DecayError as exc:
        raise DecayError(f"The checkpoint {given!r} cannot be loaded: {exc}") from exc


def _meta(given, entries) -> dict:
    """The checkpoint's metadata, its shape checked (a malformed one is refused)."""
    try:
        meta = json.loads(entries.pop("meta").tobytes().decode("utf-8"))
    except Exception:
        raise DecayError(f"The checkpoint {given!r} has no readable metadata: not a decay checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DecayError(f"{given!r} is not a {FORMAT} checkpoint (format: {found!r}).")
    layout = meta.get("layout", {})
    if not isinstance(layout, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(b, bool) for b in v) for k, v in layout.items()
    ):
        raise DecayError(f"The checkpoint {given!r} has malformed metadata (layout={layout!r}): it is damaged.")
    names = meta.get("names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                              or len(set(names)) != len(names)):
        raise DecayError(f"The checkpoint {given!r} has malformed metadata (names={names!r}): it is damaged.")
    meta["layout"] = layout
    return meta
