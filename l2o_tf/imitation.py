"""Imitation learning (SPEC_DM §6, the paper's Algorithm 2).

Imitation: a hand-designed teacher optimises a fresh optimizee; its gradients and parameter steps are recorded, and
the learned optimizer, fed the teacher's gradients (off-policy), is trained with its own Adam to reproduce the
teacher's steps: per unroll, sum over steps of 0.5 * ||delta_t - teacher_step_t||^2 / num_params.
"""
import tensorflow as tf

from l2o_tf import meta
from l2o_tf import rules


class Teacher:
    """Records a hand-designed optimizer's trajectory on fresh optimizees of a problem (compiled once)."""

    def __init__(self, problem, rule, rng, k=1):
        self.problem, self.rule, self.rng, self.k = problem, rule, rng, int(k)
        self._record = tf.function(self._record_loop, reduce_retracing=True)

    def trajectory(self, num_steps, scale_bound=0.0):
        """(gradients, steps), each [num_steps, num_params] (all coordinates in problem order): the gradient the
        teacher saw at each recorded step and the displacement of its next `k` steps (the first uses that gradient)."""
        trajectory = meta.new_trajectory(self.problem, self.rule, self.rng, scale_bound)
        return self._record(trajectory, tf.constant(int(num_steps)))

    def _record_loop(self, trajectory, num_steps):
        params, state, constants, scale = trajectory
        params = list(params)
        gradients = tf.TensorArray(tf.float32, size=num_steps)
        steps = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            start = params
            for j in range(self.k):
                loss, gradient = meta.loss_and_gradient(self.problem, params, constants, scale, self.rng)
                if j == 0:
                    gradients = gradients.write(i, rules.flatten(gradient))
                deltas, state = self.rule.step(gradient, state, loss)
                params = meta.add(params, deltas)
            steps = steps.write(i, rules.flatten(params) - rules.flatten(start))
        return gradients.stack(), steps.stack()


class ImitationTrainer:
    """Trains a learned optimizer to imitate recorded teacher steps, with a meta-Adam of its own.

    The recordings are flat (all coordinates in problem order); `param_shapes` splits them back into the tensors the
    rule steps on (None: one flat tensor, enough for a coordinate-wise rule)."""

    def __init__(self, cell, learning_rate=1e-3, unroll_length=20, param_shapes=None):
        self.cell, self.unroll_length = cell, int(unroll_length)
        self.param_shapes = None if param_shapes is None else [tuple(s) for s in param_shapes]
        self.variables, self.optimizer = meta.meta_optimizer(cell, learning_rate)
        self._unroll = tf.function(self._train_unroll, reduce_retracing=True)

    def train_epoch(self, gradients, steps):
        """One imitation epoch over a recorded trajectory, one Adam step per unroll (skipped when not finite).

        Returns (the last unroll's loss, the number of updates applied).

        The state starts at zero, the evident intent; see docs/FIDELITY.md for the original's quirk."""
        num_steps, num_params = (int(n) for n in gradients.shape)
        if num_steps < self.unroll_length:
            raise ValueError(f"an imitation trajectory of {num_steps} steps is shorter than one unroll "
                             f"({self.unroll_length})")
        state = self.cell.initial_state(self._split(tf.zeros([num_params])))
        loss, applied = float("nan"), 0
        for start in range(0, num_steps - self.unroll_length + 1, self.unroll_length):
            window = slice(start, start + self.unroll_length)
            state, loss, ok = self._unroll(gradients[window], steps[window], state)
            applied += int(ok)
        return float(loss), applied

    def imitation_loss(self, gradients, steps, state):
        """Sum over the unroll of 0.5 * squared step difference / number of parameters; and the final state."""
        num_params = tf.cast(tf.shape(gradients)[1], tf.float32)
        loss = 0.0
        for t in range(self.unroll_length):
            deltas, state = self.cell.step(self._split(gradients[t]), state)
            loss += 0.5 * tf.reduce_sum(tf.square(steps[t] - rules.flatten(deltas))) / num_params
        return loss, state

    def _split(self, flat):
        return [flat] if self.param_shapes is None else rules.unflatten(flat, self.param_shapes)

    def _train_unroll(self, gradients, steps, state):
        with tf.GradientTape() as tape:
            loss, state = self.imitation_loss(gradients, steps, state)
        applied = meta.apply_if_finite(self.optimizer, tape.gradient(loss, self.variables), self.variables, loss)
        return state, loss, applied
