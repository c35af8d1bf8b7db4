"""Meta-training as a library (SPEC_DM §4-§6, §8.1): `MetaTraining(config, problem)` builds and runs one training run.

Per epoch a fresh optimizee is optimised for the stage's number of steps, one meta-update per unroll; with
`if_mt` an epoch may instead imitate a teacher; every `evaluation_period` epochs the optimizer is validated (sum
over `evaluation_epochs` fresh, unscaled trajectories of the final loss, on the training split, as the original;
the history keeps it as `validation_loss_sum` beside `validation_loss_mean`, the number the log and TensorBoard show)
and the curriculum decides what happens next. The best model is saved in the original's layout.

Every component that draws random numbers (training trajectories, validation, teachers, the self-improving
mixture, the choice of imitation epochs) has a generator of its own derived from the seed and its name, so adding a
component never shifts another's stream.

Resume state (weights, the meta-optimizers, every generator, counters, curriculum and history; with
`--imitation_initial_state=main` the learner state imitation epochs start from) is one
`tf.train.Checkpoint` under `<save_path>/checkpoints/`, saved at every validation, every `checkpoint_secs` and on
Ctrl-C / SIGTERM; the history travels inside it, so the two can never disagree (`history.json` beside it is a
copy for reading). Building `MetaTraining` on a save path that has a checkpoint resumes it, if it is the same run:
every setting but the config's RESUME_MAY_CHANGE (how long, where it runs, where and when it writes), the seed (none
given: the checkpoint's), the data and the number of optimizees must be the checkpoint's. A run that is done (the
curriculum ended it, or it reached `num_epochs`) stays done; a larger `num_epochs` continues one the cap stopped.
"""
import json
import math
import os
import shlex
import signal
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from l2o_tf import config as config_lib
from l2o_tf import curriculum
from l2o_tf import distribute
from l2o_tf import errors
from l2o_tf import fileio
from l2o_tf import imitation
from l2o_tf import meta
from l2o_tf import names
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import original_pickle
from l2o_tf import problems
from l2o_tf import seeding
from l2o_tf import self_improving

CHECKPOINT_DIR = "checkpoints"
HISTORY = "history.json"
MAX_FAILED_EPOCHS = 20  # consecutive epochs whose every meta-update was non-finite before we give up
TEACHER_LEARNING_RATE = 0.01  # the original's fixed teacher (and our auxiliaries') learning rate
RANDOM_COMPONENTS = ("train", "validation", "imitation", "mixture", "epochs")
LOG_EVERY_SECS = 10
UNTRAINED_MARGIN = 0.01  # a kept model whose validation is not 1 % below the optimizee's starting loss is untrained


class TrainingDiverged(errors.L2OError):
    """Every meta-update of many epochs in a row was non-finite."""


