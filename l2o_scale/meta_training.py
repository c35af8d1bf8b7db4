"""What L2O-Scale's meta-training does per meta-iteration and per validation (SPEC_SCALE §3-§4, §8.1-§8.3).

`Iterations` is the Scale-specific part of a run; the loop around it (counters, curriculum decisions, checkpoints,
Ctrl-C, progress, TensorBoard) is the shared `l2o_tf.training.MetaTraining` (see `ScaleTraining` in
`l2o_scale.training`). One meta-iteration:

  * draws its unroll plan (§3.2), one data subset per unroll and the minibatch indices (§3.3), and a fresh optimizee
    with N(0, 1) in every tensor (§8.3);
  * starts the optimizer from the state carried over from the previous meta-iteration: the original's default
    `--reset_rnn_params=True` resets it only at the run's very first unroll (§8.1); `False` resets it every
    meta-iteration;
  * trains: one meta-update per unroll on the §2.2 objective, f_0 from the first unroll (`l2o_scale.unroll`);
    with --num_optimizees (and --strategy, `l2o_tf.distribute`) that many optimizees per meta-iteration, spread over
    the replicas, all on the same unroll plan, each with its own data, initial parameters, carried optimizer state
    and random streams (optimizee 0's are a one-optimizee run's): every meta-update applies the mean of their
    meta-gradients once, and a non-finite value of any ends the meta-iteration for all;
  * or, with probability --mt_ratio under --if_mt, imitates (§4.2): Adam(0.01) optimises the same optimizee on the
    same minibatches (k teacher steps per recorded step), and the optimizer, fed the teacher's gradients, learns
    to reproduce its steps (teacher forcing), with the shared `l2o_tf.imitation` code and the same RMSProp; on
    optimizee 0 alone (imitation and validation are not split over optimizees or replicas).

Validation (§3.5): `evaluation_epochs` runs from fresh N(0, 1) optimizees on the last training unroll's subset;
each run's cost is the subset loss before its last update; the sum is returned (the shared loop divides by the
number of runs when it reports; its history keeps both). Random draws come from generators of their own (plans and
data, validation, teacher, each optimizee's data and fresh optimizer states), each restored on resume.
"""
import dataclasses
import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

from l2o_scale import checkpoint
from l2o_scale import hierarchical_rnn
from l2o_scale import meta_optimizer as meta_optimizer_lib
from l2o_scale import plans
from l2o_scale import unroll
from l2o_tf import distribute
from l2o_tf import imitation
from l2o_tf import optimizers
from l2o_tf import problems
from l2o_tf import seeding
from l2o_tf import training

TEACHER_LEARNING_RATE = 0.01  # hard-coded in the original's mt_utils (rd_lr), with TF's Adam defaults
STATE_STREAM = "initial learning rates"  # HierarchicalRNN's generator of fresh states (optimizee 0's)


