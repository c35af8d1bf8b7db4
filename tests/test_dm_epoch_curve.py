"""tools/dm_epoch_curve.py (the paper's Fig. 4 from a training's saves): epochs from the models' metadata, windows."""
import json
import os
import subprocess
import sys

import numpy as np

from l2o_tf import fileio
from l2o_tf import plot

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "dm_epoch_curve.py")


def evaluation_of(tmp_path, weights, epoch, seed, losses):
    """An evaluation record of `weights`, whose metadata says it was saved after `epoch` epochs."""
    fileio.atomic_write_bytes(str(tmp_path / f"{weights}.json"), json.dumps({"metadata": {"epoch": epoch}}).encode())
    record = tmp_path / f"{weights}_e{seed}.npz"
    fileio.atomic_save_npz(str(record), losses=losses, flags=json.dumps(
        {"problem": "mnist", "seed": seed, "weights_file": str(tmp_path / weights)}))
    return str(record)


def test_rows_are_the_saves_epochs_in_order_with_the_mean_over_seeds(tmp_path):
    rng = np.random.default_rng(3)
    runs = {("cw.l2l-0", 6300, 2): rng.uniform(0.1, 1, 2100), ("cw.l2l-500", 500, 2): rng.uniform(0.1, 1, 2100),
            ("cw.l2l-500", 500, 3): rng.uniform(0.1, 1, 2100)}
    records = [evaluation_of(tmp_path, w, epoch, seed, losses) for (w, epoch, seed), losses in runs.items()]
    result = subprocess.run([sys.executable, TOOL, *records], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    five_hundred = [plot.ln_windows(runs["cw.l2l-500", 500, s]) for s in (2, 3)]
    assert lines[2] == "| 500 | " + " | ".join(plot.mean_std_cells(five_hundred)) + " | 2 |"
    assert lines[3].startswith("| 6,300 | ") and lines[3].endswith(" | 1 |")   # the best save, by its metadata


def test_a_record_whose_weights_have_no_metadata_is_a_clear_error(tmp_path):
    record = tmp_path / "x.npz"
    fileio.atomic_save_npz(str(record), losses=np.ones(5), flags=json.dumps({"weights_file": "/no/such/model"}))
    result = subprocess.run([sys.executable, TOOL, str(record)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot tell the training epoch" in result.stderr
