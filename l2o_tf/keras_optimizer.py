"""A learned optimizer for `model.compile(optimizer=...)` and `model.fit`, and the guard as a training behaviour.

    model.compile(optimizer=l2o_tf.LearnedOptimizer("dm_cl_il"), loss=...)
    model = l2o_tf.GuardedModel(model, guard="lgl2o", guard_learning_rate=0.1)   # optional: the guard

`LearnedOptimizer` runs any update rule of `l2o_tf.rules` on all the model's trainable variables at once (it
overrides `apply`, not the per-variable `update_step`, because the rules' state spans tensors: RNNprop's counter,
L2O-Scale's per-tensor and global state). The rule's state lives in optimizer variables, so it is saved and restored
with the model (`model.save`, `tf.train.Checkpoint`) and survives `fit` being called again.

A guard compares the loss at two candidates, which a Keras optimizer never sees; so `GuardedModel` wraps a model
(calls pass through) and its `train_step` gives the guard (`l2o_tf.guards`) the batch to compare the candidates on,
through `stateless_call` at the candidate weights. The guard runs inside the optimizer, so its state (the guard
optimizer's, GL2O's mu, the last choice) is saved like the learned optimizer's. The metric `learned_step` is the
fraction of steps that took the learned candidate.
"""
import os

import keras
import tensorflow as tf

from l2o_tf import errors
from l2o_tf import guards
from l2o_tf import models


class KerasOptimizerError(errors.UsageError):
    """A LearnedOptimizer or GuardedModel used in a way it does not support."""


@keras.saving.register_keras_serializable("l2o_tf")
class LearnedOptimizer(keras.optimizers.Optimizer):
    """A learned optimizer (a shipped name such as "dm_cl_il", a file or directory for `l2o_tf.load`, or an update
    rule object) as a Keras optimizer. It has no learning rate: the learned update is added as it is."""

    def __init__(self, optimizer="dm_cl_il", name="learned_optimizer", **kwargs):
        if kwargs:
            raise KerasOptimizerError(f"LearnedOptimizer does not support {', '.join(sorted(kwargs))}: the learned "
                                      "update is added as it is, to all variables at once")
        super().__init__(learning_rate=1.0, name=name)  # Keras requires one; the learned update has none
        if isinstance(optimizer, (str, os.PathLike)):
            self.source, self.rule = os.fspath(optimizer), models.load(optimizer)
        else:
            self.source, self.rule = None, optimizer
        self._state_structure, self._state_variables = None, []

    def guard_with(self, make_guard):
        """Replace the rule by `make_guard(rule)` (a guard around it); only before the optimizer is built."""
        if self.built:
            raise KerasOptimizerError("guard the optimizer before it is built (compile the GuardedModel with a "
                                      "fresh LearnedOptimizer)")
        self.rule = make_guard(self.rule)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        state = self.rule.initial_state([tf.convert_to_tensor(v) for v in variables])
        leaves = tf.nest.flatten(state)
        self._state_structure = state
        self._state_variables = [
            self.add_variable(shape=tuple(leaf.shape), dtype=leaf.dtype.name, name=f"rule_state_{i}",
                              initializer=_constant(leaf))
            for i, leaf in enumerate(leaves)]

    @property
    def state(self):
        """The rule's current state (a nest of tensors, read from the optimizer's variables)."""
        return tf.nest.pack_sequence_as(self._state_structure, [v.value for v in self._state_variables])

    def apply(self, grads, trainable_variables=None):
        """One step of the rule on all variables at once; the state goes back into the optimizer variables."""
        if trainable_variables is None:
            if not self.built:
                raise KerasOptimizerError("the LearnedOptimizer is not built: pass the variables, or build it first")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        if [id(v) for v in trainable_variables] != [id(v) for v in self._trainable_variables]:
            raise KerasOptimizerError("a LearnedOptimizer updates the same variables, in the same order, at every "
                                      "step: its state spans all of them")
        gradients = [tf.zeros(v.shape, v.dtype) if g is None else tf.convert_to_tensor(g)
                     for g, v in zip(grads, trainable_variables)]
        options = {"params": [v.value for v in trainable_variables]} if isinstance(self.rule, guards.Guard) else {}
        deltas, state = self.rule.step(gradients, self.state, None, **options)
        for variable, delta in zip(trainable_variables, deltas):
            variable.assign_add(tf.cast(delta, variable.dtype))
        for variable, value in zip(self._state_variables, tf.nest.flatten(state)):
            variable.assign(value)
        self._iterations.assign_add(1)

    def get_config(self):
        return {"name": self.name, "optimizer": self.source}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if config.get("optimizer") is None:
            raise KerasOptimizerError("this LearnedOptimizer was made from a rule object, which a config cannot "
                                      "hold; re-create it with LearnedOptimizer(rule)")
        return cls(config["optimizer"], name=config.get("name", "learned_optimizer"))


