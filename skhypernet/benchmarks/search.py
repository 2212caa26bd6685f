"""Parallel model search: a 16-candidate GridSearchCV with n_jobs=1 and 2.

joblib's worker processes start with ``OMP_NUM_THREADS`` set to
``cpu_count // n_jobs``, which torch reads when it starts: with two jobs on
two cores each worker trains on one thread, so the cores are not
oversubscribed.  Prints the wall time of both searches and the speed-up.
"""

import time
import warnings

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import HyperNetRegressor
from .._cli import at_least

GRID = {
    "hypernetregressor__hidden_layer_sizes": [(20,), (50,)],
    "hypernetregressor__learning_rate_init": [1e-3, 3e-3],
    "hypernetregressor__hyper_dropout": [0.25, 0.5],
    "hypernetregressor__input_noise": [0.1, 0.5],
}


def add_arguments(parser):
    parser.add_argument(
        "--max-iter", type=at_least(1), default=50, help="epochs per candidate (default: 50)"
    )
    parser.add_argument(
        "--cv",
        type=at_least(2),
        default=3,
        help="cross-validation folds (default: 3)",
    )


def search_seconds(n_jobs, max_iter, cv):
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(
        StandardScaler(),
        HyperNetRegressor(
            max_iter=max_iter, n_iter_no_change=np.inf, early_stopping=False, random_state=0
        ),
    )
    search = GridSearchCV(model, GRID, cv=cv, n_jobs=n_jobs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    return time.perf_counter() - start, search.best_score_


def run(args):
    n_candidates = int(np.prod([len(values) for values in GRID.values()]))
    print(
        f"GridSearchCV: {n_candidates} candidates x {args.cv} folds, diabetes data, "
        f"{args.max_iter} epochs each"
    )
    timings = {}
    for n_jobs in (1, 2):
        seconds, best = search_seconds(n_jobs, args.max_iter, args.cv)
        timings[n_jobs] = seconds
        print(f"n_jobs={n_jobs}: {seconds:.1f} s (best R^2 {best:.3f})", flush=True)
    print(f"speed-up: {timings[1] / timings[2]:.2f}")
    return 0
