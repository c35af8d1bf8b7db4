"""The names every layer shares, each in one home, and the small helpers that check them: no TensorFlow.

Below the command line (`cli.py` and the entry points import it, never the other way round), so the library and the
fast flag checks read the same facts: the hand-designed optimizers and their spelling, the problems and their data,
a flag's positive number, a seed, a duration.
"""
import os

from absl import logging

from l2o_tf import errors

# The hand-designed optimizers (TF1 semantics, `l2o_tf.optimizers`), as the original's flags spell them; any case is
# accepted (`baseline_name`), and `l2o_tf.optimizers.RULES` is keyed by the lower-case names.
BASELINES = ("Adam", "RMSProp", "SGD", "NAG", "Adagrad")

# The guards' choices (`l2o_tf.guards`; the --guard* flags): which guard, the comparison batch, GL2O's mu update, and
# the learned optimizer's state after a guard step.
GUARDS = ("lgl2o", "gl2o")
GUARD_BATCHES = ("fresh", "own")
GUARD_MU_UPDATES = ("ema", "geometric", "recent", "max")
GUARD_LEARNED_STATES = ("advance", "keep", "reset")

# Where an imitation epoch's learner state starts (--imitation_initial_state; `l2o_tf.imitation.MainTaskState`):
# zeros, or the original's copy of the state at the end of the latest main-task trajectory.
IMITATION_INITIAL_STATES = ("zeros", "main")

# The dataset behind each optimizee problem of the paper (None: the problem needs no data); `l2o_tf.problems` builds
# them, and these names are all it builds.
PROBLEM_DATASETS = {"quadratic": None, "mnist": "mnist", "mnist_relu": "mnist", "mnist_deeper": "mnist",
                    "mnist_conv": "mnist", "cifar_conv": "cifar10", "lenet": "cifar10", "nas": "cifar10"}
# The problems with convolutions (`Problem.is_convolutional`): kept off XLA, slower per step.
CONVOLUTIONAL_PROBLEMS = ("mnist_conv", "cifar_conv", "lenet", "nas")


def baseline_name(text, flag):
    """The canonical spelling of a hand-designed optimizer's name given in any case; `flag` names the flag for the
    error."""
    spelled = {name.lower(): name for name in BASELINES}
    if text.strip().lower() not in spelled:
        raise errors.UsageError(f"unknown --{flag}={text!r}: expected one of {', '.join(BASELINES)} (any case)")
    return spelled[text.strip().lower()]


def positive(name, value):
    """`value` of the flag `--name`, which must be a positive number."""
    if value is None or value <= 0:
        raise errors.UsageError(f"--{name} must be positive, got {value}")
    return value


def seed_or_random(seed):
    """`seed`, or a fresh one drawn from the OS (logged, so the run can be repeated)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
        logging.info("no --seed given; using seed %d", seed)
    return int(seed)


def format_duration(seconds):
    """`1h02m`, `3m05s` or `42s`: an ETA short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
