import gzip
import os
import struct

import numpy as np
import pytest
import torch

# One torch thread per test process: on a loaded 2-core machine two threads
# made fits several times slower.
torch.set_num_threads(1)

SHARED_DATASETS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


@pytest.fixture
def shared_datasets():
    """The project's shared benchmark data; the test is skipped where it is absent."""
    if not os.path.isdir(SHARED_DATASETS):
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS


def write_uci_folder(root, name="toy", n_rows=40, n_features=3, n_splits=2, seed=0, nested=True):
    """A tiny data set in the standard UCI split layout; returns its folder."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_rows, n_features))
    y = X @ rng.normal(size=n_features) + 0.1 * rng.normal(size=n_rows)
    folder = os.path.join(root, name)
    base = os.path.join(folder, "data") if nested else folder
    os.makedirs(base)
    # The target sits between feature columns, as in some real data sets.
    np.savetxt(os.path.join(base, "data.txt"), np.column_stack([X[:, :1], y, X[:, 1:]]))
    with open(os.path.join(base, "data.txt"), "a") as handle:
        handle.write("\n\n")  # trailing blank lines, as found in the wild
    columns = [0] + list(range(2, n_features + 1))
    np.savetxt(os.path.join(base, "index_features.txt"), columns, fmt="%d")
    np.savetxt(os.path.join(base, "index_target.txt"), [1], fmt="%d")
    np.savetxt(os.path.join(base, "n_splits.txt"), [n_splits], fmt="%d")
    for split in range(n_splits):
        order = np.random.RandomState(split).permutation(n_rows)
        cut = int(0.8 * n_rows)
        np.savetxt(os.path.join(base, f"index_train_{split}.txt"), order[:cut], fmt="%d")
        np.savetxt(os.path.join(base, f"index_test_{split}.txt"), order[cut:], fmt="%d")
    return folder, X, y


def write_idx(path, array, compress):
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path + (".gz" if compress else ""), "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_mnist_folder(folder, n_train=60, n_test=20, compress=True, seed=0):
    """Tiny MNIST-format files: class k images are bright in row band k."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for part, n in [("train", n_train), ("t10k", n_test)]:
        labels = rng.randint(0, 10, size=n)
        images = rng.randint(0, 40, size=(n, 28, 28))
        for index, label in enumerate(labels):
            images[index, 2 * label : 2 * label + 3, :] = 250
        write_idx(os.path.join(folder, f"{part}-images-idx3-ubyte"), images, compress)
        write_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte"), labels, compress)
        arrays[part] = (images, labels)
    return arrays


# Property-based tests: a bounded profile for CI (the default) and a longer
# one for local runs: HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
