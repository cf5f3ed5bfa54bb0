"""decay inside Keras 3: ``decay.keras.Optimizer(rule)`` and ``decay.keras.Regularizer(penalty)``.

Both work with ``model.compile``/``model.fit``, custom ``tf.GradientTape`` loops, and
``model.save``/``keras.models.load_model`` (registered as ``decay>Optimizer`` and
``decay>Regularizer``). They run on Keras's TensorFlow backend and, in ``compile``/``fit``,
on its JAX and torch backends (``decay/integrations/_keras_functional.py``; there
``on_nonfinite`` must be "apply"). TensorFlow must be installed in every case.

The optimizer does no math of its own: each step runs :mod:`decay.engine`, as
``Rule.step`` does — the rule's numbers for the step (:meth:`decay.rules.Rule.coefficients`,
plain Python in float64), then the rule's one definition on the slot variables.

How the step reaches the rule. The step is Keras's ``optimizer.iterations``. Eagerly
(``run_eagerly=True``, an eager custom loop) the engine is called with it directly.
In a ``tf.function`` (``model.fit``) the step is a tensor, so one
``tf.numpy_function`` per step reads it, runs ``coefficients`` on the host and returns the
step-dependent coefficients (schedule values, bias corrections, ``1 − lr·λ``, ...) as
one float64 vector; each is cast to the dtype the update is computed in. Numbers that
do not depend on the step (momentum, betas, eps) stay Python constants. Eager and
traced steps run the same operations on the same numbers (bit-identical with
Grappler's graph rewrites off; with them Adam can differ in the last bit).

XLA. A host call cannot be XLA-compiled. Keras's ``jit_compile="auto"`` (the default)
turns XLA off on CPU-only machines, so ``model.fit`` works as is there; on a GPU
"auto" turns it on, and tracing then stops with a :class:`decay.DecayError` that says
to compile with ``jit_compile=False``. (Keras decides "auto" from the model's layers
alone; an optimizer has no way to opt out.)

Learning rate. It comes from the rule: ``optimizer.learning_rate`` reports the rule's
current lr (of its default group) as a float64 scalar, for logging and callbacks.
Setting it raises a :class:`decay.DecayError` — put a schedule in the rule instead
(``decay.sgd(lr=decay.schedules.cosine(...))``). So
``keras.callbacks.LearningRateScheduler`` and ``ReduceLROnPlateau``, which set it,
raise that error; a ``keras.optimizers.schedules`` object is not accepted either.

Non-finite gradients (the rule's ``on_nonfinite``).
``"skip"``: variables and slots are left untouched and ``optimizer.iterations`` does not
advance, so, like the rule's ``RuleState.count``, it counts *applied* updates and
schedules see the same steps as :meth:`decay.rules.Rule.step`; the skipped step is
counted in :attr:`Optimizer.skipped_steps` (an optimizer variable, saved with the
model). ``"raise"``: eagerly, a :class:`decay.DecayError`; inside a ``tf.function``
(``model.fit`` without ``run_eagerly``) TensorFlow turns every exception raised in a
host call into ``tf.errors.InvalidArgumentError``, whose message carries the
DecayError's (docs/guarantees.md says why no DecayError can reach the user from a
compiled ``fit``). Either way nothing is updated and ``iterations`` does not advance.

Masks and groups match the Keras variable's ``path`` (``"dense/kernel"``,
``"dense_1/bias"``), so ``decay.masks.exclude_names("bias")`` behaves as Keras's
``optimizer.exclude_from_weight_decay(var_names=["bias"])`` (which matches the shorter
variable name) and ``decay.masks.timm_default`` works unchanged. A path depends on
where its layer was built: a ``Sequential`` given ``keras.Input`` builds its layers in
its own name scope (``"net/hidden/kernel"``), the same model rebuilt by
``keras.models.load_model`` does not (``"hidden/kernel"``). A mask or group that must
survive saving should match substrings (``exclude_names``, ``timm_default``), not
whole paths.

With ``gradient_accumulation_steps`` the rule's step is the number of updates applied
(Keras's ``iterations``), not the number of batches that Keras's own schedules see.

Slots are optimizer variables named ``<path>_<slot>`` after the rule's slot names
(``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), float32 for
float16/bfloat16 variables. Keras's own ``weight_decay`` is always off (decay is the
rule's); clipping, ``use_ema``, ``loss_scale_factor`` and
``gradient_accumulation_steps`` are Keras's and work as in any Keras optimizer.

``tf.distribute``. Under ``tf.distribute.MirroredStrategy`` (and
``MultiWorkerMirroredStrategy``, ``OneDeviceStrategy``) build the model and compile
under ``strategy.scope()`` as usual; slots are mirrored like the weights. Each step
follows Keras's own optimizers: the replicas' gradients are summed (all-reduce), then
one merge call leaves the replica threads, the host call evaluates the rule's
coefficients there *once* for the step, and every device updates its copy of each
variable with the engine (``strategy.extended.update``). A
non-finite gradient on any replica makes the summed gradient non-finite, so all
replicas skip (or raise) together. ``model.fit`` gives the same weights as one device
up to the order of the sums (measured ≤ 6e-16 relative in float64 over 2 logical CPUs,
tests/distributed/test_distributed_tf.py). Keras scales the loss and ``model.losses`` (so a
:class:`Regularizer`) by the replica count in ``model.fit``; a custom loop must scale a
penalty itself: :func:`decay.distributed.scale_penalty`. Call
``optimizer.build(model.trainable_variables)`` under the scope before the first step
of a custom loop. ``apply_gradients`` under the scope but outside ``strategy.run``
applies the caller's gradients to every copy. Keras's ``gradient_accumulation_steps`` fails under a strategy (its
``cond`` holds a merge call), for Keras's optimizers as for this one; parameter-server,
central-storage and TPU strategies are refused.

Example::

    model.compile(
        optimizer=decay.keras.Optimizer(
            decay.adamw(decay.schedules.cosine(1e-3, decay_steps=10_000), weight_decay=0.05,
                        mask=decay.masks.exclude_names("bias"))),
        loss="mse")
    model.fit(x, y)
    # Keras's AdamW(weight_decay=0.004) itself: decay.adamw(lr, weight_decay=0.004,
    #                                                       eps=1e-7, epsilon_hat=True)
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DecayError

try:
    import keras
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise DecayError(
        f"decay.keras needs Keras 3 and TensorFlow: pip install 'decay[tensorflow]'. ({exc})"
    ) from exc

from .. import engine
from ..backends import get_backend
from ..engine import LOW_PRECISION
from ..rules import Rule
from ..rules import from_config as rule_from_config
from ..rules._reference import checked_arrays, reference_slots
from . import _keras_functional as _functional

#: The config entry that stands for a rule that could not be saved (see get_config).
_UNSAVED = "unsaved_rule"
#: Keras's optimizer arguments that decay.keras.Optimizer passes through and saves.
_KERAS_ARGS = (
    "clipnorm", "global_clipnorm", "clipvalue", "use_ema", "ema_momentum",
    "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps",
)


def _require_tensorflow_backend(what: str):
    if keras.backend.backend() != "tensorflow":
        raise DecayError(
            f"{what} needs Keras's TensorFlow backend, but Keras runs on "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras."
        )


def _check_strategy():
    """Strategies whose replicas each hold every variable and sum the gradients are
    supported; others (parameter servers, central storage, TPUs) are refused."""
    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    supported = (
        tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.OneDeviceStrategy
    )
    if not isinstance(strategy, supported):
        raise DecayError(
            "decay.keras.Optimizer supports tf.distribute.MirroredStrategy, "
            "MultiWorkerMirroredStrategy and OneDeviceStrategy; it was built under a "
            f"{type(strategy).__module__}.{type(strategy).__qualname__}. Use one of those, or "
            "train without a strategy."
        )


def _describe(value) -> str:
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__}: {value!r}"


def _path(variable) -> str:
    """The name masks and groups see: the Keras variable's path ("dense/kernel")."""
    return getattr(variable, "path", None) or variable.name


