"""decay.keras under tf.distribute.MirroredStrategy over 2 logical CPU devices.

The TensorFlow runs happen in one subprocess (tests/distributed/distributed_tf_worker.py), because
the two logical devices must be configured before TensorFlow initializes its devices.
Each run there is made twice from the same weights and batches: under the strategy
(every global batch of 16 split into 8 + 8) and on one device without a strategy —
the independent reference. The comparisons are made here.

Tolerance: :func:`decay.tolerances.rtol` for float64 over the 12 steps compared
(1.2e-11). Under the strategy each replica's loss is its 8 rows' mean divided by 2 and
the all-reduce adds the two replicas' gradients; one device takes the mean of 16 rows.
The same terms summed in a different order: round-off only (measured ≤ 5.2e-16).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import required_backends

try:
    import tensorflow as tf
except ImportError:  # pragma: no cover - depends on the environment
    if "tensorflow" in required_backends():
        raise
    pytest.skip("tensorflow not installed", allow_module_level=True)

import decay  # noqa: E402
import decay.distributed  # noqa: E402
from decay.tolerances import assert_close, relative_error  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIT_RUNS = ["adamw_cosine_mask", "sgd_momentum_coupled", "adam_groups_skip", "regularized", "eager", "nan"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the worker once: (weights by run, facts)."""
    out = tmp_path_factory.mktemp("tf_runs")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_tf_worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"the TensorFlow worker failed:\n{_traceback(done.stderr)}"
    weights = {}
    with np.load(out / "weights.npz") as arrays:
        for key in arrays.files:
            run, index = key.rsplit("/", 1)
            weights.setdefault(run, {})[int(index)] = arrays[key]
    weights = {run: [ws[i] for i in sorted(ws)] for run, ws in weights.items()}
    with open(out / "facts.json") as f:
        facts = json.load(f)
    return weights, facts


def _traceback(stderr: str) -> str:
    """The end of a worker's stderr without TensorFlow's log lines."""
    lines = [line for line in stderr.splitlines() if not line.startswith(("W0000", "I0000", "WARNING"))]
    return "\n".join(lines)[-6000:]


def _flat(ws):
    return np.concatenate([np.ravel(w) for w in ws])


@pytest.mark.parametrize("run", FIT_RUNS)
def test_fit_under_mirrored_strategy_equals_one_device(runs, run):
    weights, facts = runs
    assert facts["replicas"] == 2
    steps = facts["steps"]
    for i, (got, expected) in enumerate(zip(weights[f"fit/{run}/mirrored"], weights[f"fit/{run}/single"])):
        assert_close(got, expected, "float64", steps=steps, what=f"{run} weight {i}")
    # The global batch really was split: each replica saw 8 rows (one device: 16).
    assert facts["local_batch"][f"{run}/mirrored"] == 8.0
    assert facts["local_batch"][f"{run}/single"] == 16.0
    # Both devices hold every weight and slot, identical after the run.
    assert set(facts["copies"][f"{run}/mirrored"]) == {2}
    assert facts["copies_identical"][f"{run}/mirrored"] is True
    # The rule's coefficients were computed once per step, not once per replica.
    assert facts["host_calls"][f"{run}/mirrored"] == facts["host_calls"][f"{run}/single"] == steps
    # It trained: the weights moved far from where they started.
    assert relative_error(_flat(weights[f"fit/{run}/mirrored"]), _flat(weights["initial"])) > 1e-2


def test_nonfinite_gradient_on_one_replica_skips_the_step_on_all(runs):
    """Sample 28 is NaN and lands on replica 1: the summed gradient is NaN, so both
    replicas skip, as one device does (once per epoch)."""
    weights, facts = runs
    assert facts["skipped"]["nan/mirrored"] == facts["skipped"]["nan/single"] == 3
    assert facts["iterations"]["nan/mirrored"] == facts["iterations"]["nan/single"] == facts["steps"] - 3
    assert np.all(np.isfinite(_flat(weights["fit/nan/mirrored"])))


