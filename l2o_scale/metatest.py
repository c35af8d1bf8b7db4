r"""Evaluate L2O-Scale (or a baseline) on the test problems: the original `learned_optimizer/metatest.py` flags.

    python -m l2o_scale.metatest --train_dir=scale_smoke --restore_model_name=model.ckpt-0 \
        --include_mnist_mlp_problems --model_name=mnist --num_testing_itrs=10000 --save_dir=out --data_dir=DIR

For every selected group (MLP, MLP-relu, MLP-deeper, conv, conv-orig, CIFAR conv, in that order) and every seed,
runs the optimizer from a fresh N(0, 0.01) optimizee for --num_testing_itrs steps on the group's test split and
writes `<save_dir>/seed<S>_eval_loss_record.pickle-<model_name>` (a list of floats: at step i, the loss f(x_{i+1}) on
a fresh test minibatch, as l2o_tf's DM evaluation records) and the same with `.npz` (losses and the run's flags).
"""
import json
import os
import time

from absl import flags
from absl import logging

from l2o_scale import checkpoint
from l2o_tf import cli
from l2o_tf import datasets
from l2o_tf import errors
from l2o_tf import names

FLAGS = flags.FLAGS
OPTIMIZERS = {"l2o": "L2o", "sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad"}
BASELINE_LEARNING_RATES = {"SGD": 1e-3, "Adam": 1e-4, "Adagrad": 1e-5}  # hard-coded in the original
GROUP_FLAGS = (("mnist_mlp", "include_mnist_mlp_problems", "MNIST MLP 784-20-10, sigmoid"),
               ("mnist_mlp_relu", "include_mnist_mlp_relu_problems", "MNIST MLP 784-20-10, ReLU"),
               ("mnist_mlp_deeper", "include_mnist_mlp_deeper_problems", "MNIST MLP 784-20-20-10, sigmoid"),
               ("mnist_conv", "include_mnist_conv_problems", "MNIST ConvNet 16-32 (VALID, BN, max-pool)"),
               ("mnist_conv_orig", "include_mnist_conv_orig_problems", "MNIST ConvNetOrig 8-8 (SAME), batch 64"),
               ("cifar10_conv", "include_cifar10_conv_problems", "CIFAR-10 ConvNet 16-32, stride 2"))
GROUP_DATA = {"cifar10_conv": "cifar10"}  # the others use MNIST
PROGRESS_EVERY = 1000  # the original printed "iteration i" every 1000 iterations

flags.DEFINE_string("train_dir", "opt/", "Checkpoint root: the directory holding HierarchicalRNN_GRUCell_20_2/ (the "
                    "original layout), that logdir itself, the directory holding the checkpoint, or a shipped "
                    "checkpoint's name (scale_smoke: the original code's 6-step smoke test, not a trained "
                    "optimizer).")
flags.DEFINE_string("restore_model_name", "", "Checkpoint inside the logdir, e.g. model.ckpt-0 (the README's); "
                    "empty = the latest one its `checkpoint` file names.")
flags.DEFINE_string("save_dir", "opt/", "Directory for the loss records.")
flags.DEFINE_string("model_name", "mt", "Suffix of the record files.")
flags.DEFINE_integer("num_testing_itrs", 100, "Optimizee steps per run (the README uses 10000).")
flags.DEFINE_string("test_optimizer", "L2o", "L2o (the checkpoint), or SGD (lr 1e-3), Adam (1e-4), Adagrad (1e-5) "
                    "as the original hard-codes them (any case).")
for _group, _flag, _what in GROUP_FLAGS:
    flags.DEFINE_bool(_flag, False, f"Evaluate on the {_what} test problem.")
flags.DEFINE_list("seeds", ["6", "12", "18", "24", "30"], "Seeds, one run each (the original's hard-coded list). A "
                  "seed fixes the optimizee init, the minibatches and L2O-Scale's initial learning rates.")
flags.DEFINE_float("min_lr", None, "Override the checkpoint's init_lr_range low end (default 1e-6 as trained).")
flags.DEFINE_float("max_lr", None, "Override the checkpoint's init_lr_range high end (default 1e-2 as trained).")
cli.define_data_flags()


