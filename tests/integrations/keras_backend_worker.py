"""Run under KERAS_BACKEND=jax or torch (the Keras backend is fixed at import): decay's
Keras regularizer in compile/fit gives Keras's own L2's weights; decay.keras.Optimizer
refuses the backend with a DecayError naming it (it runs on Keras's TensorFlow backend)."""

import numpy as np

import keras

import decay

backend = keras.backend.backend()
rng = np.random.default_rng(0)
X = rng.normal(size=(16, 4)).astype("float32")
y = rng.normal(size=(16, 2)).astype("float32")
w0 = [rng.normal(size=(4, 2)).astype("float32"), np.zeros(2, "float32")]


def train(regularizer):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_regularizer=regularizer)])
    model.set_weights(w0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(X, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model, [np.asarray(w) for w in model.get_weights()]


# 0.03125 is exact in float32, the dtype Keras's L2 casts its coefficient to.
model, ours = train(decay.keras.Regularizer(decay.L2(0.03125)))
_, theirs = train(keras.regularizers.L2(0.03125))
for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=0, atol=4 * 4 * 1.2e-7 * max(1.0, np.max(np.abs(b))))
penalty = float(np.asarray(model.losses[0]))
assert abs(penalty - 0.03125 * np.sum(ours[0].astype(np.float64) ** 2)) <= 1e-6 * penalty, penalty
try:
    decay.keras.Optimizer(decay.sgd(0.1))
    raise SystemExit("decay.keras.Optimizer should refuse this backend")
except decay.DecayError as exc:
    assert repr(backend) in str(exc), exc
print("ok", backend)