class Iterations:
    """Meta-iterations and validations of one L2O-Scale optimizer on one problem, with their random streams.

    Each meta-iteration trains `len(state_rngs)` optimizees with `strategy`; `state_rngs[k]` draws optimizee k's
    fresh optimizer states (`state_rngs[0]` is the optimizer's own generator)."""

    def __init__(self, config, problem, optimizer, seed, teacher_rng, strategy, state_rngs):
        self.config, self.problem, self.optimizer = config, problem, optimizer
        self.strategy, self.state_rngs, self.count = strategy, list(state_rngs), len(state_rngs)
        self.batch_size = problems.BATCH_SIZE
        self.dataset_size = int(problem.labels.shape[0])
        if self.dataset_size < self.batch_size:
            raise ValueError(f"{self.dataset_size} training examples are fewer than one minibatch ({self.batch_size})")
        self.rngs = {name: np.random.default_rng([int(seed), i]) for i, name in enumerate(("plans", "validation"))}
        # optimizee k > 0 draws its data and initial parameters from its own; every worker of a cluster draws every
        # optimizee's (cheap numpy), so the generators agree everywhere without being exchanged
        self.rngs.update({f"plans/{k}": np.random.default_rng([int(seed), 0, k]) for k in range(1, self.count)})
        self.data_rngs = [self.rngs["plans"]] + [self.rngs[f"plans/{k}"] for k in range(1, self.count)]
        self.settings = plans.UnrollSettings(
            config.fix_unroll, config.fix_unroll_length, config.fix_num_steps, config.num_unroll_scale,
            config.min_num_unrolls, config.num_partial_unroll_itr_scale, config.min_num_itr_partial_unroll)
        self.meta_optimizer = meta_optimizer_lib.TF1RMSProp(config.meta_learning_rate, config.rms_decay, 0.0,
                                                            config.rms_epsilon)
        self.names = list(optimizer.original_variables())
        self.variables = list(optimizer.original_variables().values())
        self.unroller = unroll.Unroller(problem, optimizer, self.meta_optimizer, config.use_second_derivatives,
                                        config.use_log_objective, config.use_numerator_epsilon,
                                        config.gradient_clip_level, config.l2_reg, self.variables,
                                        config.jit_compile)
        self.parallel = unroll.ParallelUnroller(strategy, self.unroller, self.state_rngs)
        # each optimizee's state carried from one meta-iteration to the next (§8.1), as variables so that it is
        # checkpointed (mirrored under a strategy: every replica holds every optimizee's)
        template = optimizer.initial_state(problem.param_shapes)
        self.carried = [tf.nest.map_structure(lambda t: tf.Variable(tf.zeros_like(t), trainable=False), template)
                        for _ in range(self.count)]
        self.has_carried = [tf.Variable(False, trainable=False) for _ in range(self.count)]
        self.last_subset = None  # validation uses the last training unroll's subset
        self.teacher = self.imitator = None
        if config.if_mt:
            self.teacher = imitation.Teacher(problem, optimizers.Adam(TEACHER_LEARNING_RATE), teacher_rng,
                                             config.mt_k)
            self.imitator = imitation.ImitationTrainer(
                optimizer, param_shapes=problem.param_shapes, optimizer=self.meta_optimizer,
                variables=self.variables, average_over_unroll=True,
                apply=lambda opt, gradients, variables, *values: meta_optimizer_lib.apply_sanitized(
                    opt, gradients, variables, config.gradient_clip_level))

    # -- the carried optimizer state ------------------------------------------------------------------------------
    def start_state(self, k):
        """(state, reset): optimizee k starts from its carried state, or from a fresh one where `reset`."""
        reset = not (self.config.reset_rnn_params and bool(self.has_carried[k].numpy()))
        return tf.nest.map_structure(tf.identity, self.carried[k]), reset

    def carry(self, states):
        """Keep `states[k]` for optimizee k's next meta-iteration; a non-finite one is dropped (that optimizee
        starts afresh)."""
        for carried, has_carried, state in zip(self.carried, self.has_carried, states):
            finite = all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tf.nest.flatten(state))
            if finite:
                tf.nest.map_structure(lambda variable, value: variable.assign(value), carried, state)
            has_carried.assign(finite)

    # -- one meta-iteration ---------------------------------------------------------------------------------------
    def plan(self, curriculum_unrolls=None):
        return plans.unroll_plan(self.rngs["plans"], self.settings, curriculum_unrolls)

    def draw(self, rng, plan):
        """(data, initial parameters) of one optimizee on `plan`, from its generator `rng`."""
        config = self.config
        data = plans.iteration_data(rng, plan, self.dataset_size, self.batch_size, config.mini_batch_size,
                                    config.data_freeze, config.mt_k if config.if_mt else 1)
        return data, plans.optimizee_init(rng, self.problem.param_shapes)

    def train_iteration(self, curriculum_unrolls=None, imitate=False):
        """One meta-iteration (an imitation one of optimizee 0 alone); returns its history record."""
        plan = self.plan(curriculum_unrolls)
        count = 1 if imitate else self.count
        draws = [self.draw(rng, plan) for rng in self.data_rngs[:count]]  # per optimizee: (data, params)
        starts = [self.start_state(k) for k in range(count)]  # per optimizee: (state, reset)
        data = [d for d, _ in draws]
        self.last_subset = data[0].subsets[-1]
        record = {"unrolls": len(plan), "steps": int(sum(plan)), "fresh_state": starts[0][1]}
        if imitate:
            return self._imitate(record, plan, data[0], draws[0][1], *starts[0])
        optimizees = self.parallel.start([p for _, p in draws], [s for s, _ in starts], [r for _, r in starts],
                                         [d.subsets[0] for d in data])
        objectives, losses, initial = [], [], None
        for u in range(len(plan)):
            optimizees, values, objective, mean_initial = self.parallel.train_unroll(
                optimizees, [d.subsets[u] for d in data], [d.batches[u] for d in data])
            initial = mean_initial if initial is None else initial
            objectives.append(objective)
            losses.append(float(values[-1]))
            if not np.all(np.isfinite(values)):
                break  # an optimizee diverged: the rest of this meta-iteration would only apply zeros
        self.carry(self.parallel.final_states(optimizees))
        distribute.gather_generators(self.strategy, self.state_rngs)  # so a cluster's validations and imitations agree
        record.update(kind="train", initial_loss=initial, loss=losses[-1], meta_loss=float(np.mean(objectives)),
                      applied=len(objectives))
        return record

    def _imitate(self, record, plan, data, params, state, reset):
        gradients, steps = self.teacher.trajectory(sum(plan), params=params,
                                                   batches=np.concatenate(data.teacher_batches))
        loss, applied = self.imitator.train_epoch(gradients, steps, state=None if reset else state,
                                                  unroll_lengths=plan)
        self.carry([self.imitator.state])
        record.update(kind="imitation[adam]", imitation_loss=loss, applied=applied)
        return record

    # -- validation -----------------------------------------------------------------------------------------------
    def validate(self, num_unrolls):
        """Sum over `evaluation_epochs` runs of `num_unrolls` unrolls of the original's validation cost (§3.5)."""
        rng = self.rngs["validation"]
        if self.last_subset is None:  # nothing trained yet in this process (a resumed run's first validation)
            self.last_subset = plans.data_subset(rng, self.dataset_size, self.config.mini_batch_size,
                                                 self.config.data_freeze)
        plan = [self.config.fix_unroll_length] * int(num_unrolls)
        total = 0.0
        for _ in range(self.config.evaluation_epochs):
            params = plans.optimizee_init(rng, self.problem.param_shapes)
            batches = plans.validation_batches(rng, self.last_subset, plan, self.batch_size)
            state, reset = self.start_state(0)
            cost = self.unroller.validation_cost(params, state, self.last_subset, batches, reset)
            total += cost if math.isfinite(cost) else math.inf
        return total

    # -- files in the original's format ---------------------------------------------------------------------------
    def save(self, prefix):
        """The meta-parameters, their RMSProp slots and global_step under the original names (a TF1 checkpoint)."""
        extra = {"global_step": np.int64(self.meta_optimizer.iterations.numpy())}
        for name, variable in zip(self.names, self.variables):
            ms, mom = self.meta_optimizer.slots(variable)
            extra[f"{name}/RMSProp"], extra[f"{name}/RMSProp_1"] = ms.numpy(), mom.numpy()
        return checkpoint.save(self.optimizer, prefix, extra=extra)

    def restore(self, prefix):
        """The curriculum's restore (§4.1): the meta-parameters AND their RMSProp slots; not global_step."""
        _, tensors = checkpoint.read(prefix)
        checkpoint.assign(self.optimizer, tensors, prefix)
        for name, variable in zip(self.names, self.variables):
            for slot, suffix in zip(self.meta_optimizer.slots(variable), ("RMSProp", "RMSProp_1")):
                slot.assign(tensors[f"{name}/{suffix}"])

    def random_states(self):
        return {name: rng.bit_generator.state for name, rng in self.rngs.items()}

    def set_random_states(self, states):
        for name, state in states.items():
            self.rngs[name].bit_generator.state = state


