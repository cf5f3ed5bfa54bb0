"""What "the same numbers" means: one tolerance per dtype.

Used by the test suite for every cross-backend and cross-framework comparison, and by
the comparison command. Errors are measured norm-wise: the largest absolute difference
divided by the largest absolute expected value, so entries that pass near zero do not
make a relative test meaningless.

======== ================ ==================================================
dtype    per step (rtol)  why
======== ================ ==================================================
float64  1e-12            round-off of a few operations, far below any
                          convention difference (those start near 1e-6)
float32  4 ulp = 4.8e-7   the same expression evaluated in float32
bfloat16 2 ulp = 1.6e-2   params rounded to bfloat16 after a float32 update
float16  2 ulp = 2.0e-3   as bfloat16
======== ================ ==================================================

Over ``steps`` updates round-off can add up, so :func:`rtol` grows linearly with the
number of steps compared (a bound, reached only by unlucky accumulation).
"""

from __future__ import annotations

import numpy as np

from .errors import DecayError

PER_STEP = {
    "float64": 1e-12,
    "float32": 4 * float(np.finfo(np.float32).eps),
    "bfloat16": 2 * 2.0**-7,
    "float16": 2 * float(np.finfo(np.float16).eps),
}


def rtol(dtype, steps: int = 1) -> float:
    """The norm-wise relative tolerance for ``dtype`` after ``steps`` updates."""
    name = getattr(dtype, "name", None) or str(dtype).replace("torch.", "")
    if name not in PER_STEP:
        raise DecayError(f"No tolerance for dtype {name!r}. Known: {sorted(PER_STEP)}.")
    return PER_STEP[name] * max(1, int(steps))


def relative_error(actual, expected) -> float:
    """max|actual − expected| / max|expected| (absolute when expected is all zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise DecayError(f"Shapes differ: {actual.shape} vs {expected.shape}.")
    if actual.size == 0:
        return 0.0
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(actual - expected)))
    if not np.isfinite(diff):
        return 0.0 if np.array_equal(actual, expected, equal_nan=True) else float("inf")
    return diff / scale if scale > 0 else diff


def assert_close(actual, expected, dtype, steps: int = 1, what: str = "values") -> None:
    """Raise AssertionError when ``actual`` is not within :func:`rtol` of ``expected``."""
    error = relative_error(actual, expected)
    bound = rtol(dtype, steps)
    if not error <= bound:
        raise AssertionError(
            f"{what}: relative error {error:.3e} exceeds the {dtype} tolerance {bound:.3e} "
            f"({steps} step(s)).\nactual={np.asarray(actual)!r}\nexpected={np.asarray(expected)!r}"
        )
