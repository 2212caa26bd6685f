"""Choose ``kl_weight`` by cross-validation on training rows only.

For every data set, the training rows of one split are cut into folds; each
candidate weight is fitted on all folds but one and scored on the one left
out (log-likelihood of the predictive distribution, RMSE, 90 % coverage).
The test rows of the split are never read.  The weight with the best mean
rank of validation log-likelihood over the data sets is reported.
"""

import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

from .._cli import add_jobs_argument, at_least
from ..datasets import load_uci, uci_n_splits
from ._results import (
    BenchmarkInputError,
    add_store_arguments,
    format_estimate,
    markdown_table,
    mean_and_standard_error,
)
from .uci import (
    batch_size_for,
    build_model,
    find_datasets,
    hidden_for,
    predictive_scores,
    run_and_collect,
    standardise,
)

DEFAULT_DATASETS = ("bostonHousing", "concrete", "energy", "kin8nm")
DEFAULT_WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0)


def add_arguments(parser):
    parser.add_argument(
        "--data",
        required=True,
        help="folder holding one sub-folder per data set in the standard UCI split layout",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DEFAULT_DATASETS),
        help="data set folder names (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=at_least(0.0, float),
        default=list(DEFAULT_WEIGHTS),
        help="candidate kl_weight values (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        type=at_least(0),
        default=0,
        help="split whose training rows are used (default: 0)",
    )
    parser.add_argument(
        "--folds",
        type=at_least(2),
        default=3,
        help="folds (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=at_least(1),
        default=100,
        help="epochs (default: %(default)s)",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed (default: %(default)s)")
    add_jobs_argument(parser)
    add_store_arguments(parser)


def run_task(task):
    """Fit one weight on all folds but one; score the fold left out."""
    import torch

    torch.set_num_threads(1)
    settings = task["settings"]
    X, _, y, _ = load_uci(os.path.join(task["data"], task["dataset"]), settings["split"])
    folds = KFold(settings["folds"], shuffle=True, random_state=settings["seed"])
    train, validation = list(folds.split(X))[task["fold"]]
    X_train, X_val, _, _ = standardise(X[train], X[validation])
    y_train, _, y_mean, y_scale = standardise(y[train], y[validation])
    model = build_model("HyperNet-KL", {**settings, "seed": settings["seed"] + task["fold"]})
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(max_iter=settings["epochs"]).fit(X_train, y_train)
    mean, std = model.predict(X_val, return_std=True)
    return {
        **{k: task[k] for k in ("dataset", "fold", "method")},
        "settings": settings,
        **predictive_scores(y[validation], mean * y_scale + y_mean, std * y_scale),
        "fit_seconds": time.perf_counter() - start,
        "n_validation": len(validation),
    }


def plan(args):
    tasks = []
    for dataset in find_datasets(args.data, args.datasets):
        folder = os.path.join(args.data, dataset)
        n_splits = uci_n_splits(folder)
        if args.split >= n_splits:
            raise BenchmarkInputError(
                f"--split {args.split} is beyond {dataset}'s splits (0 to {n_splits - 1})."
            )
        n_train = len(load_uci(folder, args.split)[2])
        n_fit = n_train - n_train // args.folds
        for weight in args.weights:
            settings = {
                "split": args.split,
                "folds": args.folds,
                "epochs": args.epochs,
                "hidden": hidden_for(dataset, None),
                "batch_size": batch_size_for("paper", n_fit),
                "predict_samples": 100,
                "loss": "squared_error",
                "kl_weight": weight,
                "seed": args.seed,
            }
            for fold in range(args.folds):
                tasks.append(
                    {
                        "data": args.data,
                        "dataset": dataset,
                        "fold": fold,
                        "split": args.split,
                        "method": "HyperNet-KL",
                        "settings": settings,
                    }
                )
    return tasks


def summary(records):
    """Validation scores per data set and weight, and the weight of best mean rank."""
    cells = {}
    for record in records:
        key = (record["dataset"], record["settings"]["kl_weight"])
        cells.setdefault(key, []).append(record)
    datasets = sorted({d for d, _ in cells})
    weights = sorted({w for _, w in cells})
    ranks = {w: [] for w in weights}
    for dataset in datasets:
        found = [w for w in weights if (dataset, w) in cells]
        lls = {w: np.mean([r["ll"] for r in cells[(dataset, w)]]) for w in found}
        for rank, weight in enumerate(sorted(found, key=lambda w: -lls[w]), start=1):
            ranks[weight].append(rank)
    header = ["kl_weight"] + [f"{d}: LL / RMSE / cov." for d in datasets] + ["mean LL rank"]
    rows = []
    for weight in weights:
        row = [f"{weight:g}"]
        for dataset in datasets:
            found = cells.get((dataset, weight), [])
            if not found:
                row.append("–")
                continue
            ll = format_estimate(*mean_and_standard_error([r["ll"] for r in found]))
            rmse = np.mean([r["rmse"] for r in found])
            coverage = np.mean([r["coverage_90"] for r in found])
            row.append(f"{ll} / {rmse:.3f} / {coverage:.2f}")
        row.append(f"{np.mean(ranks[weight]):.2f}" if ranks[weight] else "–")
        rows.append(row)
    best = min((w for w in weights if ranks[w]), key=lambda w: np.mean(ranks[w]))
    return markdown_table(header, rows), best


def run(args, out=None):
    import sys

    out = out or sys.stdout
    tasks = plan(args)
    table, best = summary(run_and_collect(args, tasks, KEY_FIELDS, out, task_runner=run_task))
    print("\n" + table, file=out)
    print(f"\nBest mean rank of validation log-likelihood: kl_weight={best:g}", file=out)
    return 0


KEY_FIELDS = ("dataset", "fold", "method", "settings")
