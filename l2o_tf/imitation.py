"""Imitation learning (SPEC_DM §6, the paper's Algorithm 2).

Imitation: a hand-designed teacher optimises a fresh optimizee; its gradients and parameter steps are recorded, and
the learned optimizer, fed the teacher's gradients (off-policy), is trained with its own Adam to reproduce the
teacher's steps: per unroll, sum over steps of 0.5 * ||delta_t - teacher_step_t||^2 / num_params.
"""
import tensorflow as tf
from absl import logging

from l2o_tf import meta
from l2o_tf import rules


class Teacher:
    """Records a hand-designed optimizer's trajectory on fresh optimizees of a problem (compiled once)."""

    def __init__(self, problem, rule, rng, k=1):
        self.problem, self.rule, self.rng, self.k = problem, rule, rng, int(k)
        self._record = tf.function(self._record_loop, reduce_retracing=True)

    def trajectory(self, num_steps, scale_bound=0.0, params=None, batches=None):
        """(gradients, steps), each [num_steps, num_params] (all coordinates in problem order): the gradient the
        teacher saw at each recorded step and the displacement of its next `k` steps (the first uses that gradient).

        By default the optimizee is a fresh draw and each teacher step a fresh random minibatch. L2O-Scale gives the
        learner's own start (`params`) and minibatches (`batches`, [num_steps * k, batch] indices into the
        problem's examples, one row per teacher step)."""
        trajectory = meta.new_trajectory(self.problem, self.rule, self.rng, scale_bound)
        if params is not None:
            params = [tf.convert_to_tensor(p, tf.float32) for p in params]
            trajectory = trajectory._replace(params=params, state=self.rule.initial_state(params))
        if batches is not None:
            batches = tf.convert_to_tensor(batches)
            if batches.shape[0] != num_steps * self.k:
                raise ValueError(f"{num_steps} recorded steps of k={self.k} teacher steps need {num_steps * self.k} "
                                 f"minibatches, got {batches.shape[0]}")
        return self._record(trajectory, tf.constant(int(num_steps)), batches)

    def _loss_and_gradient(self, params, constants, scale, batch):
        if batch is None:
            return meta.loss_and_gradient(self.problem, params, constants, scale, self.rng)
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = self.problem.batch_loss(meta.scaled(params, scale), tf.gather(self.problem.images, batch),
                                           tf.gather(self.problem.labels, batch))
        return loss, tape.gradient(loss, params)

    def _record_loop(self, trajectory, num_steps, batches=None):
        params, state, constants, scale = trajectory
        params = list(params)
        gradients = tf.TensorArray(tf.float32, size=num_steps)
        steps = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            start = params
            for j in range(self.k):
                batch = None if batches is None else batches[i * self.k + j]
                loss, gradient = self._loss_and_gradient(params, constants, scale, batch)
                if j == 0:
                    gradients = gradients.write(i, rules.flatten(gradient))
                deltas, state = self.rule.step(gradient, state, loss)
                params = meta.add(params, deltas)
            steps = steps.write(i, rules.flatten(params) - rules.flatten(start))
        return gradients.stack(), steps.stack()


