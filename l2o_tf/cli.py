"""What every absl entry point shares: the data flags, the seed, and turning bad input into one clear message."""
import functools
import os
import sys

from absl import app
from absl import flags
from absl import logging

from l2o_tf import datasets
from l2o_tf import networks
from l2o_tf import problems


class UsageError(ValueError):
    """A bad flag value or combination, reported without a traceback."""


def define_data_flags():
    flags.DEFINE_string("data_dir", None, "Directory with the raw dataset files (IDX .gz for MNIST, CIFAR-10 "
                        "batches) or a prepared TFDS directory; defaults to $L2O_DATA_DIR.")
    flags.DEFINE_bool("download", False, "Allow a TFDS download when no local data is found (needs network).")


def make_problem(name, mode):
    """`problems.get` with the data flags; bad names and missing data surface as UsageError / DataError."""
    if name not in problems.PROBLEMS:
        raise UsageError(f"unknown --problem={name!r}: expected one of {', '.join(problems.PROBLEMS)}")
    return problems.get(name, mode=mode, data_dir=flags.FLAGS.data_dir, download=flags.FLAGS.download)


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


def run(main):
    """`app.run(main)`, printing data, file and flag errors as one line and exiting with status 2."""

    @functools.wraps(main)
    def guarded(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            return main(argv)
        except (UsageError, datasets.DataError, networks.WeightsFileError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
