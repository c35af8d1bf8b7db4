"""MNIST, Fashion-MNIST and CIFAR-10 for the optimizee problems, prepared as in the original code.

The original downloaded its data on first use. Here the data may come from a prepared TFDS directory, from raw
files the user already has (IDX / CIFAR batches), from a TFDS download on request, or, for MNIST only, from a small
sample of real MNIST shipped with the package, so that the code runs offline. Every step is logged and a failure
says what was tried and how to provide the data.
"""
import collections
import functools
import gzip
import os
import socket
import struct
import threading
import zlib

import numpy as np
from absl import logging

from l2o_tf import errors
from l2o_tf import fileio



class DataError(errors.L2OError):
    """A dataset could not be loaded."""


class DataNotFoundError(DataError):
    """No source had the dataset; the message lists the places tried and how to provide the data."""


class DataFormatError(DataError):
    """A data file exists but is corrupt, truncated or not what its name says; the message names the file."""


SAMPLE_SOURCE = "embedded sample"  # how Dataset.source starts for the embedded MNIST sample


class Dataset(collections.namedtuple("Dataset", ["images", "labels", "source"])):
    """A loaded split; `source` says where it came from (a directory, TFDS, or the embedded sample)."""

    __slots__ = ()

    @property
    def is_sample(self):
        """Whether this is the embedded MNIST sample rather than a full data set: results on it are not the paper's."""
        return self.source.startswith(SAMPLE_SOURCE)


NAMES = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")

# The original's read_data_sets held out the first 5000 training images as a (unused) validation set.
VALIDATION_SIZE = 5000
NUM_CLASSES = 10
SAMPLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist_sample.npz")
_CONNECT_TIMEOUT_S = 3.0

_Spec = collections.namedtuple("_Spec", ["tfds_name", "subdirs", "system_dirs", "download_host", "how_to"])
_IDX_HOW_TO = ("put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
               "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; un-gzipped names also work) from {url} "
               "in a directory DIR (or DIR/{name}/)")
_SPECS = {
    "mnist": _Spec("mnist", ("mnist", "MNIST-data"), (), "storage.googleapis.com",
                   _IDX_HOW_TO.format(url="https://storage.googleapis.com/cvdf-datasets/mnist/", name="mnist")),
    "fashion_mnist": _Spec("fashion_mnist", ("fashion_mnist", "fashion-mnist"), ("/usr/share/datasets/fashion-mnist",),
                           "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                           _IDX_HOW_TO.format(url="https://github.com/zalandoresearch/fashion-mnist",
                                              name="fashion_mnist")
                           + " (on Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs them system-wide)"),
    "cifar10": _Spec("cifar10", ("cifar10", "cifar-10-batches-bin", "cifar-10-batches-py",
                                 os.path.join("cifar10", "cifar-10-batches-bin"),
                                 os.path.join("cifar10", "cifar-10-batches-py")),
                     (), "www.cs.toronto.edu",
                     "extract cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from "
                     "https://www.cs.toronto.edu/~kriz/cifar.html into a directory DIR"),
}

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR_RECORD = 1 + 3 * 32 * 32

# Everything a pickled numpy uint8 array needs (protocols 2 to 5, numpy 1 and 2 module paths), and nothing else.


