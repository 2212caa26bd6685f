"""Data loaders: tiny folders written here, and the shared data when present."""

import os

import numpy as np
import pytest

from skhypernet.datasets import (
    list_uci_datasets,
    load_mnist,
    load_uci,
    uci_n_splits,
    uci_splits,
)

from .conftest import write_idx, write_mnist_folder, write_uci_folder


@pytest.mark.parametrize("nested", [True, False], ids=["data-subfolder", "flat"])
def test_load_uci_split(tmp_path, nested):
    folder, X, y = write_uci_folder(tmp_path, nested=nested)
    assert uci_n_splits(folder) == 2 and uci_splits(folder) == [0, 1]
    X_train, X_test, y_train, y_test = load_uci(folder, split=1)
    assert X_train.shape == (32, 3) and X_test.shape == (8, 3)
    order = np.random.RandomState(1).permutation(40)
    np.testing.assert_allclose(X_train, X[order[:32]], rtol=1e-6)
    np.testing.assert_allclose(y_test, y[order[32:]], rtol=1e-6)
    assert list_uci_datasets(tmp_path) == ["toy"]


def test_load_uci_reports_the_missing_file(tmp_path):
    folder, _, _ = write_uci_folder(tmp_path)
    os.remove(os.path.join(folder, "data", "index_test_1.txt"))
    with pytest.raises(FileNotFoundError, match="index_test_1.txt"):
        load_uci(folder, split=1)
    os.remove(os.path.join(folder, "data", "n_splits.txt"))
    with pytest.raises(FileNotFoundError, match="n_splits.txt"):
        load_uci(folder, split=0)


def test_load_uci_rejects_bad_split_and_bad_files(tmp_path):
    folder, _, _ = write_uci_folder(tmp_path)
    with pytest.raises(ValueError, match="split must be an integer from 0 to 1"):
        load_uci(folder, split=2)
    with open(os.path.join(folder, "data", "index_train_0.txt"), "w") as handle:
        handle.write("1\n2\nbanana\n")
    with pytest.raises(ValueError, match="index_train_0.txt"):
        load_uci(folder, split=0)
    with open(os.path.join(folder, "data", "index_train_0.txt"), "w") as handle:
        handle.write("1\n99\n")
    with pytest.raises(ValueError, match="whole numbers from 0 to 39"):
        load_uci(folder, split=0)


def test_load_uci_shared_data(shared_datasets):
    folder = os.path.join(shared_datasets, "uci", "bostonHousing")
    X_train, X_test, y_train, y_test = load_uci(folder, split=0)
    assert X_train.shape[1] == 13 and len(X_train) + len(X_test) == 506
    assert len(y_train) == len(X_train) and uci_n_splits(folder) == 20
    assert "protein-tertiary-structure" in list_uci_datasets(os.path.join(shared_datasets, "uci"))


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_load_mnist(tmp_path, compress):
    arrays = write_mnist_folder(tmp_path, compress=compress)
    X_train, X_test, y_train, y_test = load_mnist(tmp_path)
    assert X_train.shape == (60, 784) and X_test.shape == (20, 784)
    assert X_train.dtype == np.uint8
    np.testing.assert_array_equal(X_train, arrays["train"][0].reshape(60, 784))
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])


def test_load_mnist_validates_files(tmp_path):
    write_mnist_folder(tmp_path, compress=False)
    labels = os.path.join(tmp_path, "t10k-labels-idx1-ubyte")
    with open(labels, "r+b") as handle:
        handle.write(b"\x00\x00\x08\x03")  # the images' magic number
    with pytest.raises(ValueError, match="magic number"):
        load_mnist(tmp_path)
    write_idx(labels, np.zeros(19), compress=False)
    with pytest.raises(ValueError, match="20 images but 19 labels"):
        load_mnist(tmp_path)
    with open(labels, "ab") as handle:
        handle.write(b"\x01")
    with pytest.raises(ValueError, match="header announces 19"):
        load_mnist(tmp_path)
    os.remove(os.path.join(tmp_path, "train-images-idx3-ubyte"))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_load_mnist_shared_data(shared_datasets):
    X_train, X_test, y_train, y_test = load_mnist(os.path.join(shared_datasets, "mnist"))
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert np.bincount(y_train).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]


@pytest.mark.parametrize("split", ["0", 1.5, True, None])
def test_load_uci_names_a_split_that_is_not_an_integer(tmp_path, split):
    folder, _, _ = write_uci_folder(tmp_path)
    with pytest.raises(ValueError, match="split must be an integer from 0 to 1"):
        load_uci(folder, split)


@pytest.mark.parametrize(
    "file, values, message",
    [
        ("index_target.txt", [0], "target column 0 is also listed as a feature"),
        ("index_target.txt", [1, 2], "must name one column"),
        ("index_features.txt", [0, 0, 2], "lists a column twice"),
        ("index_test_0.txt", None, "in both the training and the test indices"),
    ],
)
def test_load_uci_names_inconsistent_index_files(tmp_path, file, values, message):
    folder, _, _ = write_uci_folder(tmp_path)
    base = os.path.join(folder, "data")
    if values is None:  # the test rows are the training rows
        values = np.loadtxt(os.path.join(base, "index_train_0.txt"), dtype=int)
    np.savetxt(os.path.join(base, file), values, fmt="%d")
    with pytest.raises(ValueError, match=message):
        load_uci(folder, 0)


def test_truncated_mnist_gzip_names_the_file(tmp_path):
    from skhypernet.datasets import load_mnist

    from .conftest import write_mnist_folder

    write_mnist_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is not a complete gzip"):
        load_mnist(tmp_path)


def test_uci_data_with_a_missing_value_is_refused(tmp_path):
    from skhypernet.datasets import load_uci

    from .conftest import write_uci_folder

    folder, _, _ = write_uci_folder(str(tmp_path), n_rows=40, n_splits=1)
    path = os.path.join(folder, "data", "data.txt")
    data = np.loadtxt(path)
    data[5, 1] = np.nan
    np.savetxt(path, data)
    with pytest.raises(ValueError, match="not finite"):
        load_uci(folder, 0)


def test_a_binary_data_file_is_named(tmp_path):
    from skhypernet.datasets import DatasetError, load_uci

    from .conftest import write_uci_folder

    folder, _, _ = write_uci_folder(str(tmp_path), n_rows=40, n_splits=1)
    with open(os.path.join(folder, "data", "data.txt"), "wb") as handle:
        handle.write(b"\xff\xfe\x00\x01binary")
    with pytest.raises(DatasetError, match="data.txt .* is not text"):
        load_uci(folder, 0)
