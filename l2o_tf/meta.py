"""Compiled optimizee trajectories: meta-training unrolls and plain runs, for any update rule.

A trajectory is one optimizee being optimised: its parameters (a list of tensors in problem order), the update
rule's state, the problem's per-trajectory constants and the random-scaling factors (one tensor per parameter; the
optimizee sees `f(scale * params)`). Every function here runs a whole unroll or run inside one `tf.function`;
Python only loops over unrolls. Any rule of the shared protocol (`l2o_tf.rules`) can take the steps.

Meta-gradient (the original, SPEC_DM §4.1): meta-loss = f_0 + ... + f_T over an unroll of T steps, the optimizee
gradient g_t under stop_gradient unless `second_derivatives`. Then d f_t / d theta = g_t . d x_t / d theta exactly,
so the tape records the surrogate sum_t <stop_gradient(g_t), x_t> instead of differentiating the optimizee a second
time: the same meta-gradient without a second optimizee backward per step (negligible on the MNIST MLP, where the
LSTM dominates, bench/README.md; it is the optimizee's cost that it saves on the convnets).
"""
import collections

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import rules

Trajectory = collections.namedtuple("Trajectory", ["params", "state", "constants", "scale"])


def new_trajectory(problem, rule, rng, scale_bound=0.0):
    """A fresh optimizee and the rule's initial state; with `scale_bound` > 0, random scaling exp(U(-b, b)).

    The scaling factors are drawn as one vector over all coordinates (in problem order), then split per tensor."""
    params = problem.init_params(rng)
    if scale_bound > 0:
        flat_scale = tf.exp(rng.uniform([problem.num_params], -scale_bound, scale_bound))
        scale = rules.unflatten(flat_scale, problem.param_shapes)
        params = [p / s for p, s in zip(params, scale)]
    else:
        scale = [tf.ones(shape) for shape in problem.param_shapes]
    return Trajectory(params, rule.initial_state(params), tuple(problem.init_constants(rng)), scale)


def scaled(params, scale):
    return [s * p for s, p in zip(scale, params)]


def add(params, deltas):
    return [p + d for p, d in zip(params, deltas)]


