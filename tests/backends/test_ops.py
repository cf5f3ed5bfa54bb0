"""The vocabulary of decay/ops.py on every backend, against NumPy float64 written here.

The rules' one definition is only as right as each backend's implementation of these
operations: every operation is checked for its value, for the in-place contract (the
list's entries hold the result) and for leaving the other arguments unwritten.
"""

from __future__ import annotations

import numpy as np
import pytest

from decay.tolerances import assert_close

SHAPES = [(3, 4), (5,), ()]
RNG = np.random.default_rng(11)
# Positive inputs and positive coefficients in sums: no cancellation, so a norm-wise
# relative error measures the operation's rounding (each tensor is compared on its own,
# and a 0-d one that cancels to near zero would measure nothing but its inputs'). X and
# Y overlap, so maximum picks from both and y − x has both signs (for sign_all).
X = [np.abs(RNG.normal(size=s)) + 1.0 for s in SHAPES]
Y = [np.abs(RNG.normal(size=s)) + 0.5 for s in SHAPES]
Z = [np.abs(RNG.normal(size=s)) + 0.5 for s in SHAPES]

# name -> (call on the backend, the expected list from float64 NumPy, in place?)
IN_PLACE = {
    "mul_ scalar": (lambda o, x, y, z: o.mul_(x, 0.7), lambda x, y, z: [a * 0.7 for a in x]),
    "mul_ list": (lambda o, x, y, z: o.mul_(x, y), lambda x, y, z: [a * b for a, b in zip(x, y)]),
    "div_ scalar": (lambda o, x, y, z: o.div_(x, 1.3), lambda x, y, z: [a / 1.3 for a in x]),
    "div_ list": (lambda o, x, y, z: o.div_(x, z), lambda x, y, z: [a / c for a, c in zip(x, z)]),
    "add_ list": (lambda o, x, y, z: o.add_(x, y), lambda x, y, z: [a + b for a, b in zip(x, y)]),
    "add_ alpha": (lambda o, x, y, z: o.add_(x, y, alpha=0.3), lambda x, y, z: [a + 0.3 * b for a, b in zip(x, y)]),
    "add_ scalar": (lambda o, x, y, z: o.add_(x, 0.25), lambda x, y, z: [a + 0.25 for a in x]),
    "lerp_ small": (lambda o, x, y, z: o.lerp_(x, y, 0.1), lambda x, y, z: [a + 0.1 * (b - a) for a, b in zip(x, y)]),
    "lerp_ large": (lambda o, x, y, z: o.lerp_(x, y, 0.8), lambda x, y, z: [a + 0.8 * (b - a) for a, b in zip(x, y)]),
    "addcmul_": (lambda o, x, y, z: o.addcmul_(x, y, z, 0.4), lambda x, y, z: [a + 0.4 * b * c for a, b, c in zip(x, y, z)]),
    "addcdiv_": (lambda o, x, y, z: o.addcdiv_(x, y, z, 0.6), lambda x, y, z: [a + 0.6 * b / c for a, b, c in zip(x, y, z)]),
    "maximum_": (lambda o, x, y, z: o.maximum_(x, y), lambda x, y, z: [np.maximum(a, b) for a, b in zip(x, y)]),
    "sqrt_": (lambda o, x, y, z: o.sqrt_(x), lambda x, y, z: [np.sqrt(a) for a in x]),
    "abs_": (lambda o, x, y, z: o.abs_(x), lambda x, y, z: [np.abs(a) for a in x]),
    # x ≥ 1 and 1.4 cuts through it: both branches (Adafactor's floors)
    "clamp_min_ scalar": (lambda o, x, y, z: o.clamp_min_(x, 1.4), lambda x, y, z: [np.maximum(a, 1.4) for a in x]),
    "rsqrt_": (lambda o, x, y, z: o.rsqrt_(x), lambda x, y, z: [1.0 / np.sqrt(a) for a in x]),
    "clamp_min_ list": (lambda o, x, y, z: o.clamp_min_(x, [1.2, 1.6, 0.5]),
                        lambda x, y, z: [np.maximum(a, s) for a, s in zip(x, [1.2, 1.6, 0.5])]),
}
NEW = {
    "add": (lambda o, x, y, z: o.add(x, y, alpha=2.5), lambda x, y, z: [a + 2.5 * b for a, b in zip(x, y)]),
    "add scalar": (lambda o, x, y, z: o.add(x, 0.75), lambda x, y, z: [a + 0.75 for a in x]),
    "mul scalar": (lambda o, x, y, z: o.mul(x, -1.5), lambda x, y, z: [a * -1.5 for a in x]),
    "div list": (lambda o, x, y, z: o.div(x, z), lambda x, y, z: [a / c for a, c in zip(x, z)]),
    "div scalar": (lambda o, x, y, z: o.div(x, 4.0), lambda x, y, z: [a / 4.0 for a in x]),
    "sqrt_all": (lambda o, x, y, z: o.sqrt_all(z), lambda x, y, z: [np.sqrt(c) for c in z]),
    "sign_all": (lambda o, x, y, z: o.sign_all(o.add(y, x, alpha=-1.0)), lambda x, y, z: [np.sign(b - a) for a, b in zip(x, y)]),
    "abs_all": (lambda o, x, y, z: o.abs_all(o.add(y, x, alpha=-1.0)), lambda x, y, z: [np.abs(b - a) for a, b in zip(x, y)]),
    "clone": (lambda o, x, y, z: o.clone(y), lambda x, y, z: [b.copy() for b in y]),
    # per-tensor norms and ratios (LAMB, Muon); y − x has both signs: both branches
    "norm_all": (lambda o, x, y, z: o.norm_all(z), lambda x, y, z: [np.sqrt(np.sum(c * c)) for c in z]),
    "safe_ratio_all": (
        lambda o, x, y, z: o.safe_ratio_all(x, o.add(y, x, alpha=-1.0), 1.0),
        lambda x, y, z: [np.where(b - a > 0, a / np.where(b - a > 0, b - a, 1.0), 1.0) for a, b in zip(x, y)],
    ),
}