def test_unscaled_penalty_in_a_custom_loop_is_counted_once_per_replica(runs):
    """Why scale_penalty exists: apply_gradients sums the replicas' gradients, so an L2
    penalty every replica adds in full acts as 2 × lam — the weights match one device
    trained with the penalty doubled, and not one device with the penalty as written."""
    weights, facts = runs
    steps = facts["steps"]
    unscaled = _flat(weights["loop/mirrored_unscaled"])
    assert relative_error(unscaled, _flat(weights["loop/single"])) > 1e-3  # far outside any round-off
    assert_close(unscaled, _flat(weights["loop/single_double_lam"]), "float64", steps=steps, what="unscaled vs 2·lam")


def test_scale_penalty_makes_a_custom_loop_equal_one_device(runs):
    weights, facts = runs
    steps = facts["steps"]
    expected = weights["loop/single"]
    for run in ("loop/mirrored_decay_scaled", "loop/mirrored_tf_scaled"):
        for i, (got, want) in enumerate(zip(weights[run], expected)):
            assert_close(got, want, "float64", steps=steps, what=f"{run} weight {i}")
    # decay's helper and TensorFlow's do the same thing.
    np.testing.assert_array_equal(_flat(weights["loop/mirrored_decay_scaled"]), _flat(weights["loop/mirrored_tf_scaled"]))


def _free_ports(count):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_custom_loop_equals_one_device(runs, tmp_path):
    """Two worker processes of a MultiWorkerMirroredStrategy cluster, configured by
    TF_CONFIG with addresses on 127.0.0.1 (as on two machines): the scaled custom loop
    equals one device; the unscaled one counts the penalty twice, as in one process."""
    weights, facts = runs
    ports = ",".join(map(str, _free_ports(2)))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    script = os.path.join(HERE, "distributed_tf_worker.py")
    workers = [
        subprocess.Popen([sys.executable, script, "--worker", str(i), ports, str(tmp_path)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    try:
        errors = [w.communicate(timeout=240)[1] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for i, w in enumerate(workers):
        assert w.returncode == 0, f"worker {i} failed:\n{_traceback(errors[i])}"
    steps = facts["steps"]
    for i in range(2):
        with np.load(tmp_path / f"worker{i}.npz") as got:
            scaled = [got[f"scaled/{k}"] for k in range(4)]
            unscaled = [got[f"unscaled/{k}"] for k in range(4)]
        for k, (a, b) in enumerate(zip(scaled, weights["loop/single"])):
            assert_close(a, b, "float64", steps=steps, what=f"worker {i} scaled weight {k}")
        assert_close(_flat(unscaled), _flat(weights["loop/single_double_lam"]), "float64", steps=steps,
                     what=f"worker {i} unscaled vs 2·lam")


def test_apply_gradients_in_cross_replica_context(runs):
    """Under strategy.scope() but outside strategy.run the caller's gradients go to
    every copy (Keras 3.15's own optimizers fail there: no replica context to merge)."""
    _, facts = runs
    # -1.25 up to the rounding of (w − w₀) for weights of magnitude below 2.
    np.testing.assert_allclose(facts["cross_replica_moved"], -1.25, rtol=0, atol=1e-15)
    assert facts["cross_replica_copies_identical"] is True


def test_unsupported_strategy_is_refused(runs):
    _, facts = runs
    message = facts["central_storage_error"]
    assert message is not None and "CentralStorageStrategy" in message and "MirroredStrategy" in message


def test_scale_penalty_outside_a_strategy_and_its_errors():
    value = tf.constant(3.0, tf.float64)
    assert float(decay.distributed.scale_penalty(value)) == 3.0  # one replica
    assert float(decay.distributed.scale_penalty(value, num_replicas=2)) == 1.5
    assert float(decay.distributed.scale_penalty([value, value])) == 6.0  # a list is summed first
    assert float(decay.distributed.scale_penalty(value)) == float(tf.nn.scale_regularization_loss(value))
    with pytest.raises(decay.DecayError, match="num_replicas"):
        decay.distributed.scale_penalty(np.float64(3.0))
    with pytest.raises(decay.DecayError, match="empty"):
        decay.distributed.scale_penalty([])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        with pytest.raises(decay.DecayError, match="cross-replica"):
            decay.distributed.scale_penalty(value)
    got = strategy.run(lambda: decay.distributed.scale_penalty(value))
    assert float(got) == 3.0


def test_sharded_penalty_refuses_tensorflow_variables():
    with pytest.raises(decay.DecayError, match="every replica holds every variable"):
        decay.distributed.sharded_penalty(decay.L2(0.1), [tf.Variable([1.0, 2.0])])
