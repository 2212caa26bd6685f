"""Out of the box: every estimator with its default settings, side by side.

What a user sees who drops the estimators into ``make_pipeline(StandardScaler(),
model)`` beside what they already use: for every data set and split, the
test RMSE (regression) or accuracy (classification) and the fit time of
HyperNet, the SGD baseline, scikit-learn's MLP (as is, and for regression
also with standardised targets and 2,000 iterations), histogram gradient
boosting and a linear model.  Data: the UCI sets of ``--data`` (their own
splits) and scikit-learn's built-in sets (random 80/20 splits, stratified
for classification).  Every model is fitted on one thread.

With ``--protocol FILE`` (the results of the ``uci`` command) the table
also shows HyperNet's result under the paper's protocol on the same splits,
and the run refits HyperNet with that protocol's settings on each of them,
one fit at a time as a user would run it, so that the fit times of the
defaults and of the protocol are measured side by side (the ``uci`` command
trains its splits in lockstep, whose time per split is not a single fit's).
The run checks the targets of the defaults against both.

For choosing settings, ``--validation FRACTION`` fits on the rest of each
split's training rows and scores on that fraction of them, never on the
test rows, and ``--params NAME=VALUE ...`` gives HyperNet and SGDBaseline
other settings than their defaults (a column per setting, labelled with it).
"""

import json
import math
import os
import time
import warnings

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import HyperNetClassifier, HyperNetRegressor, SGDBaseline, SGDBaselineClassifier
from .._cli import add_jobs_argument, at_least, fraction
from ..datasets import load_uci, uci_n_splits
from ._results import (
    BenchmarkInputError,
    add_store_arguments,
    format_estimate,
    markdown_table,
    mean_and_standard_error,
)
from .uci import build_model, find_datasets, run_and_collect

#: Built-in data sets: name -> (loader, task).
BUILTIN = {
    "diabetes": (load_diabetes, "regression"),
    "breast_cancer": (load_breast_cancer, "classification"),
    "digits": (load_digits, "classification"),
    "wine": (load_wine, "classification"),
    "iris": (load_iris, "classification"),
}
BUILTIN_TEST_SIZE = 0.2


def _scaled_target_mlp(seed):
    return TransformedTargetRegressor(
        MLPRegressor(max_iter=2000, random_state=seed), transformer=StandardScaler()
    )


#: Method name -> estimator for a seed, per task; all run with their defaults.
MODELS = {
    "regression": {
        "HyperNet": lambda seed: HyperNetRegressor(random_state=seed),
        "SGDBaseline": lambda seed: SGDBaseline(random_state=seed),
        "MLPRegressor": lambda seed: MLPRegressor(random_state=seed),
        "MLP, scaled y, 2,000 iter": _scaled_target_mlp,
        "HistGradientBoosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
        "Ridge": lambda seed: Ridge(),
    },
    "classification": {
        "HyperNet": lambda seed: HyperNetClassifier(random_state=seed),
        "SGDBaseline": lambda seed: SGDBaselineClassifier(random_state=seed),
        "MLPClassifier": lambda seed: MLPClassifier(random_state=seed),
        "HistGradientBoosting": lambda seed: HistGradientBoostingClassifier(random_state=seed),
        "LogisticRegression": lambda seed: LogisticRegression(max_iter=1000),
    },
}
#: HyperNet refitted with the settings of the ``--protocol`` file's records.
PROTOCOL_REFIT = "HyperNet, paper protocol"
SCORES = {"regression": "rmse", "classification": "accuracy"}
#: Methods that ``--params`` applies to (this package's estimators).
TUNABLE = ("HyperNet", "SGDBaseline")
KEY_FIELDS = ("dataset", "split", "method", "settings")
#: Targets of the defaults against the paper's protocol (issue 11).
PROTOCOL_RMSE_MARGIN = 0.10
PROTOCOL_TIME_FRACTION = 0.2


def add_arguments(parser):
    parser.add_argument(
        "--data",
        help="folder of UCI data sets in the standard split layout (as for the uci "
        "command); without it only scikit-learn's built-in data sets run",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        help="data sets to run, UCI folder names or built-in names "
        f"({', '.join(BUILTIN)}); default: all",
    )
    parser.add_argument(
        "--splits",
        type=at_least(1),
        default=5,
        help="first N splits of each data set (default: 5)",
    )
    parser.add_argument("--methods", nargs="+", help="methods to run (default: all of each task)")
    parser.add_argument(
        "--protocol",
        help="results of the uci command (JSON lines): adds HyperNet under the paper's "
        "protocol on the same splits, refitted here one split at a time for side-by-side "
        "fit times, and checks the defaults against it",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="base seed (plus the split)")
    add_validation_argument(parser)
    parser.add_argument(
        "--params",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="settings of HyperNet and SGDBaseline in place of their defaults, VALUE in "
        "JSON (e.g. hidden_layer_sizes=[100]); the methods are labelled with them",
    )
    add_jobs_argument(parser)
    add_store_arguments(parser)


