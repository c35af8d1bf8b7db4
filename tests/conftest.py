"""Keep TF quiet and single-threaded-friendly in tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
