"""Predictive uncertainty side by side with what users pick for it.

Each method is fitted as a user would fit it, after ``StandardScaler`` on X,
on one thread: the hypernetwork in the paper's mode, in the recommended
uncertainty setting and with members; ``SGDBaseline`` alone and as a deep
ensemble of five; NGBoost (``pip install "skhypernet[bench]"``); a Gaussian
process (constant x ARD-RBF + white kernel, ``normalize_y``; on at most
``GP_MAX_ROWS`` random training rows); and split-conformal intervals (MAPIE) around
histogram gradient boosting and around the hypernetwork.  Every method sees
the same splits: the UCI sets' own (``--data``) and random 80/20 splits of
scikit-learn's diabetes data.

Per data set, split and method the record holds the test RMSE, negative
log-likelihood (NLL), CRPS, coverage and mean width of the central 90 %
interval, the fit and predict times and, for the methods with a weight
distribution, the share of the predictive variance that comes from it on the
test rows and on rows beyond the data's range (the test rows' standardised
features times ``FAR_FACTOR``).  A conformal interval is read as a Gaussian
of the same 90 % interval for the NLL and CRPS.

The classification data sets (``--datasets breast_cancer digits wine iris``,
20 stratified 80/20 splits each) run the classifiers of the same methods beside
``MLPClassifier`` and histogram gradient boosting: accuracy, log loss and the
top-label expected calibration error.

With ``--validation FRACTION`` every method is fitted on the rest of each
split's training rows and scored on that fraction of them: settings are
chosen there, never on test rows.
"""

import time
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.metrics import accuracy_score, log_loss
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import HyperNetClassifier, HyperNetRegressor, SGDBaseline, SGDBaselineClassifier
from .._cli import add_jobs_argument, at_least
from ..datasets import uci_n_splits
from ..distributions import Normal
from ..metrics import (
    crps,
    expected_calibration_error,
    interval_coverage,
    interval_width,
    log_likelihood,
)
from ._results import BenchmarkInputError, add_store_arguments, format_estimate, markdown_table
from ._results import mean_and_standard_error as mean_and_error
from .defaults import (
    BUILTIN,
    add_validation_argument,
    decimals,
    parse_params,
    random_cut,
    scored_rows,
    with_params,
)
from .defaults import load_split as load_split_of
from .uci import find_datasets, run_and_collect

#: The Gaussian process is fitted on at most this many training rows, a random
#: subset of larger training sets (its cost grows as n^3).
GP_MAX_ROWS = 2000
#: Rows beyond the data's range: the test rows' standardised features times this.
FAR_FACTOR = 3.0
CONFIDENCE = 0.9
#: Random splits of the built-in diabetes data (the UCI sets have 20, Protein 5).
BUILTIN_SPLITS = 20
#: Members of the ensembles.
MEMBERS = 5
#: The hypernetwork's recommended setting for predictive uncertainty (beyond the
#: paper), chosen on validation rows (docs/results/uncertainty_levers_validation.jsonl:
#: 20 % of the training rows of 3 splits of Boston, Concrete, diabetes and Energy):
#: the regularised mode with leaky hidden units, whose weight spread survives.
RECOMMENDED = {"kl_weight": 0.1, "hyper_activation": "leaky_relu"}
KEY_FIELDS = ("dataset", "split", "method", "settings")


def _gaussian_process(seed, n_features):
    kernel = ConstantKernel() * RBF(length_scale=np.ones(n_features)) + WhiteKernel()
    process = GaussianProcessRegressor(
        kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
    )
    return OnRowsAtMost(process, GP_MAX_ROWS, seed)