def load(name: str, split: str, data_dir: str | None = None, download: bool = False) -> Dataset:
    """Return split "train" or "test" of dataset ``name`` (one of NAMES) as a read-only, cached ``Dataset``.

    Images are float32 NHWC in [0, 1], labels int32 [N]. MNIST and Fashion-MNIST train are the 55,000 training
    images after the first 5000 (the original's validation set, dropped for Fashion-MNIST too); CIFAR-10 train is
    the 50,000 images of data_batch_1..5. Sources, in order: prepared TFDS data in ``data_dir`` (else
    $TFDS_DATA_DIR, else ~/tensorflow_datasets); raw files in ``data_dir`` and $L2O_DATA_DIR (and their
    sub-directory named after the dataset); a TFDS download if ``download``; for MNIST, and only when no data
    location was given (no ``data_dir``, no $L2O_DATA_DIR), the embedded sample of real MNIST (3000 train images
    from the 55,000 and 2000 test images, 300 / 200 per class; ``Dataset.is_sample``). A location that was given
    but lacks the data is an error: a typo must not silently turn into a run on the sample.
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    raw_dirs = {}
    for origin, directory in (("data_dir", data_dir), ("$L2O_DATA_DIR", os.environ.get("L2O_DATA_DIR"))):
        if directory:
            raw_dirs.setdefault(os.path.abspath(os.path.expanduser(directory)), origin)
    tfds_dir = os.path.abspath(os.path.expanduser(
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")))
    return _load_cached(name, split, tuple(raw_dirs.items()), tfds_dir, bool(download))


@functools.lru_cache(maxsize=len(NAMES) * len(SPLITS))
def _load_cached(name, split, raw_dirs, tfds_dir, download):
    """Try the sources in order; ``raw_dirs`` is a tuple of (directory, origin) pairs."""
    tried = []
    found = _from_prepared_tfds(name, split, tfds_dir, tried) or _from_raw_files(name, split, raw_dirs, tried)
    if not found and download:
        found = _from_tfds_download(name, split, tfds_dir, tried)
    if not found and name == "mnist":
        if raw_dirs:
            tried.append("embedded MNIST sample: not used, since a data location was given (it is used only "
                         "without --data_dir and $L2O_DATA_DIR)")
        else:
            found = _from_embedded_sample(split, tried)
    if not found:
        raise DataNotFoundError(_not_found_message(name, split, tried, tfds_dir))
    return _as_dataset(name, split, *found)


@functools.lru_cache(maxsize=len(SPLITS))
def embedded_sample(split: str) -> Dataset:
    """Split "train" or "test" of the embedded MNIST sample itself, whatever data is configured (for tests and
    quick experiments; `load` falls back to it only when no data location is given)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    tried = []
    found = _from_embedded_sample(split, tried)
    if not found:
        raise DataNotFoundError(tried[0])
    return _as_dataset("mnist", split, *found)


def _as_dataset(name, split, images, labels, source):
    """Float32 images in [0, 1] and int32 labels, read-only, as the original's readers scaled them."""
    images = images.astype(np.float32)
    if name == "cifar10":
        images /= np.float32(255)  # as the original CIFAR reader
    else:
        images *= np.float32(1 / 255)  # as read_data_sets: times the float32 reciprocal
    labels = labels.astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    logging.info("datasets: using %s/%s from %s: images %s, labels %s", name, split, source,
                 list(images.shape), list(labels.shape))
    return Dataset(images, labels, source)


def _not_found_message(name, split, tried, tfds_dir):
    places = "\n".join(f"  - {t}" for t in tried)
    return (f"Could not find the {name!r} {split!r} data. Tried:\n{places}\n"
            f"To provide it: {_SPECS[name].how_to}, then pass --data_dir=DIR or set $L2O_DATA_DIR=DIR; "
            f"or pass --download with network access (TFDS downloads it into {tfds_dir}).")


def _drop_validation(name, split, images, labels, where):
    """Drop the first VALIDATION_SIZE training images of (Fashion-)MNIST, as the original's read_data_sets."""
    if name == "cifar10" or split != "train":
        return images, labels
    if len(images) <= VALIDATION_SIZE:
        raise DataFormatError(f"{where}: the {name} train split has only {len(images)} images, but the first "
                              f"{VALIDATION_SIZE} are held out as validation; provide the full training files")
    return images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]


def _check_labels(labels, where):
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataFormatError(f"{where}: label {int(labels.max())} is out of range 0..{NUM_CLASSES - 1}")


# ---------------------------------------------------------------------------------------------- TFDS


def _tfds_load(name, split, tfds_dir, download):
    import tensorflow_datasets as tfds  # slow import: only when it will be used
    images, labels = tfds.as_numpy(tfds.load(_SPECS[name].tfds_name, split=split, data_dir=tfds_dir,
                                             download=download, try_gcs=False, batch_size=-1, as_supervised=True))
    return _drop_validation(name, split, images, labels, f"TFDS data in {tfds_dir}")


