"""The evaluation harness behind `evaluate_dm.py` and `evaluate_rnnprop.py`.

Runs one optimizer, learned (`--optimizer=L2L --path=...`) or hand-designed (Adam, RMSProp, SGD, NAG, Adagrad at
`--learning_rate`), on a problem's test split for `--num_steps` steps, compiled, and records f(x_{i+1}) on a fresh
minibatch at every step, as the original evaluation does. Writes the original pickle
`<output_path>/<optimizer>_eval_loss_record.pickle-<problem>` and an `.npz` with the losses and the run's flags.
"""
import functools
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from l2o_tf import cli
from l2o_tf import fileio
from l2o_tf import meta
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import seeding

FLAGS = flags.FLAGS
PROGRESS_EVERY = 500  # steps per compiled chunk, between progress lines


def update_rule(optimizer, path, learning_rate, expected_cell, **cell_overrides):
    """The update rule a run uses: a loaded learned optimizer of the expected class, or a baseline (the names as
    `cli.evaluation_optimizer` spells them; the entry points checked the flags before TensorFlow loaded)."""
    if optimizer == "L2L":
        if not path:
            raise cli.UsageError("--optimizer=L2L needs --path, the learned optimizer file (e.g. .../cw.l2l-0)")
        cell = networks.load(path, **cell_overrides)
        if not isinstance(cell, expected_cell):
            raise cli.UsageError(f"{path} holds a {type(cell).__name__}, not a {expected_cell.__name__}; "
                                 f"use evaluate_{'rnnprop' if isinstance(cell, networks.RNNprop) else 'dm'}")
        return cell
    if optimizer not in cli.BASELINES:
        raise cli.UsageError(f"unknown --optimizer={optimizer!r}: expected L2L or one of {', '.join(cli.BASELINES)}")
    return optimizers.get(optimizer, cli.positive("learning_rate", learning_rate))


def evaluate(problem, rule, num_steps, num_epochs, seed, on_progress=None, records=None):
    """Per-step losses (float32, num_epochs * num_steps) of `rule` on `problem`, one trajectory throughout;
    `records`, a list, receives the rule's per-step record (a guard's choice: 1 learned, 0 guard optimizer)."""
    runner = meta.Runner(problem, rule, seeding.generator(seed), records=records)
    trajectory = runner.new_trajectory()
    records = []
    for epoch in range(num_epochs):
        callback = None if on_progress is None else functools.partial(on_progress, epoch)
        trajectory, losses = runner.run(trajectory, num_steps, chunk=PROGRESS_EVERY, callback=callback)
        records.append(losses)
    return np.concatenate(records)


def main(net):
    """Evaluate with the flags; `net` ("dm" or "rnnprop") is the learned optimizer `--optimizer=L2L` expects."""
    cli.check_evaluation_flags(net)
    optimizer = cli.evaluation_optimizer()
    seed = cli.seed_or_random(FLAGS.seed)
    overrides = cli.cell_flags()
    rule = update_rule(optimizer, FLAGS.path, FLAGS.learning_rate, networks.NETS[net], **overrides)
    data = cli.check_problem_and_data(mode="test")
    problem = cli.make_problem(mode="test")
    guard, choices = cli.guard_options(), []
    if guard:
        from l2o_tf import guards
        rule, problem = guards.guard_problem(problem, rule, seed, **guard)
        logging.info("guarded by %s with %s at %g: %s", guard["guard"], guard["guard_optimizer"],
                     guard["guard_learning_rate"], rule.cost())
    logging.info("evaluating %s on %s (%d parameters) for %d x %d steps", optimizer, problem.name,
                 problem.num_params, FLAGS.num_epochs, FLAGS.num_steps)
    start = time.time()
    total_steps = FLAGS.num_epochs * FLAGS.num_steps

    def progress(epoch, done, losses):
        elapsed = time.time() - start
        steps = epoch * FLAGS.num_steps + done
        rate = steps / max(elapsed, 1e-9)
        logging.info("epoch %d step %d/%d  loss %.4f  (mean of last %d: %.4f)  %.0f steps/s  ETA %s", epoch + 1,
                     done, FLAGS.num_steps, losses[-1], min(done, PROGRESS_EVERY), losses[-PROGRESS_EVERY:].mean(),
                     rate, format_duration((total_steps - steps) / max(rate, 1e-9)))

    losses = evaluate(problem, rule, FLAGS.num_steps, FLAGS.num_epochs, seed, progress, choices if guard else None)
    elapsed = time.time() - start
    if not np.all(np.isfinite(losses)):
        logging.warning("the loss became non-finite at step %d", int(np.argmin(np.isfinite(losses))))
    print(f"Epoch {FLAGS.num_epochs}")
    # the original's name for log10 of the mean loss over all steps; the README's tables use ln
    print(f"Log Mean Final Error: {np.log10(losses.mean()):.2f}   (log10 of the mean loss; ln(mean loss): "
          f"{np.log(losses.mean()):.2f})")
    print(f"Mean epoch time: {elapsed / FLAGS.num_epochs:.2f} s")
    if guard:
        cost = rule.cost()
        print(f"Guard {guard['guard']}: learned step taken at {np.mean(choices):.1%} of the steps; cost "
              f"{cost['extra_loss_evaluations_per_step']:g} extra loss and {cost['extra_gradient_evaluations_per_step']:g} "
              f"extra gradient evaluations per step, {1000 * elapsed / len(losses):.2f} ms per step")
    record = os.path.join(FLAGS.output_path, f"{optimizer}_eval_loss_record.pickle-{problem.name}")
    fileio.atomic_save_pickle(record, [float(v) for v in losses])
    run_flags = {name: FLAGS[name].value for name in ("problem", "path", "num_epochs", "num_steps", "learning_rate",
                                                      "data_dir", *overrides)}
    run_flags.update(optimizer=optimizer, seed=seed, data_source=data.source if data else None,
                     embedded_sample=bool(data and data.is_sample))
    if guard:
        run_flags.update(guard)
    extra = {"learned_step": np.asarray(choices, np.float32)} if guard else {}
    fileio.atomic_save_npz(record + ".npz", losses=losses, flags=json.dumps(run_flags), **extra)
    print(f"Loss record: {record} (and .npz)")


def format_duration(seconds):
    """`1h02m`, `3m05s` or `42s`: an ETA short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