def _lists(native, dtype):
    return [[native.grad(a, dtype) for a in arrays] for arrays in (X, Y, Z)]


def _numpy(native, xs):
    return [native.numpy(a) for a in xs]


def _inputs(dtype):
    """X, Y, Z as the backend holds them (rounded to ``dtype``), in float64: the
    reference then measures the operation, not the rounding of its inputs."""
    return [[np.asarray(a, dtype=dtype).astype(np.float64) for a in arrays] for arrays in (X, Y, Z)]


@pytest.mark.parametrize("name", list(IN_PLACE))
def test_in_place_operations(native, dtype, name):
    call, expected = IN_PLACE[name]
    x, y, z = _lists(native, dtype)
    xs, ys, zs = _inputs(dtype)
    assert call(native.backend, x, y, z) is None
    for got, want in zip(_numpy(native, x), expected(xs, ys, zs)):
        assert_close(got, want, dtype, what=name)
    for got, want in zip(_numpy(native, y) + _numpy(native, z), ys + zs):
        assert_close(got, want, dtype, what=f"{name}: an argument it must not write")


@pytest.mark.parametrize("name", list(NEW))
def test_operations_that_make_new_lists(native, dtype, name):
    call, expected = NEW[name]
    x, y, z = _lists(native, dtype)
    xs, ys, zs = _inputs(dtype)
    out = call(native.backend, x, y, z)
    assert isinstance(out, list) and len(out) == len(SHAPES)
    for got, want in zip(_numpy(native, out), expected(xs, ys, zs)):
        assert got.shape == want.shape
        assert_close(got, want, dtype, what=name)
    for got, want in zip(_numpy(native, x) + _numpy(native, y) + _numpy(native, z), xs + ys + zs):
        assert_close(got, want, dtype, what=f"{name}: an argument it must not write")


# Matrices, one of them a batch of two (Muon's Newton–Schulz products).
MATRICES = [RNG.normal(size=(3, 4)), RNG.normal(size=(2, 4, 3))]
RIGHT = [RNG.normal(size=(4, 2)), RNG.normal(size=(2, 3, 5))]