class MetaTraining:
    """One training run: the trainers, the schedule and the counters, with checkpoint save and restore."""

    def __init__(self, config, problem, cell=None, strategy=None):
        self.config, self.problem = config.validate(), problem
        # `strategy`: a tf.distribute.Strategy instead of --strategy's; a given `cell` must be built under its scope
        self.strategy, self.num_optimizees = distribute.strategy_and_count(config, strategy)
        self._resume_path, saved = resume_point(config.save_path)
        if saved is not None:
            self._check_same_run(saved)
        self.seed = run_seed(config.seed, saved)
        self.chief = distribute.is_chief(self.strategy)
        self.rngs = {name: seeding.generator(self.seed, name) for name in RANDOM_COMPONENTS}
        self.optimizee_rngs = distribute.optimizee_generators(  # optimizee k > 0: "train/k" and "mixture/k"
            self.strategy, self.num_optimizees, ("train", "mixture"), lambda name: seeding.generator(self.seed, name))
        self.rngs.update({name: generators[0] for name, generators in self.optimizee_rngs.items()})
        with self.strategy.scope():
            self.cell = cell or networks.for_problem(config.net, problem.name, seed=self.seed, **config.cell)
            if not self.cell.built:
                self.cell.build()
            distribute.check_made_in_scope(self.strategy, self.cell)
            self._build_trainers()
        self.curriculum = curriculum.Curriculum(config.schedule, config.min_num_eval, enabled=config.if_cl)
        self.epoch = 0
        self.training_epochs = 0  # epochs that trained on the meta-loss (the self-improving decay counts these)
        self.imitation_task, self.skipped_updates = 0, 0
        self.finished = False  # the curriculum ended the run: running the command again does nothing
        self.history = []
        self._progress = tf.Variable("", dtype=tf.string, trainable=False)
        self._checkpoint = tf.train.Checkpoint(**self._checkpointed(), rngs=self.rngs, progress=self._progress,
                                               **distribute.checkpointed_generators(self.optimizee_rngs))
        self._manager = None
        if config.save_path:
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, os.path.join(config.save_path, CHECKPOINT_DIR), max_to_keep=2)
        self.resumed = saved is not None
        if self.resumed:
            self._restore(saved)
        else:
            self.history.append({"epoch": 0, "kind": "start", "problem": problem.name, "seed": self.seed,
                                 "data_source": problems.data_source(problem), "config": config.as_dict()})
        self._summaries = None if self.done() else self._summary_writer()

    def _build_trainers(self):
        """The meta-trainer, the validator and the imitation teachers (L2O-Scale's subclass builds its own)."""
        config, problem = self.config, self.problem
        self.mixture = None
        if config.self_improving:
            auxiliaries = [optimizers.get(name, TEACHER_LEARNING_RATE) for name in config.auxiliary_optimizers]
            self.mixture = self_improving.MixtureRule(self.cell, auxiliaries, self.rngs["mixture"])
        self.trainer = meta.Trainer(problem, self.cell, self.rngs["train"], config.learning_rate,
                                    config.unroll_length, config.second_derivatives, rule=self.mixture)
        if distribute.is_parallel(self.strategy, self.num_optimizees):
            self.trainer = distribute.ParallelTrainer(self.strategy, self.trainer, self.optimizee_rngs["train"],
                                                      distribute.with_rngs(self.trainer.rule,
                                                                           self.optimizee_rngs["mixture"]))
        self.main_state = None  # --imitation_initial_state=main: the learner's state imitation epochs start from
        if config.if_mt and config.imitation_initial_state == "main":
            if distribute.is_parallel(self.strategy, self.num_optimizees):
                raise errors.UsageError("--imitation_initial_state=main needs one optimizee per meta-step on the "
                                        "default --strategy, the original's setting with one final state to copy; "
                                        "with --strategy or --num_optimizees use --imitation_initial_state=zeros")
            self.main_state = imitation.MainTaskState(self.cell, problem.num_params)
        self.validator = meta.Runner(problem, self.cell, self.rngs["validation"])
        self.teachers, self.imitators = [], []
        if config.if_mt:
            for name in config.optimizers[:config.num_mt]:
                self.teachers.append(imitation.Teacher(problem, optimizers.get(name, TEACHER_LEARNING_RATE),
                                                       self.rngs["imitation"], config.k))
                self.imitators.append(imitation.ImitationTrainer(self.cell, config.learning_rate,
                                                                 config.unroll_length, problem.param_shapes))

    def _checkpointed(self):
        """What the resume checkpoint holds besides the generators and the progress record."""
        return {"weights": {v.name: v for v in self.cell.weights}, "meta_optimizer": self.trainer.optimizer,
                "imitation_optimizers": [i.optimizer for i in self.imitators],
                **({"imitation_initial_state": self.main_state.variables} if self.main_state is not None else {})}

    # -- one epoch ------------------------------------------------------------------------------------------------
    def num_unrolls(self, steps):
        return steps // self.config.unroll_length

    def imitation_ratio(self):
        """The probability that the next epoch imitates: --mt_ratio, or under the curriculum the stage's."""
        if not self.config.if_mt:
            return 0.0
        if not self.config.if_cl:
            return self.config.mt_ratio
        ratios = self.config.mt_ratios
        return ratios[min(self.curriculum.stage, len(ratios) - 1)]

    def train_epoch(self):
        """One epoch, training or imitation; returns its history record (kind, losses, updates applied)."""
        config = self.config
        unrolls = self.num_unrolls(self.curriculum.train_steps)
        if float(self.rngs["epochs"].uniform([])) < self.imitation_ratio():
            task = self.imitation_task
            self.imitation_task = (task + 1) % len(self.teachers)
            gradients, steps = self.teachers[task].trajectory(unrolls * config.unroll_length, config.scale_bound)
            imitator = self.imitators[task]
            start = None if self.main_state is None else self.main_state.start(imitator.zero_state(
                self.problem.num_params))
            loss, applied = imitator.train_epoch(gradients, steps, state=start)
            record = {"kind": f"imitation[{self.teachers[task].rule.name}]", "imitation_loss": loss,
                      "applied": applied}
        else:
            record = {"kind": "train"}
            if self.mixture is not None:
                p = self_improving.auxiliary_probability(self.training_epochs, len(self.mixture.auxiliaries),
                                                         config.auxiliary_decay_epochs)
                self.mixture.set_auxiliary_probability(p)
                record["auxiliary_probability"] = p
            trajectory = self.trainer.new_trajectory(config.scale_bound)
            loss, meta_losses = float("nan"), []
            for _ in range(unrolls):
                trajectory, meta_loss, loss, ok = self.trainer.train_unroll(trajectory)
                if not ok:
                    break  # the optimizee diverged: a fresh one next epoch
                meta_losses.append(meta_loss)
            if self.main_state is not None:  # with the self-improving mixture, its learned optimizer's part
                self.main_state.remember(trajectory.state[0] if self.mixture is not None else trajectory.state)
            self.training_epochs += 1
            record.update(loss=loss, meta_loss=float(np.mean(meta_losses)) if meta_losses else float("nan"),
                          applied=len(meta_losses))
        if record["applied"] < unrolls:
            self.skipped_updates += 1
            logging.warning("epoch %d (%s): non-finite meta-gradient or loss; update skipped (%d skipped so far)",
                            self.epoch + 1, record["kind"], self.skipped_updates)
        return record

    def validate(self, steps):
        """Sum over `evaluation_epochs` fresh unscaled trajectories of the loss after `steps` steps (whole
        unrolls, as training)."""
        steps = self.num_unrolls(steps) * self.config.unroll_length
        total = 0.0
        for _ in range(self.config.evaluation_epochs):
            loss, state = self.validator.final_loss(self.validator.new_trajectory(), steps)
            total += loss
        if self.main_state is not None:  # validation runs are main-task trajectories too: the last one's state
            self.main_state.remember(state)
        return total

    def mean_loss(self, cost):
        """A validation's sum over `evaluation_epochs` trajectories as their mean, the number users are shown."""
        return cost / self.config.evaluation_epochs

    def starting_loss(self):
        """The mean loss of `evaluation_epochs` fresh, unscaled optimizees before any step: what validation would
        measure for an optimizer that never moves: validation's trajectories and loss, drawn from a generator of its
        own, so no other stream shifts (eager: one loss each, where a compiled Runner would trace for seconds)."""
        rng = seeding.generator(self.seed, "starting_loss")
        losses = []
        for _ in range(self.config.evaluation_epochs):
            trajectory = meta.new_trajectory(self.problem, self.cell, rng)
            losses.append(float(self.problem.loss(meta.scaled(trajectory.params, trajectory.scale),
                                                  trajectory.constants, rng)))
        return float(np.mean(losses))

    def untrained_warning(self):
        """What to tell the user when the kept model's validation is not UNTRAINED_MARGIN below `starting_loss` (a
        training stuck where the learned steps vanish or saturate the optimizee, or one too short to learn); None
        otherwise. The curriculum's best is the kept model's validation at the last stage's length."""
        cl = self.curriculum
        if not math.isfinite(cl.best):
            return None
        best, start = self.mean_loss(cl.best), self.starting_loss()
        if not start > 0 or best < (1 - UNTRAINED_MARGIN) * start:
            return None
        return (f"the kept model's best validation, {best:.4f} after {cl.valid_steps} steps, is not "
                f"{UNTRAINED_MARGIN:.0%} below the optimizee's loss before any step ({start:.4f}): this optimizer "
                f"barely trains the optimizee, or makes it worse. Train longer, or with another --seed "
                f"(docs/RESULTS.md, \"Seed 2: vanilla L2O-DM's training failed\")")

    def done(self):
        """Whether nothing is left to train: the curriculum ended the run, or it reached `num_epochs`."""
        return self.finished or self.epoch >= self.config.num_epochs

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self):
        """Train until `num_epochs` or the curriculum's end; Ctrl-C / SIGTERM save and raise `errors.Interrupted`."""
        config, cl = self.config, self.curriculum
        if self.done():
            logging.info("this run has already ended (%s); the best model is %s", self._why_done(),
                         self.best_model_path())
            return self.history
        last_checkpoint = last_log = time.time()
        epoch_times, failed_epochs, start_epoch = [], 0, self.epoch
        with _InterruptHandler(self) as interrupt:
            while self.epoch < config.num_epochs and not self.finished:
                start = time.time()
                record = self.train_epoch()
                self.epoch += 1
                epoch_times.append(time.time() - start)
                failed_epochs = failed_epochs + 1 if record["applied"] == 0 else 0
                if failed_epochs >= MAX_FAILED_EPOCHS:
                    self.checkpoint()
                    raise TrainingDiverged(f"{failed_epochs} epochs in a row had only non-finite meta-gradients: "
                                           f"training diverged; try a lower --learning_rate (checkpoint kept in "
                                           f"{config.save_path})")
                self.history.append({"epoch": self.epoch, **record, "train_steps": cl.train_steps})
                self._summarise(record, epoch_times[-1])
                if time.time() - last_log > LOG_EVERY_SECS or self.epoch == start_epoch + 1:
                    self._log_progress(record, epoch_times)
                    last_log = time.time()
                if self.snapshot_due():
                    self.save_model(self.epoch, best=False)
                if self.epoch % config.evaluation_period == 0:
                    self.evaluate()
                    self.checkpoint()
                    last_checkpoint = time.time()
                elif distribute.agree(self.strategy, time.time() - last_checkpoint > config.checkpoint_secs):
                    self.checkpoint()
                    last_checkpoint = time.time()
                if distribute.agree(self.strategy, interrupt.requested):
                    self.checkpoint()
                    raise errors.Interrupted(self._resume_message("interrupted"))
        self.checkpoint()
        return self.history

    def evaluate(self):
        """Validate, let the curriculum decide, and act on it (save, advance with restore, or stop)."""
        config, cl = self.config, self.curriculum
        steps = cl.valid_steps
        cost = distribute.from_chief(self.strategy, self.validate(steps))
        decision = cl.observe(cost)
        logging.info("epoch %d: validation at %d steps %.4f (mean final loss), best %.4f -> %s", self.epoch, steps,
                     self.mean_loss(cost), self.mean_loss(cl.best), decision)
        self.history.append({"epoch": self.epoch, "kind": "validation", "steps": steps,
                             **_loss_fields("validation", cost, config.evaluation_epochs), "decision": decision,
                             "stage": cl.stage})
        self._scalars(validation_cost=self.mean_loss(cost), curriculum_stage=cl.stage)
        if decision == curriculum.IMPROVED:
            self.save_model(cl.stage if config.if_cl else self.epoch)
        elif decision == curriculum.ADVANCE:
            self.restore_model(cl.stage - 1)
            baseline = distribute.from_chief(self.strategy, self.validate(cl.valid_steps))
            cl.start_stage(baseline)
            self.history.append({"epoch": self.epoch, "kind": "stage", "stage": cl.stage,
                                 **_loss_fields("baseline", baseline, config.evaluation_epochs),
                                 "train_steps": cl.train_steps, "valid_steps": cl.valid_steps})
            logging.info("curriculum: stage %d now trains on %d steps and validates on %d; restored the previous "
                         "stage's best, baseline %.4f", cl.stage, cl.train_steps, cl.valid_steps,
                         self.mean_loss(baseline))
        elif decision == curriculum.STOP:
            logging.info("curriculum: no improvement in stage %d -> stop; the best model is %s", cl.stage,
                         self.best_model_path())
        elif decision == curriculum.FINISHED:
            logging.info("curriculum: the last stage (%d steps) stopped improving -> done", cl.train_steps)
        self.finished = decision in (curriculum.STOP, curriculum.FINISHED)
        return decision

    # -- files ----------------------------------------------------------------------------------------------------
    def best_model_path(self):
        return os.path.join(self.config.save_path or "", f"{self.cell.key}.l2l-0")

    def snapshot_due(self):
        """Whether this epoch's weights are kept as a periodic save (--snapshot_every)."""
        every = self.config.snapshot_every
        return bool(every) and self.epoch % every == 0

    def save_model(self, index, best=True):
        """`<key>.l2l-<index>` and, when it is the best so far, `<key>.l2l-0`, each with a sidecar saying how it was
        trained."""
        if self.config.save_path and self.chief:
            metadata = {"trained_on": self.problem.name, "data_source": problems.data_source(self.problem),
                        "epoch": self.epoch, "seed": self.seed}
            for i in {index, 0} if best else {index}:
                networks.save(self.cell, self.config.save_path, i, metadata=metadata)

    def restore_model(self, index):
        path = os.path.join(self.config.save_path, f"{self.cell.key}.l2l-{index}")
        self.cell.set_original_weights(original_pickle.read(path))

    def checkpoint(self):
        """Save everything needed to continue (atomic: the manager commits a checkpoint only once it is whole)."""
        if self._manager is None:
            return
        for generators in self.optimizee_rngs.values():
            distribute.gather_generators(self.strategy, generators)
        if not self.chief:  # one writer: the chief (every worker reads the checkpoint to resume)
            return
        self._progress.assign(json.dumps(self._progress_state()))
        self._manager.save()
        fileio.atomic_write_bytes(os.path.join(self.config.save_path, HISTORY), json.dumps(self.history).encode())

    def _progress_state(self):
        return {"epoch": self.epoch, "training_epochs": self.training_epochs,
                "curriculum": self.curriculum.state_dict(), "history": self.history,
                "imitation_task": self.imitation_task, "skipped_updates": self.skipped_updates,
                "finished": self.finished, "seed": self.seed, "config": self.config.as_dict(),
                "data_source": problems.data_source(self.problem), "num_optimizees": self.num_optimizees}

    def _check_same_run(self, saved):
        """Refuse the checkpoint whose progress record is `saved` if it holds another run, naming every difference."""
        config = self.config
        differences, missing = self._differences(saved)
        if differences:
            may_change = ", ".join(f"--{name}" for name in config.resume_may_change)
            raise errors.UsageError(f"{config.save_path} holds another run: {'; '.join(differences)}; resume it with "
                                    f"its settings (only {may_change} may change) or give another directory")
        if missing:
            logging.info("the checkpoint in %s predates %s: taken as the default%s", config.save_path,
                         ", ".join(f"--{name}={value!r}" for name, value in missing.items()), "s" * (len(missing) > 1))

    def _differences(self, saved):
        """([each way this run differs from the checkpoint's, as a message part], {setting the checkpoint predates:
        its default})."""
        config, data = self.config, problems.data_source(self.problem)
        settings, missing = config_lib.resume_differences(config, saved["config"])
        if config.seed is not None and config.seed != saved["seed"]:
            settings["seed"] = (saved["seed"], config.seed)
        differences = [f"--{name}={there!r} there, {now!r} now" for name, (there, now) in settings.items()]
        if saved["data_source"] != data:
            differences.append(f"data {saved['data_source']!r} there, {data!r} now (--data_dir, $L2O_DATA_DIR)")
        count = saved.get("num_optimizees", 1)
        if count != self.num_optimizees:
            differences.append(f"{count} optimizees per meta-step, {self.num_optimizees} now (--num_optimizees, "
                               "--strategy)")
        return differences, missing

    def _restore(self, state):
        """Continue from the save path's latest checkpoint, whose progress record is `state`."""
        path = self._resume_path
        try:
            # every object of ours restored; the checkpoint's save_counter, which `read` leaves, is no loss
            self._checkpoint.read(path).assert_existing_objects_matched().expect_partial()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            raise errors.L2OError(f"{path} is not a readable training checkpoint of this run ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0]}); move {self._manager.directory} away to start "
                                  "afresh") from None
        self.epoch, self.training_epochs, self.finished = state["epoch"], state["training_epochs"], state["finished"]
        self.history = [_named_losses(record, self.config.evaluation_epochs) for record in state["history"]]
        self.imitation_task, self.skipped_updates = state["imitation_task"], state["skipped_updates"]
        self.curriculum = curriculum.Curriculum.from_state_dict(state["curriculum"])
        if not self.done():
            logging.info("resuming %s from epoch %d (stage %d)", path, self.epoch, self.curriculum.stage)

    def _why_done(self):
        if self.finished:
            return "the curriculum ended it"
        flag = self.config.epochs_flag
        return f"it reached epoch {self.epoch} of --{flag}={self.config.num_epochs}; a larger --{flag} continues it"

    def _resume_message(self, what):
        if self._manager is None:
            return f"{what} at epoch {self.epoch}; nothing was saved (no --save_path)"
        return (f"{what} at epoch {self.epoch}: checkpoint saved in {self._manager.directory}; run the same "
                "command again to resume")

    # -- progress -------------------------------------------------------------------------------------------------
    def _log_progress(self, record, epoch_times):
        cl, config = self.curriculum, self.config
        seconds = float(np.mean(epoch_times[-50:]))
        remaining = (config.num_epochs - self.epoch) * seconds
        loss = record.get("loss", record.get("imitation_loss"))
        logging.info("epoch %d/%d  %s loss %.4g  stage %d (%d steps)  %.2f s/epoch  ETA %s%s", self.epoch,
                     config.num_epochs, record["kind"], loss, cl.stage, cl.train_steps, seconds,
                     names.format_duration(remaining), " (at most: the curriculum may end sooner)" if config.if_cl else "")

    def _summarise(self, record, seconds):
        values = {"seconds_per_epoch": seconds, "curriculum_stage": self.curriculum.stage}
        for key in ("meta_loss", "loss", "imitation_loss"):
            if key in record and math.isfinite(record[key]):
                values["final_loss" if key == "loss" else key] = record[key]
        self._scalars(**values)

    def _summary_writer(self):
        """The chief's TensorBoard writer where `tensorboard_dir` asks for one; says where it writes and how to look."""
        directory = self.config.tensorboard_dir
        if not directory or not self.chief:
            return None
        directory = os.path.abspath(directory)
        logging.info("TensorBoard summaries go to %s: view them with `tensorboard --logdir %s`", directory,
                     shlex.quote(directory))
        return tf.summary.create_file_writer(directory)

    def _scalars(self, **values):
        if self._summaries is None:
            return
        with self._summaries.as_default(step=self.epoch):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(float(value)), metadata=_SCALAR_METADATA)
        self._summaries.flush()