def add_validation_argument(parser):
    """``--validation FRACTION``: score on training rows only, for choosing settings."""
    parser.add_argument(
        "--validation",
        type=fraction,
        default=0.0,
        metavar="FRACTION",
        help="score on this fraction of each split's training rows, fitted on the rest; "
        "the test rows are never read (for choosing settings; default 0: test rows)",
    )


def load_split(task):
    """Training and test rows of a task's data set and split."""
    settings = task["settings"]
    if settings["source"] == "uci":
        return load_uci(os.path.join(task["data"], task["dataset"]), task["split"])
    X, y = BUILTIN[task["dataset"]][0](return_X_y=True)
    return random_cut(X, y, settings["task"], BUILTIN_TEST_SIZE, task["split"])


def random_cut(X, y, kind, fraction, seed):
    """``X_kept, X_cut, y_kept, y_cut``: a random ``fraction`` of the rows cut
    off (stratified for classification)."""
    cut = StratifiedShuffleSplit if kind == "classification" else ShuffleSplit
    kept, held = next(cut(n_splits=1, test_size=fraction, random_state=seed).split(X, y))
    return X[kept], X[held], y[kept], y[held]


def scored_rows(task):
    """Training and scored rows of a task: its split's test rows, or with a
    ``validation`` fraction, a random part of its training rows (stratified
    for classification), the rest being trained on; test rows are not used."""
    X_train, X_test, y_train, y_test = load_split(task)
    fraction = task["settings"].get("validation", 0.0)
    if not fraction:
        return X_train, X_test, y_train, y_test
    return random_cut(X_train, y_train, task["settings"]["task"], fraction, task["split"])


def estimator_label(method, params):
    """The method's name in records and tables, with the settings it was given."""
    if not params or method not in TUNABLE:
        return method
    return with_params(method, params)


def with_params(method, params):
    """``method`` labelled with ``params`` (name-value pairs) as records show it."""
    return method + " " + " ".join(f"{name}={json.dumps(value)}" for name, value in params)


def build_estimator(task):
    """The task's estimator: the method's defaults, and its ``params`` for ours."""
    settings = task["settings"]
    method = task["estimator"]
    if method == PROTOCOL_REFIT:
        protocol = settings["protocol"]
        return build_model("HyperNet", protocol).set_params(max_iter=protocol["epochs"])
    model = MODELS[settings["task"]][method](settings["seed"] + task["split"])
    if method in TUNABLE and settings.get("params"):
        model.set_params(
            **{
                name: tuple(value) if isinstance(value, list) else value
                for name, value in settings["params"]
            }
        )
    return model