def _from_prepared_tfds(name, split, tfds_dir, tried):
    """Load prepared TFDS data, touching tensorflow_datasets only when <tfds_dir>/<name>/<version>/ exists."""
    root = os.path.join(tfds_dir, _SPECS[name].tfds_name)
    logging.info("datasets: %s/%s: looking for prepared TFDS data in %s", name, split, root)
    prepared = os.path.isdir(root) and any(os.path.isfile(os.path.join(root, version, "dataset_info.json"))
                                           for version in os.listdir(root))
    if not prepared:
        tried.append(f"prepared TFDS data: no {root}/<version>/dataset_info.json")
        return None
    try:
        images, labels = _tfds_load(name, split, tfds_dir, download=False)
    except Exception as e:  # pylint: disable=broad-except  # any TFDS failure: fall through to the next source
        logging.warning("datasets: prepared TFDS data in %s could not be loaded: %s", root, e)
        tried.append(f"prepared TFDS data in {root}: failed ({type(e).__name__}: {e})")
        return None
    return images, labels, f"TFDS data in {tfds_dir}"


def _reachable(host):
    """Whether a TCP connection to host:443 opens within _CONNECT_TIMEOUT_S (name resolution included)."""
    ok = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=_CONNECT_TIMEOUT_S).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_CONNECT_TIMEOUT_S)
    return bool(ok)


def _from_tfds_download(name, split, tfds_dir, tried):
    """Download with TFDS into tfds_dir; raise DataNotFoundError if offline or if the download fails."""
    host = _SPECS[name].download_host
    logging.info("datasets: %s/%s: checking the network (%s:443) before a TFDS download", name, split, host)
    if not _reachable(host):
        tried.append(f"TFDS download: could not connect to {host}:443 within {_CONNECT_TIMEOUT_S:g} s")
        raise DataNotFoundError("--download was set but the network is unreachable.\n"
                                + _not_found_message(name, split, tried, tfds_dir))
    logging.info("datasets: %s/%s: downloading with TFDS into %s", name, split, tfds_dir)
    try:
        images, labels = _tfds_load(name, split, tfds_dir, download=True)
    except DataError:
        raise
    except Exception as e:  # pylint: disable=broad-except  # report any TFDS failure as "not found"
        tried.append(f"TFDS download into {tfds_dir}: failed ({type(e).__name__}: {e})")
        raise DataNotFoundError(_not_found_message(name, split, tried, tfds_dir)) from e
    return images, labels, f"TFDS download into {tfds_dir}"


# ----------------------------------------------------------------------------------------- raw files


def _from_raw_files(name, split, raw_dirs, tried):
    """Search each directory of raw_dirs, then its sub-directories named after the dataset, then system dirs."""
    spec = _SPECS[name]
    reader = _find_cifar if name == "cifar10" else _find_idx
    if not raw_dirs:
        tried.append("raw files: no --data_dir given and $L2O_DATA_DIR is not set")
    places = [(base, origin, spec.subdirs) for base, origin in raw_dirs]
    places += [(directory, "system package", ()) for directory in spec.system_dirs]
    for base, origin, subdirs in places:
        logging.info("datasets: %s/%s: looking for raw files in %s (%s) and its sub-directories %s",
                     name, split, base, origin, list(subdirs))
        if not os.path.isdir(base):
            tried.append(f"raw files in {base} ({origin}): no such directory")
            continue
        absent = [sub for sub in subdirs if not os.path.isdir(os.path.join(base, sub))]
        for directory in [base] + [os.path.join(base, sub) for sub in subdirs if sub not in absent]:
            found = reader(directory, split)
            if isinstance(found, str):
                tried.append(f"raw files in {directory} ({origin}): {found}")
                continue
            images, labels, kind = found
            images, labels = _drop_validation(name, split, images, labels, directory)
            return images, labels, f"{kind} in {directory}"
        if absent:
            tried.append(f"raw files in {base} ({origin}): no sub-directory {', '.join(absent)}")
    return None


def _read_bytes(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: cannot be read ({e}); the file is corrupt or truncated, "
                              "replace it with a fresh copy") from e


def _find_in(directory, names):
    """Paths of ``names`` in directory, each as NAME.gz or NAME; a message instead if any is missing."""
    paths, missing = [], []
    for file_name in names:
        candidates = [os.path.join(directory, file_name + suffix) for suffix in (".gz", "")]
        existing = [path for path in candidates if os.path.isfile(path)]
        if existing:
            paths.append(existing[0])
        else:
            missing.append(file_name + "[.gz]")
    if missing:
        return ("missing " if paths else "no ") + ", ".join(missing)
    return paths