@pytest.mark.parametrize("name", ["matmul_all", "transpose_all"])
def test_matrix_operations(native, dtype, name):
    a = [native.grad(m, dtype) for m in MATRICES]
    b = [native.grad(m, dtype) for m in RIGHT]
    a64 = [np.asarray(m, dtype=dtype).astype(np.float64) for m in MATRICES]
    b64 = [np.asarray(m, dtype=dtype).astype(np.float64) for m in RIGHT]
    if name == "matmul_all":
        out, want = native.backend.matmul_all(a, b), [x @ y for x, y in zip(a64, b64)]
    else:
        out, want = native.backend.transpose_all(a), [np.swapaxes(x, -1, -2) for x in a64]
    for got, expected in zip(_numpy(native, out), want):
        assert got.shape == expected.shape
        # a product sums 4 terms: its rounding is a few ulp of the largest term
        assert_close(got, expected, dtype, steps=4, what=name)
    for got, expected in zip(_numpy(native, a), a64):
        assert_close(got, expected, dtype, what=f"{name}: an argument it must not write")


def test_sign_in_place_has_both_signs_and_zero(native, dtype):
    """sign_ on y − x (both signs) and on zeros; X alone is positive, so the table's
    in-place check would see only +1."""
    x, y, _ = _lists(native, dtype)
    xs, ys, _ = _inputs(dtype)
    d = native.backend.add(y, x, alpha=-1.0) + [native.grad(np.zeros((2,)), dtype)]
    assert native.backend.sign_(d) is None
    want = [np.sign(b - a) for a, b in zip(xs, ys)] + [np.zeros(2)]
    assert {v for w in want for v in np.ravel(w)} == {-1.0, 0.0, 1.0}
    for got, expected in zip(_numpy(native, d), want):
        assert np.array_equal(got, expected)


def test_safe_ratio_is_the_default_at_zero(native, dtype):
    zero, two = native.grad(np.zeros(()), dtype), native.grad(np.full((), 2.0), dtype)
    got = _numpy(native, native.backend.safe_ratio_all([zero, two, two], [two, zero, two], 1.0))
    assert [float(v) for v in got] == [1.0, 1.0, 1.0]


# Means over one axis kept as size 1 (Adafactor's rows and columns), and list operations
# that broadcast them back: a 3-D tensor reduced over a middle axis, a matrix, a vector.
TENSORS = [RNG.normal(size=(4, 3, 5)), RNG.normal(size=(3, 4)), RNG.normal(size=6)]


def test_means_over_one_axis_and_broadcasting(native, dtype):
    o = native.backend
    xs = [native.grad(a, dtype) for a in TENSORS]
    x64 = [np.asarray(a, dtype=dtype).astype(np.float64) for a in TENSORS]
    for axes in ([1, 0, None], [2, 1, 0], [0, -1, -1]):
        for name, squared in (("mean_all", False), ("mean_squares_all", True)):
            means = getattr(o, name)(xs, axes)
            src = [a * a for a in x64] if squared else x64
            want = [np.asarray(np.mean(a)) if ax is None else np.mean(a, axis=ax, keepdims=True) for a, ax in zip(src, axes)]
            for got, expected in zip(_numpy(native, means), want):
                assert got.shape == expected.shape
                assert_close(got, expected, dtype, steps=6, what=f"{name} {axes}")  # a mean rounds once per term
    rows, cols = o.mean_all(xs[:2], [2, 1]), o.mean_all(xs[:2], [0, 0])
    rows64 = [np.mean(a, axis=ax, keepdims=True) for a, ax in zip(x64[:2], [2, 1])]
    cols64 = [np.mean(a, axis=0, keepdims=True) for a in x64[:2]]
    for name, call, want in (
        ("mul", o.mul(rows, cols), [r * c for r, c in zip(rows64, cols64)]),  # (4,3,1)·(1,3,5) -> (4,3,5)
        ("div", o.div(rows, cols), [r / c for r, c in zip(rows64, cols64)]),
    ):
        for got, expected in zip(_numpy(native, call), want):
            assert got.shape == expected.shape
            assert_close(got, expected, dtype, steps=8, what=f"broadcasting {name}")
    work = [native.grad(a, dtype) for a in TENSORS[:2]]
    o.div_(work, rows)  # in place: x keeps its shape, the row means broadcast into it
    for got, a, r in zip(_numpy(native, work), x64[:2], rows64):
        assert got.shape == a.shape
        assert_close(got, a / r, dtype, steps=8, what="div_ by a broadcast list")
    for got, expected in zip(_numpy(native, xs), x64):
        assert_close(got, expected, dtype, what="mean_all: an argument it must not write")