def apply_if_finite(optimizer, gradients, variables, *values):
    """Apply the gradients unless they (or any of `values`) are not finite; returns whether it applied them.

    A non-finite meta-gradient would poison the optimizer's weights and its Adam moments for good; skipping the
    step keeps the run going, and the caller records the skip."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in list(gradients) + list(values)])

    def apply():
        optimizer.apply_gradients(zip(gradients, variables))
        return tf.constant(True)

    return tf.cond(finite, apply, lambda: tf.constant(False))


def meta_optimizer(cell, learning_rate):
    """(the cell's trainable variables, a built Adam for them with TF1's epsilon 1e-8; Keras defaults to 1e-7)."""
    if not cell.built:
        cell.build()
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)
    optimizer.build(cell.trainable_variables)
    return cell.trainable_variables, optimizer


def meta_gradients(tape, objective, variables):
    """d objective / d variables, with zeros for weights the unroll does not reach (L2O-Scale's initial-state
    vectors, used before the tape); explicit zeros, as Keras variables break UnconnectedGradients.ZERO."""
    return [tf.zeros(v.shape) if g is None else g for g, v in zip(tape.gradient(objective, variables), variables)]


def loss_and_gradient(problem, params, constants, scale, rng):
    """f(scale * params) on a fresh minibatch, and its gradients with respect to params (a list)."""
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = problem.loss(scaled(params, scale), constants, rng)
    return loss, tape.gradient(loss, params)


class Trainer:
    """Meta-trains a learned optimizer (any Keras layer of the rule protocol) on one problem by truncated BPTT.

    `train_unroll` is the original's `[cost_op, update, meta_step]`: T steps from the trajectory, one meta-Adam step
    on the summed losses (skipped when the meta-gradient is not finite), and the trajectory carried on. `rule`, when
    given, takes the steps instead of the cell (the self-improving mixture); the cell's weights are still trained.
    """

    def __init__(self, problem, cell, rng, learning_rate=1e-3, unroll_length=20, second_derivatives=False,
                 rule=None):
        self.problem, self.cell, self.rng = problem, cell, rng
        self.rule = rule or cell
        self.unroll_length = int(unroll_length)
        self.second_derivatives = bool(second_derivatives)
        self.variables, self.optimizer = meta_optimizer(cell, learning_rate)
        self._train_unroll = tf.function(self._unroll, reduce_retracing=True)

    def new_trajectory(self, scale_bound=0.0):
        return new_trajectory(self.problem, self.rule, self.rng, scale_bound)

    def train_unroll(self, trajectory):
        """One meta-iteration. Returns (trajectory, meta_loss, final_loss, applied) as Python values."""
        params, state, meta_loss, final_loss, applied = self._train_unroll(trajectory)
        return (trajectory._replace(params=params, state=state), float(meta_loss), float(final_loss),
                bool(applied))

    def meta_gradient(self, trajectory):
        """(meta_loss, gradients) of one unroll, without applying them; for tests and tools."""
        with tf.GradientTape() as tape:
            meta_loss, _, _, _, objective = self._forward(trajectory, tape)
        return meta_loss, tape.gradient(objective, self.variables)

    def _forward(self, trajectory, tape, rng=None, rule=None):
        """The unroll: (meta_loss, final loss, params_T, state_T, the objective whose tape gradient is the
        meta-gradient). `rng` and `rule` replace the trainer's own (another optimizee's, `l2o_tf.distribute`)."""
        problem = self.problem
        rng, rule = self.rng if rng is None else rng, self.rule if rule is None else rule
        params, state, constants, scale = trajectory
        params = list(params)
        losses, surrogate = [], 0.0
        for _ in range(self.unroll_length + 1):
            if self.second_derivatives:
                loss, gradients = loss_and_gradient(problem, params, constants, scale, rng)
            else:
                with tape.stop_recording():
                    loss, gradients = loss_and_gradient(problem, params, constants, scale, rng)
                    gradients = [tf.stop_gradient(g) for g in gradients]
                surrogate += tf.add_n([tf.reduce_sum(g * p) for g, p in zip(gradients, params)])
            losses.append(loss)
            if len(losses) <= self.unroll_length:
                deltas, state = rule.step(gradients, state, loss)
                params = add(params, deltas)
        meta_loss = tf.add_n(losses)
        return meta_loss, losses[-1], params, state, meta_loss if self.second_derivatives else surrogate

    def _unroll(self, trajectory):
        with tf.GradientTape() as tape:
            meta_loss, final_loss, params, state, objective = self._forward(trajectory, tape)
        gradients = meta_gradients(tape, objective, self.variables)
        applied = apply_if_finite(self.optimizer, gradients, self.variables, meta_loss)
        return params, state, meta_loss, final_loss, applied


class Runner:
    """Runs any update rule on a problem with no meta-learning: evaluation, validation, baselines.

    `run(trajectory, num_steps)` records, at step i, f(x_{i+1}) on a fresh minibatch (the original evaluation's
    `cost_op`). Steps run in a compiled `tf.while_loop`, `chunk` at a time, so long runs can report progress.
    The loop is XLA-compiled unless the problem has convolutions: XLA fuses the cell's elementwise work (1.9x
    faster on the MNIST MLP) but its CPU convolutions are 2-30x slower than TF's (bench/README.md).
    """

    def __init__(self, problem, rule, rng, records=None):
        """`records`, a list, receives `rule.record(state)` after every step, for a rule that defines `record`
        (a guard: which optimizer took the step)."""
        self.problem, self.rule, self.rng = problem, rule, rng
        self.records = records if hasattr(rule, "record") else None
        jit = not problem.is_convolutional
        self._run = tf.function(self._loop, jit_compile=jit, reduce_retracing=True)
        self._final = tf.function(self._final_loss_loop, jit_compile=jit, reduce_retracing=True)

    def new_trajectory(self, scale_bound=0.0):
        return new_trajectory(self.problem, self.rule, self.rng, scale_bound)

    def run(self, trajectory, num_steps, chunk=None, callback=None):
        """Returns (trajectory, float32 numpy losses of length num_steps); `callback(done, losses)` after each chunk."""
        def steps(size):
            nonlocal trajectory
            params, state, losses, records = self._run(trajectory, tf.constant(size))
            trajectory = trajectory._replace(params=params, state=state)
            if self.records is not None:
                self.records.extend(records.numpy().tolist())
            return losses.numpy()[None]

        losses = _in_chunks(steps, num_steps, chunk, callback and (lambda done, losses: callback(done, losses[0])))
        return trajectory, losses[0]

    def final_loss(self, trajectory, num_steps):
        """f(x_N) on a fresh minibatch after `num_steps` steps: the original's in-training validation value; and
        the rule's state after them."""
        loss, state = self._final(trajectory, tf.constant(int(num_steps)))
        return float(loss), state

    def _loop(self, trajectory, num_steps):
        params, states, losses, records = _run_steps([(self.problem, self.rule, self.rng)], False, [trajectory],
                                                     [trajectory.state], num_steps, self.records is not None)
        return params[0], states[0], losses[:, 0], records[:, 0]

    def _final_loss_loop(self, trajectory, num_steps):
        params, state, constants, scale = trajectory
        params = list(params)
        for _ in tf.range(num_steps):
            params, state = _step(self.problem, self.rule, self.rng, params, state, trajectory)
        return self.problem.loss(scaled(params, scale), constants, self.rng), state


