"""Atomic file writes (every file the project writes appears whole or not at all, so a killed run loses nothing)
and lock files (processes sharing work)."""
import contextlib
import io
import os
import pickle
import tempfile

import numpy as np

try:  # numpy >= 2 moved its internals to numpy._core; pickles name either
    from numpy._core import multiarray as _np_multiarray, numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray, numeric as _np_numeric

NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(core + ".multiarray", "_reconstruct"): _np_multiarray._reconstruct for core in ("numpy.core", "numpy._core")},
    **{(core + ".numeric", "_frombuffer"): _np_numeric._frombuffer for core in ("numpy.core", "numpy._core")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed` (by default what numpy arrays need), so a pickle cannot run code."""

    def __init__(self, file, allowed=None, what="this file", **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = NUMPY_GLOBALS if allowed is None else allowed
        self.what = what

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in {self.what}") from None


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file in the same directory and an atomic rename; the file gets the
    mode a plain `open` would give it (0666 less the umask), not the temporary file's private 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def current_umask():
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save_npz(path, **arrays):
    """`np.savez` to `path`, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_pickle(path, obj):
    """Standard-pickle `obj` (protocol 3, readable by the original Python 3.6 code) to `path`, atomically."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=3))


@contextlib.contextmanager
def exclusive_lock(path):
    """Yields True while this process holds the lock file `path` (made if missing), False if another process holds
    it. The kernel drops a dead process's lock, so a crash leaves no stale lock; the file stays (removing it would
    let two processes lock two different files of that name). Without `fcntl` (Windows) every lock is granted."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