def _constant(value):
    value = tf.convert_to_tensor(value)
    return lambda shape, dtype=None: tf.cast(tf.reshape(value, shape), dtype or value.dtype)


@keras.saving.register_keras_serializable("l2o_tf")
class GuardedModel(keras.Model):
    """`model` trained with a guard: every step forms the learned and the guard optimizer's candidates and keeps
    the one the guard picks (LGL2O: the lower loss on the step's batch; GL2O: the learned one when its gradient
    norm on the batch is below (1 - delta) mu). Compile it with a `LearnedOptimizer`.

    The candidates are evaluated in inference mode (`training=False`: no dropout, batch-norm moving statistics
    unchanged), so the comparison has no side effects. `guard_optimizer` is a baseline name (sgd, adam, rmsprop,
    nag, adagrad; TF1 semantics) at `guard_learning_rate`; `guard_every` checks every k steps and keeps the last
    choice in between; `mu_update` is GL2O's averaging (ema, geometric, recent, max); `learned_state` is the
    learned optimizer's state after a guard step (advance, keep, reset; `l2o_tf.guards`)."""

    def __init__(self, model, guard="lgl2o", guard_optimizer="sgd", guard_learning_rate=0.1, guard_every=1,
                 mu_update="ema", learned_state="advance", **kwargs):
        super().__init__(**kwargs)
        if guard not in guards.GUARDS:
            raise guards.GuardError(f"unknown guard {guard!r}: expected one of {', '.join(guards.GUARDS)}")
        self.model = model
        self.guard, self.guard_optimizer, self.guard_learning_rate = guard, guard_optimizer, guard_learning_rate
        self.guard_every, self.mu_update, self.learned_state = int(guard_every), mu_update, learned_state
        self.learned_step = keras.metrics.Mean(name="learned_step")
        self._batch = None

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def compile(self, optimizer=None, **kwargs):
        if not isinstance(optimizer, LearnedOptimizer):
            raise KerasOptimizerError(f"GuardedModel is compiled with an l2o_tf.LearnedOptimizer, got "
                                      f"{type(optimizer).__name__}")
        options = {"mu_update": self.mu_update} if self.guard == "gl2o" else {}
        optimizer.guard_with(lambda rule: guards.make(
            self.guard, rule, self._candidate_losses, self.guard_optimizer, self.guard_learning_rate,
            self.guard_every, learned_state=self.learned_state, **options))
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """What `keras.models.load_model` calls: compile again (which guards the new optimizer), then build the
        optimizer so that its saved variables (the learned and guard state) can be loaded into it."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self._batch = (x, y, sample_weight)  # the guard compares the candidates on this batch
        self.optimizer.apply(gradients, variables)
        self._batch = None
        self.learned_step.update_state(self.optimizer.rule.record(self.optimizer.state))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        metrics = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return {**metrics, "learned_step": self.learned_step.result()}

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop("learned_step", None)  # a training behaviour: nothing to report when evaluating
        return logs

    def _candidate_losses(self, candidates):
        """The loss at each candidate (a list of trainable-variable values) on the current batch."""
        if self._batch is None:
            raise KerasOptimizerError("a guarded LearnedOptimizer is stepped by GuardedModel.train_step only")
        x, y, sample_weight = self._batch
        non_trainable = [v.value for v in self.non_trainable_variables]
        losses = []
        for candidate in candidates:
            y_pred, _ = self.stateless_call(candidate, non_trainable, x, training=False)
            losses.append(self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False))
        return losses

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model),
                "guard": self.guard, "guard_optimizer": self.guard_optimizer,
                "guard_learning_rate": self.guard_learning_rate, "guard_every": self.guard_every,
                "mu_update": self.mu_update, "learned_state": self.learned_state}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)
