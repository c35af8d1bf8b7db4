"""Atomic file writes: every file the project writes appears whole or not at all, so a killed run loses nothing."""
import io
import os
import pickle
import tempfile

import numpy as np


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file in the same directory and an atomic rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_npz(path, **arrays):
    """`np.savez` to `path`, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_pickle(path, obj):
    """Standard-pickle `obj` (protocol 3, readable by the original Python 3.6 code) to `path`, atomically."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=3))
