"""Penalties: values and gradients against closed forms and the frameworks' autodiff."""

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

RNG = np.random.default_rng(0)
ARRAYS = {"w": RNG.normal(size=(3, 4)), "b": np.array([0.0, -1.5, 2.0]), "s": np.array(0.7)}
PENALTIES = [
    (decay.L2(0.1), lambda x: 0.1 * np.sum(x**2), lambda x: 0.2 * x),
    (decay.L1(0.3), lambda x: 0.3 * np.sum(np.abs(x)), lambda x: 0.3 * np.sign(x)),
    (
        decay.ElasticNet(0.3, 0.1),
        lambda x: 0.3 * np.sum(np.abs(x)) + 0.1 * np.sum(x**2),
        lambda x: 0.3 * np.sign(x) + 0.2 * x,
    ),
]
IDS = ["L2", "L1", "ElasticNet"]


@pytest.mark.parametrize("penalty, value, grad", PENALTIES, ids=IDS)
def test_value_and_grad_match_closed_form(native, dtype, penalty, value, grad):
    params = {k: native.param(v, dtype) for k, v in ARRAYS.items()}
    exact = {k: v.astype(dtype).astype(np.float64) for k, v in ARRAYS.items()}
    total = penalty.penalty(params)
    assert native.backend.dtype_name(total) == dtype
    assert native.backend.shape(total) == ()
    assert_close(native.numpy(total), sum(value(x) for x in exact.values()), dtype, steps=len(exact))
    grads = penalty.grad(params)
    assert list(grads) == list(params)
    for k in params:
        assert native.backend.is_tensor(grads[k])
        assert_close(native.numpy(grads[k]), grad(exact[k]), dtype, what=k)


@pytest.mark.parametrize("penalty, value, grad", PENALTIES, ids=IDS)
def test_structures_single_list_tuple(native, penalty, value, grad):
    x = native.param(ARRAYS["w"], "float64")
    assert_close(native.numpy(penalty.grad(x)), grad(ARRAYS["w"]), "float64")
    as_list = penalty.grad([x, x])
    assert isinstance(as_list, list) and len(as_list) == 2
    assert isinstance(penalty.grad((x,)), tuple)


def test_l1_gradient_is_zero_at_zero(native, dtype):
    g = decay.L1(0.5).grad(native.param([0.0, -0.0, 1.0, -2.0], dtype))
    np.testing.assert_array_equal(native.numpy(g), [0.0, 0.0, 0.5, -0.5])


@pytest.mark.parametrize("penalty, value, grad", PENALTIES, ids=IDS)
def test_autodiff_of_regularized_loss_torch(penalty, value, grad):
    torch = pytest.importorskip("torch")

    w = torch.tensor(ARRAYS["w"], requires_grad=True)
    b = torch.tensor(ARRAYS["b"], requires_grad=True)
    loss = decay.regularized_loss((w.sum() - 1.0) ** 2, {"w": w, "b": b}, penalty)
    loss.backward()
    data_grad = 2 * (ARRAYS["w"].sum() - 1.0)
    assert_close(w.grad.numpy(), data_grad + grad(ARRAYS["w"]), "float64")
    assert_close(b.grad.numpy(), grad(ARRAYS["b"]), "float64")
    # and the penalty's own .grad equals autograd of the penalty alone
    w.grad = None
    penalty.penalty(w).backward()
    assert_close(penalty.grad(w).numpy(), w.grad.numpy(), "float64")


@pytest.mark.parametrize("penalty, value, grad", PENALTIES, ids=IDS)
def test_autodiff_of_regularized_loss_tensorflow(penalty, value, grad):
    tf = pytest.importorskip("tensorflow")

    w = tf.Variable(ARRAYS["w"])
    b = tf.Variable(ARRAYS["b"])
    with tf.GradientTape() as tape:
        loss = decay.regularized_loss((tf.reduce_sum(w) - 1.0) ** 2, [w, b], penalty)
    gw, gb = tape.gradient(loss, [w, b])
    data_grad = 2 * (ARRAYS["w"].sum() - 1.0)
    assert_close(gw.numpy(), data_grad + grad(ARRAYS["w"]), "float64")
    assert_close(gb.numpy(), grad(ARRAYS["b"]), "float64")
    with tf.GradientTape() as tape:
        alone = penalty.penalty(w)
    assert_close(penalty.grad(w).numpy(), tape.gradient(alone, w).numpy(), "float64")


def test_activity_regularization_on_outputs(native):
    # A penalty on a layer's outputs is computed the same way: Σ over whatever it is given.
    outputs = native.grad([[1.0, -2.0], [3.0, 0.5]], "float64")
    assert_close(native.numpy(decay.L2(0.5).penalty(outputs)), 0.5 * (1 + 4 + 9 + 0.25), "float64")


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", None])
def test_bad_coefficients_are_refused(bad):
    for make in (decay.L2, decay.L1, lambda v: decay.ElasticNet(v, 0.1), lambda v: decay.ElasticNet(0.1, v)):
        with pytest.raises(decay.DecayError, match="Received"):
            make(bad)


