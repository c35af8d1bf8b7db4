"""The meta-training loop behind `train_dm.py` and `train_rnnprop.py` (SPEC_DM §4-§6, §8.1).

Per epoch a fresh optimizee is optimised for the stage's number of steps, one meta-update per unroll of 20 steps;
with `--if_mt` an epoch may instead imitate a teacher; every `--evaluation_period` epochs the optimizer is validated
(sum over `--evaluation_epochs` fresh, unscaled trajectories of the final loss, on the training split, as the
original) and the curriculum decides what happens next. The best model is saved in the original's layout.

Everything needed to continue (weights, both meta-Adams, random states, counters, history) is written atomically
to `<save_path>/checkpoint.npz` at every validation and every `--checkpoint_secs`; a run started again with the same
`--save_path` resumes where the checkpoint left off.
"""
import json
import os
import time
import zipfile

import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from l2o_tf import cli
from l2o_tf import curriculum
from l2o_tf import errors
from l2o_tf import fileio
from l2o_tf import imitation
from l2o_tf import meta
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import original_pickle

FLAGS = flags.FLAGS
CHECKPOINT = "checkpoint.npz"
MAX_FAILED_EPOCHS = 20  # consecutive epochs whose every meta-update was non-finite before we give up
TEACHER_LEARNING_RATE = 0.01  # the original's fixed teacher learning rate


class TrainingDiverged(errors.L2OError):
    """Every meta-update of many epochs in a row was non-finite."""


def read_checkpoint(path):
    """(state dict, arrays dict) of a checkpoint, or a clear error for a file that is not one."""
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        return json.loads(str(arrays.pop("state"))), arrays
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise errors.L2OError(f"{path} is not a readable training checkpoint ({type(e).__name__}: {e}); move it "
                              "away to start a fresh run in that --save_path") from None


