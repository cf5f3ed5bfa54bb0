"""Run under KERAS_BACKEND=jax or torch (the Keras backend is fixed at import), in
compile/fit: decay's Keras regularizer gives Keras's own L2's weights, and
decay.keras.Optimizer(decay.sgd(..., decoupled=True, mask=...)) Keras's SGD with the same
weight_decay and excluded variables (the same update up to float32 rounding)."""

import numpy as np

import keras

import decay

backend = keras.backend.backend()
rng = np.random.default_rng(0)
X = rng.normal(size=(16, 4)).astype("float32")
y = rng.normal(size=(16, 2)).astype("float32")
w0 = [rng.normal(size=(4, 2)).astype("float32"), np.zeros(2, "float32")]


def train(regularizer=None, optimizer=None):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_regularizer=regularizer)])
    model.set_weights(w0)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(X, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 4 steps
    return model, [np.asarray(w) for w in model.get_weights()]


def close(ours, theirs, steps=4):
    for a, b in zip(ours, theirs):  # float32: 4 ulp per step, norm-wise relative
        assert np.max(np.abs(a - b)) <= steps * 4.8e-7 * max(1e-3, np.max(np.abs(b))), (a, b)


# 0.03125 is exact in float32, the dtype Keras's L2 casts its coefficient to.
model, ours = train(regularizer=decay.keras.Regularizer(decay.L2(0.03125)))
_, theirs = train(regularizer=keras.regularizers.L2(0.03125))
close(ours, theirs)
penalty = float(keras.ops.convert_to_numpy(model.losses[0]))
assert abs(penalty - 0.03125 * np.sum(ours[0].astype(np.float64) ** 2)) <= 1e-6 * penalty, penalty

rule = decay.sgd(0.1, momentum=0.9, weight_decay=0.01, decoupled=True, mask=decay.masks.exclude_names("bias"))
optimizer = decay.keras.Optimizer(rule)
_, ours = train(optimizer=optimizer)
keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01)
keras_sgd.exclude_from_weight_decay(var_names=["bias"])
_, theirs = train(optimizer=keras_sgd)
_, undecayed = train(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
close(ours, theirs)
assert np.max(np.abs(ours[0] - undecayed[0])) > 1e-5  # the decay acted
assert int(np.asarray(optimizer.iterations.value)) == 4
print("ok", backend)