# -- the all-tensor reductions behind penalty values -----------------------------------

SUMS = [
    ("sum_squares_all", lambda x: np.sum(np.square(x, dtype=np.float64))),
    ("sum_abs_all", lambda x: np.sum(np.abs(x), dtype=np.float64)),
]
SHAPES = [(3, 4), (5,), (), (2, 1, 3), (0,)]  # matrices, vectors, 0-d, an empty tensor


@pytest.mark.parametrize("method, exact", SUMS, ids=[m for m, _ in SUMS])
def test_sum_all_matches_float64_numpy(native, dtype, method, exact):
    arrays = [RNG.normal(size=s).astype(dtype) for s in SHAPES]
    tensors = [native.param(a, dtype, variable=False) for a in arrays]
    total = getattr(native.backend, method)(tensors)
    assert native.backend.dtype_name(total) == dtype and native.backend.shape(total) == ()
    assert_close(native.numpy(total), sum(exact(a) for a in arrays), dtype, steps=len(arrays))


@pytest.mark.parametrize("method, exact", SUMS, ids=[m for m, _ in SUMS])
def test_sum_all_of_0d_tensors_alone(native, dtype, method, exact):
    arrays = [np.array(v, dtype=dtype) for v in (1.5, -2.0, 0.25)]
    total = getattr(native.backend, method)([native.param(a, dtype) for a in arrays])
    assert_close(native.numpy(total), sum(exact(a) for a in arrays), dtype, steps=3)


@pytest.mark.parametrize("method, exact", SUMS, ids=[m for m, _ in SUMS])
def test_sum_all_promotes_mixed_dtypes(native, method, exact):
    # float32 and float64 tensors together give float64, as `+` of the per-tensor sums did.
    a32, a64 = RNG.normal(size=7).astype(np.float32), RNG.normal(size=(2, 3))
    total = getattr(native.backend, method)([native.param(a32, "float32"), native.param(a64, "float64")])
    assert native.backend.dtype_name(total) == "float64"
    assert_close(native.numpy(total), exact(a32) + exact(a64), "float32")  # a32's own sum is float32


@pytest.mark.parametrize("method", ["sum_squares_all", "sum_abs_all"])
def test_sum_all_of_no_tensors_is_refused(native, method):
    with pytest.raises(decay.DecayError, match="at least one tensor"):
        getattr(native.backend, method)([])


def test_sum_all_keeps_float32_precision_on_long_tensors():
    # torch._foreach_norm accumulates float32 plainly (2e-5 relative error at 1M
    # elements); the backend reduces pieces so that long tensors stay near a dot's error.
    torch = pytest.importorskip("torch")
    backend = decay.get_backend("torch")
    arrays = [RNG.normal(size=n).astype(np.float32) for n in (1_500_000, 70_000, 1)]
    tensors = [torch.from_numpy(a) for a in arrays]
    squares = sum(np.dot(a.astype(np.float64), a.astype(np.float64)) for a in arrays)
    assert abs(float(backend.sum_squares_all(tensors)) - squares) <= 1e-5 * squares
    absolute = sum(np.sum(np.abs(a), dtype=np.float64) for a in arrays)
    assert abs(float(backend.sum_abs_all(tensors)) - absolute) <= 1e-5 * absolute


@pytest.mark.parametrize("penalty, value, grad", PENALTIES, ids=IDS)
def test_penalty_autograd_through_the_reductions_torch(penalty, value, grad):
    # Tensors that require grad take the exact, differentiable path; others in the same
    # list are constants. Many tensors, 0-d ones included.
    torch = pytest.importorskip("torch")
    arrays = [RNG.normal(size=s) for s in [(3, 4), (), (6,)] * 3]
    tensors = [torch.tensor(a, requires_grad=i % 2 == 0) for i, a in enumerate(arrays)]
    total = penalty.penalty(tensors)
    assert_close(total.detach().numpy(), sum(value(a) for a in arrays), "float64")
    total.backward()
    for i, (a, t) in enumerate(zip(arrays, tensors)):
        if i % 2 == 0:
            assert_close(t.grad.numpy(), grad(a), "float64", what=f"grad {i}")
        else:
            assert t.grad is None
    with torch.no_grad():  # the foreach path gives the same value
        assert_close(penalty.penalty(tensors).numpy(), sum(value(a) for a in arrays), "float64")


def test_penalty_of_a_list_names_a_nested_entry():
    with pytest.raises(decay.DecayError, match="Flatten nested structures"):
        decay.L2(0.1).penalty([np.ones(2), [np.ones(2)]])
    with pytest.raises(decay.DecayError, match="entry '1'"):
        decay.L2(0.1).penalty([np.ones(2), "not a tensor"])
