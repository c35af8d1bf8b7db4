"""The evaluation harness behind `evaluate_dm.py` and `evaluate_rnnprop.py` (`cli.evaluation_main` reads the flags).

Runs one optimizer, learned (`--optimizer=L2L --path=...`) or hand-designed (Adam, RMSProp, SGD, NAG, Adagrad at
`--learning_rate`), on a problem's test split for `--num_steps` steps, compiled, and records f(x_{i+1}) on a fresh
minibatch at every step, as the original evaluation does. Writes the original pickle
`<output_path>/<optimizer>_eval_loss_record.pickle-<problem>` and an `.npz` with the losses and the run's flags.
"""
import collections
import functools
import json
import os
import time

import numpy as np
from absl import logging

from l2o_tf import fileio
from l2o_tf import meta
from l2o_tf import names
from l2o_tf import seeding

PROGRESS_EVERY = 500  # steps per compiled chunk, between progress lines


def evaluate(problem, rule, num_steps, num_epochs, seed, on_progress=None, records=None):
    """Per-step losses (float32, num_epochs * num_steps) of `rule` on `problem`, one trajectory throughout;
    `records`, a list, receives the rule's per-step record (a guard's choice: 1 learned, 0 guard optimizer)."""
    progress = None if on_progress is None else lambda epoch, done, losses: on_progress(epoch, done, losses[0])
    runs = evaluate_runs([(problem, rule, seed)], num_steps, num_epochs, progress, record=records is not None)
    if records is not None and runs.records is not None:  # a rule without `record` records nothing
        records.extend(row[0] for row in runs.records)
    return runs.losses[0]


# what `evaluate_runs` returns: `losses` [runs, num_epochs * num_steps] and the rules' per-step `records` (one row
# per step, a value per run; None when not recorded)
Evaluated = collections.namedtuple("Evaluated", ["losses", "records"])


def evaluate_runs(lanes, num_steps, num_epochs, on_progress=None, record=False):
    """Several evaluations, one per (problem, rule, seed) of `lanes`, stepped together in one compiled loop
    (`meta.Runs`); run k's losses are those of `evaluate` on `lanes[k]`. `on_progress(epoch, done, losses)`
    after each chunk of PROGRESS_EVERY steps, with the epoch's losses so far [runs, done]."""
    runs = meta.Runs([(problem, rule, seeding.generator(seed)) for problem, rule, seed in lanes], record=record)
    epochs = []
    for epoch in range(num_epochs):
        callback = None if on_progress is None else functools.partial(on_progress, epoch)
        epochs.append(runs.run(num_steps, chunk=PROGRESS_EVERY, callback=callback))
    return Evaluated(np.concatenate(epochs, axis=1), runs.records)


def run_and_record(problem, rule, optimizer, num_steps, num_epochs, seed, output_path, run_flags, guard=None):
    """Evaluate with progress lines, print the original's summary, and write the loss record (pickle and .npz).

    `optimizer` names the record file; `run_flags` (the settings, for the .npz) gains the seed; `guard`, the guard
    options when `rule` is a guard, adds its per-step choices and cost."""
    return run_and_record_seeds([(problem, rule, seed, output_path)], optimizer, num_steps, num_epochs, run_flags,
                                guard)[0]


def run_and_record_seeds(lanes, optimizer, num_steps, num_epochs, run_flags, guard=None):
    """`run_and_record` for several seeds at once, one compiled run (`evaluate_runs`): `lanes` holds (problem, rule,
    seed, output_path) per seed. Returns the losses of each."""
    problem = lanes[0][0]
    seeds = [seed for _, _, seed, _ in lanes]
    logging.info("evaluating %s on %s (%d parameters) for %d x %d steps, seed%s %s", optimizer, problem.name,
                 problem.num_params, num_epochs, num_steps, "s" if len(seeds) > 1 else "",
                 ", ".join(map(str, seeds)))
    start, total_steps = time.time(), num_epochs * num_steps

    def progress(epoch, done, losses):
        steps = epoch * num_steps + done
        rate = steps / max(time.time() - start, 1e-9)
        logging.info("epoch %d step %d/%d  loss %s  (mean of last %d: %s)  %.0f steps/s  ETA %s", epoch + 1,
                     done, num_steps, _per_run(losses[:, -1]), min(done, PROGRESS_EVERY),
                     _per_run(losses[:, -PROGRESS_EVERY:].mean(axis=1)), rate,
                     names.format_duration((total_steps - steps) / max(rate, 1e-9)))

    evaluated = evaluate_runs([lane[:3] for lane in lanes], num_steps, num_epochs, progress, record=bool(guard))
    elapsed = time.time() - start
    if num_epochs > 1:  # the original's header of its summary; one epoch needs none
        print(f"Epoch {num_epochs}")
    for k, (_, rule, seed, output_path) in enumerate(lanes):
        losses = evaluated.losses[k]
        seed_note = f" (seed {seed})" if len(lanes) > 1 else ""
        if not np.all(np.isfinite(losses)):
            logging.warning("the loss became non-finite at step %d%s", int(np.argmin(np.isfinite(losses))), seed_note)
        # the original's name for log10 of the mean loss over all steps; the README's tables use ln
        print(f"Log Mean Final Error: {np.log10(losses.mean()):.2f}   (log10 of the mean loss; ln(mean loss): "
              f"{np.log(losses.mean()):.2f}){seed_note}")
        choices = [row[k] for row in evaluated.records] if guard else []
        if guard:
            cost = rule.cost()
            print(f"Guard {guard['guard']}: learned step taken at {np.mean(choices):.1%} of the steps; cost "
                  f"{cost['extra_loss_evaluations_per_step']:g} extra loss and "
                  f"{cost['extra_gradient_evaluations_per_step']:g} extra gradient evaluations per step, "
                  f"{1000 * elapsed / evaluated.losses.size:.2f} ms per step{seed_note}")
        record = os.path.join(output_path, f"{optimizer}_eval_loss_record.pickle-{problem.name}")
        fileio.atomic_save_pickle(record, [float(v) for v in losses])
        flags_k = {**run_flags, "optimizer": optimizer, "seed": seed, **(guard or {})}
        extra = {"learned_step": np.asarray(choices, np.float32)} if guard else {}
        fileio.atomic_save_npz(record + ".npz", losses=losses, flags=json.dumps(flags_k), **extra)
        print(f"Loss record: {record} (and .npz)")
    together = f" for the {len(lanes)} seeds together" if len(lanes) > 1 else ""
    per_epoch = f" ({elapsed / num_epochs:.2f} s per epoch)" if num_epochs > 1 else ""
    print(f"Time: {elapsed:.2f} s{per_epoch}{together}")
    return list(evaluated.losses)


def _per_run(values):
    return " ".join(f"{v:.4f}" for v in np.atleast_1d(values))
