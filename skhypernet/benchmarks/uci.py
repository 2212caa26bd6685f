"""UCI regression benchmark: the paper's Table 1, and its Figure 2.

For every data set and split: normalise X and y with training statistics,
train HyperNetRegressor and SGDBaseline with the paper's protocol (one hidden
layer of 50 units, 100 for protein and year; batch size 1, or 512 for data
sets of more than 5,000 points; 2,000 epochs), and record the test RMSE in
original units averaged over the last 20 epochs.  The table reports the mean
and standard error over splits beside the published figures.
"""

import os
import time
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning

from .. import HyperNetRegressor, SGDBaseline
from ..datasets import list_uci_datasets, load_uci, uci_n_splits
from ._results import (
    Progress,
    ResultStore,
    format_estimate,
    markdown_table,
    mean_and_standard_error,
    read_reference,
)

METHODS = {"HyperNet": HyperNetRegressor, "SGD": SGDBaseline}
WIDE_DATASETS = ("protein-tertiary-structure", "YearPredictionMSD")
PAPER_EPOCHS = 2000
PAPER_BATCH_THRESHOLD = 5000


def add_arguments(parser, *, figure=False):
    parser.add_argument(
        "--data",
        required=True,
        help="folder holding one sub-folder per data set (standard layout)",
    )
    parser.add_argument(
        "--datasets", nargs="+", help="data set folder names (default: all in --data)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=PAPER_EPOCHS,
        help=f"epochs per split (paper: {PAPER_EPOCHS})",
    )
    parser.add_argument(
        "--track-epochs",
        type=int,
        default=20,
        help="test RMSE is averaged over this many last epochs (paper: 20)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        default=None,
        help="hidden units of the main network (paper: 50, 100 for protein and year)",
    )
    parser.add_argument(
        "--batch-rule",
        default="paper",
        help="'paper' (1, or 512 above 5,000 points), 'auto', or a number",
    )
    parser.add_argument(
        "--predict-samples", type=int, default=100, help="weight samples S averaged at prediction"
    )
    parser.add_argument(
        "--loss",
        default="squared_error",
        choices=["squared_error", "gaussian_nll"],
        help="training loss of both methods (paper: squared_error)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (plus the split)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--results", required=True, help="JSON-lines results file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the records already in --results and skip their work",
    )
    if figure:
        parser.add_argument(
            "--repetitions", type=int, default=3, help="splits per data set (paper: 3)"
        )
        parser.add_argument("--figure", required=True, help="PNG file to write")
    else:
        parser.add_argument(
            "--splits",
            type=int,
            default=None,
            help="first N splits of each data set (default: all)",
        )
        parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))


def batch_size_for(rule, n_points):
    if rule == "paper":
        return 1 if n_points <= PAPER_BATCH_THRESHOLD else 512
    if rule == "auto":
        return "auto"
    return int(rule)


def hidden_for(dataset, hidden):
    if hidden is not None:
        return hidden
    return 100 if dataset in WIDE_DATASETS else 50


def train_tracking(model, X, y, epochs, track, evaluate):
    """Train for ``epochs`` epochs; return ``evaluate(model)`` after each of the last
    ``track``."""
    track = min(track, epochs)
    untracked = epochs - track
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if untracked:
            model.set_params(max_iter=untracked).fit(X, y)
        for epoch in range(track):
            if epoch == 0 and not untracked:
                model.set_params(max_iter=1).fit(X, y)
            else:
                model.partial_fit(X, y)
            scores.append(evaluate(model))
    return scores


def predictive_scores(y, mean, std):
    """Test RMSE, mean log-likelihood per point under N(mean, std^2), and the
    fraction of points inside the central 90 % interval."""
    variance = std**2
    log_likelihood = -0.5 * (np.log(2 * np.pi * variance) + (y - mean) ** 2 / variance)
    return {
        "rmse": float(np.sqrt(np.mean((y - mean) ** 2))),
        "ll": float(np.mean(log_likelihood)),
        "coverage_90": float(np.mean(np.abs(y - mean) <= 1.6448536 * std)),
    }