class Runs:
    """Several fresh runs stepped together in one compiled loop: one optimizer over several seeds (or any mix of
    rules and problems), each run with its own generator, so run k's numbers are those of `Runner` with `lanes[k]`.

    `lanes`: one (problem, rule, rng) per run. When every run has the same coordinate-wise rule (a learned
    L2O-DM/RNNprop cell, a baseline), the rule steps once on all runs' coordinates: one larger matrix product per
    step instead of one per run (bench/README.md has the speed-up). Otherwise every run steps its own rule in the same
    loop (a guard: each seed's guard has its own objective).
    """

    def __init__(self, lanes, record=False):
        self.lanes = list(lanes)
        first_rule = self.lanes[0][1]
        self.merged = (len(self.lanes) > 1 and isinstance(first_rule, rules.CoordinatewiseRule)
                       and all(rule is first_rule for _, rule, _ in self.lanes))
        self.record = bool(record) and all(hasattr(rule, "record") for _, rule, _ in self.lanes)
        self.trajectories = [new_trajectory(problem, rule, rng) for problem, rule, rng in self.lanes]
        if self.merged:
            self.states = [first_rule.initial_state([p for t in self.trajectories for p in t.params])]
        else:
            self.states = [t.state for t in self.trajectories]
        jit = not any(problem.is_convolutional for problem, _, _ in self.lanes)
        self._run = tf.function(self._loop, jit_compile=jit, reduce_retracing=True)
        self.records = [] if self.record else None

    def run(self, num_steps, chunk=None, callback=None):
        """The next `num_steps` losses of every run, numpy float32 [runs, num_steps]; `callback(done, losses)` after
        each chunk. The runs' per-step records (a guard's choices) accumulate in `self.records`, one row per step."""
        def steps(size):
            params, self.states, losses, records = self._run(self.trajectories, self.states, tf.constant(size))
            self.trajectories = [t._replace(params=p) for t, p in zip(self.trajectories, params)]
            if self.record:
                self.records.extend(records.numpy().tolist())
            return losses.numpy().T

        return _in_chunks(steps, num_steps, chunk, callback)

    def _loop(self, trajectories, states, num_steps):
        return _run_steps(self.lanes, self.merged, trajectories, states, num_steps, self.record)


def _in_chunks(steps, num_steps, chunk, callback):
    """Concatenate `steps(size)` ([runs, size] arrays) over chunks of `chunk` steps, calling `callback(done,
    losses so far)` after each."""
    chunk, pieces, done = int(chunk or num_steps), [], 0
    while done < num_steps:
        size = min(chunk, num_steps - done)
        pieces.append(steps(size))
        done += size
        if callback is not None:
            callback(done, np.concatenate(pieces, axis=1))
    return np.concatenate(pieces, axis=1) if pieces else np.zeros([1, 0], np.float32)


def _step(problem, rule, rng, params, state, trajectory):
    """One step of `rule` from `params` on `trajectory`'s problem constants and scaling: (params, state)."""
    loss, gradients = loss_and_gradient(problem, params, trajectory.constants, trajectory.scale, rng)
    deltas, state = rule.step(gradients, state, loss)
    return add(params, deltas), state


def _run_steps(lanes, merged, trajectories, states, num_steps, record):
    """`num_steps` steps of every lane's trajectory, in a compiled loop: (params per lane, states, losses
    [num_steps, lanes], rule records [num_steps, lanes]). `states` is one per lane, or with `merged` the one state of
    the rule all lanes share, stepped once on all their gradients (each lane's loss comes from its own generator,
    in the same order as alone)."""
    params = [list(t.params) for t in trajectories]
    losses = tf.TensorArray(tf.float32, size=num_steps, element_shape=[len(lanes)])
    records = tf.TensorArray(tf.float32, size=num_steps if record else 0, element_shape=[len(lanes)])
    for i in tf.range(num_steps):
        if merged:
            gradients = [g for (problem, _, rng), p, t in zip(lanes, params, trajectories)
                         for g in loss_and_gradient(problem, p, t.constants, t.scale, rng)[1]]
            all_deltas, state = lanes[0][1].step(gradients, states[0])
            states, stepped, start = [state], [], 0
            for p in params:
                stepped.append(add(p, all_deltas[start:start + len(p)]))
                start += len(p)
            params = stepped
        else:
            stepped = [_step(problem, rule, rng, p, state, t)
                       for (problem, rule, rng), p, state, t in zip(lanes, params, states, trajectories)]
            params, states = [p for p, _ in stepped], [state for _, state in stepped]
        losses = losses.write(i, tf.stack([problem.loss(scaled(p, t.scale), t.constants, rng)
                                           for (problem, _, rng), p, t in zip(lanes, params, trajectories)]))
        if record:
            records = records.write(i, tf.stack([tf.cast(rule.record(state), tf.float32)
                                                 for (_, rule, _), state in zip(lanes, states)]))
    return params, states, losses.stack(), records.stack()
