"""L2O-Scale's compiled unrolls on a classifier problem (SPEC_SCALE §2.1-§2.2, §3.4-§3.5).

One training unroll runs T optimizer steps from the trajectory's parameters and state: at step t the meta-objective
records f(theta_t) on the unroll's whole data subset, the optimizer gets the gradient of one minibatch of it (under
stop_gradient unless `second_derivatives`) and steps. Then one meta-update: the gradient of the §2.2 objective,
non-finite entries set to 0, each entry clipped, applied by the TF1 RMSProp. Every meta-parameter gets a gradient
(zero when unconnected, as TF1's `cond` gave the initial-state vectors on unrolls that do not reset), so every
RMSProp slot decays at every update as in the original.

Whether an unroll starts from a fresh optimizer state is a tensor, not a Python branch: the fresh state is made
inside the tape and selected (`tf.where`) over the given one, as the original's `cond(reset_state, ...)`, so its
learned initial vectors get their gradient exactly when it is taken, and one trace serves both cases.

The trajectory goes on from the unroll's own forward values (upstream's order; the train copy recomputed the unroll
after the update to propagate it, docs/FIDELITY.md). Data are indices into the problem's training split
(`l2o_scale.plans`), gathered inside the compiled function.

`Unroller` runs one optimizee; `ParallelUnroller` several per meta-update, spread over the replicas of a
`tf.distribute` strategy (`l2o_tf.distribute`): the mean of their meta-gradients is sanitized and applied once.
"""
import collections

import tensorflow as tf

from l2o_scale import meta_objective
from l2o_scale import meta_optimizer as meta_optimizer_lib
from l2o_tf import distribute
from l2o_tf import errors
from l2o_tf import meta


