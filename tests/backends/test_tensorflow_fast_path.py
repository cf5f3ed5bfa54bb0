"""TensorFlow's fast path: one XLA-compiled step that assigns the parameters and the
state's slots (tf.Variables) in place, traced once per set of variables.

What it must keep: the generic path's numbers, the state's promises (a snapshot from
state_dict does not move, a loaded state resumes bit for bit, an error writes nothing),
and no retracing from one step to the next."""

import gc
import os
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
from decay.tolerances import assert_close  # noqa: E402

RNG = np.random.default_rng(8)
SHAPES = {"w": (4, 3), "b": (3,), "head": (3, 2)}
INIT = {n: RNG.normal(size=s) for n, s in SHAPES.items()}
GRADS = [{n: RNG.normal(size=s) for n, s in SHAPES.items()} for _ in range(6)]
STEPS = len(GRADS)

RULES = {
    "sgd-momentum-decoupled": lambda: decay.sgd(0.05, momentum=0.9, weight_decay=0.01, decoupled=True),
    # Groups: "b" has no momentum slot (None in the state), "head" its own lr.
    "sgd-groups-mask": lambda: decay.sgd(
        0.05, momentum=0.9, nesterov=True, weight_decay=0.01, mask={"b": False},
        groups=[{"params": ["b"], "momentum": 0.0, "nesterov": False}, {"params": ["head"], "lr": 0.02}],
    ),
    "adamw-amsgrad-scheduled": lambda: decay.adamw(
        decay.schedules.cosine(0.01, decay_steps=STEPS), weight_decay=0.1, amsgrad=True
    ),
}


def params(dtype="float32"):
    return {n: tf.Variable(v.astype(dtype)) for n, v in INIT.items()}


def grads(i, dtype="float32"):
    return {n: tf.constant(v.astype(dtype)) for n, v in GRADS[i].items()}


def numpy(tree):
    return {n: np.array(x.numpy()) for n, x in tree.items()}


def run(rule, steps=range(STEPS), p=None, state=None, dtype="float32"):
    p = params(dtype) if p is None else p
    state = rule.init(p) if state is None else state
    for i in steps:
        p, state = rule.step(p, grads(i, dtype), state)
    return p, state


def slot_tensors(state):
    return [x for per_leaf in state.slots.values() for x in per_leaf if x is not None]


class CountingCompute:
    """Counts calls of the rule's math (rule.direction): the fast path calls it only
    while tracing."""

    def __init__(self, rule):
        self.calls, self.inner = 0, rule.direction
        rule.direction = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(RULES))
def test_fast_path_matches_generic(name, dtype):
    generic = RULES[name]()
    generic.use_fast_path = False
    want, want_state = run(generic, dtype=dtype)
    got, got_state = run(RULES[name](), dtype=dtype)
    for n in SHAPES:
        assert_close(got[n].numpy(), want[n].numpy(), dtype, steps=STEPS, what=n)
    for slot, per_leaf in want_state.slots.items():
        for n, x, y in zip(SHAPES, got_state.slots[slot], per_leaf):
            assert (x is None) == (y is None)
            if x is not None:
                assert_close(x.numpy(), y.numpy(), dtype, steps=STEPS, what=f"{slot}[{n}]")


@pytest.mark.parametrize("name", list(RULES))
def test_slots_stay_the_same_variables_and_nothing_retraces(name):
    rule = RULES[name]()
    counter = CountingCompute(rule)
    p, state = run(rule, steps=[0])
    first = slot_tensors(state)
    assert first and all(isinstance(x, tf.Variable) for x in first)
    traced = counter.calls  # once per part (group and mask), on the first step only
    assert 1 <= traced <= 3
    p, state = run(rule, steps=range(1, STEPS), p=p, state=state)
    assert all(a is b for a, b in zip(slot_tensors(state), first))
    assert counter.calls == traced  # no retrace over the later steps (schedules included)
    assert state.count == STEPS