def model_prefix(save_path, index):
    return os.path.join(save_path, f"model.ckpt-{index}")


class ScaleTraining(training.MetaTraining):
    """The shared training loop (curriculum, checkpoints, Ctrl-C, progress, TensorBoard) around `Iterations`.

    Files in `config.save_path` (<train_dir>/HierarchicalRNN_GRUCell_20_2, the original's logdir): model.ckpt-0
    (the best so far), model.ckpt-<stage> under the curriculum, model.ckpt-<k> every --save_period meta-iterations
    without it, all TF1 checkpoints with the original names (l2o_scale.checkpoint, readable by l2o_scale.metatest and
    by the original code); the shared trainer's resume checkpoint and history.json beside them (in a cluster, the
    chief writes them all).

    `strategy` (a `tf.distribute.Strategy`) replaces --strategy's; a given `optimizer` must be unbuilt or built under
    its scope."""

    def __init__(self, config, problem, optimizer=None, strategy=None):
        if config.seed is None:  # the run's seed now (a resumed run's own), so that it also seeds the optimizer
            _, saved = training.resume_point(config.save_path)
            config = dataclasses.replace(config, seed=training.run_seed(None, saved))
        if optimizer is None:
            optimizer = hierarchical_rnn.HierarchicalRNN(seed=int(config.seed), **config.optimizer_config)
        # optimizee k > 0 draws its fresh optimizer states from a generator of its own, made on its replica's device
        # and, as DM's optimizee generators, outside the strategy's scope (there it would draw per replica)
        strategy, count = distribute.strategy_and_count(config.validate(), strategy)
        self._state_rngs = distribute.optimizee_generators(
            strategy, count, (STATE_STREAM,),
            lambda name: optimizer.initial_lr_generator if name == STATE_STREAM else seeding.generator(config.seed, name))[STATE_STREAM]
        super().__init__(config, problem, cell=optimizer, strategy=strategy)

    # -- the shared trainer's hooks -------------------------------------------------------------------------------
    def _build_trainers(self):
        self.optimizee_rngs[STATE_STREAM] = self._state_rngs  # checkpointed (k > 0) and gathered with the others
        self.iterations = Iterations(self.config, self.problem, self.cell, self.seed, self.rngs["imitation"],
                                     self.strategy, self._state_rngs)

    def _checkpointed(self):
        """Optimizee 0's carried state where a one-optimizee run keeps it; the others' beside it."""
        iterations = self.iterations
        others = [{"state": tf.nest.flatten(carried), "has_state": has_carried}
                  for carried, has_carried in zip(iterations.carried[1:], iterations.has_carried[1:])]
        return {"weights": list(iterations.variables), "meta_optimizer": iterations.meta_optimizer,
                "carried_state": tf.nest.flatten(iterations.carried[0]),
                "has_carried_state": iterations.has_carried[0], "initial_lr_generator": self.cell.initial_lr_generator,
                **({"optimizee_carried_states": others} if others else {})}

    def _progress_state(self):
        return {**super()._progress_state(), "scale_random_states": self.iterations.random_states()}

    def _restore(self, state):
        super()._restore(state)
        self.iterations.set_random_states(state["scale_random_states"])

    # -- what differs from DM -------------------------------------------------------------------------------------
    def train_epoch(self):
        """One meta-iteration (training, or imitation with probability --mt_ratio under --if_mt)."""
        config = self.config
        imitate = float(self.rngs["epochs"].uniform([])) < self.imitation_ratio()
        unrolls = plans.curriculum_unrolls(self.curriculum.train_steps, config.fix_unroll_length) \
            if config.if_cl else None
        record = self.iterations.train_iteration(unrolls, imitate)
        if not imitate:
            self.training_epochs += 1
        if not config.if_cl and (self.epoch + 1) % config.save_period == 0:
            self.save_checkpoint_file(self.epoch + 1)
        return record

    def validate(self, steps):
        """Sum over --evaluation_epochs runs of `steps` // --fix_unroll_length unrolls (§3.5)."""
        return self.iterations.validate(plans.curriculum_unrolls(steps, self.config.fix_unroll_length))

    def snapshot_due(self):
        """Never: L2O-Scale's metarun keeps only the original's saves (it has no --snapshot_every)."""
        return False

    def save_model(self, index):
        """An improvement: model.ckpt-<stage> and model.ckpt-0 under the curriculum, else model.ckpt-0 (§3.6)."""
        for i in ({index, 0} if self.config.if_cl else {0}):
            self.save_checkpoint_file(i)

    def save_checkpoint_file(self, index):
        if self.config.save_path and self.chief:
            self.iterations.save(model_prefix(self.config.save_path, index))

    def restore_model(self, index):
        self.iterations.restore(model_prefix(self.config.save_path, index))

    def best_model_path(self):
        return model_prefix(self.config.save_path or "", 0)


def train(config, problem):
    """Build (or resume) the run of `config` on `problem`, train, and say where the best model is."""
    run = ScaleTraining(config, problem)
    if not run.resumed:
        logging.info("meta-training L2O-Scale on %s (%d parameters), seed %d: %s%s", problem.name, problem.num_params,
                     run.seed, "curriculum " + " ".join(map(str, config.num_steps_schedule)) if config.if_cl else
                     "fixed unrolls" if config.fix_unroll else "long-tailed unroll plans",
                     f", imitation with probability {config.mt_ratio}" if config.if_mt else "")
    run.run()
    if config.save_path and run.chief:
        print(f"Best optimizer: {run.best_model_path()}")
    return run