class ImitationTrainer:
    """Trains a learned optimizer to imitate recorded teacher steps, with a meta-Adam of its own.

    The recordings are flat (all coordinates in problem order); `param_shapes` splits them back into the tensors the
    rule steps on (None: one flat tensor, enough for a coordinate-wise rule).

    L2O-Scale differs in three options: `optimizer` (over `variables`, default the cell's trainable ones) replaces
    the own Adam (Scale shares its RMSProp with the meta-objective); `apply(optimizer, gradients, variables, loss)`
    applies an update and says whether it did (default: only a finite one); `average_over_unroll` weights each
    step's loss by 1 / the unroll's length."""

    def __init__(self, cell, learning_rate=1e-3, unroll_length=20, param_shapes=None, optimizer=None, variables=None,
                 apply=meta.apply_if_finite, average_over_unroll=False):
        self.cell, self.unroll_length = cell, int(unroll_length)
        self.param_shapes = None if param_shapes is None else [tuple(s) for s in param_shapes]
        if optimizer is None:
            self.variables, self.optimizer = meta.meta_optimizer(cell, learning_rate)
        else:
            self.variables = list(cell.trainable_variables if variables is None else variables)
            self.optimizer = optimizer
        self.apply, self.average_over_unroll = apply, bool(average_over_unroll)
        self.state = None  # the learner's state after the last epoch
        self._unroll = tf.function(self._train_unroll)  # one trace per unroll length (its Python loop is unrolled)

    def train_epoch(self, gradients, steps, state=None, unroll_lengths=None):
        """One imitation epoch over a recorded trajectory, one Adam step per unroll (skipped when not finite).

        Returns (the last unroll's loss, the number of updates applied); the final state is kept in `self.state`.

        Unrolls of `unroll_length` steps (a remainder is dropped), or of the given `unroll_lengths`. The state starts
        at `zero_state` unless given (the evident intent; `MainTaskState` gives the original's quirk)."""
        num_steps, num_params = (int(n) for n in gradients.shape)
        if unroll_lengths is None:
            if num_steps < self.unroll_length:
                raise ValueError(f"an imitation trajectory of {num_steps} steps is shorter than one unroll "
                                 f"({self.unroll_length})")
            unroll_lengths = [self.unroll_length] * (num_steps // self.unroll_length)
        elif sum(unroll_lengths) > num_steps:
            raise ValueError(f"unrolls of {sum(unroll_lengths)} steps in all exceed the trajectory's {num_steps}")
        if state is None:
            state = self.zero_state(num_params)
        loss, applied, start = float("nan"), 0, 0
        for length in unroll_lengths:
            window = slice(start, start + int(length))
            state, loss, ok = self._unroll(gradients[window], steps[window], state)
            applied += int(ok)
            start += int(length)
        self.state = state
        return float(loss), applied

    def imitation_loss(self, gradients, steps, state):
        """Sum over the unroll of 0.5 * squared step difference / number of parameters (times 1 / the unroll's length
        with `average_over_unroll`); and the final state."""
        num_steps = int(gradients.shape[0])
        num_params = tf.cast(tf.shape(gradients)[1], tf.float32)
        loss = 0.0
        for t in range(num_steps):
            deltas, state = self.cell.step(self._split(gradients[t]), state)
            loss += 0.5 * tf.reduce_sum(tf.square(steps[t] - rules.flatten(deltas))) / num_params
        return (loss / num_steps if self.average_over_unroll else loss), state

    def zero_state(self, num_params):
        """The learner's zero state over `num_params` coordinates, in the layout an imitation epoch runs in."""
        return self.cell.initial_state(self._split(tf.zeros([num_params])))

    def _split(self, flat):
        return [flat] if self.param_shapes is None else rules.unflatten(flat, self.param_shapes)

    def _train_unroll(self, gradients, steps, state):
        with tf.GradientTape() as tape:
            loss, state = self.imitation_loss(gradients, steps, state)
        applied = self.apply(self.optimizer, tape.gradient(loss, self.variables), self.variables, loss)
        return state, loss, applied


class MainTaskState:
    """The learner's state at the end of the latest main-task trajectory (a training epoch or a validation run), where
    the original's imitation epochs start (SPEC_DM §6.5: a TF1 initializer rewrite copied it; zeros before any).

    Only the LSTM part is kept: the rest (RNNprop's Adam moments and step counter) starts at zero, as the original's
    explicit reset did. A coordinate-wise cell's state is already one tensor per component over all coordinates in
    problem order, the imitation learner's layout (`ImitationTrainer.zero_state`), so it is copied as it is. It is
    held in variables, so a resume checkpoint carries it."""

    def __init__(self, cell, num_params):
        lstm_sizes = cell.state_size[:len(cell.state_size) - len(cell.extra_state_sizes)]
        self.variables = [tf.Variable(tf.zeros([size, num_params]), trainable=False) for size in lstm_sizes]

    def remember(self, state):
        """Keep the LSTM part of `state`, the cell's state at the end of a main-task trajectory."""
        for variable, part in zip(self.variables, state):
            variable.assign(part)

    def start(self, zero_state):
        """An imitation epoch's initial state: the remembered LSTM part over `zero_state` (the learner's zero state).

        A remembered state that is not finite (its optimizee diverged) is dropped for zeros, with a warning."""
        if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in self.variables):
            logging.warning("the learner's state at the end of the last main-task trajectory is not finite (its "
                            "optimizee diverged): this imitation epoch starts from zeros")
            for variable in self.variables:
                variable.assign(tf.zeros_like(variable))
        return tuple(tf.identity(v) for v in self.variables) + tuple(zero_state[len(self.variables):])