def test_one_rule_two_models_each_updated():
    # The compiled step captures its variables: another set of the same shapes must get
    # its own step, not write into the first set's variables.
    rule = RULES["sgd-momentum-decoupled"]()
    generic = RULES["sgd-momentum-decoupled"]()
    generic.use_fast_path = False
    a, b = params(), params()
    state_a, state_b = rule.init(a), rule.init(b)
    for i in range(STEPS):
        a, state_a = rule.step(a, grads(i), state_a)
        if i % 2 == 0:
            b, state_b = rule.step(b, grads(STEPS - 1 - i), state_b)
    want_a, _ = run(generic)
    want_b, _ = run(generic, steps=[STEPS - 1 - i for i in range(0, STEPS, 2)])
    for n in SHAPES:
        assert_close(a[n].numpy(), want_a[n].numpy(), "float32", steps=STEPS, what=f"a {n}")
        assert_close(b[n].numpy(), want_b[n].numpy(), "float32", steps=STEPS, what=f"b {n}")


@pytest.mark.parametrize("same_rule", [True, False], ids=["same-rule", "fresh-rule"])
@pytest.mark.parametrize("name", list(RULES))
def test_loaded_state_resumes_bit_identical(name, same_rule, tmp_path):
    rule = RULES[name]()
    p, state = run(rule, steps=range(3))
    path = str(tmp_path / "state.npz")
    decay.checkpoint.save(path, rule, state)
    saved = rule.state_dict(state)
    at_split = numpy(p)
    snapshot = {s: [None if x is None else x.copy() for x in per_leaf] for s, per_leaf in saved["slots"].items()}

    straight, straight_state = run(rule, steps=range(3, STEPS), p=p, state=state)
    # state_dict made copies: the fast steps since, in place, did not move them.
    for s, per_leaf in saved["slots"].items():
        for x, y in zip(per_leaf, snapshot[s]):
            assert (x is None and y is None) or np.array_equal(x, y)

    for loaded_from in ("state_dict", "checkpoint"):
        other = rule if same_rule else RULES[name]()
        resumed_params = {n: tf.Variable(v) for n, v in at_split.items()}
        if loaded_from == "state_dict":
            loaded = other.load_state_dict(saved, resumed_params)
        else:
            loaded = decay.checkpoint.load(path, other, resumed_params)
        kept = [x.numpy().copy() for x in slot_tensors(straight_state)]
        resumed, _ = run(other, steps=range(3, STEPS), p=resumed_params, state=loaded)
        for n in SHAPES:
            np.testing.assert_array_equal(resumed[n].numpy(), straight[n].numpy(), err_msg=f"{loaded_from} {n}")
        # The loaded state got variables of its own: the other run's state did not move.
        for x, y in zip(slot_tensors(straight_state), kept):
            np.testing.assert_array_equal(x.numpy(), y)


def test_bad_input_writes_nothing_after_fast_steps():
    rule = RULES["adamw-amsgrad-scheduled"]()
    p, state = run(rule, steps=range(2))
    before_p, before_slots = numpy(p), [x.numpy().copy() for x in slot_tensors(state)]
    bad = grads(2)
    bad["head"] = tf.constant(np.ones((2, 3), dtype=np.float32))  # wrong shape
    with pytest.raises(decay.DecayError, match="shape"):
        rule.step(p, bad, state)
    bad = grads(2)
    bad["b"] = tf.constant(np.ones(3, dtype=np.float64))  # wrong dtype
    with pytest.raises(decay.DecayError, match="float64"):
        rule.step(p, bad, state)
    for n in SHAPES:
        np.testing.assert_array_equal(p[n].numpy(), before_p[n])
    for x, y in zip(slot_tensors(state), before_slots):
        np.testing.assert_array_equal(x.numpy(), y)
    # and the state still works
    p, state = rule.step(p, grads(2), state)
    assert state.count == 3


def test_generic_steps_between_fast_steps():
    make = RULES["sgd-groups-mask"]
    generic = make()
    generic.use_fast_path = False
    want, _ = run(generic)
    rule = make()
    p, state = run(rule, steps=range(2))
    rule.use_fast_path = False
    p, state = run(rule, steps=range(2, 4), p=p, state=state)
    assert not any(isinstance(x, tf.Variable) for x in slot_tensors(state))  # new tensors
    rule.use_fast_path = True
    p, state = run(rule, steps=range(4, STEPS), p=p, state=state)
    assert all(isinstance(x, tf.Variable) for x in slot_tensors(state))
    for n in SHAPES:
        assert_close(p[n].numpy(), want[n].numpy(), "float32", steps=STEPS, what=n)


