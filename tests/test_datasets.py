"""Tests for l2o_tf.datasets on tiny hand-written data files (and on real MNIST when it is present)."""
import gzip
import os
import pickle
import struct
import time

import numpy as np
import pytest

from conftest import require_shared
from l2o_tf import datasets


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No outside data: an empty TFDS dir, no $L2O_DATA_DIR, and a fresh cache."""
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    monkeypatch.delenv("L2O_DATA_DIR", raising=False)
    datasets._load_cached.cache_clear()  # pylint: disable=protected-access
    yield
    datasets._load_cached.cache_clear()  # pylint: disable=protected-access


def write_idx(path, array, magic, compress=True, truncate=0):
    data = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    data = data[:len(data) - truncate]
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def mnist_like(n):
    """Images whose pixel (0, 0) is i % 256 and pixel (27, 27) is 255; labels i % 10."""
    images = np.full((n, 28, 28), 51, np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 27, 27] = 255
    return images, (np.arange(n) % 10).astype(np.uint8)


def write_mnist(directory, n_train=5006, n_test=3, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    raw = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = mnist_like(n)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, 2051, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 2049, compress)
        raw[prefix] = images, labels
    return raw


def cifar_images(n, offset=0):
    """CHW images with channel c filled with 10*c + 1 + image index, and pixel (0, 1, 2) of channel 0 = 200."""
    images = np.zeros((n, 3, 32, 32), np.uint8)
    for c in range(3):
        images[:, c] = (10 * c + 1 + offset + np.arange(n))[:, None, None]
    images[:, 0, 1, 2] = 200
    return images


def write_cifar_bin(directory, n=2):
    directory.mkdir(parents=True, exist_ok=True)
    for i, file_name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        images = cifar_images(n, offset=100 * (i < 5) * i)
        labels = (np.arange(n) + i) % 10
        records = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(n, -1)], axis=1)
        (directory / file_name).write_bytes(records.tobytes())


def test_mnist_idx_values_shapes_and_validation_cut(tmp_path):
    raw = write_mnist(tmp_path / "d")
    train = datasets.load("mnist", "train", data_dir=str(tmp_path / "d"))
    assert train.images.shape == (6, 28, 28, 1) and train.images.dtype == np.float32
    assert train.labels.shape == (6,) and train.labels.dtype == np.int32
    # the first returned image is raw image 5000 (5000 % 256 = 136)
    np.testing.assert_array_equal(train.images[:, 0, 0, 0] * 255, [136, 137, 138, 139, 140, 141])
    np.testing.assert_array_equal(train.labels, raw["train"][1][5000:])
    assert train.labels[0] == 0 and train.labels[5] == 5
    assert train.images[0, 27, 27, 0] == 1.0
    assert train.images[0, 5, 5, 0] == np.float32(51) * np.float32(1 / 255)
    assert abs(train.images[0, 5, 5, 0] - 0.2) < 1e-7
    assert "IDX" in train.source and str(tmp_path / "d") in train.source
    test = datasets.load("mnist", "test", data_dir=str(tmp_path / "d"))
    assert test.images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(test.labels, [0, 1, 2])
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) == 1.0


def test_results_are_cached_and_read_only(tmp_path):
    write_mnist(tmp_path)
    first = datasets.load("mnist", "test", data_dir=str(tmp_path))
    assert datasets.load("mnist", "test", data_dir=str(tmp_path)) is first
    with pytest.raises(ValueError):
        first.images[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError):
        first.labels[0] = 3


def test_uncompressed_idx_in_named_subdirectory_via_env(tmp_path, monkeypatch):
    write_mnist(tmp_path / "fashion_mnist", n_train=5001, compress=False)
    monkeypatch.setenv("L2O_DATA_DIR", str(tmp_path))
    train = datasets.load("fashion_mnist", "train")
    assert train.images.shape == (1, 28, 28, 1)
    assert train.images[0, 0, 0, 0] * 255 == 5000 % 256 and train.labels[0] == 0
    assert str(tmp_path / "fashion_mnist") in train.source


def test_data_dir_and_env_are_both_searched(tmp_path, monkeypatch):
    (tmp_path / "given").mkdir()
    write_mnist(tmp_path / "env")
    monkeypatch.setenv("L2O_DATA_DIR", str(tmp_path / "env"))
    assert datasets.load("mnist", "test", data_dir=str(tmp_path / "given")).images.shape == (3, 28, 28, 1)


@pytest.mark.parametrize("kind, truncate, magic, match", [
    ("images", 0, 2049, "magic number is 2049"),
    ("images", 7, 2051, "truncated"),
    ("labels", 1, 2049, "truncated"),
    ("labels", 0, 2051, "magic number is 2051"),
])
def test_corrupt_idx_raises_format_error_naming_file(tmp_path, kind, truncate, magic, match):
    write_mnist(tmp_path)
    images, labels = mnist_like(3)
    array, name = (images, "t10k-images-idx3-ubyte.gz") if kind == "images" else (labels, "t10k-labels-idx1-ubyte.gz")
    write_idx(tmp_path / name, array, magic, truncate=truncate)
    with pytest.raises(datasets.DataFormatError, match=match) as info:
        datasets.load("mnist", "test", data_dir=str(tmp_path))
    assert name in str(info.value)


def test_truncated_gzip_stream_and_bad_labels(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(datasets.DataFormatError, match="t10k-images-idx3-ubyte.gz"):
        datasets.load("mnist", "test", data_dir=str(tmp_path))
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 12, 3]), 2049)
    with pytest.raises(datasets.DataFormatError, match="label 12 is out of range"):
        datasets.load("mnist", "test", data_dir=str(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]), 2049)
    with pytest.raises(datasets.DataFormatError, match="2 labels for the 3 images"):
        datasets.load("mnist", "test", data_dir=str(tmp_path))


def test_short_train_split_cannot_drop_validation(tmp_path):
    write_mnist(tmp_path, n_train=5000)
    with pytest.raises(datasets.DataFormatError, match="only 5000 images"):
        datasets.load("mnist", "train", data_dir=str(tmp_path))


def test_cifar_binary_transpose_labels_and_scaling(tmp_path):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    train = datasets.load("cifar10", "train", data_dir=str(tmp_path))
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.float32
    assert train.labels.dtype == np.int32
    np.testing.assert_array_equal(train.labels, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    # batch 2 (offset 100), its second image: channels 1+101, 11+101, 21+101; pixel (1, 2) of channel 0 is 200
    np.testing.assert_array_equal(train.images[3, 5, 7] * np.float32(255), [102, 112, 122])
    assert train.images[3, 5, 7, 0] == np.float32(102) / np.float32(255)
    np.testing.assert_array_equal(train.images[3, 1, 2] * np.float32(255), [200, 112, 122])
    assert "binary" in train.source
    test = datasets.load("cifar10", "test", data_dir=str(tmp_path))
    assert test.images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(test.labels, [5, 6])
    np.testing.assert_allclose(test.images[1, 31, 31] * 255, [2, 12, 22], rtol=1e-6)


def test_cifar_binary_bad_size(tmp_path):
    write_cifar_bin(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(datasets.DataFormatError, match="data_batch_3.bin.*multiple of the 3073"):
        datasets.load("cifar10", "train", data_dir=str(tmp_path))


def py2_pickle(data, labels):
    """A CIFAR batch pickled as Python 2 numpy did (the format of cifar-10-python.tar.gz), opcode by opcode."""
    def py2_str(b):  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b
    raw = data.tobytes()
    return b"".join([
        b"\x80\x02}(", py2_str(b"data"),
        b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"K\x00\x85", py2_str(b"b"), b"\x87R",
        b"(K\x01M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86",
        b"cnumpy\ndtype\n", py2_str(b"u1"), b"K\x00K\x01\x87R",
        b"(K\x03", py2_str(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<I", len(raw)) + raw, b"tb",
        py2_str(b"labels"), b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"eu."])


def write_cifar_pickles(directory, n=3, protocol="py2"):
    directory.mkdir(parents=True, exist_ok=True)
    for i, file_name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_images(n, offset=i).reshape(n, -1), [(j + i) % 10 for j in range(n)]
        if protocol == "py2":
            (directory / file_name).write_bytes(py2_pickle(data, labels))
        else:
            with open(directory / file_name, "wb") as f:
                pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", ["py2", 3, 5])
def test_cifar_python_batches(tmp_path, protocol):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py", protocol=protocol)
    train = datasets.load("cifar10", "train", data_dir=str(tmp_path))
    assert train.images.shape == (15, 32, 32, 3)
    np.testing.assert_array_equal(train.labels[:6], [0, 1, 2, 1, 2, 3])
    np.testing.assert_array_equal(train.images[4, 9, 9] * np.float32(255), [3, 13, 23])
    np.testing.assert_array_equal(train.images[4, 1, 2] * np.float32(255), [200, 13, 23])
    assert "python" in train.source


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_with_disallowed_global_is_refused(tmp_path):
    write_cifar_pickles(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=3)
    with pytest.raises(datasets.DataFormatError, match="test_batch.*not allowed") as info:
        datasets.load("cifar10", "test", data_dir=str(tmp_path))
    assert "system" in str(info.value)
    assert not marker.exists()


def test_nothing_found_lists_places_and_is_fast(tmp_path, monkeypatch):
    (tmp_path / "given").mkdir()
    monkeypatch.setenv("L2O_DATA_DIR", str(tmp_path / "env"))
    start = time.monotonic()
    with pytest.raises(datasets.DataNotFoundError) as info:
        datasets.load("cifar10", "train", data_dir=str(tmp_path / "given"))
    assert time.monotonic() - start < 5
    message = str(info.value)
    for place in (f"prepared TFDS data: no {tmp_path / 'given' / 'cifar10'}",
                  f"{tmp_path / 'given'} (data_dir): no complete set of data_batch_1",
                  "no sub-directory cifar10, cifar-10-batches-bin",
                  f"{tmp_path / 'env'} ($L2O_DATA_DIR): no such directory",
                  "--data_dir", "$L2O_DATA_DIR=DIR", "--download"):
        assert place in message


def test_tfds_step_is_skipped_without_prepared_dir(tmp_path):
    write_mnist(tmp_path / "mnist")  # raw files where a TFDS dir would be: must not trigger TFDS
    start = time.monotonic()
    data = datasets.load("mnist", "test", data_dir=str(tmp_path))
    assert time.monotonic() - start < 2
    assert "IDX" in data.source


def test_prepared_tfds_dir_is_used_first_and_failures_fall_through(tmp_path, monkeypatch):
    calls = []

    def fake_tfds_load(name, split, tfds_dir, download):
        calls.append((name, split, tfds_dir, download))
        if name == "fashion_mnist":
            raise RuntimeError("broken TFDS files")
        return np.full((2, 28, 28, 1), 255, np.uint8), np.array([4, 9])

    monkeypatch.setattr(datasets, "_tfds_load", fake_tfds_load)
    for name in ("mnist", "fashion_mnist"):
        (tmp_path / name / "3.0.1").mkdir(parents=True)
        (tmp_path / name / "3.0.1" / "dataset_info.json").write_text("{}")
    write_mnist(tmp_path)
    data = datasets.load("mnist", "test", data_dir=str(tmp_path))
    assert data.source == f"TFDS data in {tmp_path}" and data.labels.tolist() == [4, 9] and data.images.max() == 1.0
    data = datasets.load("fashion_mnist", "test", data_dir=str(tmp_path))
    assert "IDX files" in data.source and data.images.shape == (3, 28, 28, 1)
    assert calls == [("mnist", "test", str(tmp_path), False), ("fashion_mnist", "test", str(tmp_path), False)]


def test_download_while_offline_fails_fast(tmp_path, monkeypatch):
    calls = []

    def offline(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets.socket, "create_connection", offline)
    start = time.monotonic()
    with pytest.raises(datasets.DataNotFoundError, match="--download was set but the network is unreachable"):
        datasets.load("cifar10", "test", data_dir=str(tmp_path), download=True)
    assert time.monotonic() - start < 5
    assert calls == [(("www.cs.toronto.edu", 443), 3.0)]


def test_embedded_sample_only_when_no_data_location_is_given(tmp_path):
    assert os.path.getsize(datasets.SAMPLE_PATH) <= 2 * 1024 * 1024
    for split, per_class in (("train", 300), ("test", 200)):
        data = datasets.load("mnist", split)  # no data_dir, no $L2O_DATA_DIR (the fixture unsets it)
        assert data.images.shape == (10 * per_class, 28, 28, 1) and data.images.dtype == np.float32
        assert data.labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [per_class] * 10)
        assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
        assert 0.1 < float(data.images.mean()) < 0.15  # MNIST's mean pixel is about 0.13
        assert data.is_sample and data.source.startswith(datasets.SAMPLE_SOURCE)
        explicit = datasets.embedded_sample(split)
        assert explicit.is_sample
        np.testing.assert_array_equal(explicit.images, data.images)
        np.testing.assert_array_equal(explicit.labels, data.labels)
    write_mnist(tmp_path / "full")
    assert not datasets.load("mnist", "test", data_dir=str(tmp_path / "full")).is_sample


@pytest.mark.parametrize("how", ["data_dir", "env"])
def test_a_given_location_without_the_data_is_an_error_not_the_sample(tmp_path, monkeypatch, how):
    typo = tmp_path / "mnsit"
    if how == "env":
        monkeypatch.setenv("L2O_DATA_DIR", str(typo))
    with pytest.raises(datasets.DataNotFoundError) as info:
        datasets.load("mnist", "train", data_dir=str(typo) if how == "data_dir" else None)
    message = str(info.value)
    origin = "data_dir" if how == "data_dir" else "$L2O_DATA_DIR"
    assert f"raw files in {typo} ({origin}): no such directory" in message
    assert "embedded MNIST sample: not used, since a data location was given" in message
    (tmp_path / "empty").mkdir()  # an existing directory without the files: the same, naming the files looked for
    with pytest.raises(datasets.DataNotFoundError, match="no train-images-idx3-ubyte"):
        datasets.load("mnist", "train", data_dir=str(tmp_path / "empty"))


def test_no_embedded_sample_for_cifar():
    with pytest.raises(datasets.DataNotFoundError):
        datasets.load("cifar10", "test")


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
        datasets.load("svhn", "train")
    with pytest.raises(ValueError, match="train, test"):
        datasets.load("mnist", "validation")


def test_real_mnist_and_sample_provenance():
    real_mnist = require_shared("data", "mnist")
    train = datasets.load("mnist", "train", data_dir=real_mnist)
    test = datasets.load("mnist", "test", data_dir=real_mnist)
    assert train.images.shape == (55000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert not train.is_sample and "IDX files" in train.source
    with gzip.open(os.path.join(real_mnist, "train-labels-idx1-ubyte.gz")) as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    assert train.labels[0] == raw_labels[5000]
    np.testing.assert_array_equal(train.labels, raw_labels[5000:])
    with np.load(datasets.SAMPLE_PATH) as sample:
        for split, full in (("train", train), ("test", test)):
            index = sample[f"{split}_index"]
            np.testing.assert_array_equal(sample[f"{split}_labels"], full.labels[index])
            np.testing.assert_array_equal(sample[f"{split}_images"],
                                          np.round(full.images[index, :, :, 0] * 255).astype(np.uint8))