def run_task(task):
    """Fit one model on one split; score it on the test (or validation) rows."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    settings = task["settings"]
    X_train, X_test, y_train, y_test = scored_rows(task)
    model = make_pipeline(StandardScaler(), build_estimator(task))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - start
        predicted = model.predict(X_test)
    if settings["task"] == "regression":
        score = float(np.sqrt(np.mean((y_test - predicted) ** 2)))
    else:
        score = float(np.mean(y_test == predicted))
    return {
        **{k: task[k] for k in ("dataset", "split", "method", "estimator")},
        "settings": settings,
        SCORES[settings["task"]]: score,
        "fit_seconds": fit_seconds,
        "n_train": len(y_train),
        "n_test": len(y_test),
    }


def plan(args):
    """The tasks of a run, one per data set, split and method, and the
    ``--protocol`` records (``read_protocol``; None without the option): with
    them, one more task per UCI split they hold, HyperNet refitted with its
    settings."""
    requested = args.datasets
    uci_names = [name for name in requested or [] if name not in BUILTIN]
    if uci_names and not args.data:
        raise BenchmarkInputError(
            f"Data sets {uci_names} are not built in ({', '.join(BUILTIN)}); pass --data "
            "for UCI data sets."
        )
    uci = (
        find_datasets(args.data, uci_names or None)
        if args.data and (uci_names or not requested)
        else []
    )
    sources = [(name, "uci", "regression") for name in uci]
    sources += [
        (name, "builtin", task)
        for name, (_, task) in BUILTIN.items()
        if not requested or name in requested
    ]
    known = {m for models in MODELS.values() for m in models} | {PROTOCOL_REFIT}
    if args.methods and set(args.methods) - known:
        raise BenchmarkInputError(
            f"Unknown methods {sorted(set(args.methods) - known)}; choose from {sorted(known)}."
        )
    if args.validation and args.protocol:
        raise BenchmarkInputError(
            "--protocol compares test scores; it cannot be combined with --validation."
        )
    params = parse_params(args.params)
    protocol = read_protocol(args.protocol) if args.protocol else None
    tasks = []
    for name, source, kind in sources:
        n_splits = args.splits
        if source == "uci":
            n_splits = min(n_splits, uci_n_splits(os.path.join(args.data, name)))
        methods = [m for m in MODELS[kind] if not args.methods or m in args.methods]
        for method in methods:
            if params and method in TUNABLE:
                check_params(params, kind, method)
        for split in range(n_splits):
            for method in methods:
                settings = {"source": source, "task": kind, "seed": args.seed}
                if args.validation:
                    settings["validation"] = args.validation
                if params and method in TUNABLE:
                    settings["params"] = params
                tasks.append(
                    {
                        "data": args.data,
                        "dataset": name,
                        "split": split,
                        "method": estimator_label(method, params),
                        "estimator": method,
                        "settings": settings,
                    }
                )
            refit = protocol and (name, split) in protocol
            if refit and (not args.methods or PROTOCOL_REFIT in args.methods):
                tasks.append(protocol_refit_task(args, name, split, protocol[(name, split)]))
    return tasks, protocol


def protocol_refit_task(args, dataset, split, record):
    """The task that refits a ``uci`` record's HyperNet with its settings (and
    seed: the refit is that run's model, trained alone instead of in lockstep)."""
    fields = ("epochs", "hidden", "batch_size", "predict_samples", "loss", "seed")
    missing = [name for name in fields if name not in record["settings"]]
    if missing:
        raise BenchmarkInputError(
            f"--protocol: the HyperNet record of {dataset} split {split} lacks the "
            f"settings {missing}; is it a record of the uci command?"
        )
    return {
        "data": args.data,
        "dataset": dataset,
        "split": split,
        "method": PROTOCOL_REFIT,
        "estimator": PROTOCOL_REFIT,
        "settings": {
            "source": "uci",
            "task": "regression",
            "protocol": {name: record["settings"][name] for name in fields},
        },
    }


def parse_params(items):
    """``NAME=VALUE`` items (VALUE in JSON) as a sorted list of pairs."""
    params = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise BenchmarkInputError(f"--params takes NAME=VALUE items, got {item!r}.")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            raise BenchmarkInputError(
                f"--params {name}: {text!r} is not a JSON value (strings need quotes)."
            ) from None
    return sorted(params.items())


def check_params(params, kind, method):
    """Refuse ``params`` that the method's estimator for ``kind`` does not take."""
    valid = MODELS[kind][method](0).get_params()
    unknown = sorted(name for name, _ in params if name not in valid)
    if unknown:
        raise BenchmarkInputError(f"--params: {unknown} are not parameters of {method} ({kind}).")


def read_protocol(path):
    """``{(dataset, split): record}`` of the HyperNet (paper mode) records of a uci run."""
    if not os.path.isfile(path):
        raise BenchmarkInputError(f"--protocol {path} is not a file.")
    found = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("method") == "HyperNet":
                found[(record["dataset"], record["split"])] = record
    if not found:
        raise BenchmarkInputError(
            f"--protocol {path} holds no HyperNet record of the uci command."
        )
    return found


def decimals(mean, score):
    """Decimals that show a score to three significant digits below 0.01 (Naval's
    RMSE of about 0.001 would show as 0.001 ± 0.000 with three)."""
    if score == "accuracy" or 0.01 <= mean < 1:
        return 3
    if mean >= 1 or mean <= 0:
        return 2
    return 2 - math.floor(math.log10(mean))


def _cell(records, score, timed=True):
    values = [r[score] for r in records]
    digits = decimals(np.mean(values), score)
    estimate = format_estimate(*mean_and_standard_error(values), digits=digits)
    if not timed:
        return estimate
    return f"{estimate} ({np.mean([r['fit_seconds'] for r in records]):.1f} s)"


