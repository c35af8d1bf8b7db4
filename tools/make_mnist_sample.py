"""Write l2o_tf/data/mnist_sample.npz, the small class-balanced sample of real MNIST used when no MNIST is found.

Usage: python tools/make_mnist_sample.py DIR   (DIR holds the four MNIST IDX .gz files)

The train sample is drawn from the 55,000-image train split (after the original's 5000 validation images), the
test sample from the 10,000 test images, with a fixed seed. ``train_index`` / ``test_index`` record the positions
of the sampled images within those splits.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from l2o_tf import datasets  # pylint: disable=wrong-import-position

PER_CLASS = {"train": 300, "test": 200}
SEED = 0
MAX_BYTES = 2 * 1024 * 1024


def balanced_indices(labels, per_class, rng):
    """Sorted indices of ``per_class`` randomly chosen examples of each class."""
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(datasets.NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def make_sample(directory, per_class, seed=SEED):
    """Arrays to save: {split}_images uint8 [N,28,28], {split}_labels uint8 [N], {split}_index uint16 [N]."""
    rng = np.random.RandomState(seed)  # legacy generator: its stream is frozen across numpy versions
    arrays = {}
    for split in datasets.SPLITS:
        found = datasets._find_idx(directory, split)  # pylint: disable=protected-access
        if isinstance(found, str):
            raise SystemExit(f"{directory}: {found}")
        images, labels, _ = found
        images, labels = datasets._drop_validation(  # pylint: disable=protected-access
            "mnist", split, images, labels, directory)
        index = balanced_indices(labels, per_class[split], rng)
        arrays[f"{split}_images"] = images[index, :, :, 0]
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
        arrays[f"{split}_index"] = index.astype(np.uint16)
    return arrays


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    per_class = dict(PER_CLASS)
    while True:
        np.savez_compressed(datasets.SAMPLE_PATH, **make_sample(argv[1], per_class))
        size = os.path.getsize(datasets.SAMPLE_PATH)
        if size <= MAX_BYTES:
            break
        per_class = {k: v * 3 // 4 for k, v in per_class.items()}
        print(f"{size} bytes is over {MAX_BYTES}; retrying with {per_class} per class")
    print(f"wrote {datasets.SAMPLE_PATH}: {size} bytes, per class {per_class}")


if __name__ == "__main__":
    main(sys.argv)