class MetaTraining:
    """One training run: the trainers, the schedule and the counters, with checkpoint save and restore."""

    def __init__(self, net, problem, seed, save_path, cell_kwargs):
        self.net, self.problem, self.save_path, self.seed = net, problem, save_path, seed
        self.rng = tf.random.Generator.from_seed(seed)
        self.choices = np.random.default_rng(seed)  # Python-side draws: imitation epochs
        self.cell = networks.for_problem(net, problem.name, seed=seed, **cell_kwargs)
        self.cell.build()
        self.mixture = None
        if FLAGS.self_improving:
            auxiliaries = [optimizers.get(name, TEACHER_LEARNING_RATE) for name in _names(FLAGS.auxiliary_optimizers)]
            self.mixture = imitation.MixtureRule(self.cell, auxiliaries, self.rng)
        self.trainer = meta.Trainer(problem, self.cell, self.rng, FLAGS.learning_rate, FLAGS.unroll_length,
                                    FLAGS.second_derivatives, rule=self.mixture)
        self.validator = meta.Runner(problem, self.cell, self.rng)
        self.teachers, self.imitators = [], []
        if FLAGS.if_mt:
            names = _names(FLAGS.optimizers)
            if FLAGS.num_mt > len(names):
                raise cli.UsageError(f"--num_mt={FLAGS.num_mt} needs that many --optimizers, got {names}")
            for name in names[:FLAGS.num_mt]:
                self.teachers.append(imitation.Teacher(problem, optimizers.get(name, TEACHER_LEARNING_RATE),
                                                       self.rng, FLAGS.k))
                self.imitators.append(imitation.ImitationTrainer(self.cell, FLAGS.learning_rate,
                                                                 FLAGS.unroll_length))
        schedule = (curriculum.parse_schedule(FLAGS.num_steps_schedule) if FLAGS.if_cl else (FLAGS.num_steps,))
        self.curriculum = curriculum.Curriculum(schedule, FLAGS.min_num_eval, enabled=FLAGS.if_cl)
        self.epoch, self.imitation_task, self.skipped_updates = 0, 0, 0
        self.finished = False  # the curriculum ended the run: running the command again does nothing
        self.history = []

    # -- one epoch ------------------------------------------------------------------------------------------------
    def num_unrolls(self, steps):
        return max(1, steps // FLAGS.unroll_length)

    def imitation_ratio(self):
        if not FLAGS.if_mt:
            return 0.0
        if not FLAGS.if_cl:
            return FLAGS.mt_ratio
        ratios = [float(r) for r in FLAGS.mt_ratios.split()]
        return ratios[min(self.curriculum.stage, len(ratios) - 1)]

    def train_epoch(self):
        """One epoch, training or imitation; returns its history record (kind, last loss, updates applied)."""
        unrolls = self.num_unrolls(self.curriculum.train_steps)
        if self.choices.random() < self.imitation_ratio():
            task = self.imitation_task
            self.imitation_task = (task + 1) % len(self.teachers)
            scale = FLAGS.rd_scale_bound if FLAGS.if_scale else 0.0
            gradients, steps = self.teachers[task].trajectory(unrolls * FLAGS.unroll_length, scale)
            loss, applied = self.imitators[task].train_epoch(gradients, steps)
            record = {"kind": f"imitation[{self.teachers[task].rule.name}]", "loss": loss, "applied": applied}
        else:
            record = {"kind": "train"}
            if self.mixture is not None:
                p = imitation.auxiliary_probability(self.epoch, len(self.mixture.auxiliaries),
                                                    FLAGS.auxiliary_decay_epochs)
                self.mixture.set_auxiliary_probability(p)
                record["auxiliary_probability"] = p
            trajectory = self.trainer.new_trajectory(FLAGS.rd_scale_bound if FLAGS.if_scale else 0.0)
            loss, applied = float("nan"), 0
            for _ in range(unrolls):
                trajectory, _, loss, ok = self.trainer.train_unroll(trajectory)
                if not ok:
                    break  # the optimizee diverged: a fresh one next epoch
                applied += 1
            record.update(loss=loss, applied=applied)
        if record["applied"] < unrolls:
            self.skipped_updates += 1
            logging.warning("epoch %d (%s): non-finite meta-gradient or loss; update skipped (%d skipped so far)",
                            self.epoch + 1, record["kind"], self.skipped_updates)
        return record

    def validate(self, steps):
        """Sum over --evaluation_epochs fresh unscaled trajectories of the loss after `steps` steps."""
        steps = self.num_unrolls(steps) * FLAGS.unroll_length
        return sum(self.validator.final_loss(self.validator.new_trajectory(), steps)
                   for _ in range(FLAGS.evaluation_epochs))

    # -- files ----------------------------------------------------------------------------------------------------
    def save_model(self, index):
        if self.save_path:
            networks.save(self.cell, self.save_path, index)
            networks.save(self.cell, self.save_path, 0)

    def restore_model(self, index):
        path = os.path.join(self.save_path, f"{self.cell.key}.l2l-{index}")
        self.cell.set_original_weights(original_pickle.read(path))

    def checkpoint(self):
        if not self.save_path:
            return
        arrays = {f"cell/{m}/{n}": v for m, vs in self.cell.get_original_weights().items() for n, v in vs.items()}
        for name, optimizer in self._meta_optimizers():
            arrays.update({f"{name}/{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
        arrays["rng_state"] = self.rng.state.numpy()
        state = {"epoch": self.epoch, "curriculum": self.curriculum.state_dict(), "history": self.history,
                 "imitation_task": self.imitation_task, "skipped_updates": self.skipped_updates,
                 "choices": self.choices.bit_generator.state, "seed": self.seed, "finished": self.finished,
                 "flags": {**_run_flags(), "net": self.net}}
        fileio.atomic_save_npz(os.path.join(self.save_path, CHECKPOINT), state=json.dumps(state), **arrays)
        fileio.atomic_write_bytes(os.path.join(self.save_path, "history.json"), json.dumps(self.history).encode())

    def resume(self, path, state, arrays):
        """Continue from a checkpoint read by `read_checkpoint`; refuses one written by a different run."""
        mismatched = {k: (v, state["flags"].get(k)) for k, v in {**_run_flags(), "net": self.net}.items()
                      if k in RESUME_MUST_MATCH and state["flags"].get(k) != v}
        if mismatched:
            raise cli.UsageError(f"{path} was written by a different run: " + ", ".join(
                f"--{k}={old!r} there, {new!r} now" for k, (new, old) in mismatched.items()))
        self.cell.set_original_weights({m: {n: arrays[f"cell/{m}/{n}"] for n in vs}
                                        for m, vs in self.cell.get_original_weights().items()})
        for name, optimizer in self._meta_optimizers():
            for i, variable in enumerate(optimizer.variables):
                variable.assign(arrays[f"{name}/{i}"])
        self.rng.reset(arrays["rng_state"])
        self.epoch, self.history, self.finished = state["epoch"], state["history"], state["finished"]
        self.imitation_task, self.skipped_updates = state["imitation_task"], state["skipped_updates"]
        self.curriculum = curriculum.Curriculum.from_state_dict(state["curriculum"])
        self.choices.bit_generator.state = state["choices"]

    def _meta_optimizers(self):
        yield "meta_adam", self.trainer.optimizer
        for i, imitator in enumerate(self.imitators):
            yield f"imitation_adam_{i}", imitator.optimizer

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self):
        cl = self.curriculum
        last_checkpoint = last_log = time.time()
        epoch_times, failed_epochs = [], 0
        while self.epoch < FLAGS.num_epochs and not self.finished:
            start = time.time()
            record = self.train_epoch()
            self.epoch += 1
            epoch_times.append(time.time() - start)
            failed_epochs = failed_epochs + 1 if record["applied"] == 0 else 0
            if failed_epochs >= MAX_FAILED_EPOCHS:
                self.checkpoint()
                raise TrainingDiverged(f"{failed_epochs} epochs in a row had only non-finite meta-gradients: training "
                                   f"diverged; try a lower --learning_rate (checkpoint kept in {self.save_path})")
            self.history.append({"epoch": self.epoch, **record, "train_steps": cl.train_steps})
            if time.time() - last_log > 10 or self.epoch == 1:
                logging.info("epoch %d/%d  %s loss %.4f  stage %d (%d steps)  %.2f s/epoch", self.epoch,
                             FLAGS.num_epochs, record["kind"], record["loss"], cl.stage, cl.train_steps,
                             np.mean(epoch_times[-50:]))
                last_log = time.time()
            if self.epoch % FLAGS.evaluation_period == 0:
                self.evaluate()
                last_checkpoint = time.time()
            elif time.time() - last_checkpoint > FLAGS.checkpoint_secs:
                self.checkpoint()
                last_checkpoint = time.time()
        self.checkpoint()
        return self.history

    def evaluate(self):
        cl = self.curriculum
        steps = cl.valid_steps
        cost = self.validate(steps)
        decision = cl.observe(cost)
        logging.info("epoch %d: validation at %d steps %.4f (mean final loss), best %.4f -> %s", self.epoch, steps,
                     cost / FLAGS.evaluation_epochs, cl.best / FLAGS.evaluation_epochs, decision)
        self.history.append({"epoch": self.epoch, "kind": "validation", "steps": steps, "cost": cost,
                             "decision": decision, "stage": cl.stage})
        if decision == curriculum.IMPROVED:
            self.save_model(cl.stage if FLAGS.if_cl else self.epoch)
        elif decision == curriculum.ADVANCE:
            self.restore_model(cl.stage - 1)
            baseline = self.validate(cl.valid_steps)
            cl.start_stage(baseline)
            logging.info("curriculum: stage %d now trains on %d steps and validates on %d; restored the previous "
                         "stage's best, baseline %.4f", cl.stage, cl.train_steps, cl.valid_steps,
                         baseline / FLAGS.evaluation_epochs)
        elif decision == curriculum.STOP:
            logging.info("curriculum: no improvement in stage %d -> stop; the best model is %s", cl.stage,
                         os.path.join(self.save_path, f"{self.cell.key}.l2l-0"))
        elif decision == curriculum.FINISHED:
            logging.info("curriculum: the last stage (%d steps) stopped improving -> done", cl.train_steps)
        self.finished = decision in (curriculum.STOP, curriculum.FINISHED)
        self.checkpoint()
        return decision


RESUME_MUST_MATCH = ("problem", "net", "if_cl", "if_mt", "num_steps_schedule", "unroll_length", "num_steps")


def _names(text):
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def _run_flags():
    return {name: FLAGS[name].value for name in _TRAIN_FLAG_NAMES if name in FLAGS}


_TRAIN_FLAG_NAMES = ("problem", "if_cl", "if_mt", "num_steps_schedule", "unroll_length", "num_steps", "num_epochs",
                     "evaluation_period", "evaluation_epochs", "learning_rate", "second_derivatives", "if_scale",
                     "rd_scale_bound", "min_num_eval", "num_mt", "optimizers", "mt_ratio", "mt_ratios", "k",
                     "self_improving", "auxiliary_optimizers", "auxiliary_decay_epochs", "beta1", "beta2")


def check_flags():
    for name in ("num_epochs", "evaluation_period", "evaluation_epochs", "num_steps", "unroll_length",
                 "min_num_eval", "num_mt", "k", "auxiliary_decay_epochs"):
        cli.positive(name, FLAGS[name].value)
    cli.positive("learning_rate", FLAGS.learning_rate)
    if FLAGS.if_cl and not FLAGS.save_path:
        raise cli.UsageError("--if_cl needs --save_path: each stage restores its best model from there")
    try:
        curriculum.parse_schedule(FLAGS.num_steps_schedule)
        [float(r) for r in FLAGS.mt_ratios.split()]
        for name in _names(FLAGS.optimizers) + _names(FLAGS.auxiliary_optimizers):
            optimizers.get(name, 1.0)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    if not 0 <= FLAGS.mt_ratio <= 1:
        raise cli.UsageError(f"--mt_ratio must be in [0, 1], got {FLAGS.mt_ratio}")


def main(net):
    check_flags()
    cell_kwargs = cli.cell_flags()
    problem = cli.make_problem(mode="train")
    checkpoint = os.path.join(FLAGS.save_path, CHECKPOINT) if FLAGS.save_path else None
    saved = read_checkpoint(checkpoint) if checkpoint and os.path.exists(checkpoint) else None
    seed = saved[0]["seed"] if saved else cli.seed_or_random(FLAGS.seed)
    run = MetaTraining(net, problem, seed, FLAGS.save_path, cell_kwargs)
    if saved:
        run.resume(checkpoint, *saved)
        logging.info("resuming %s from epoch %d (stage %d)%s", checkpoint, run.epoch, run.curriculum.stage,
                     ": the curriculum had already ended this run" if run.finished else "")
    elif not FLAGS.save_path:
        logging.warning("no --save_path: the trained optimizer will not be saved")
    logging.info("training %s on %s (%d parameters): %s", type(run.cell).__name__, problem.name,
                 problem.num_params, "curriculum " + FLAGS.num_steps_schedule if FLAGS.if_cl
                 else f"{FLAGS.num_steps} steps per epoch")
    run.run()
    if FLAGS.save_path:
        print(f"Best optimizer: {os.path.join(FLAGS.save_path, run.cell.key + '.l2l-0')}")