def _parse_idx(path, magic, ndim, what):
    data = _read_bytes(path)
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DataFormatError(f"{path}: {len(data)} bytes is shorter than the {header}-byte IDX header of {what}")
    got_magic, *dims = struct.unpack(f">{1 + ndim}I", data[:header])
    if got_magic != magic:
        raise DataFormatError(f"{path}: IDX magic number is {got_magic}, expected {magic} for {what}; "
                              "wrong or corrupt file")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataFormatError(f"{path}: the header announces dims {dims} = {expected} bytes of data but the file "
                              f"holds {len(data) - header}; truncated or corrupt file")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx(directory, split):
    """(images [N,28,28,1] uint8, labels, kind) from IDX files in directory, or a message saying what is missing."""
    prefix = _IDX_PREFIX[split]
    paths = _find_in(directory, (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"))
    if isinstance(paths, str):
        return paths
    images_path, labels_path = paths
    images = _parse_idx(images_path, 2051, 3, "images")
    if images.shape[1:] != (28, 28):
        raise DataFormatError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    labels = _parse_idx(labels_path, 2049, 1, "labels")
    if len(labels) != len(images):
        raise DataFormatError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
    _check_labels(labels, labels_path)
    return images[..., None], labels, "IDX files"


def _find_cifar(directory, split):
    """(images [N,32,32,3] uint8, labels, kind) from CIFAR-10 binary or python batches, or a missing-files message."""
    names = _CIFAR_FILES[split]
    bin_paths = [os.path.join(directory, n + ".bin") for n in names]
    if all(os.path.isfile(p) for p in bin_paths):
        parts, kind = [_read_cifar_bin(p) for p in bin_paths], "CIFAR-10 binary batches"
    else:
        py_paths = [os.path.join(directory, n) for n in names]
        if not all(os.path.isfile(p) for p in py_paths):
            return f"no complete set of {', '.join(names)} (.bin or python pickle)"
        parts, kind = [_read_cifar_pickle(p) for p in py_paths], "CIFAR-10 python batches"
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, kind


def _read_cifar_bin(path):
    data = _read_bytes(path)
    if not data or len(data) % _CIFAR_RECORD:
        raise DataFormatError(f"{path}: size {len(data)} bytes is not a positive multiple of the {_CIFAR_RECORD}-byte "
                              "CIFAR-10 record (1 label byte + 3x32x32 image); truncated or corrupt file")
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(labels, path)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_pickle(path):
    try:
        with open(path, "rb") as f:
            batch = fileio.RestrictedUnpickler(f, what="a CIFAR-10 batch", encoding="bytes").load()
    except Exception as e:  # pylint: disable=broad-except  # any unpickling failure means a bad file
        raise DataFormatError(f"{path}: not a valid CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a dict, found {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataFormatError(f"{path}: the batch has no 'data' and 'labels' entries (keys: {sorted(batch)})")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: 'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    if (labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer)
            or (labels.size and labels.min() < 0)):
        raise DataFormatError(f"{path}: 'labels' must be {len(data)} integers in 0..9, got {labels.dtype} "
                              f"{list(labels.shape)}")
    _check_labels(labels, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# ------------------------------------------------------------------------------------ embedded sample


def _from_embedded_sample(split, tried):
    logging.info("datasets: mnist/%s: using the embedded sample %s", split, SAMPLE_PATH)
    if not os.path.isfile(SAMPLE_PATH):
        tried.append(f"embedded MNIST sample: {SAMPLE_PATH} is missing from the installation")
        return None
    try:
        with np.load(SAMPLE_PATH) as sample:
            images, labels = sample[f"{split}_images"], sample[f"{split}_labels"]
    except Exception as e:  # pylint: disable=broad-except  # any failure means a broken installation
        raise DataFormatError(f"{SAMPLE_PATH}: the embedded MNIST sample cannot be read ({e}); "
                              "reinstall l2o-tf") from e
    logging.warning("datasets: using the embedded sample of real MNIST (%d %s images), NOT the full data set; for "
                    "the full data put the MNIST IDX .gz files in a directory and pass --data_dir=DIR or set "
                    "$L2O_DATA_DIR=DIR (or pass --download with network access).", len(images), split)
    return images[..., None], labels, f"{SAMPLE_SOURCE} of MNIST ({len(images)} images)"