class Unroller:
    """Training unrolls (with their meta-update) and validation runs of an update-rule Keras layer on `problem`."""

    def __init__(self, problem, optimizer, meta_optimizer, second_derivatives=True, use_log_objective=True,
                 use_numerator_epsilon=False, clip_level=meta_optimizer_lib.CLIP_LEVEL, l2_reg=0.0, variables=None,
                 jit_compile=None):
        if not hasattr(problem, "batch_loss"):
            raise errors.UsageError(f"L2O-Scale meta-training needs a problem with a dataset, not {problem.name!r}")
        self.problem, self.optimizer, self.meta_optimizer = problem, optimizer, meta_optimizer
        self.second_derivatives = bool(second_derivatives)
        self.use_log_objective, self.use_numerator_epsilon = bool(use_log_objective), bool(use_numerator_epsilon)
        self.clip_level, self.l2_reg = float(clip_level), float(l2_reg)
        if not optimizer.built:
            optimizer.build()
        self.variables = list(optimizer.trainable_variables if variables is None else variables)
        meta_optimizer.build(self.variables)
        self._train = tf.function(self._train_unroll, reduce_retracing=True)
        self._subset_loss = tf.function(self.subset_loss, reduce_retracing=True)
        # XLA pays off on long validations of problems without convolutions; its compile costs seconds
        jit = not problem.is_convolutional if jit_compile is None else bool(jit_compile)
        self._validation = tf.function(self._validation_unroll, jit_compile=jit)
        self._zero_state = None

    # -- the pieces ---------------------------------------------------------------------------------------------
    def subset_loss(self, params, subset):
        """f(params) on the examples `subset` (indices into the training split): the objective's terms."""
        return self.problem.batch_loss(params, tf.gather(self.problem.images, subset),
                                       tf.gather(self.problem.labels, subset))

    def minibatch_gradient(self, params, batch):
        """(loss, gradients) of the minibatch `batch` at params."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = self.subset_loss(params, batch)
        gradients = tape.gradient(loss, params)
        if not self.second_derivatives:
            gradients = [tf.stop_gradient(g) for g in gradients]
        return loss, gradients

    def initial_objective(self, params, subset):
        """f_0: the loss at the meta-iteration's initial parameters on its first unroll's subset (§2.2)."""
        return float(self._subset_loss([tf.convert_to_tensor(p) for p in params], tf.constant(subset)))

    # -- training -----------------------------------------------------------------------------------------------
    def train_unroll(self, params, state, subset, batches, initial_objective, reset=False):
        """One unroll of len(batches) steps and its meta-update; from a fresh state if `reset` (or `state` is None).

        Returns (params, state, objectives [T + 1] numpy, meta-objective)."""
        params, state, reset = self._inputs(params, state, reset)
        params, state, objectives, objective = self._train(
            params, state, tf.constant(subset), tf.constant(batches), tf.constant(initial_objective, tf.float32),
            reset)
        return params, state, objectives.numpy(), float(objective)

    def _inputs(self, params, state, reset):
        if state is None:  # any state of the right structure: the fresh one replaces it
            if self._zero_state is None:
                self._zero_state = tf.nest.map_structure(tf.zeros_like, self.optimizer.initial_state(params))
            state, reset = self._zero_state, True
        return [tf.convert_to_tensor(p) for p in params], state, tf.constant(bool(reset))

    def start(self, params, state, reset, rng=None):
        """The state an unroll starts from: the optimizer's fresh one where `reset`, else `state`. The fresh one is
        drawn from `rng` when given (another optimizee's stream), else from the optimizer's own generator."""
        fresh = self.optimizer.initial_state(params) if rng is None else self.optimizer.initial_state(params, rng)
        return tf.nest.map_structure(lambda f, s: tf.where(reset, f, s), fresh, state)

    def forward(self, params, state, subset, batches, initial_objective, reset, rng=None):
        """(meta-objective, objectives [T + 1], params_T, state_T) of one unroll, to be differentiated."""
        state = self.start(params, state, reset, rng)
        num_steps = tf.shape(batches)[0]
        losses = tf.TensorArray(tf.float32, size=num_steps)
        for t in tf.range(num_steps):
            losses = losses.write(t, self.subset_loss(params, subset))  # f(theta_t), t = 0..T-1
            loss, gradients = self.minibatch_gradient(params, batches[t])
            deltas, state = self.optimizer.step(gradients, state, loss)
            params = meta.add(params, deltas)
        losses = losses.stack()
        objectives = tf.concat([losses[:1], losses], 0)  # all_obj: f(theta_start), then f(theta_0) again, ...
        objective = meta_objective.meta_objective(objectives, initial_objective, self.use_log_objective,
                                                  self.use_numerator_epsilon)
        return objective, objectives, params, state

    def meta_gradient(self, params, state, subset, batches, initial_objective, reset=False):
        """The sanitized meta-gradient of one unroll (zeros for unconnected meta-parameters), for tests and tools."""
        params, state, reset = self._inputs(params, state, reset)
        gradients, _ = self.mean_gradient([(params, state, subset, batches, initial_objective, reset)])
        return meta_optimizer_lib.sanitize(gradients, self.variables, self.clip_level)

    def mean_gradient(self, unrolls):
        """The differentiated part of a meta-update: the unrolls of `unrolls` (each the arguments of `forward`, one
        per optimizee), and the raw gradient of their mean regularised objective (zeros for unconnected
        meta-parameters). Returns (gradients, [forward's results per unroll])."""
        with tf.GradientTape() as tape:
            results = [self.forward(*arguments) for arguments in unrolls]
            objective = self._with_l2(distribute.mean([result[0] for result in results]))
        return meta.meta_gradients(tape, objective, self.variables), results

    def apply(self, gradients):
        """The meta-update: `gradients` sanitized (non-finite to 0, clipped) and applied by the meta-optimizer."""
        return meta_optimizer_lib.apply_sanitized(self.meta_optimizer, gradients, self.variables, self.clip_level)

    def _train_unroll(self, params, state, subset, batches, initial_objective, reset):
        gradients, [(objective, objectives, params, state)] = self.mean_gradient(
            [(params, state, subset, batches, initial_objective, reset)])
        self.apply(gradients)
        return params, state, objectives, objective

    def _with_l2(self, objective):
        """The objective the meta-optimizer minimises: plus --l2_reg times the squared meta-parameters (0: none)."""
        if not self.l2_reg:
            return objective
        return objective + self.l2_reg * tf.add_n([tf.reduce_sum(tf.square(v)) for v in self.variables])

    # -- validation ---------------------------------------------------------------------------------------------
    def validation_cost(self, params, state, subset, unroll_batches, reset=False):
        """The original's validation cost of one run (§3.5): the unrolls of `unroll_batches` (one [T, batch] array
        each) with no meta-update; the last unroll's last objective, i.e. f on `subset` at the parameters before the
        run's last update. Compiled once per unroll length (by default with XLA unless the problem has
        convolutions)."""
        params, state, reset = self._inputs(params, state, reset)
        subset, cost = tf.constant(subset), None
        for i, batches in enumerate(unroll_batches):
            last = i == len(unroll_batches) - 1
            params, state, cost = self._validation(params, state, subset, tf.constant(batches), reset,
                                                   tf.constant(last))
            reset = tf.constant(False)
        return float(cost)

    def _validation_unroll(self, params, state, subset, batches, reset, last):
        state = self.start(params, state, reset)
        before = params
        for t in tf.range(tf.shape(batches)[0]):
            before = params
            loss, gradients = self.minibatch_gradient(params, batches[t])
            deltas, state = self.optimizer.step(gradients, state, loss)
            params = meta.add(params, deltas)
        cost = tf.cond(last, lambda: self.subset_loss(before, subset), lambda: tf.constant(0.0))
        return params, state, cost


Optimizee = collections.namedtuple("Optimizee", "params state reset initial_objective")  # one trajectory's carry


class ParallelUnroller:
    """Training unrolls of `len(rngs)` optimizees per meta-update with `strategy`, each replica running an equal
    share; the same numbers as `Unroller` for one optimizee on the default strategy.

    A replica differentiates the mean of its optimizees' objectives; the gradients, objectives and f_0 are
    all-reduced (MEAN) over the replicas; the meta-optimizer applies the sanitized mean once, so a NaN on any
    replica is zeroed alike everywhere. `rngs[k]` is the generator of optimizee k's fresh optimizer states. Build
    `unroller` (the optimizer, the meta-optimizer's slots) under `strategy.scope()`.
    """

    def __init__(self, strategy, unroller, rngs):
        self.strategy, self.unroller, self.rngs = strategy, unroller, list(rngs)
        self.count = distribute.resolve_count(strategy, len(self.rngs))
        self._train = tf.function(self._unroll, reduce_retracing=True)

    def start(self, params, states, resets, subsets):
        """The optimizees of a meta-iteration on their replicas (a PerReplica value of lists under a strategy): from
        `params[k]`, and `states[k]` or a fresh state where `resets[k]`; f_0 on `subsets[k]`, their first unroll's."""
        def make(context):
            return [Optimizee([tf.convert_to_tensor(p) for p in params[k]], states[k], tf.constant(bool(resets[k])),
                              tf.constant(self.unroller.initial_objective(params[k], subsets[k]), tf.float32))
                    for k in distribute.optimizees_of(self.strategy, self.count, context.replica_id_in_sync_group)]
        return self.strategy.experimental_distribute_values_from_function(make)

    def train_unroll(self, optimizees, subsets, batches):
        """One unroll of every optimizee (optimizee k on `subsets[k]`, `batches[k]`) and the meta-update. Returns
        (optimizees, their mean objectives [T + 1] numpy, mean meta-objective, mean f_0)."""
        def data(context):
            return [(tf.constant(subsets[k]), tf.constant(batches[k]))
                    for k in distribute.optimizees_of(self.strategy, self.count, context.replica_id_in_sync_group)]
        optimizees, objectives, objective, initial = self._train(
            optimizees, self.strategy.experimental_distribute_values_from_function(data))
        return optimizees, objectives.numpy(), float(objective), float(initial)

    def final_states(self, optimizees):
        """Every optimizee's optimizer state, in order, the same on every worker (a cluster's workers exchange
        theirs)."""
        mine = distribute.local_values(self.strategy, self.count, optimizees)
        return distribute.every_optimizee(self.strategy, self.count, {k: o.state for k, o in mine.items()})

    def _replica_unroll(self, optimizees, data):
        indices = distribute.optimizees_of(self.strategy, self.count, distribute.replica_id())
        gradients, results = self.unroller.mean_gradient(
            [(o.params, o.state, subset, batches, o.initial_objective, o.reset, self.rngs[k])
             for k, o, (subset, batches) in zip(indices, optimizees, data)])
        carried = [o._replace(params=params, state=state, reset=tf.constant(False))
                   for o, (_, _, params, state) in zip(optimizees, results)]
        return carried, (gradients, distribute.mean([r[1] for r in results]),
                         distribute.mean([r[0] for r in results]),
                         distribute.mean([o.initial_objective for o in optimizees]))

    def _unroll(self, optimizees, data):
        carried, (gradients, objectives, objective, initial) = distribute.mean_over_replicas(
            self.strategy, self._replica_unroll, optimizees, data)
        self.unroller.apply(gradients)
        return carried, objectives, objective, initial