def check_flags():
    """Every check that needs no TensorFlow: names, counts, the checkpoint path, the data. Returns the plan."""
    optimizer = OPTIMIZERS.get(FLAGS.test_optimizer.lower())
    if optimizer is None:
        raise errors.UsageError(f"unknown --test_optimizer={FLAGS.test_optimizer!r}: expected one of "
                                f"{', '.join(OPTIMIZERS.values())}")
    names.positive("num_testing_itrs", FLAGS.num_testing_itrs)
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise errors.UsageError(f"--seeds must be comma-separated integers, got {','.join(FLAGS.seeds)!r}") from None
    if not seeds:
        raise errors.UsageError("--seeds is empty")
    groups = [group for group, flag, _ in GROUP_FLAGS if FLAGS[flag].value]
    if not groups:
        raise errors.UsageError("no test problem selected: give at least one of "
                                + ", ".join(f"--{flag}" for _, flag, _ in GROUP_FLAGS))
    prefix = None
    if optimizer == "L2o":
        prefix = checkpoint.resolve(FLAGS.train_dir, FLAGS.restore_model_name or None)
    overrides = {}
    if FLAGS.min_lr is not None or FLAGS.max_lr is not None:
        if optimizer != "L2o":
            raise errors.UsageError("--min_lr / --max_lr only apply to --test_optimizer=L2o")
        low = 1e-6 if FLAGS.min_lr is None else names.positive("min_lr", FLAGS.min_lr)
        high = 1e-2 if FLAGS.max_lr is None else names.positive("max_lr", FLAGS.max_lr)
        if low > high:
            raise errors.UsageError(f"--min_lr={low} is above --max_lr={high}")
        overrides["init_lr_range"] = (low, high)
    samples = []
    for name in dict.fromkeys(GROUP_DATA.get(group, "mnist") for group in groups):
        data = datasets.load(name, "test", data_dir=FLAGS.data_dir, download=FLAGS.download)
        if getattr(data, "source", "").startswith("embedded"):
            samples.append(name)
    return optimizer, seeds, groups, prefix, overrides, samples


def record_path(seed, model_name):
    return os.path.join(FLAGS.save_dir, f"seed{seed}_eval_loss_record.pickle-{model_name}")


def run_all(optimizer, seeds, groups, prefix, overrides):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from l2o_scale import eval_problems  # pylint: disable=import-outside-toplevel
    from l2o_tf import fileio, meta, optimizers, problems, seeding  # pylint: disable=import-outside-toplevel

    if optimizer == "L2o":
        rule = checkpoint.load(prefix, **overrides)
        logging.info("restored L2O-Scale from %s", prefix)
    else:
        rule = optimizers.get(optimizer, BASELINE_LEARNING_RATES[optimizer])
    total = len(groups) * len(seeds) * FLAGS.num_testing_itrs
    done_before, start = 0, time.time()
    summary = []
    for group in groups:
        problem = eval_problems.get(group, data_dir=FLAGS.data_dir, download=FLAGS.download)
        # several groups would write the same files in the original (each overwriting the last): keep them apart
        model_name = FLAGS.model_name if len(groups) == 1 else f"{FLAGS.model_name}-{group}"
        generator = seeding.generator(seeds[0])
        runner = meta.Runner(problem, rule, generator)  # one per group: its compiled loop serves every seed
        for seed in seeds:
            seeding.reset(generator, seed)
            if optimizer == "L2o":
                rule.reseed(seed)

            def progress(done, losses, group=group, seed=seed, offset=done_before):
                elapsed = time.time() - start
                rate = (offset + done) / max(elapsed, 1e-9)
                eta = (total - offset - done) / max(rate, 1e-9)
                logging.info("%s seed %d: iteration %d/%d  ln loss (mean of last %d) %.3f  %.0f steps/s  ETA %s",
                             group, seed, done, FLAGS.num_testing_itrs, min(done, 100),
                             np.log(np.mean(losses[-100:])), rate, names.format_duration(eta))

            _, losses = runner.run(runner.new_trajectory(), FLAGS.num_testing_itrs, chunk=PROGRESS_EVERY,
                                   callback=progress)
            done_before += FLAGS.num_testing_itrs
            if not np.all(np.isfinite(losses)):
                logging.warning("%s seed %d: the loss became non-finite at step %d", group, seed,
                                int(np.argmin(np.isfinite(losses))))
            path = record_path(seed, model_name)
            fileio.atomic_save_pickle(path, [float(v) for v in losses])
            run_flags = {"test_optimizer": optimizer, "group": group, "seed": seed, "checkpoint": prefix,
                         "data_source": problems.data_source(problem),
                         "num_testing_itrs": FLAGS.num_testing_itrs, "model_name": model_name,
                         "overrides": {k: list(v) for k, v in overrides.items()}}
            fileio.atomic_save_npz(path + ".npz", losses=losses, flags=json.dumps(run_flags))
            summary.append((group, seed, float(np.mean(losses[-100:])), path))
    for group, seed, final, path in summary:
        print(f"{group} seed {seed}: mean loss of the last {min(100, FLAGS.num_testing_itrs)} steps {final:.4f} "
              f"(ln {np.log(final):.3f})  -> {path}")
    print(f"Loss records in {FLAGS.save_dir} ({time.time() - start:.1f} s)")


def main():
    optimizer, seeds, groups, prefix, overrides, samples = check_flags()
    if samples:
        logging.warning("evaluating on the embedded MNIST sample, not the full test set: give --data_dir")
    run_all(optimizer, seeds, groups, prefix, overrides)


if __name__ == "__main__":
    cli.run(main, check=check_flags)