class OnRowsAtMost:
    """``estimator`` fitted on at most ``max_rows`` training rows, drawn at
    random (with ``seed``) where there are more."""

    def __init__(self, estimator, max_rows, seed):
        self.estimator, self.max_rows, self.seed = estimator, max_rows, seed

    def fit(self, X, y):
        if len(X) > self.max_rows:
            rows = np.random.RandomState(self.seed).choice(len(X), self.max_rows, replace=False)
            X, y = X[rows], y[rows]
        self.n_rows_ = len(X)
        self.estimator.fit(X, y)
        return self

    def predict(self, X, return_std=False):
        return self.estimator.predict(X, return_std=return_std)


def _ngboost(seed, n_features):
    try:
        from ngboost import NGBRegressor
    except ImportError:
        raise BenchmarkInputError(
            "NGBoost is not installed: pip install ngboost (or skhypernet[bench])."
        ) from None
    return NGBRegressor(verbose=False, random_state=seed)


class ConformalInterval:
    """MAPIE's split-conformal regressor around ``estimator``, fitted on 80 % of
    the training rows and conformalized on the rest; its 90 % interval read
    as a Gaussian (for the NLL and CRPS)."""

    def __init__(self, estimator, std_normalised, seed):
        self.estimator, self.std_normalised, self.seed = estimator, std_normalised, seed

    def fit(self, X, y):
        from mapie.conformity_scores import StdConformityScore
        from mapie.regression import SplitConformalRegressor

        score = StdConformityScore() if self.std_normalised else "absolute"
        self.conformal_ = SplitConformalRegressor(
            self.estimator, confidence_level=CONFIDENCE, conformity_score=score, prefit=False
        )
        X_fit, X_conformalize, y_fit, y_conformalize = random_cut(
            X, y, "regression", 0.2, self.seed
        )
        self.conformal_.fit(X_fit, y_fit).conformalize(X_conformalize, y_conformalize)
        return self

    def predict_dist(self, X):
        mean, bounds = self.conformal_.predict_interval(X)
        half_width = (bounds[:, 1, 0] - bounds[:, 0, 0]) / 2
        z = norm.ppf(0.5 + CONFIDENCE / 2)
        # An interval of width 0 (a constant model) has no Gaussian reading.
        return Normal(mean, np.maximum(half_width / z, np.finfo(float).tiny))


def _ours(cls, **params):
    return lambda seed, n_features: cls(random_state=seed, **params)


def _our_methods(hypernet, baseline):
    """The package's methods for one task: the hypernetwork in the paper's mode,
    the recommended setting and with members; the baseline alone and as a
    deep ensemble."""
    return {
        "HyperNet": _ours(hypernet),
        "HyperNet, recommended": _ours(hypernet, **RECOMMENDED),
        f"HyperNet, {MEMBERS} members": _ours(hypernet, n_members=MEMBERS),
        "SGDBaseline": _ours(baseline),
        f"SGDBaseline, {MEMBERS} members": _ours(baseline, n_members=MEMBERS),
    }


#: Method name -> estimator for a seed and a number of features (before the scaler).
METHODS = {
    **_our_methods(HyperNetRegressor, SGDBaseline),
    "NGBoost": _ngboost,
    "Gaussian process": _gaussian_process,
    "conformal HGB": lambda seed, n_features: ConformalInterval(
        HistGradientBoostingRegressor(random_state=seed), False, seed
    ),
    "conformal HyperNet": lambda seed, n_features: ConformalInterval(
        HyperNetRegressor(random_state=seed), True, seed
    ),
}
#: The same for the classification data sets: ours, and what a user compares them with.
CLASSIFIERS = {
    **_our_methods(HyperNetClassifier, SGDBaselineClassifier),
    "MLPClassifier": lambda seed, n_features: MLPClassifier(random_state=seed),
    "HistGradientBoosting": lambda seed, n_features: HistGradientBoostingClassifier(
        random_state=seed
    ),
}
DEEP_ENSEMBLE = f"SGDBaseline, {MEMBERS} members"
SCORES = ("nll", "crps", "coverage_90", "width_90", "rmse")