def _native(variable):
    """The tf.Variable behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _in_xla_context() -> bool:
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - TensorFlow moved it; XLA then fails by itself
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


@keras.saving.register_keras_serializable(package="decay")
class Optimizer(keras.optimizers.Optimizer):
    """A decay update rule as a Keras optimizer.

    ``rule`` is any :class:`decay.rules.Rule` (``decay.sgd``, ``decay.adam``,
    ``decay.adamw``) and supplies the learning rate, the weight decay, the mask and
    groups, and the update. ``keras_kwargs`` are Keras's own optimizer arguments
    (``clipnorm``, ``use_ema``, ``gradient_accumulation_steps``, ...), except
    ``learning_rate`` and ``weight_decay``, which belong to the rule.

    See the module docstring for how the step reaches the rule, XLA, the learning rate
    and non-finite gradients.
    """

    def __init__(self, rule, name=None, **keras_kwargs):
        if keras.backend.backend() not in _functional.SUPPORTED:
            _require_tensorflow_backend("decay.keras.Optimizer")
        if not isinstance(rule, Rule):
            raise DecayError(
                "`rule` must be a decay update rule such as decay.sgd(...), decay.adam(...) or "
                f"decay.adamw(...). Received {_describe(rule)}."
            )
        for key in ("learning_rate", "weight_decay"):
            if keras_kwargs.pop(key, None) is not None:
                raise DecayError(
                    f"decay.keras.Optimizer takes `{key}` from the rule; do not pass it. "
                    f"Set it in the rule instead, e.g. decay.adamw(lr=1e-3, weight_decay=0.05)."
                )
        if rule.on_nonfinite == "skip" and keras_kwargs.get("gradient_accumulation_steps"):
            raise DecayError(
                "on_nonfinite='skip' cannot be combined with gradient_accumulation_steps: a "
                "skipped step would shift Keras's accumulation cycle. Use on_nonfinite='raise' "
                "or 'apply', or accumulate gradients yourself."
            )
        # Keras's weight decay stays off; the learning rate is read from the rule.
        super().__init__(learning_rate=self._current_lr, weight_decay=None, name=name, **keras_kwargs)
        self._rule = rule
        self._tf_backend = get_backend("tensorflow")
        self._keras_backend = keras.backend.backend()
        if self._keras_backend != "tensorflow":  # JAX, torch: decay/integrations/_keras_functional.py
            _functional.check(rule, self._keras_backend)

    @property
    def rule(self) -> Rule:
        return self._rule

    # -- learning rate ------------------------------------------------------------------
    def _current_lr(self):
        """The rule's lr for its default group at the current step, float64."""
        if getattr(self, "_keras_backend", "tensorflow") != "tensorflow":
            return _functional.current_lr(self)
        rule = self._rule

        def lr_at(t):
            return np.float64(rule.coefficients(rule.defaults, int(t)).lr)

        if tf.executing_eagerly():
            return tf.constant(lr_at(self._eager_step()), tf.float64)
        # Stateless, so that it is pruned where nobody reads it (Keras computes it every step).
        lr = tf.numpy_function(lr_at, [self.iterations], tf.float64, stateful=False)
        lr.set_shape([])
        return lr

    def _eager_step(self) -> int:
        # Through a tensor: under a strategy's scope, in cross-replica context, the
        # variable is mirrored and reads as its first copy.
        return int(tf.convert_to_tensor(self.iterations).numpy())

    @property
    def learning_rate(self):
        return self._current_lr()

    @learning_rate.setter
    def learning_rate(self, value):
        raise DecayError(
            f"decay.keras.Optimizer takes its learning rate from the rule ({self._rule!r}); it "
            f"cannot be set (received {value!r}). Give the rule a schedule instead, e.g. "
            "decay.sgd(lr=decay.schedules.exponential(0.1, decay_rate=0.5, decay_steps=1000)). "
            "keras.callbacks.LearningRateScheduler and ReduceLROnPlateau set it and so do not "
            "work with this optimizer."
        )

    # -- state ----------------------------------------------------------------------------
    def build(self, variables):
        if self.built:
            return
        _check_strategy()
        rule = self._rule
        if rule.decay_toward is not None:  # a reference that does not fit: refused before anything is made
            checked_arrays(rule.decay_toward, [_path(v) for v in variables], [tuple(v.shape) for v in variables])
        super().build(variables)
        self._names = tuple(_path(v) for v in variables)
        self._group_of, self._decayed = rule.resolve(self._names, list(variables))
        self._dtypes = tuple(keras.backend.standardize_dtype(v.dtype) for v in variables)
        hypers = rule.hyper_sets()
        slots = []
        for variable, group, dtype in zip(variables, self._group_of, self._dtypes):
            per_variable = {}
            starts = rule.slot_initial_values(hypers[group])
            for slot, shape in rule.state_slot_shapes(hypers[group], tuple(variable.shape)).items():
                if dtype in LOW_PRECISION or shape != tuple(variable.shape):
                    per_variable[slot] = self.add_variable(  # low precision: state kept in float32
                        shape=shape, dtype="float32" if dtype in LOW_PRECISION else dtype,
                        name=f"{_path(variable).replace('/', '_')}_{slot}",
                    )
                else:
                    per_variable[slot] = self.add_variable_from_reference(variable, name=slot)
                if starts.get(slot, 0.0):
                    # Assigned, not keras.initializers.Constant: that casts the value to
                    # float32 first (0.1 would start a float64 slot at 0.10000000149).
                    slot_var = per_variable[slot]
                    slot_var.assign(np.full(tuple(slot_var.shape), float(starts[slot]), slot_var.dtype))
            slots.append(per_variable)
        self._slots = slots
        if rule.decay_toward is not None:
            # Once, eagerly, even when built inside model.fit's traced step: in the
            # graph the assignment would run (and reset θ₀) at every step.
            with tf.init_scope():
                self._set_references(variables)
        self._skipped = None
        if rule.on_nonfinite == "skip":
            self._skipped = self.add_variable(
                shape=(), dtype="int64", aggregation="only_first_replica", name="skipped_steps"
            )
        # The records of step 0: inside a graph the per-step numbers are put into them
        # (their bool fields are fixed per group).
        self._templates = engine.coefficients(rule, hypers, 0)

    def _set_references(self, variables):
        """θ₀ of ``decay_toward`` into its slot: "init" is the variables' values now
        (at build); tensors are matched by variable path or by position."""
        slot = engine.REFERENCE_SLOT
        likes = [tf.convert_to_tensor(_native(s[slot])) for s in self._slots]
        values = reference_slots(self._rule.decay_toward, self._tf_backend, self._names,
                                 [tf.convert_to_tensor(_native(v)) for v in variables], likes)
        for per_variable, value in zip(self._slots, values):
            per_variable[slot].assign(value)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for non-finite gradients (``on_nonfinite="skip"``)."""
        if getattr(self, "_skipped", None) is None:
            return 0
        return int(keras.ops.convert_to_numpy(self._skipped))

    # -- the step -------------------------------------------------------------------------
    def _host_step(self, names, t, finite):
        """On the host: whether step ``t`` is skipped, and the rule's numbers for it (one
        Hyper record per group). ``finite`` holds one flag per gradient, or is None when
        the rule applies every step."""
        rule = self._rule
        t = int(t)
        hypers = engine.coefficients(rule, rule.hyper_sets(), t)
        skip = False
        if finite is not None:
            # The engine's policy decides (and words the error); each gradient stands
            # in as one number, non-finite exactly where the gradient is.
            stand_ins = [np.float64(0.0 if ok else np.nan) for ok in np.asarray(finite)]
            skip = engine.skips_nonfinite(rule.on_nonfinite, get_backend("numpy"), names, stand_ins, t)
        return skip, hypers

    def _finite_flags(self, grads):
        """One flag per gradient (is it all finite?), or None when the rule applies every step."""
        if self._rule.on_nonfinite == "apply":
            return None
        return tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

    def _coefficients(self, names, finite):
        """(skip, one Hyper per group): Python numbers eagerly, float64 tensors when
        traced. ``finite`` is :meth:`_finite_flags`'s result."""
        if tf.executing_eagerly():
            return self._host_step(names, self._eager_step(), None if finite is None else finite.numpy())
        if _in_xla_context():
            raise DecayError(
                "decay.keras.Optimizer evaluates the rule's schedules in Python each step, "
                "which XLA cannot compile. Compile the model with jit_compile=False "
                "(model.compile(..., jit_compile=False)); Keras's default 'auto' enables XLA "
                "on GPUs."
            )
        size = len(engine.flatten_hypers(self._templates)[1])

        def host(t, finite_flags):
            skip, hypers = self._host_step(names, t, None if finite is None else finite_flags)
            return np.bool_(skip), np.asarray(engine.flatten_hypers(hypers)[1], dtype=np.float64).reshape(size)

        # Stateful, so that it runs before every later write in the step (including
        # Keras's iterations += 1) and an error in it stops them all.
        skip, packed = tf.numpy_function(
            host,
            [self.iterations, tf.zeros([0], tf.bool) if finite is None else finite],
            [tf.bool, tf.float64],
            stateful=True,
        )
        skip.set_shape([])
        packed.set_shape([size])
        return skip, engine.rebuild_hypers(self._templates, [packed[i] for i in range(size)])

    def _run(self, hypers, indices, variables, grads):
        """The engine's update of ``variables`` (written by it) and their slots."""
        parts, _ = engine.partition(
            self._rule, self._rule.hyper_sets(), [self._group_of[i] for i in indices],
            [self._decayed[i] for i in indices], [self._dtypes[i] for i in indices],
            shapes=[tuple(v.shape) for v in variables],
        )
        names = sorted({n for i in indices for n in self._slots[i]})
        columns = {n: [tf.convert_to_tensor(_native(self._slots[i][n])) if n in self._slots[i] else None
                       for i in indices] for n in names}
        _, columns = engine.run(self._rule, self._tf_backend, parts, hypers, variables, grads, columns, fast=False)
        for n, column in columns.items():
            for i, value in zip(indices, column):
                if value is not None:
                    self.assign(self._slots[i][n], value)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # `learning_rate` (Keras's) is not used: the rule computes its own coefficients.
        if self._keras_backend != "tensorflow":
            _functional.update_step(self, grads, trainable_variables)
            return
        indices = [self._get_variable_index(v) for v in trainable_variables]
        names = [self._names[i] for i in indices]
        grads = [
            tf.cast(tf.convert_to_tensor(g), v.dtype) for g, v in zip(grads, trainable_variables)
        ]
        if tf.distribute.has_strategy():
            self._distributed_update_step(grads, trainable_variables, indices, names)
            return
        skip, hypers = self._coefficients(names, self._finite_flags(grads))

        def update():
            self._run(hypers, indices, list(trainable_variables), grads)

        eager = tf.executing_eagerly()
        _unless_skipped(update, skip, eager, self._rule.on_nonfinite)
        self._count_skip(skip, eager)

    def _count_skip(self, skip, eager):
        if self._rule.on_nonfinite == "skip" or not eager:
            # Keras's apply() adds 1 to iterations after this; a skipped step takes it
            # back, so iterations counts applied updates as RuleState.count does. In a
            # graph this write, which needs the host call's result, also orders Keras's
            # increment after that call: an error there leaves iterations as it was.
            self._iterations.assign_sub(tf.cast(skip, self._iterations.dtype))
        if self._skipped is not None:
            self._skipped.assign_add(tf.cast(skip, "int64"))

    # -- the step under a tf.distribute strategy --------------------------------------------
    def _distributed_update_step(self, grads, trainable_variables, indices, names):
        """The step inside a strategy (``model.fit`` or ``strategy.run`` under
        ``strategy.scope()``), in Keras's own pattern (its TFOptimizer): the replicas'
        gradients are summed (all-reduce), then one merge call leaves the replica
        threads; there the host call runs *once* per step and each mirrored variable is
        updated on every device by the engine (``extended.update``)."""
        strategy = tf.distribute.get_strategy()
        if tf.distribute.in_cross_replica_context():
            # apply_gradients called under strategy.scope() but outside strategy.run:
            # the gradients are the caller's, nothing to reduce.
            self._merged_update(strategy, grads, self._finite_flags(grads), trainable_variables, indices, names)
            return
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # The flags of the summed gradients: the same on every replica.
        finite = self._finite_flags(grads)
        # Variables, indices and names stay in the closure (the same on every replica);
        # tensors go through the merge call, which groups them per replica.
        @tf.autograph.experimental.do_not_convert
        def merged(distribution, grads, finite):
            self._merged_update(distribution, grads, finite, trainable_variables, indices, names)

        tf.__internal__.distribute.interim.maybe_merge_call(merged, strategy, grads, finite)

    def _merged_update(self, strategy, grads, finite, trainable_variables, indices, names):
        rule = self._rule
        if finite is not None:
            finite = strategy.experimental_local_results(finite)[0]
        skip, hypers = self._coefficients(names, finite)
        eager = tf.executing_eagerly()

        # Not autograph-converted (merge_call and extended.update convert what they run
        # when AutoGraph is on): the step has no Python branches on tensors — the skip is
        # an explicit tf.cond — and is traced exactly as without a strategy.
        @tf.autograph.experimental.do_not_convert
        def update_on_device(variable, grad, i):
            # `variable` is this device's copy; reading a slot here reads this device's
            # copy too (the update context names the device).
            _unless_skipped(lambda: self._run(hypers, [i], [variable], [grad]), skip, eager, rule.on_nonfinite)

        for v, g, i in zip(trainable_variables, grads, indices):
            strategy.extended.update(_native(v), update_on_device, args=(g, i), group=False)
        self._count_skip(skip, eager)

    # -- saving -----------------------------------------------------------------------------
    def get_config(self):
        # model.save truncates the file before asking for this: raising would destroy the
        # previous file. An unsaveable rule (a plain-callable schedule) is recorded as such.
        try:
            rule_config = self._rule.get_config()
        except DecayError as exc:
            warnings.warn(f"decay.keras.Optimizer: the rule cannot be saved ({exc}) The weights are saved; "
                          "load with keras.models.load_model(path, compile=False) and compile again.", stacklevel=2)
            rule_config = {_UNSAVED: str(exc)}
        config = {"name": self.name, "rule": rule_config}
        config.update({key: getattr(self, key) for key in _KERAS_ARGS})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "rule" not in config:
            raise DecayError(
                f"A decay.keras.Optimizer config needs a 'rule' entry. Received keys: {sorted(config)}."
            )
        rule = config.pop("rule")
        if isinstance(rule, dict) and _UNSAVED in rule:
            raise DecayError(f"This decay.keras.Optimizer's rule could not be saved: {rule[_UNSAVED]} Load the "
                             "model with keras.models.load_model(path, compile=False) and compile it again.")
        return cls(rule_from_config(rule), **config)


def _unless_skipped(update, skip, eager, policy):
    """Run ``update`` unless the step is skipped: a Python bool eagerly, a tf.cond in a
    graph (only needed when the policy can skip at all)."""
    if eager:
        if not skip:
            update()
    elif policy == "skip":
        tf.cond(skip, lambda: None, update)
    else:
        update()


# The penalty as a Keras regularizer lives beside (decay.keras.Regularizer).
from ._keras_regularizer import Regularizer  # noqa: E402,F401 - needs _describe/_native above
