"""Shared test set-up: quiet TF, the one way a test reaches the optional ../shared reference files, small
optimizees on made-up data, and entry points run as a user runs them."""
import os
import socket
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
REQUIRE_SHARED_VAR = "L2O_REQUIRE_SHARED"


def require_shared(*parts):
    """The path ../shared/<parts...> for a test that needs what the package does not ship (real MNIST; the original
    trained models and the L2O-Scale checkpoint are package data: `l2o_tf.models.shipped_path`).

    When it is absent the test is skipped, so users without ../shared get clean skips; with $L2O_REQUIRE_SHARED=1
    (as .ci/run sets) it fails instead, so CI cannot pass by silently skipping the reference checks."""
    path = os.path.normpath(os.path.join(SHARED, *parts))
    if not os.path.exists(path):
        message = f"reference file not present: {path}"
        if os.environ.get(REQUIRE_SHARED_VAR) == "1":
            pytest.fail(f"{message} (and ${REQUIRE_SHARED_VAR}=1)", pytrace=False)
        pytest.skip(message)
    return path


# -- the order of the files --------------------------------------------------------------------------------------

# The files that take longest (measured with --durations), started first so that the two workers of pyproject.toml
# finish together; xdist's own order (most tests first) is turned off there.
LONGEST_FIRST = ("test_scale_distribute.py", "test_cli.py", "test_reproduce.py", "test_training.py",
                 "test_distribute.py", "test_scale_metarun.py", "test_scale_metatest.py", "test_tf1_reference.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


# -- optimizees on made-up data (TensorFlow is imported only when a test asks for one) --------------------------

def mnist_on_random_images(count, seed):
    """The mnist problem (sigmoid MLP, 15,910 parameters) on `count` uniform random images and labels."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from l2o_tf import problems  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, size=[count, 28, 28, 1]).astype(np.float32)
    labels = rng.integers(0, 10, size=count).astype(np.int32)
    return problems.get("mnist", dataset=(images, labels))


@pytest.fixture(scope="session")
def quadratic():
    from l2o_tf import problems  # pylint: disable=import-outside-toplevel
    return problems.get("quadratic")


@pytest.fixture(scope="session")
def tiny_mnist():
    """mnist on 64 random images: a nonzero Hessian, and every loss draws its minibatch from the generator."""
    return mnist_on_random_images(64, seed=0)


# -- entry points run as a user runs them ---------------------------------------------------------------------

@pytest.fixture
def new_user_env(tmp_path):
    """No data location given (so MNIST problems use the embedded sample), no prepared TFDS data, TF's own log
    settings left to the entry point."""
    empty = tmp_path / "no_tfds"
    empty.mkdir()
    environment = {**os.environ, "TFDS_DATA_DIR": str(empty), "PYTHONUNBUFFERED": "1"}
    for name in ("L2O_DATA_DIR", "TF_CPP_MIN_LOG_LEVEL"):
        environment.pop(name, None)
    return environment


# Runs an entry point in-process and reports, after it exits, whether TensorFlow was ever imported.
_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def free_ports(count):
    """`count` free localhost ports, for the workers of a local tf.distribute cluster ($TF_CONFIG)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_module(module, env, *flags, timeout=300, report_tensorflow=False):
    """`python -m module flags...`: (exit status, stdout + stderr). With `report_tensorflow` the output ends with
    whether TensorFlow was imported (for the checks that must fail before it loads)."""
    command = [sys.executable, "-c", _WITHOUT_TENSORFLOW, module] if report_tensorflow else [sys.executable, "-m",
                                                                                            module]
    result = subprocess.run(command + list(flags), env=env, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr
