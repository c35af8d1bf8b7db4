"""Shared test set-up: quiet TF, and the one way a test reaches the optional ../shared reference files."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
REQUIRE_SHARED_VAR = "L2O_REQUIRE_SHARED"


def require_shared(*parts):
    """The path ../shared/<parts...> (original models, real MNIST) for a test that needs it.

    When it is absent the test is skipped, so users without ../shared get clean skips; with $L2O_REQUIRE_SHARED=1
    (as .ci/run sets) it fails instead, so CI cannot pass by silently skipping the reference checks."""
    path = os.path.normpath(os.path.join(SHARED, *parts))
    if not os.path.exists(path):
        message = f"reference file not present: {path}"
        if os.environ.get(REQUIRE_SHARED_VAR) == "1":
            pytest.fail(f"{message} (and ${REQUIRE_SHARED_VAR}=1)", pytrace=False)
        pytest.skip(message)
    return path