def add_arguments(parser):
    parser.add_argument(
        "--data", help="folder of UCI data sets in the standard split layout (as for uci)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        help=f"data sets to run, UCI folder names or {', '.join(BUILTIN)} (the last four "
        "classification); default: the UCI sets of --data and diabetes",
    )
    parser.add_argument(
        "--splits", type=at_least(1), help="first N splits of each data set (default: all)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(dict.fromkeys([*METHODS, *CLASSIFIERS])),
        help="methods to run (default: all; each data set runs those of its task)",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="base seed (plus the split)")
    add_validation_argument(parser)
    parser.add_argument(
        "--params",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="settings of the HyperNet and SGDBaseline methods beyond their own, VALUE in "
        "JSON (e.g. loss='\"gaussian_nll\"'); those methods are labelled with them",
    )
    add_jobs_argument(parser)
    add_store_arguments(parser)


#: Methods that ``--params`` applies to (this package's estimators).
TUNABLE = ("HyperNet", "SGDBaseline")


def method_label(method, params):
    """The method's name in records and tables, with the settings it was given."""
    if not params or not method.startswith(TUNABLE):
        return method
    return with_params(method, params)


def plan(args):
    """One task per data set, split and method."""
    requested = args.datasets or []
    uci_names = [name for name in requested if name not in BUILTIN]
    if uci_names and not args.data:
        raise BenchmarkInputError(f"Data sets {uci_names} need --data (a UCI folder).")
    wanted = args.data and (uci_names or not requested)
    uci = find_datasets(args.data, uci_names or None) if wanted else []
    sources = [(name, "uci") for name in uci]
    sources += [("diabetes", "builtin")] if not requested or "diabetes" in requested else []
    sources += [(name, "builtin") for name in requested if name in BUILTIN and name != "diabetes"]
    params = parse_params(args.params)
    valid = HyperNetRegressor().get_params()
    unknown = sorted(name for name, _ in params if name not in valid)
    if unknown:
        raise BenchmarkInputError(f"--params: {unknown} are not parameters of HyperNetRegressor.")
    tasks = []
    for name, source in sources:
        n_splits = uci_n_splits(f"{args.data}/{name}") if source == "uci" else BUILTIN_SPLITS
        n_splits = min(n_splits, args.splits or n_splits)
        kind = BUILTIN[name][1] if source == "builtin" else "regression"
        table = CLASSIFIERS if kind == "classification" else METHODS
        methods = [method for method in args.methods or table if method in table]
        if not methods:
            raise BenchmarkInputError(
                f"{name} is a {kind} data set, and none of the methods {args.methods} has a "
                f"{kind} version; those that do: {', '.join(table)}."
            )
        first = {
            "data": args.data,
            "dataset": name,
            "split": 0,
            "settings": {"source": source, "task": kind},
        }
        subsampled = len(load_split_of(first)[2]) > GP_MAX_ROWS
        for split in range(n_splits):
            for method in methods:
                settings = {"source": source, "task": kind, "seed": args.seed}
                if args.validation:
                    settings["validation"] = args.validation
                if method == "HyperNet, recommended":
                    settings["recommended"] = RECOMMENDED
                if method == "Gaussian process" and subsampled:
                    settings["max_rows"] = GP_MAX_ROWS
                if params and method.startswith(TUNABLE):
                    settings["params"] = params
                tasks.append(
                    {
                        "data": args.data,
                        "dataset": name,
                        "split": split,
                        "method": method_label(method, params),
                        "estimator": method,
                        "settings": settings,
                    }
                )
    return tasks


def _distribution(model, X):
    """The predictive distribution of a fitted pipeline at ``X``."""
    final = model[-1]
    X_scaled = model[:-1].transform(X)
    if hasattr(final, "predict_dist"):
        return final.predict_dist(X_scaled)
    if hasattr(final, "pred_dist"):  # NGBoost
        dist = final.pred_dist(X_scaled)
        return Normal(dist.params["loc"], dist.params["scale"])
    return Normal(*final.predict(X_scaled, return_std=True))


def _epistemic_share(dist):
    """Share of the mean predictive variance that comes from the weights."""
    return float(np.mean(dist.epistemic_var()) / np.mean(dist.var()))


def run_task(task):
    """Fit one method on one split and score its predictive distribution."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    X_train, X_test, y_train, y_test = scored_rows(task)
    seed = task["settings"]["seed"] + task["split"]
    classification = task["settings"]["task"] == "classification"
    table = CLASSIFIERS if classification else METHODS
    estimator = table[task.get("estimator", task["method"])](seed, X_train.shape[1])
    if task["settings"].get("params"):
        estimator.set_params(
            **{n: tuple(v) if isinstance(v, list) else v for n, v in task["settings"]["params"]}
        )
    model = make_pipeline(StandardScaler(), estimator)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - start
        if classification:
            return _classification_record(task, model, fit_seconds, len(y_train), X_test, y_test)
        start = time.perf_counter()
        dist = _distribution(model, X_test)
        predict_seconds = time.perf_counter() - start
        record = {
            **{k: task[k] for k in ("dataset", "split", "method", "settings")},
            "estimator": task.get("estimator", task["method"]),
            "rmse": float(np.sqrt(np.mean((y_test - dist.mean()) ** 2))),
            "nll": -log_likelihood(y_test, dist),
            "crps": crps(y_test, dist),
            "coverage_90": interval_coverage(y_test, dist, confidence=CONFIDENCE),
            "width_90": interval_width(y_test, dist, confidence=CONFIDENCE),
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "n_train": getattr(model[-1], "n_rows_", len(y_train)),
            "n_test": len(y_test),
        }
        if hasattr(model[-1], "predict_dist") and task["method"].startswith(TUNABLE):
            scaler = model[0]
            far = scaler.inverse_transform(FAR_FACTOR * scaler.transform(X_test))
            record["epistemic_share_test"] = _epistemic_share(dist)
            record["epistemic_share_far"] = _epistemic_share(_distribution(model, far))
    return record


def _classification_record(task, model, fit_seconds, n_train, X_test, y_test):
    start = time.perf_counter()
    proba = model.predict_proba(X_test)
    predict_seconds = time.perf_counter() - start
    classes = model[-1].classes_
    return {
        **{k: task[k] for k in ("dataset", "split", "method", "settings")},
        "estimator": task.get("estimator", task["method"]),
        "accuracy": float(accuracy_score(y_test, classes[np.argmax(proba, axis=1)])),
        "log_loss": float(log_loss(y_test, proba, labels=classes)),
        "ece": expected_calibration_error(y_test, proba, classes=classes),
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "n_train": n_train,
        "n_test": len(y_test),
    }


def describe(record):
    if "log_loss" in record:
        scores = f"log loss {record['log_loss']:.3f}, accuracy {record['accuracy']:.3f}"
    else:
        scores = f"NLL {record['nll']:.3f}, coverage {record['coverage_90']:.2f}"
    return (
        f"{record['dataset']} split {record['split']} {record['method']}: {scores} in "
        f"{record['fit_seconds']:.1f} s"
    )


def _by_cell(records):
    cells = {}
    for record in records:
        cells.setdefault((record["dataset"], record["method"]), []).append(record)
    return cells


def mean_ranks(records, score):
    """Mean over data sets of each method's rank by its mean ``score`` (1: lowest),
    over the data sets where every method of the table has results."""
    cells = _by_cell(records)
    methods = sorted({r["method"] for r in records})
    datasets = sorted({r["dataset"] for r in records})
    complete = [d for d in datasets if all((d, m) in cells for m in methods)]
    ranks = {m: [] for m in methods}
    for dataset in complete:
        means = [np.mean([r[score] for r in cells[(dataset, m)]]) for m in methods]
        for method, rank in zip(methods, np.argsort(np.argsort(means)) + 1):
            ranks[method].append(int(rank))
    return {m: float(np.mean(r)) for m, r in ranks.items() if r}, complete


def _estimator(label, records):
    return next(r.get("estimator", r["method"]) for r in records if r["method"] == label)


def summary(records):
    """Markdown tables: one per score, data sets by methods, mean ± standard
    error; the regression data sets first, then the classification ones."""
    regression = [r for r in records if r["settings"].get("task") != "classification"]
    classification = [r for r in records if r["settings"].get("task") == "classification"]
    parts = [
        _summary(regression, METHODS, REGRESSION_TITLES, ("nll", "crps")),
        _summary(classification, CLASSIFIERS, CLASSIFICATION_TITLES, ("log_loss",)),
    ]
    return "\n\n".join(part for part in parts if part)


REGRESSION_TITLES = {
    "nll": "{scored} NLL (lower is better)",
    "crps": "{scored} CRPS (lower is better)",
    "coverage_90": "{scored} coverage of the central 90 % interval",
    "width_90": "{scored} mean width of the central 90 % interval",
    "rmse": "{scored} RMSE",
    "fit_seconds": "fit time (s, one thread)",
}
CLASSIFICATION_TITLES = {
    "log_loss": "{scored} log loss (lower is better)",
    "accuracy": "{scored} accuracy",
    "ece": "{scored} expected calibration error (top label, 10 bins; lower is better)",
    "fit_seconds": "fit time (s, one thread)",
}


def _summary(records, table, titles, ranked):
    if not records:
        return ""
    cells = _by_cell(records)
    labels = list(dict.fromkeys(r["method"] for r in records))
    order = list(table)
    methods = sorted(labels, key=lambda label: (order.index(_estimator(label, records)), label))
    datasets = sorted({r["dataset"] for r in records})
    scored = "validation" if any(r["settings"].get("validation") for r in records) else "test"
    titles = {score: title.format(scored=scored) for score, title in titles.items()}
    out = []
    for score, title in titles.items():
        rows = []
        for dataset in datasets:
            row = [dataset]
            for method in methods:
                values = [r[score] for r in cells.get((dataset, method), [])]
                if not values:
                    row.append("–")
                    continue
                mean, error = mean_and_error(values)
                digits = 1 if score == "fit_seconds" else decimals(abs(mean), "rmse")
                row.append(f"{format_estimate(mean, error, digits)} ({len(values)})")
            rows.append(row)
        out.append(f"{title}, mean ± standard error (splits)")
        out.append(markdown_table(["data set", *methods], rows))
    for score in ranked:
        ranks, complete = mean_ranks(records, score)
        if ranks:
            text = ", ".join(f"{m} {ranks[m]:.2f}" for m in methods if m in ranks)
            name = score.upper() if score != "log_loss" else "log loss"
            out.append(f"Mean rank in {name} over {len(complete)} data sets: {text}")
    shares = [
        [
            m,
            *(
                f"{np.mean([r[k] for r in records if r['method'] == m]):.3f}"
                for k in ("epistemic_share_test", "epistemic_share_far")
            ),
        ]
        for m in methods
        if any("epistemic_share_test" in r for r in records if r["method"] == m)
    ]
    if shares:
        out.append(
            "Share of the predictive variance from the weight distribution (mean over data "
            f"sets and splits), on {scored} rows and beyond the data (features x {FAR_FACTOR:g})"
        )
        out.append(markdown_table(["method", f"{scored} rows", "beyond the data"], shares))
    return "\n\n".join(out)


def run(args, out=None):
    import sys

    out = out or sys.stdout
    tasks = plan(args)
    records = run_and_collect(
        args, tasks, KEY_FIELDS, out, task_runner=run_task, describe=describe
    )
    print("\n" + summary(records), file=out)
    return 0 if records or not tasks else 1