# What tf.summary.scalar writes, without needing the tensorboard package to write it (only to view it).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


class _InterruptHandler:
    """Ctrl-C / SIGTERM: the first asks the loop to stop after this epoch (then it saves); a second stops at once,
    keeping the last checkpoint. Only in the main thread, where Python allows signal handlers."""

    def __init__(self, run):
        self.run, self.requested, self._previous = run, False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise errors.Interrupted(f"stopped at once at epoch {self.run.epoch}; the last checkpoint is kept: run "
                                     "the same command again to resume from it")
        self.requested = True
        logging.warning("%s: finishing the current epoch (and its validation, if due), then saving; press Ctrl-C "
                        "again to stop at once, keeping the last checkpoint", signal.Signals(signum).name)


# A history written before the validation sums got their names: "cost" and "baseline" (the sums) -> today's names.
_OLD_LOSS_NAMES = {"cost": "validation", "baseline": "baseline"}


def _loss_fields(name, cost, evaluation_epochs):
    """A history record's fields for `cost`, a validation's sum over `evaluation_epochs` trajectories: the mean (the
    number the log and TensorBoard show) and the sum (the original's validation cost, which the curriculum compares)."""
    return {f"{name}_loss_mean": cost / evaluation_epochs, f"{name}_loss_sum": cost}


