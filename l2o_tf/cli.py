"""The command-line layer every absl entry point shares: flags, checks of flags and data, one-line errors.

It imports no TensorFlow: the entry point checks its flags and finds its data first, so bad input is reported
within a second or two, and only then loads the modules that do the work.
"""
import importlib
import os
import sys

from absl import app
from absl import flags
from absl import logging

from l2o_tf import curriculum
from l2o_tf import datasets
from l2o_tf import errors

FLAGS = flags.FLAGS
UsageError = errors.UsageError
BASELINES = ("Adam", "RMSProp", "SGD", "NAG", "Adagrad")


def define_data_flags():
    flags.DEFINE_string("data_dir", None, "Directory with the raw dataset files (IDX .gz for MNIST, CIFAR-10 "
                        "batches) or a prepared TFDS directory; defaults to $L2O_DATA_DIR.")
    flags.DEFINE_bool("download", False, "Allow a TFDS download when no local data is found (needs network).")


def define_evaluation_flags(rnnprop=False):
    """The original `evaluate_*.py` flags; `--optimizer` also takes the hand-designed baselines."""
    flags.DEFINE_string("optimizer", "L2L", f"L2L (a learned optimizer from --path) or one of {', '.join(BASELINES)}.")
    flags.DEFINE_string("problem", "mnist", "Optimizee problem (the original's default 'simple' is not a paper problem).")
    flags.DEFINE_string("path", None, "Learned optimizer file, e.g. trained_models/dm/cw.l2l-0.")
    flags.DEFINE_string("output_path", "out", "Directory for the loss record.")
    flags.DEFINE_integer("num_epochs", 1, "Repeated runs; like the original, later epochs continue the trajectory.")
    flags.DEFINE_integer("num_steps", 10000, "Optimizee steps per epoch.")
    flags.DEFINE_float("learning_rate", 0.001, "Learning rate of a hand-designed --optimizer.")
    flags.DEFINE_integer("seed", None, "Seed of the optimizee init and minibatches; none = a fresh one, logged.")
    if rnnprop:
        flags.DEFINE_float("beta1", 0.95, "RNNprop input feature beta1.")
        flags.DEFINE_float("beta2", 0.95, "RNNprop input feature beta2.")
    define_data_flags()


def define_training_flags(evaluation_period, mt_ratios, rnnprop=False):
    """The original flags with the original defaults; the two trainers differ only in the given defaults."""
    flags.DEFINE_string("save_path", None, "Directory for the saved optimizers, checkpoint and history.")
    flags.DEFINE_integer("num_epochs", 10000, "Number of training epochs (optimizee trajectories).")
    flags.DEFINE_integer("evaluation_period", evaluation_period, "Validate every this many epochs.")
    flags.DEFINE_integer("evaluation_epochs", 20, "Trajectories per validation (their final losses are summed).")
    flags.DEFINE_integer("num_steps", 100, "Optimizee steps per epoch without curriculum.")
    flags.DEFINE_integer("unroll_length", 20, "Steps per meta-update (truncated backpropagation length).")
    flags.DEFINE_float("learning_rate", 0.001, "Learning rate of the meta-optimizer (Adam).")
    flags.DEFINE_bool("second_derivatives", False, "Backpropagate through the optimizee gradients.")
    flags.DEFINE_string("problem", "mnist", "Optimizee problem to train on.")
    flags.DEFINE_bool("if_scale", False, "Random scaling of the optimizee's coordinates per epoch.")
    flags.DEFINE_float("rd_scale_bound", 3.0, "Random scaling factor exp(U(-b, b)).")
    flags.DEFINE_bool("if_cl", False, "Curriculum learning over --num_steps_schedule.")
    flags.DEFINE_string("num_steps_schedule", " ".join(map(str, curriculum.DEFAULT_SCHEDULE)),
                        "Curriculum training lengths; stage i validates at the length of stage i+1.")
    flags.DEFINE_integer("min_num_eval", 3, "Minimum validations per curriculum stage.")
    flags.DEFINE_bool("if_mt", False, "Imitation learning of hand-designed optimizers (the original 'multi-task').")
    flags.DEFINE_integer("num_mt", 1, "Number of imitation tasks; task i imitates the i-th of --optimizers.")
    flags.DEFINE_string("optimizers", "adam", "Comma-separated teachers: adam, rmsprop, nag, sgd, adagrad.")
    flags.DEFINE_float("mt_ratio", 0.3, "Probability of an imitation epoch without curriculum.")
    flags.DEFINE_string("mt_ratios", mt_ratios, "Imitation probability per curriculum stage (last one reused).")
    flags.DEFINE_integer("k", 1, "Teacher steps per recorded imitation step.")
    flags.DEFINE_bool("self_improving", False, "Mix auxiliary optimizers' steps into training (paper's §4.2).")
    flags.DEFINE_string("auxiliary_optimizers", "adam,sgd,adagrad", "Self-improving auxiliaries.")
    flags.DEFINE_integer("auxiliary_decay_epochs", 100, "Epochs over which auxiliary probabilities decay to 0.")
    flags.DEFINE_integer("seed", None, "Seed of every random draw; none = a fresh one, logged and checkpointed.")
    flags.DEFINE_integer("checkpoint_secs", 60, "Also checkpoint at the end of an epoch after this many seconds.")
    if rnnprop:
        flags.DEFINE_float("beta1", 0.95, "RNNprop input feature beta1.")
        flags.DEFINE_float("beta2", 0.95, "RNNprop input feature beta2.")
    define_data_flags()


def cell_flags():
    """The learned optimizer's config flags this entry point defines (RNNprop's --beta1, --beta2)."""
    return {name: FLAGS[name].value for name in ("beta1", "beta2") if name in FLAGS}


def positive(name, value):
    if value is None or value <= 0:
        raise UsageError(f"--{name} must be positive, got {value}")
    return value


def seed_or_random(seed):
    """The flag's seed, or a fresh one drawn from the OS (logged, so the run can be repeated)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
        logging.info("no --seed given; using seed %d", seed)
    return int(seed)


def check_problem_and_data(mode):
    """Fail fast on an unknown --problem or missing data; the loaded split stays cached for the problem."""
    if FLAGS.problem not in datasets.PROBLEM_DATASETS:
        raise UsageError(f"unknown --problem={FLAGS.problem!r}: expected one of "
                         f"{', '.join(datasets.PROBLEM_DATASETS)}")
    name = datasets.PROBLEM_DATASETS[FLAGS.problem]
    if name is not None:
        datasets.load(name, mode, data_dir=FLAGS.data_dir, download=FLAGS.download)


def make_problem(mode):
    """The --problem in `mode` ("train" or "test"), with the data flags."""
    from l2o_tf import problems  # imports TensorFlow
    return problems.get(FLAGS.problem, mode=mode, data_dir=FLAGS.data_dir, download=FLAGS.download)


def run(module, net, mode):
    """Run `l2o_tf.<module>.main(net)` under absl after the fast checks; user errors end as one line, status 2."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            check_problem_and_data(mode)
            return importlib.import_module(f"l2o_tf.{module}").main(net)
        except errors.L2OError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(main)