def standardise(train, test):
    mean, scale = train.mean(axis=0), train.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (train - mean) / scale, (test - mean) / scale, mean, scale


def run_task(task):
    """Train one method on one split; return its result record."""
    import torch

    torch.set_num_threads(1)
    folder = os.path.join(task["data"], task["dataset"])
    X_train, X_test, y_train, y_test = load_uci(folder, task["split"])
    X_train, X_test, _, _ = standardise(X_train, X_test)
    y_train_n, _, y_mean, y_scale = standardise(y_train, y_test)
    settings = task["settings"]
    model = METHODS[task["method"]](
        hidden_layer_sizes=(settings["hidden"],),
        loss=settings["loss"],
        batch_size=settings["batch_size"],
        n_iter_no_change=np.inf,
        random_state=settings["seed"],
        **(
            {"n_predict_samples": settings["predict_samples"]}
            if task["method"] == "HyperNet"
            else {}
        ),
    )

    def test_scores(fitted):
        # Predictions are in normalised units: scale back to the original ones.
        mean, std = fitted.predict(X_test, return_std=True)
        return predictive_scores(y_test, mean * y_scale + y_mean, std * y_scale)

    start = time.perf_counter()
    curves = train_tracking(
        model, X_train, y_train_n, settings["epochs"], settings["track_epochs"], test_scores
    )
    record = {
        **{k: task[k] for k in ("dataset", "split", "method")},
        "settings": settings,
        **{name: float(np.mean([c[name] for c in curves])) for name in curves[0]},
        **{f"{name}_tracked_epochs": [c[name] for c in curves] for name in curves[0]},
        "fit_seconds": time.perf_counter() - start,
        "n_train": len(y_train),
        "n_test": len(y_test),
    }
    if task["method"] == "HyperNet":
        record["weight_diffusion"] = model.weight_diffusion_.tolist()
    return record


def plan(args, splits_of, methods):
    """The tasks of a run: one per data set, split and method."""
    datasets = args.datasets or list_uci_datasets(args.data)
    tasks = []
    for dataset in datasets:
        folder = os.path.join(args.data, dataset)
        n_points = sum(len(part) for part in load_uci(folder, 0)[2:])
        settings = {
            "epochs": args.epochs,
            "track_epochs": args.track_epochs,
            "hidden": hidden_for(dataset, args.hidden),
            "batch_size": batch_size_for(args.batch_rule, n_points),
            "predict_samples": args.predict_samples,
            "loss": args.loss,
        }
        for split in splits_of(folder):
            for method in methods:
                tasks.append(
                    {
                        "data": args.data,
                        "dataset": dataset,
                        "split": split,
                        "method": method,
                        "settings": {**settings, "seed": args.seed + split},
                    }
                )
    return tasks


def execute(tasks, store, jobs, out):
    """Run the tasks not yet in ``store``, appending each record as it finishes."""
    todo = [
        t
        for t in tasks
        if not store.has({k: t[k] for k in ("dataset", "split", "method", "settings")})
    ]
    print(
        f"{len(tasks) - len(todo)} of {len(tasks)} results already present; running {len(todo)}.",
        file=out,
        flush=True,
    )
    progress = Progress(len(todo), time.perf_counter)
    runner = Parallel(n_jobs=jobs, return_as="generator_unordered")
    for record in runner(delayed(run_task)(task) for task in todo):
        store.append(record)
        print(
            progress.line(
                f"{record['dataset']} split {record['split']} "
                f"{record['method']}: RMSE {record['rmse']:.3f}"
            ),
            file=out,
            flush=True,
        )


def _by_dataset_and_method(records):
    """``{dataset: {method: [records]}}``."""
    grouped = {}
    for record in records:
        grouped.setdefault(record["dataset"], {}).setdefault(record["method"], []).append(record)
    return grouped