def summary(records, protocol=None):
    """Markdown tables per task, and the checks against the protocol as lines."""
    out = []
    checks = []
    for kind, score in SCORES.items():
        found = [r for r in records if r["settings"]["task"] == kind]
        if not found:
            continue
        order = [*MODELS[kind], PROTOCOL_REFIT]
        methods = sorted(
            {r["method"] for r in found},
            key=lambda label: (order.index(estimator_of(label, found)), label),
        )
        datasets = sorted({r["dataset"] for r in found})
        header = ["data set", "splits", *methods]
        if kind == "regression" and protocol:
            header.append("HyperNet, paper protocol, uci run")
        rows = []
        for dataset in datasets:
            cells = {
                m: [r for r in found if r["dataset"] == dataset and r["method"] == m]
                for m in methods
            }
            splits = sorted({r["split"] for group in cells.values() for r in group})
            row = [dataset, str(len(splits))]
            row += [_cell(cells[m], score) if cells[m] else "–" for m in methods]
            if kind == "regression" and protocol:
                matched = [protocol[(dataset, s)] for s in splits if (dataset, s) in protocol]
                # Its fit times are lockstep groups' shares: the refit's are the
                # ones to compare.
                row.append(
                    f"{_cell(matched, score, timed=False)}, "
                    f"{matched[0]['settings']['epochs']} epochs"
                    if matched
                    else "–"
                )
                if matched and cells.get("HyperNet"):
                    checks.append(_protocol_check(dataset, cells, matched))
            rows.append(row)
        rows_scored = (
            "validation" if any(r["settings"].get("validation") for r in found) else "test"
        )
        unit = f"{rows_scored} RMSE" if kind == "regression" else f"{rows_scored} accuracy"
        out.append(
            f"{kind.capitalize()}: {unit}, mean ± standard error over splits (mean fit time)"
        )
        out.append(markdown_table(header, rows))
    if checks:
        out.append(_protocol_summary(checks))
    return "\n\n".join(out)


def estimator_of(label, records):
    """The base method of a table column (records before labels: the label)."""
    return next(r.get("estimator", r["method"]) for r in records if r["method"] == label)


def _protocol_check(dataset, cells, matched):
    """The defaults' targets on one data set (HyperNet on the protocol's splits)."""
    splits = {r["split"] for r in matched}

    def mean(method, field="rmse", among=splits):
        values = [r[field] for r in cells.get(method, []) if r["split"] in among]
        return float(np.mean(values)) if values else math.nan

    protocol_rmse = float(np.mean([r["rmse"] for r in matched]))
    refits = {r["split"] for r in cells.get(PROTOCOL_REFIT, [])}
    # Times of this run only, on the splits both fitted.
    timed = splits & refits & {r["split"] for r in cells["HyperNet"]}
    time_fraction = (
        mean("HyperNet", "fit_seconds", timed) / mean(PROTOCOL_REFIT, "fit_seconds", timed)
        if timed
        else math.nan
    )
    return {
        "dataset": dataset,
        "rmse": mean("HyperNet"),
        "protocol_rmse": protocol_rmse,
        "time_fraction": time_fraction,
        "mlp": mean("MLP, scaled y, 2,000 iter"),
        "boosting": mean("HistGradientBoosting"),
    }


def _protocol_summary(checks):
    rows = [
        [
            c["dataset"],
            f"{c['rmse']:.4g}",
            f"{c['protocol_rmse']:.4g}",
            f"{c['rmse'] / c['protocol_rmse'] - 1:+.1%}",
            "–" if math.isnan(c["time_fraction"]) else f"{c['time_fraction']:.2f}",
            "yes" if c["rmse"] < c["mlp"] else "no",
            "yes" if c["rmse"] <= c["boosting"] else "no",
        ]
        for c in checks
    ]
    within = sum(c["rmse"] <= (1 + PROTOCOL_RMSE_MARGIN) * c["protocol_rmse"] for c in checks)
    fast = sum(c["time_fraction"] <= PROTOCOL_TIME_FRACTION for c in checks)
    timed = sum(not math.isnan(c["time_fraction"]) for c in checks)
    beats_mlp = sum(c["rmse"] < c["mlp"] for c in checks)
    beats_boosting = sum(c["rmse"] <= c["boosting"] for c in checks)
    n = len(checks)
    table = markdown_table(
        [
            "data set",
            "HyperNet defaults RMSE",
            "protocol RMSE, uci run",
            "difference",
            "fit time / protocol refit's",
            "better than MLP, scaled y",
            "at least as good as boosting",
        ],
        rows,
    )
    return (
        "HyperNet defaults against the paper's protocol (same splits):\n\n"
        + table
        + f"\n\nWithin {PROTOCOL_RMSE_MARGIN:.0%} of the protocol's RMSE: {within}/{n}; "
        f"fit time at most {PROTOCOL_TIME_FRACTION:g} of the protocol refit's: {fast}/{n} "
        f"({timed} timed side by side); "
        f"better than MLP with scaled targets: {beats_mlp}/{n}; at least as good as "
        f"gradient boosting: {beats_boosting}/{n}."
    )


def describe(record):
    """The progress line of a finished record."""
    score = SCORES[record["settings"]["task"]]
    return (
        f"{record['dataset']} split {record['split']} {record['method']}: "
        f"{score} {record[score]:.4g} in {record['fit_seconds']:.1f} s"
    )


def run(args, out=None):
    import sys

    out = out or sys.stdout
    tasks, protocol = plan(args)
    records = run_and_collect(
        args, tasks, KEY_FIELDS, out, task_runner=run_task, describe=describe
    )
    print("\n" + summary(records, protocol), file=out)
    return 0
