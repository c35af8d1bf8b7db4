"""Atomic writes: a failed or interrupted write leaves the previous file whole and no debris; exclusive locks."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from l2o_tf import fileio


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    fileio.atomic_save_npz(str(path), weights=np.arange(3.0))

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_save_npz(str(path), weights=np.zeros(5))
    with np.load(path) as data:
        np.testing.assert_array_equal(data["weights"], np.arange(3.0))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the temporary file is gone


def test_writes_create_directories_and_round_trip(tmp_path):
    path = tmp_path / "a" / "b" / "record.pickle"
    fileio.atomic_save_pickle(str(path), [1.5, 2.5])
    with open(path, "rb") as f:
        assert pickle.load(f) == [1.5, 2.5]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_of_a_plain_open_under_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        fileio.atomic_save_pickle(str(tmp_path / "record"), [1.0])
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "record").st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(tmp_path / "record").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777
    assert fileio.current_umask() == previous


def test_the_restricted_unpickler_reads_arrays_and_refuses_code(tmp_path):
    path = tmp_path / "x.pickle"
    path.write_bytes(pickle.dumps({"a": np.arange(4, dtype=np.float32)}, protocol=3))
    with open(path, "rb") as f:
        loaded = fileio.RestrictedUnpickler(f).load()
    np.testing.assert_array_equal(loaded["a"], np.arange(4, dtype=np.float32))
    path.write_bytes(pickle.dumps(os.getcwd))
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="posix.getcwd is not allowed"):
        fileio.RestrictedUnpickler(f, what="x.pickle").load()


def test_an_exclusive_lock_is_held_once_and_dropped_with_its_process(tmp_path):
    """Held: a second taker is refused (another process, or another open in this one); released on exit, and by
    the kernel when the holder dies without releasing."""
    path = str(tmp_path / "eval" / "x" / "evaluating.lock")
    with fileio.exclusive_lock(path) as first:
        with fileio.exclusive_lock(path) as second:
            assert first and not second
    with fileio.exclusive_lock(path) as again:
        assert again
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from l2o_tf import fileio\n"
                               "with fileio.exclusive_lock(sys.argv[1]) as held:\n"
                               "    print(held, flush=True); time.sleep(60)", path],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        with fileio.exclusive_lock(path) as taken:
            assert not taken
    finally:
        holder.kill()
        holder.wait()
    with fileio.exclusive_lock(path) as taken:
        assert taken   # the killed holder left no stale lock