def summary_table(records):
    """Table 1 layout: published columns beside the measured ones."""
    reference = {row["folder"]: row for row in read_reference("paper_table1_uci_rmse.csv")}
    by_dataset = _by_dataset_and_method(records)
    header = [
        "Dataset",
        "N",
        "d",
        "VI",
        "PBP",
        "Dropout",
        "VMG",
        "SGD (paper)",
        "HyperNet (paper)",
        "SGD (ours)",
        "HyperNet (ours)",
        "splits",
        "epochs",
    ]
    rows = []
    for dataset, methods in sorted(by_dataset.items()):
        published = reference.get(dataset)
        cells = [
            published["dataset"] if published else dataset,
            published["N"] if published else "",
            published["d"] if published else "",
        ]
        for column in ("VI", "PBP", "Dropout", "VMG", "SGD", "HyperNet"):
            if published and published[column]:
                error = float(published[column + "_se"] or "nan")
                cells.append(format_estimate(float(published[column]), error))
            else:
                cells.append("–")
        for method in ("SGD", "HyperNet"):
            found = methods.get(method, [])
            cells.append(
                format_estimate(*mean_and_standard_error([r["rmse"] for r in found]))
                if found
                else "–"
            )
        first = next(iter(methods.values()))
        cells += [str(len(first)), str(first[0]["settings"]["epochs"])]
        rows.append(cells)
    return markdown_table(header, rows)


def uncertainty_table(records):
    """Test log-likelihood and 90 % interval coverage beside MC dropout's."""
    reference = {row["folder"]: row for row in read_reference("mc_dropout_2018_uci.csv")}
    by_dataset = _by_dataset_and_method([r for r in records if "ll" in r])
    header = [
        "Dataset",
        "LL MC dropout (bayesopt)",
        "LL MC dropout (grid)",
        "LL SGD (ours)",
        "LL HyperNet (ours)",
        "90 % coverage SGD",
        "90 % coverage HyperNet",
    ]
    rows = []
    for dataset, methods in sorted(by_dataset.items()):
        published = reference.get(dataset)
        cells = [published["dataset"] if published else dataset]
        for column in ("ll_bayesopt", "ll_grid"):
            cells.append(
                format_estimate(float(published[column]), float(published[column + "_se"]))
                if published
                else "–"
            )
        for name in ("ll", "coverage_90"):
            for method in ("SGD", "HyperNet"):
                found = [r[name] for r in methods.get(method, [])]
                cells.append(
                    format_estimate(
                        *mean_and_standard_error(found), digits=3 if name == "coverage_90" else 2
                    )
                    if found
                    else "–"
                )
        rows.append(cells)
    return markdown_table(header, rows)


def run(args, out=None):
    import sys

    out = out or sys.stdout

    def splits_of(folder):
        n_splits = uci_n_splits(folder)
        return range(min(n_splits, args.splits or n_splits))

    store = ResultStore(args.results, resume=args.resume)
    execute(plan(args, splits_of, args.methods), store, args.jobs, out)
    print("\n" + summary_table(store.records), file=out)
    if any("ll" in record for record in store.records):
        print("\n" + uncertainty_table(store.records), file=out)
    return 0


def run_figure(args, out=None):
    """Figure 2: weight diffusion and test RMSE per epoch, HyperNet only."""
    import sys

    from ..plotting import plot_weight_diffusion

    out = out or sys.stdout
    args.track_epochs = args.epochs  # the test RMSE of every epoch

    def splits_of(folder):
        return range(min(args.repetitions, uci_n_splits(folder)))

    store = ResultStore(args.results, resume=args.resume)
    execute(plan(args, splits_of, ["HyperNet"]), store, args.jobs, out)
    plot_weight_diffusion(store.records, args.figure)
    print(f"Figure written to {args.figure}", file=out)
    return 0
