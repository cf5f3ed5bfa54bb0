"""TensorFlow side of tests/distributed/test_distributed_tf.py, run in its own process.

``tf.config.set_logical_device_configuration`` must run before TensorFlow initializes
its devices, which any earlier test in the pytest process has done, so the tests start
this script with ``python tests/distributed/distributed_tf_worker.py OUT_DIR``. It
splits the one CPU into two logical devices, trains the same float64 model with and without
``tf.distribute.MirroredStrategy`` over them, and writes every run's final weights to
``OUT_DIR/weights.npz`` and a few facts about the runs to ``OUT_DIR/facts.json``. The
comparisons are made by the test, in the pytest process.

``python tests/distributed/distributed_tf_worker.py --worker INDEX PORT0,PORT1 OUT_DIR``
is one of two processes of a ``MultiWorkerMirroredStrategy`` cluster on 127.0.0.1 instead
(:func:`multiworker_main`).

Every run starts from the same weights (drawn here with NumPy) and sees the same
global batches in the same order; under the strategy each global batch of 16 is split
into two per-replica batches of 8.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

tf.config.experimental.enable_tensor_float_32_execution(False)

import keras  # noqa: E402

import decay  # noqa: E402
import decay.distributed  # noqa: E402

keras.config.set_floatx("float64")

SAMPLES, GLOBAL_BATCH, EPOCHS = 64, 16, 3
STEPS = EPOCHS * SAMPLES // GLOBAL_BATCH
DEVICES = ["/cpu:0", "/cpu:1"]
NAN_SAMPLE = 28
LAM = 0.01  # the L2 penalty of the custom loop and of the kernel regularizer in fit


def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(SAMPLES, 3))
    y = np.sin(x @ np.array([1.0, -2.0, 0.5]))[:, None] + 0.1 * rng.normal(size=(SAMPLES, 1))
    return x, y


def initial_weights():
    rng = np.random.default_rng(3)
    return [rng.normal(size=(3, 4)) * 0.5, rng.normal(size=4) * 0.1, rng.normal(size=(4, 1)) * 0.5, rng.normal(size=1) * 0.1]


def model(regularized=False):
    reg = decay.keras.Regularizer(decay.L2(LAM)) if regularized else None
    net = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden", kernel_regularizer=reg),
            keras.layers.Dense(1, name="out", kernel_regularizer=reg),
        ],
        name="net",
    )
    net.set_weights(initial_weights())
    return net


# The rules trained with model.fit: each exercises a different part of the step
# (schedules evaluated on the host each step, a name mask, momentum slots, groups,
# the on_nonfinite="skip" branch).
def fit_rules():
    cosine = decay.schedules.cosine(0.05, decay_steps=STEPS)
    return {
        "adamw_cosine_mask": decay.adamw(cosine, weight_decay=0.1, mask=decay.masks.exclude_names("bias")),
        "sgd_momentum_coupled": decay.sgd(0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
        "adam_groups_skip": decay.adam(
            0.02, weight_decay=0.01, groups=[{"params": decay.masks.exclude_names("kernel"), "weight_decay": 0.0}],
            on_nonfinite="skip",
        ),
    }


def local_batch_size(y_true, y_pred):
    """A "metric": the batch size one replica sees (Keras averages it over replicas)."""
    return tf.cast(tf.shape(y_true)[0], y_pred.dtype)


def count_host_calls(optimizer, counter, key):
    """Count how often the optimizer's host call (the rule's coefficients) runs."""
    inner = optimizer._host_step

    def counted(*args):
        counter[key] = counter.get(key, 0) + 1
        return inner(*args)

    optimizer._host_step = counted


def fit(rule, strategy, regularized, run_eagerly, facts, key, nan_sample=None):
    x, y = data()
    if nan_sample is not None:
        x[nan_sample, 0] = np.nan
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        net = model(regularized)
        optimizer = decay.keras.Optimizer(rule)
        net.compile(optimizer=optimizer, loss="mse", metrics=[local_batch_size], run_eagerly=run_eagerly)
    count_host_calls(optimizer, facts.setdefault("host_calls", {}), key)
    history = net.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    facts.setdefault("local_batch", {})[key] = history.history["local_batch_size"][-1]
    facts.setdefault("iterations", {})[key] = int(keras.ops.convert_to_numpy(optimizer.iterations))
    facts.setdefault("skipped", {})[key] = optimizer.skipped_steps
    if strategy is not None:
        # Every device's copy of every weight and slot: bit-identical after training?
        copies = [strategy.experimental_local_results(v.value) for v in net.weights + optimizer.variables]
        facts.setdefault("copies", {})[key] = [len(c) for c in copies]
        facts.setdefault("copies_identical", {})[key] = all(
            np.array_equal(np.asarray(c[0]), np.asarray(other)) for c in copies for other in c[1:]
        )
    return [np.asarray(w) for w in net.get_weights()]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def custom_loop(strategy, scaling, lam=LAM):
    """A hand-written loop in the tf.distribute guide's style: per-example losses summed
    and divided by the *global* batch size, plus an L2 penalty on the kernels, stepped
    with ``optimizer.apply_gradients`` (which sums the replicas' gradients).

    ``scaling``: "none" adds the penalty as is; "decay" divides it by the replica count
    with ``decay.distributed.scale_penalty``; "tf" with ``tf.nn.scale_regularization_loss``.
    """
    x, y = data()
    penalty = decay.L2(lam)
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        net = model()
        optimizer = decay.keras.Optimizer(decay.sgd(0.05, momentum=0.9))
        # Slots made here, under the scope, not on the first traced step (the
        # tf.distribute guide's order for custom loops).
        optimizer.build(net.trainable_variables)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_sum(tf.square(net(xb, training=True) - yb), axis=1)
            loss = tf.reduce_sum(per_example) / GLOBAL_BATCH
            reg = penalty.penalty([w for w in net.trainable_weights if "kernel" in w.path])
            if scaling == "decay":
                reg = decay.distributed.scale_penalty(reg)
            elif scaling == "tf":
                reg = tf.nn.scale_regularization_loss(reg)
            total = loss + reg
        grads = tape.gradient(total, net.trainable_weights)
        optimizer.apply_gradients(zip(grads, net.trainable_weights))

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat(EPOCHS)
    if strategy is not None:
        dataset = strategy.experimental_distribute_dataset(dataset)

        @tf.function
        def train_step(batch):
            strategy.run(replica_step, args=batch)
    else:
        train_step = tf.function(lambda batch: replica_step(*batch))
    for batch in dataset:
        train_step(batch)
    return [np.asarray(w) for w in net.get_weights()]


def main(out_dir):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored = tf.distribute.MirroredStrategy(DEVICES)
    assert mirrored.num_replicas_in_sync == 2
    weights, facts = {"initial": initial_weights()}, {}
    for name in fit_rules():
        weights[f"fit/{name}/single"] = fit(fit_rules()[name], None, False, False, facts, f"{name}/single")
        weights[f"fit/{name}/mirrored"] = fit(fit_rules()[name], mirrored, False, False, facts, f"{name}/mirrored")
    # A decay.keras.Regularizer in the loss (Keras scales model.losses per replica) and
    # the eager step (run_eagerly=True), each once.
    rule = lambda: fit_rules()["adamw_cosine_mask"]  # noqa: E731
    weights["fit/regularized/single"] = fit(rule(), None, True, False, facts, "regularized/single")
    weights["fit/regularized/mirrored"] = fit(rule(), mirrored, True, False, facts, "regularized/mirrored")
    weights["fit/eager/single"] = fit(rule(), None, False, True, facts, "eager/single")
    weights["fit/eager/mirrored"] = fit(rule(), mirrored, False, True, facts, "eager/mirrored")
    # A NaN in sample 28: the second global batch (16..31), in the half replica 1 gets
    # (24..31). The summed gradient is NaN, so every replica skips that step.
    skip = lambda: fit_rules()["adam_groups_skip"]  # noqa: E731
    weights["fit/nan/single"] = fit(skip(), None, False, False, facts, "nan/single", nan_sample=NAN_SAMPLE)
    weights["fit/nan/mirrored"] = fit(skip(), mirrored, False, False, facts, "nan/mirrored", nan_sample=NAN_SAMPLE)

    weights["loop/single"] = custom_loop(None, "none")
    weights["loop/single_double_lam"] = custom_loop(None, "none", lam=2 * LAM)
    weights["loop/mirrored_unscaled"] = custom_loop(mirrored, "none")
    weights["loop/mirrored_decay_scaled"] = custom_loop(mirrored, "decay")
    weights["loop/mirrored_tf_scaled"] = custom_loop(mirrored, "tf")

    # apply_gradients under the scope but outside strategy.run (cross-replica context):
    # the caller's gradients, all ones, reach every copy. Two SGD steps, lr 0.5,
    # momentum 0.5, as closed-form: each weight moves by -(0.5·1 + 0.5·1.5) = -1.25.
    with mirrored.scope():
        net = model()
        optimizer = decay.keras.Optimizer(decay.sgd(0.5, momentum=0.5))
        optimizer.build(net.trainable_variables)
        ones = [tf.ones_like(v) for v in net.trainable_variables]
        for _ in range(2):
            optimizer.apply_gradients(zip(ones, net.trainable_variables))
    moved = [np.asarray(w) - w0 for w, w0 in zip(net.get_weights(), initial_weights())]
    facts["cross_replica_moved"] = [float(x) for m in moved for x in np.ravel(m)]
    facts["cross_replica_copies_identical"] = all(
        np.array_equal(*map(np.asarray, mirrored.experimental_local_results(v.value))) for v in net.weights
    )

    # A strategy decay cannot serve is refused with a DecayError when the optimizer is built.
    central = tf.distribute.experimental.CentralStorageStrategy(DEVICES)
    try:
        with central.scope():
            net = model()
            decay.keras.Optimizer(decay.sgd(0.1)).build(net.trainable_variables)
        facts["central_storage_error"] = None
    except decay.DecayError as exc:
        facts["central_storage_error"] = str(exc)

    facts["steps"] = STEPS
    facts["replicas"] = mirrored.num_replicas_in_sync
    np.savez(os.path.join(out_dir, "weights.npz"), **{
        f"{key}/{i}": w for key, ws in weights.items() for i, w in enumerate(ws)
    })
    with open(os.path.join(out_dir, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)


def multiworker_main(index, ports, out_dir):
    """One of two workers of a ``MultiWorkerMirroredStrategy`` cluster on 127.0.0.1
    (one CPU replica each), configured by ``TF_CONFIG`` as on several machines. Runs
    the custom loop with and without ``scale_penalty``; writes ``worker{index}.npz``.
    (Keras 3.15's ``model.fit`` stops under this strategy before any optimizer runs:
    its ``_maybe_symbolic_build`` cannot reduce the first batch. Custom loops work.)"""
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == len(ports)
    weights = {"scaled": custom_loop(strategy, "decay"), "unscaled": custom_loop(strategy, "none")}
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), **{
        f"{key}/{i}": w for key, ws in weights.items() for i, w in enumerate(ws)
    })


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        multiworker_main(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], sys.argv[4])
    else:
        main(sys.argv[1])
