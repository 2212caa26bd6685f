"""``python -m skhypernet``: compare the estimators by cross-validation.

Without arguments it uses scikit-learn's built-in diabetes data (no
download); ``--csv FILE --target COLUMN`` uses a CSV file instead.
"""

import argparse
import sys
import warnings

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, cross_validate
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import HyperNetRegressor, SGDBaseline


def load_csv(path, target):
    """Read a numeric CSV file with a header; return X, y and feature names."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path} is empty.")
    header, body = rows[0], [row for row in rows[1:] if row]
    if target not in header:
        raise ValueError(f"Column {target!r} is not in {path}; columns: {header}.")
    try:
        data = np.array(body, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path} must contain only numbers below its header: {error}") from None
    column = header.index(target)
    features = [name for index, name in enumerate(header) if index != column]
    return np.delete(data, column, axis=1), data[:, column], features


def estimators(max_iter, random_state):
    """The three compared models, each with standardised inputs."""

    def scaled(model):
        return make_pipeline(StandardScaler(), model)

    return {
        "HyperNetRegressor": scaled(
            HyperNetRegressor(max_iter=max_iter, random_state=random_state)
        ),
        "SGDBaseline": scaled(SGDBaseline(max_iter=max_iter, random_state=random_state)),
        # The skhypernet estimators standardise targets internally; give the
        # MLP the same advantage.
        "MLPRegressor": scaled(
            TransformedTargetRegressor(
                MLPRegressor(
                    hidden_layer_sizes=(50,), max_iter=max_iter, random_state=random_state
                ),
                transformer=StandardScaler(),
            )
        ),
    }


def compare(X, y, cv, max_iter, random_state, out=None):
    """Cross-validate the models and print a Markdown table; return the scores."""
    out = out or sys.stdout
    folds = KFold(cv, shuffle=True, random_state=random_state)
    results = {}
    header = "| model | R^2 (mean ± std) | RMSE (mean ± std) | fit time per fold (s) |"
    print(header, file=out)
    print("|---|---|---|---|", file=out)
    for name, model in estimators(max_iter, random_state).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_validate(
                model, X, y, cv=folds, scoring=("r2", "neg_root_mean_squared_error")
            )
        r2, rmse = scores["test_r2"], -scores["test_neg_root_mean_squared_error"]
        results[name] = scores
        print(
            f"| {name} | {r2.mean():.3f} ± {r2.std():.3f} | {rmse.mean():.3f} ± "
            f"{rmse.std():.3f} | {scores['fit_time'].mean():.2f} |",
            file=out,
            flush=True,
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m skhypernet",
        description="Compare HyperNetRegressor, SGDBaseline and scikit-learn's "
        "MLPRegressor by cross-validation.",
    )
    parser.add_argument("--csv", help="CSV file with a header row (default: diabetes)")
    parser.add_argument("--target", help="target column of the CSV file")
    parser.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--max-iter", type=int, default=200, help="epochs (default 200)")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    if args.csv:
        if not args.target:
            parser.error("--csv needs --target")
        try:
            X, y, _ = load_csv(args.csv, args.target)
        except (OSError, ValueError) as error:
            parser.error(str(error))  # exits
        source = f"{args.csv} (target {args.target!r})"
    else:
        X, y = load_diabetes(return_X_y=True)
        source = "scikit-learn's diabetes data"
    print(f"{source}: {X.shape[0]} rows x {X.shape[1]} features, {args.cv}-fold CV\n")
    compare(X, y, args.cv, args.max_iter, args.random_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