def _named_losses(record, evaluation_epochs):
    """`record` of a checkpointed history with its validation sums under today's names."""
    record = dict(record)
    for old, name in _OLD_LOSS_NAMES.items():
        if old in record:
            record.update(_loss_fields(name, record.pop(old), evaluation_epochs))
    return record


def resume_point(save_path):
    """(path, progress record) of the latest resume checkpoint in `save_path`; (None, None) where there is none."""
    path = tf.train.latest_checkpoint(os.path.join(save_path, CHECKPOINT_DIR)) if save_path else None
    if path is not None:
        return path, _read_progress(path)
    if save_path and os.path.exists(os.path.join(save_path, "checkpoint.npz")):
        raise errors.L2OError(f"{save_path} holds a checkpoint of an older l2o-tf version (checkpoint.npz); continue "
                              "it with that version or use a fresh --save_path")
    return None, None


def run_seed(seed, saved):
    """The run's seed: a resumed run's own (`saved`, its progress record; a --seed given must equal it), else `seed`,
    else a fresh one."""
    return saved["seed"] if saved is not None else names.seed_or_random(seed)


def _read_progress(path):
    try:
        return json.loads(tf.train.load_checkpoint(path).get_tensor("progress/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError) as e:
        raise errors.L2OError(f"{path} is not a readable training checkpoint ({type(e).__name__}); move "
                              f"{os.path.dirname(path)} away to start afresh") from None


def train(config, problem):
    """Build (or resume) the run of `config` on `problem`, train, and say where the best model is."""
    run = MetaTraining(config, problem)
    if not config.save_path:
        logging.warning("no --save_path: the trained optimizer will not be saved")
    if not run.resumed:
        logging.info("training %s on %s (%d parameters), seed %d: %s", type(run.cell).__name__, problem.name,
                     problem.num_params, run.seed, "curriculum " + " ".join(map(str, config.num_steps_schedule))
                     if config.if_cl else f"{config.num_steps} steps per epoch")
    run.run()
    warning = run.untrained_warning() if run.chief else None
    if warning:
        logging.warning(warning)
    if config.save_path and run.chief:
        print(f"Best optimizer: {run.best_model_path()}")
    return run
