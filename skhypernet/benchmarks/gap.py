"""In-between uncertainty: the predictive std in a gap between two clusters of data.

The data are the gallery's example (``plot_uncertainty_gap.py``): 150 rows
on each of ``-4 < x < -g`` and ``g < x < 4``, ``y = sin(x) + 0.1 x^2`` plus
Gaussian noise of standard deviation 0.15.  Every model is fitted in a
``StandardScaler`` pipeline; the score is the ratio of the predictive
standard deviation at the gap's centre (x = 0) to its mean at the two
clusters' centres (x = +-(4 + g) / 2), noise included.  Beside the three
modes of this package stand two references for epistemic uncertainty: a
deep ensemble of scikit-learn MLPs and a Gaussian process whose kernel (RBF
plus white noise) is fitted by maximum marginal likelihood on the training
rows.  Nothing is tuned on the points scored.
"""

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._cli import add_jobs_argument, at_least
from ..regression import HyperNetRegressor, SGDBaseline
from ._results import (
    BenchmarkInputError,
    add_store_arguments,
    format_estimate,
    markdown_table,
    mean_and_standard_error,
)
from .uci import run_and_collect

METHODS = ("SGDBaseline", "HyperNet", "HyperNet-KL", "Deep ensemble", "GP (ML-II)")
#: Where the clusters end: the data cover ``-4 < x < -g`` and ``g < x < 4``.
DATA_EDGE = 4.0
ROWS_PER_CLUSTER = 150
NOISE_STD = 0.15


def add_arguments(parser):
    parser.add_argument(
        "--half-gaps",
        nargs="+",
        type=float,
        default=[1.0, 2.0],
        help="half-widths g of the gap, 0 < g < 4 (default: %(default)s; 1 is the gallery's)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="models to fit (default: all)",
    )
    parser.add_argument(
        "--seeds", type=at_least(1), default=5, help="data sets and fits per gap (default: 5)"
    )
    parser.add_argument(
        "--epochs", type=at_least(1), default=400, help="max_iter of the networks (default: 400)"
    )
    parser.add_argument(
        "--members",
        type=at_least(2),
        default=10,
        help="networks in the deep ensemble (default: 10)",
    )
    add_jobs_argument(parser)
    add_store_arguments(parser)


def gap_data(half_gap, seed):
    """The two clusters' rows ``X`` (n, 1) and targets ``y``; seed 0 and gap 1
    are the gallery's data."""
    rng = np.random.RandomState(seed)
    X = np.concatenate(
        [
            rng.uniform(-DATA_EDGE, -half_gap, ROWS_PER_CLUSTER),
            rng.uniform(half_gap, DATA_EDGE, ROWS_PER_CLUSTER),
        ]
    )[:, None]
    y = np.sin(X[:, 0]) + 0.1 * X[:, 0] ** 2 + NOISE_STD * rng.normal(size=len(X))
    return X, y


def scored_points(half_gap):
    """The gap's centre, then the two clusters' centres."""
    centre = (DATA_EDGE + half_gap) / 2
    return np.array([[0.0], [-centre], [centre]])


class DeepEnsemble:
    """Networks that differ only in their seed; the predictive variance is their
    spread plus the mean squared training residual of their mean."""

    def __init__(self, members, max_iter, seed):
        self.models = [
            make_pipeline(
                StandardScaler(),
                MLPRegressor(hidden_layer_sizes=(50,), max_iter=max_iter, random_state=seed + m),
            )
            for m in range(members)
        ]

    def fit(self, X, y):
        for model in self.models:
            model.fit(X, y)
        self.noise_variance_ = float(np.mean((y - self._predictions(X).mean(0)) ** 2))
        return self

    def _predictions(self, X):
        return np.array([model.predict(X) for model in self.models])

    def predict(self, X, return_std=False):
        predictions = self._predictions(X)
        if not return_std:
            return predictions.mean(0)
        return predictions.mean(0), np.sqrt(predictions.var(0) + self.noise_variance_)