def test_compiled_steps_keep_no_variables_alive():
    rule = RULES["sgd-momentum-decoupled"]()
    p, state = run(rule, steps=range(2))
    refs = [weakref.ref(x) for x in list(p.values()) + slot_tensors(state)]
    del p, state
    # The rule moves on to another model (it remembers the last params and state it
    # checked, not the compiled steps): the first model and its state are freed.
    other, other_state = run(rule, steps=range(2))
    gc.collect()
    assert all(r() is None for r in refs)
    assert rule._xla_steps[0].alive() and not any(e.alive() for e in rule._xla_steps[1:])


def test_keras_variables():
    keras = pytest.importorskip("keras")
    rule = RULES["sgd-momentum-decoupled"]()
    generic = RULES["sgd-momentum-decoupled"]()
    generic.use_fast_path = False
    want, _ = run(generic)
    kv = {n: keras.Variable(v.astype("float32"), name=n) for n, v in INIT.items()}
    got, state = run(rule, p=kv)
    for n in SHAPES:
        assert_close(np.asarray(got[n].numpy()), want[n].numpy(), "float32", steps=STEPS, what=f"keras {n}")


def test_coefficients_made_again_only_when_the_math_reads_a_change():
    # SGD never reads the step count: with a constant lr the coefficient tensor of step 1
    # (damp changes after step 0) serves every later step. A schedule changes it each step.
    rule = RULES["sgd-momentum-decoupled"]()
    p, state = run(rule, steps=range(2))
    entry = rule._xla_steps[0]
    tensor = entry.coefficients
    run(rule, steps=range(2, STEPS), p=p, state=state)
    assert entry.coefficients is tensor
    rule = RULES["adamw-amsgrad-scheduled"]()
    p, state = run(rule, steps=range(2))
    tensor = rule._xla_steps[0].coefficients
    run(rule, steps=[2], p=p, state=state)
    assert rule._xla_steps[0].coefficients is not tensor


def test_rule_step_inside_a_users_tf_function():
    # In a graph the fast path steps aside (the generic math is traced into the user's
    # function), and a gradient with no device yet is not a device mismatch. Closed form
    # of plain SGD with coupled decay on loss Σx²: x ← x·(1 − lr·(2 + λ)).
    lr, lam, steps = 0.1, 0.01, 3
    v = [tf.Variable(np.full(3, 1.0)), tf.Variable(np.full((2, 2), 2.0))]
    rule = decay.sgd(lr, weight_decay=lam)

    @tf.function
    def train():
        state = rule.init(v)  # its count stays a Python int while the loop is traced
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_sum(x**2) for x in v])
            _, state = rule.step(v, tape.gradient(loss, v), state)
        return state.count

    assert int(train()) == steps
    factor = (1 - lr * (2 + lam)) ** steps
    assert_close(v[0].numpy(), np.full(3, 1.0) * factor, "float64", steps=steps)
    assert_close(v[1].numpy(), np.full((2, 2), 2.0) * factor, "float64", steps=steps)


@pytest.mark.parametrize("name", ["adafactor", "lamb"])
def test_large_tensors_norms_inside_the_compiled_step(name):
    """Tensors large enough that TensorFlow's norms and row means are matrix–vector
    products (with a remainder past the last row of 1,024): the compiled step against
    NumPy float64, the same rule."""
    make = {"adafactor": lambda: decay.adafactor(0.01, weight_decay=0.1),
            "lamb": lambda: decay.lamb(0.01, weight_decay=0.1)}[name]
    shapes = [(130, 200), (20_000,)]
    init = [RNG.normal(size=s) for s in shapes]
    steps = [[RNG.normal(size=s) for s in shapes] for _ in range(3)]
    rule, ref = make(), make()
    p, state = [tf.Variable(a) for a in init], None
    q = [a.copy() for a in init]
    state, ref_state = rule.init(p), ref.init(q)
    for g in steps:
        p, state = rule.step(p, [tf.constant(x) for x in g], state)
        q, ref_state = ref.step(q, g, ref_state)
    assert rule.__dict__.get("_xla_steps"), "the compiled path did not run"
    for got, want in zip(p, q):
        # sums of ~26k terms: √n ulp each (see test_ops), over 3 steps
        assert_close(got.numpy(), want, "float64", steps=64 * len(steps), what=name)
