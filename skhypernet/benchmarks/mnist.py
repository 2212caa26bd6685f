"""MNIST benchmark: the paper's Table 2.

For each main-network architecture (2x400, 2x800, 3x150 with the
hypernetwork sizes of the paper), train HyperNetClassifier and
SGDBaselineClassifier with batch size 256 on pixels scaled to [0, 1], and
record the test error in percent averaged over the last 20 epochs.
"""

import sys
import time

import numpy as np

from .. import HyperNetClassifier, SGDBaselineClassifier
from .._cli import at_least
from ..datasets import load_mnist
from ._results import (
    BenchmarkInputError,
    Progress,
    ResultStore,
    add_store_arguments,
    markdown_table,
    read_reference,
)
from .uci import train_tracking

METHODS = {"HyperNet": HyperNetClassifier, "SGD": SGDBaselineClassifier}


def architectures():
    """Architectures of Table 2 with the paper's hypernetwork sizes."""
    return {
        row["architecture"]: row
        for row in read_reference("paper_table2_mnist_error.csv")
        if row["hyper_hidden_layer_sizes"]
    }


def add_arguments(parser):
    parser.add_argument(
        "--data",
        required=True,
        help="folder with MNIST's four IDX files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), "
        "gzipped or not, as published by Yann LeCun's MNIST page",
    )
    parser.add_argument(
        "--architectures",
        nargs="+",
        default=list(architectures()),
        choices=list(architectures()),
        help="main networks of Table 2 to run (default: all)",
    )
    parser.add_argument("--epochs", type=at_least(1), default=2000, help="epochs (paper: 2000)")
    parser.add_argument(
        "--track-epochs",
        type=at_least(1),
        default=20,
        help="test error is averaged over this many last epochs (paper: 20)",
    )
    parser.add_argument(
        "--batch-size",
        type=at_least(1),
        default=256,
        help="rows per step (paper and default: 256)",
    )
    parser.add_argument(
        "--predict-samples",
        type=at_least(1),
        default=10,
        help="weight samples S averaged at prediction",
    )
    parser.add_argument(
        "--train-rows",
        type=at_least(1),
        default=None,
        help="use only the first N training images (default: all 60,000)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="methods to run (default: all)",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="random_state (default: 0)")
    add_store_arguments(parser)


def _sizes(text):
    return tuple(int(size) for size in text.split(","))


def summary_table(records):
    reference = {
        row["architecture"]: row for row in read_reference("paper_table2_mnist_error.csv")
    }
    header = [
        "Arch.",
        "Bayes B. SM",
        "VMG",
        "SGD (paper)",
        "HyperNet (paper)",
        "SGD (ours)",
        "HyperNet (ours)",
        "epochs",
    ]
    rows = []
    for name in sorted({r["architecture"] for r in records}):
        published = reference[name]
        found = {r["method"]: r for r in records if r["architecture"] == name}
        cells = [name] + [
            published[c] or "–" for c in ("BayesByBackpropSM", "VMG", "SGD", "HyperNet")
        ]
        cells += [
            f"{found[m]['error_percent']:.2f}" if m in found else "–" for m in ("SGD", "HyperNet")
        ]
        cells.append(str(next(iter(found.values()))["settings"]["epochs"]))
        rows.append(cells)
    return markdown_table(header, rows)


def run(args, out=None):
    import torch

    out = out or sys.stdout
    X_train, X_test, y_train, y_test = load_mnist(args.data)
    if args.train_rows:
        X_train, y_train = X_train[: args.train_rows], y_train[: args.train_rows]
    if np.unique(y_train).size < 2:
        raise BenchmarkInputError(
            f"The first {len(y_train)} training images hold one class ({y_train[0]}): "
            "raise --train-rows."
        )
    X_train, X_test = X_train / 255.0, X_test / 255.0
    store = ResultStore(
        args.results,
        resume=args.resume,
        overwrite=args.overwrite,
        record_keys=("architecture", "method", "settings"),
    )
    tasks = [(name, method) for name in args.architectures for method in args.methods]
    progress = Progress(len(tasks), time.perf_counter)
    for name, method in tasks:
        row = architectures()[name]
        settings = {
            "epochs": args.epochs,
            "track_epochs": min(args.track_epochs, args.epochs),
            "batch_size": args.batch_size,
            "predict_samples": args.predict_samples,
            "train_rows": len(y_train),
            "seed": args.seed,
            "hidden": row["hidden_layer_sizes"],
            "hyper_hidden": row["hyper_hidden_layer_sizes"],
        }
        key = {"architecture": name, "method": method, "settings": settings}
        if store.has(key):
            continue
        extra = (
            {
                "hyper_hidden_layer_sizes": _sizes(row["hyper_hidden_layer_sizes"]),
                "n_predict_samples": args.predict_samples,
            }
            if method == "HyperNet"
            else {}
        )
        model = METHODS[method](
            hidden_layer_sizes=_sizes(row["hidden_layer_sizes"]),
            batch_size=args.batch_size,
            early_stopping=False,
            n_iter_no_change=np.inf,
            random_state=args.seed,
            **extra,
        )
        start = time.perf_counter()

        def test_error(fitted, _):
            return float(100.0 * np.mean(fitted.predict(X_test) != y_test))

        (curve,) = train_tracking(
            [model], [X_train], [y_train], args.epochs, args.track_epochs, test_error
        )
        store.append(
            {
                **key,
                "dataset": "mnist",
                "error_percent": float(np.mean(curve)),
                "error_tracked_epochs": curve,
                "torch_threads": torch.get_num_threads(),
                "fit_seconds": time.perf_counter() - start,
            }
        )
        print(
            progress.line(f"MNIST {name} {method}: test error {np.mean(curve):.2f} %"),
            file=out,
            flush=True,
        )
    print("\n" + summary_table([r for r in store.records if "architecture" in r]), file=out)
    return 0