def build(method, settings):
    seed, epochs = settings["seed"], settings["epochs"]
    if method == "Deep ensemble":
        return DeepEnsemble(settings["members"], epochs, seed)
    if method == "GP (ML-II)":
        kernel = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
        model = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
        )
    elif method == "SGDBaseline":
        model = SGDBaseline(max_iter=epochs, random_state=seed)
    else:
        kl_weight = 0.1 if method == "HyperNet-KL" else 0.0
        model = HyperNetRegressor(max_iter=epochs, kl_weight=kl_weight, random_state=seed)
    return make_pipeline(StandardScaler(), model)


def run_task(task):
    import torch

    torch.set_num_threads(1)
    settings = task["settings"]
    X, y = gap_data(task["half_gap"], settings["seed"])
    model = build(task["method"], settings)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    fit_seconds = time.perf_counter() - start
    _, std = model.predict(scored_points(task["half_gap"]), return_std=True)
    record = {
        **{k: task[k] for k in KEY_FIELDS if k != "settings"},
        "settings": settings,
        "std_gap": float(std[0]),
        "std_on_data": float(std[1:].mean()),
        "ratio": float(std[0] / std[1:].mean()),
        "fit_seconds": fit_seconds,
    }
    if task["method"] == "GP (ML-II)":
        # The kernel sees standardised x: its length scale in units of x.
        fitted = model[-1].kernel_.k1.k2.length_scale * model[0].scale_[0]
        record["length_scale"] = float(fitted)
    return record


def plan(args):
    for half_gap in args.half_gaps:
        if not 0 < half_gap < DATA_EDGE:
            raise BenchmarkInputError(
                f"--half-gaps: {half_gap:g} is not between 0 and {DATA_EDGE:g} "
                "(the data end at x = -4 and 4)."
            )
    return [
        {
            "dataset": "gap",
            "half_gap": half_gap,
            "method": method,
            "settings": {"seed": seed, "epochs": args.epochs, "members": args.members},
        }
        for half_gap in args.half_gaps
        for method in args.methods
        for seed in range(args.seeds)
    ]


def summary(records):
    """Mean ± standard error over seeds of the ratio and of both standard deviations."""
    cells = {}
    for record in records:
        cells.setdefault((record["half_gap"], record["method"]), []).append(record)
    header = [
        "gap (data outside)",
        "method",
        "seeds",
        "std in the gap / on the data",
        "std in the gap",
        "std on the data",
        "fit time",
        "fitted length scale",
    ]
    rows = []
    for half_gap, method in sorted(cells, key=lambda k: (k[0], METHODS.index(k[1]))):
        found = cells[(half_gap, method)]
        rows.append(
            [
                f"-{half_gap:g} < x < {half_gap:g}",
                method,
                len(found),
                format_estimate(*mean_and_standard_error([r["ratio"] for r in found])),
                format_estimate(*mean_and_standard_error([r["std_gap"] for r in found]), 3),
                format_estimate(*mean_and_standard_error([r["std_on_data"] for r in found]), 3),
                f"{np.mean([r['fit_seconds'] for r in found]):.1f} s",
                format_estimate(*mean_and_standard_error([r["length_scale"] for r in found]))
                if "length_scale" in found[0]
                else "–",
            ]
        )
    return markdown_table(header, rows)


def describe(record):
    return (
        f"gap {record['half_gap']:g} {record['method']} seed {record['settings']['seed']}: "
        f"std ratio {record['ratio']:.2f}"
    )


def run(args, out=None):
    import sys

    out = out or sys.stdout
    tasks = plan(args)
    records = run_and_collect(
        args, tasks, KEY_FIELDS, out, task_runner=run_task, describe=describe
    )
    print("\n" + summary(records), file=out)
    return 0


KEY_FIELDS = ("dataset", "half_gap", "method", "settings")