# Large enough for TensorFlow's matrix–vector sums (16 rows of 1,024 and more), with and
# without a remainder past the last full row.
LARGE = [RNG.normal(size=(130, 200)), RNG.normal(size=(64, 512)), RNG.normal(size=20_000)]


def test_norms_and_row_means_of_large_tensors(native, dtype):
    o = native.backend
    xs = [native.grad(a, dtype) for a in LARGE]
    x64 = [np.asarray(a, dtype=dtype).astype(np.float64) for a in LARGE]
    # A sum of ~30k terms, blocked by every backend: its rounding grows as √n ulp, not n.
    steps = 64
    for got, a in zip(_numpy(native, o.norm_all(xs)), x64):
        assert_close(got, np.sqrt(np.sum(a * a)), dtype, steps=steps, what="norm_all of a large tensor")
    for axes in ([1, -1, None], [0, 0, 0]):
        for got, a, ax in zip(_numpy(native, o.mean_squares_all(xs, axes)), x64, axes):
            want = np.asarray(np.mean(a * a)) if ax is None else np.mean(a * a, axis=ax, keepdims=True)
            assert got.shape == want.shape
            assert_close(got, want, dtype, steps=steps, what=f"mean_squares_all {axes} of a large tensor")


def test_zeros_of_another_shape(native, dtype):
    like = native.param(np.ones((3, 4)), dtype)
    zero = native.backend.zeros((3, 1), like)
    assert native.backend.shape(zero) == (3, 1) and native.backend.dtype_name(zero) == native.backend.dtype_name(like)
    assert not np.any(native.numpy(zero))


def test_addmm_all(native, dtype):
    # 2-D (torch: one torch.addmm) and batched (the others' composition) entries.
    c = [native.grad(m @ r, dtype) for m, r in zip(MATRICES, RIGHT)]
    a = [native.grad(m, dtype) for m in MATRICES]
    b = [native.grad(m, dtype) for m in RIGHT]
    c64, a64, b64 = ([np.asarray(v, dtype=dtype).astype(np.float64) for v in vs]
                     for vs in ([m @ r for m, r in zip(MATRICES, RIGHT)], MATRICES, RIGHT))
    out = native.backend.addmm_all(c, a, b, beta=-0.75, alpha=1.25)
    for got, x, y, z in zip(_numpy(native, out), c64, a64, b64):
        # |β·c| and |α·x@y| are comparable, with cancellation: the bound is on the terms
        want = -0.75 * x + 1.25 * (y @ z)
        scale = np.abs(0.75 * x).max() + np.abs(1.25 * (y @ z)).max()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 8 * np.finfo(dtype).eps * scale
    for got, expected in zip(_numpy(native, c), c64):
        assert_close(got, expected, dtype, what="addmm_all: an argument it must not write")


def _bfloat16_rounded(a64) -> np.ndarray:
    """bfloat16's round to nearest even, from float32's bits (a closed form)."""
    bits = np.asarray(a64, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("target", ["bfloat16", "float32", "float64"])
def test_cast_all_and_back(native, dtype, target):
    if native.name == "numpy" and target == "bfloat16":
        pytest.importorskip("ml_dtypes")  # NumPy's bfloat16
    ops = native.backend
    xs = [native.grad(m, dtype) for m in MATRICES]
    x64 = [np.asarray(m, dtype=dtype).astype(np.float64) for m in MATRICES]
    out = ops.cast_all(xs, target)
    assert [ops.dtype_name(v) for v in out] == [target] * len(xs)
    for got, x in zip(_numpy(native, out), x64):
        want = _bfloat16_rounded(x) if target == "bfloat16" else x.astype(target).astype(np.float64)
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), want)
    back = ops.cast_all(out, [ops.dtype_name(v) for v in xs])  # one name per entry
    assert [ops.dtype_name(v) for v in back] == [dtype] * len(xs)


def test_numpy_bfloat16_without_ml_dtypes_is_refused(monkeypatch):
    import sys

    import decay
    from decay import DecayError

    numpy_ops = decay.get_backend("numpy")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now fails
    with pytest.raises(DecayError, match="ml_dtypes"):
        numpy_ops.check_dtype("bfloat16")
    with pytest.raises(DecayError, match="ml_dtypes"):
        numpy_ops.cast_all([np.ones((2, 2))], "bfloat16")
    numpy_ops.check_dtype("float32")  # the others need nothing
