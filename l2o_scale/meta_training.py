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
  * or, with probability --mt_ratio under --if_mt, imitates (§4.2): Adam(0.01) optimises the same optimizee on the
    same minibatches (k teacher steps per recorded step), and the optimizer, fed the teacher's gradients, learns
    to reproduce its steps (teacher forcing), with the shared `l2o_tf.imitation` code and the same RMSProp.

Validation (§3.5): `evaluation_epochs` runs from fresh N(0, 1) optimizees on the last training unroll's subset;
each run's cost is the subset loss before its last update; the sum is returned (the shared loop divides by the
number of runs when it reports). Random draws come from generators of their own (plans and data, validation,
teacher), each restored on resume.
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
from l2o_tf import imitation
from l2o_tf import optimizers
from l2o_tf import problems
from l2o_tf import training

TEACHER_LEARNING_RATE = 0.01  # hard-coded in the original's mt_utils (rd_lr), with TF's Adam defaults


class Iterations:
    """Meta-iterations and validations of one L2O-Scale optimizer on one problem, with their random streams."""

    def __init__(self, config, problem, optimizer, seed, teacher_rng):
        self.config, self.problem, self.optimizer = config, problem, optimizer
        self.batch_size = problems.BATCH_SIZE
        self.dataset_size = int(problem.labels.shape[0])
        if self.dataset_size < self.batch_size:
            raise ValueError(f"{self.dataset_size} training examples are fewer than one minibatch ({self.batch_size})")
        self.rngs = {name: np.random.default_rng([int(seed), i]) for i, name in enumerate(("plans", "validation"))}
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
        # the state carried from one meta-iteration to the next (§8.1), as variables so that it is checkpointed
        template = optimizer.initial_state(problem.param_shapes)
        self.carried = tf.nest.map_structure(lambda t: tf.Variable(tf.zeros_like(t), trainable=False), template)
        self.has_carried = tf.Variable(False, trainable=False)
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
    def start_state(self):
        """(state, reset): a trajectory starts from the carried state, or from a fresh one where `reset`."""
        reset = not (self.config.reset_rnn_params and bool(self.has_carried))
        return tf.nest.map_structure(tf.identity, self.carried), reset

    def carry(self, state):
        """Keep `state` for the next meta-iteration; a non-finite one is dropped (the next one starts afresh)."""
        finite = all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tf.nest.flatten(state))
        if finite:
            tf.nest.map_structure(lambda variable, value: variable.assign(value), self.carried, state)
        self.has_carried.assign(finite)

    # -- one meta-iteration ---------------------------------------------------------------------------------------
    def plan(self, curriculum_unrolls=None):
        return plans.unroll_plan(self.rngs["plans"], self.settings, curriculum_unrolls)

    def train_iteration(self, curriculum_unrolls=None, imitate=False):
        """One meta-iteration; returns its history record."""
        config, rng = self.config, self.rngs["plans"]
        plan = self.plan(curriculum_unrolls)
        k = config.mt_k if config.if_mt else 1
        data = plans.iteration_data(rng, plan, self.dataset_size, self.batch_size, config.mini_batch_size,
                                    config.data_freeze, k)
        params = plans.optimizee_init(rng, self.problem.param_shapes)
        self.last_subset = data.subsets[-1]
        state, reset = self.start_state()
        record = {"unrolls": len(plan), "steps": int(sum(plan)), "fresh_state": reset}
        if imitate:
            gradients, steps = self.teacher.trajectory(sum(plan), params=params,
                                                       batches=np.concatenate(data.teacher_batches))
            loss, applied = self.imitator.train_epoch(gradients, steps, state=None if reset else state,
                                                      unroll_lengths=plan)
            self.carry(self.imitator.state)
            record.update(kind="imitation[adam]", imitation_loss=loss, applied=applied)
            return record
        initial = self.unroller.initial_objective(params, data.subsets[0])
        objectives, losses = [], []
        for subset, batches in zip(data.subsets, data.batches):
            params, state, values, objective = self.unroller.train_unroll(params, state, subset, batches, initial,
                                                                          reset)
            reset = False
            objectives.append(objective)
            losses.append(float(values[-1]))
            if not np.all(np.isfinite(values)):
                break  # the optimizee diverged: the rest of this meta-iteration would only apply zeros
        self.carry(state)
        record.update(kind="train", initial_loss=initial, loss=losses[-1], meta_loss=float(np.mean(objectives)),
                      applied=len(objectives))
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
            state, reset = self.start_state()
            cost = self.unroller.validation_cost(params, state, self.last_subset, batches, reset)
            total += cost if math.isfinite(cost) else math.inf
        return total

    # -- files in the original's format ---------------------------------------------------------------------------
    def save(self, prefix):
        """The meta-parameters, their RMSProp slots and global_step under the original names (a TF1 checkpoint)."""
        extra = {"global_step": np.int64(int(self.meta_optimizer.iterations))}
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
    by the original code); the shared trainer's resume checkpoint and history.json beside them."""

    def __init__(self, config, problem, optimizer=None):
        if config.seed is None:  # draw the run's seed now, so that it also seeds the optimizer's initialisation
            config = dataclasses.replace(config, seed=training._seed_or_fresh(None))
        if optimizer is None:
            optimizer = hierarchical_rnn.HierarchicalRNN(seed=int(config.seed), **config.optimizer_config)
        super().__init__(config, problem, cell=optimizer)

    # -- the shared trainer's hooks -------------------------------------------------------------------------------
    def _build_trainers(self):
        self.iterations = Iterations(self.config, self.problem, self.cell, self.seed, self.rngs["imitation"])

    def _checkpointed(self):
        return {"weights": list(self.iterations.variables), "meta_optimizer": self.iterations.meta_optimizer,
                "carried_state": tf.nest.flatten(self.iterations.carried),
                "has_carried_state": self.iterations.has_carried, "initial_lr_generator": self.cell._rng}

    def _progress_state(self):
        return {**super()._progress_state(), "scale_random_states": self.iterations.random_states()}

    def _restore(self):
        resumed = super()._restore()
        if resumed:
            state = training._read_progress(self._manager.latest_checkpoint)
            self.iterations.set_random_states(state["scale_random_states"])
        return resumed

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

    def save_model(self, index):
        """An improvement: model.ckpt-<stage> and model.ckpt-0 under the curriculum, else model.ckpt-0 (§3.6)."""
        for i in ({index, 0} if self.config.if_cl else {0}):
            self.save_checkpoint_file(i)

    def save_checkpoint_file(self, index):
        if self.config.save_path:
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
    if config.save_path:
        print(f"Best optimizer: {run.best_model_path()}")
    return run
