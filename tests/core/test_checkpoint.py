"""Save mid-run, load in a new process, continue: bit-identical on the same backend."""

import os
import subprocess
import sys

import numpy as np
import pytest

import decay
from decay.tolerances import assert_close

from checkpoint_worker import RULES, THETA0, run

HERE = os.path.dirname(os.path.abspath(__file__))


def test_resume_in_a_new_process_is_bit_identical(backend, tmp_path):
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    straight = run(backend.name, str(tmp_path / "a"), 0, 30)
    run(backend.name, str(tmp_path / "b"), 0, 12)
    subprocess.run(
        [sys.executable, os.path.join(HERE, "checkpoint_worker.py"), backend.name, str(tmp_path / "b"), "12", "18"],
        check=True,
    )
    for name in RULES:
        with np.load(tmp_path / "b" / f"{name}-params.npz") as resumed:
            for k in ("w", "b"):
                np.testing.assert_array_equal(resumed[k], straight[name][k], err_msg=f"{name} {k}")


def test_state_saved_on_one_backend_loads_on_another(backend, tmp_path):
    run("numpy", str(tmp_path), 0, 12)
    resumed = run(backend.name, str(tmp_path), 12, 18)
    os.makedirs(tmp_path / "ref")
    straight = run("numpy", str(tmp_path / "ref"), 0, 30)
    for name in RULES:
        for k in ("w", "b"):
            assert_close(resumed[name][k], straight[name][k], "float64", steps=30, what=f"{name} {k}")


def _saved(tmp_path):
    rule = RULES["adam"]()
    params = {k: np.array(v) for k, v in THETA0.items()}
    state = rule.init(params)
    params, state = rule.step(params, {k: np.ones_like(v) for k, v in params.items()}, state)
    path = tmp_path / "state.npz"
    decay.checkpoint.save(path, rule, state)
    return rule, params, path


def test_truncated_corrupted_and_incompatible_checkpoints_are_refused(tmp_path):
    rule, params, path = _saved(tmp_path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    payload = data.index(b"\x93NUMPY") + 128 + 4  # inside the first array's values
    flipped[payload] ^= 0xFF
    (tmp_path / "corrupted.npz").write_bytes(bytes(flipped))
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint")
    for name in ("truncated.npz", "corrupted.npz", "garbage.npz", "missing.npz"):
        with pytest.raises(decay.DecayError, match="truncated|corrupted|No checkpoint|not a"):
            decay.checkpoint.load(tmp_path / name, rule, params)
    with pytest.raises(decay.DecayError, match="'adam'"):
        decay.checkpoint.load(path, decay.sgd(0.1, momentum=0.9), params)
    with pytest.raises(decay.DecayError, match="shape"):
        decay.checkpoint.load(path, rule, {"w": np.zeros((2, 2)), "b": np.zeros(3)})
    with pytest.raises(decay.DecayError, match="slots"):
        decay.checkpoint.load(path, decay.adam(amsgrad=False), params)


def test_a_failed_save_leaves_no_file(tmp_path):
    rule, params, _ = _saved(tmp_path)
    with pytest.raises(Exception):
        decay.checkpoint.save(tmp_path / "x.npz", rule, "not a state")
    assert sorted(os.listdir(tmp_path)) == ["state.npz"]
