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
from ._base import check_float32_range
from ._cli import at_least


def load_csv(path, target):
    """Read a numeric CSV file with a header; return X, y and feature names.

    A first column without a name whose values are 0, 1, 2, ... is the row
    index that ``pandas.DataFrame.to_csv`` writes, and is dropped.  Raises a
    ValueError that says what is wrong with the file.
    """
    import csv

    try:
        # utf-8-sig: spreadsheet programs start UTF-8 files with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if row]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8."
        ) from None
    if not rows:
        raise ValueError(f"{path} is empty.")
    header, body = rows[0][1], [row for _, row in rows[1:]]
    if target not in header:
        raise ValueError(f"Column {target!r} is not in {path}; columns: {header}.")
    if header.count(target) > 1:
        raise ValueError(f"{path} has {header.count(target)} columns named {target!r}.")
    if not body:
        raise ValueError(f"{path} has a header but no rows of data.")
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {number} has {len(row)} value{'s' * (len(row) != 1)}, "
                f"the header {len(header)} columns."
            )
    try:
        data = np.array(body, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path} must contain only numbers below its header: {error}") from None
    if header[0] in ("", "Unnamed: 0") and np.array_equal(data[:, 0], np.arange(len(data))):
        header, data = header[1:], data[:, 1:]
    column = header.index(target)
    y = data[:, column]
    X = np.delete(data, column, axis=1)
    features = [name for index, name in enumerate(header) if index != column]
    if not features:
        raise ValueError(f"{path} has no feature column besides the target {target!r}.")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"The target column {target!r} of {path} holds NaN or infinite values.")
    bad = [name for name, finite in zip(features, np.isfinite(X).all(axis=0)) if not finite]
    if bad:
        raise ValueError(f"Feature columns {bad} of {path} hold NaN or infinite values.")
    check_float32_range(X)
    return X, y, features


def estimators(max_iter, random_state):
    """The three compared models, each with standardised inputs.

    ``max_iter=None`` leaves every model its default budget.
    """

    def scaled(model):
        return make_pipeline(StandardScaler(), model)

    budget = {} if max_iter is None else {"max_iter": max_iter}
    return {
        "HyperNetRegressor": scaled(HyperNetRegressor(random_state=random_state, **budget)),
        "SGDBaseline": scaled(SGDBaseline(random_state=random_state, **budget)),
        # The skhypernet estimators standardise targets internally; give the
        # MLP the same advantage.
        "MLPRegressor": scaled(
            TransformedTargetRegressor(
                MLPRegressor(hidden_layer_sizes=(50,), random_state=random_state, **budget),
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
    parser.add_argument(
        "--cv", type=at_least(2), default=5, help="number of folds, at least 2 (default 5)"
    )
    parser.add_argument(
        "--max-iter",
        type=at_least(1),
        default=None,
        help="epochs of every model, at least 1 (default: each model's own default, "
        "'auto' for the skhypernet estimators and 200 for MLPRegressor)",
    )
    parser.add_argument(
        "--random-state",
        type=at_least(0, maximum=2**32 - 1),
        default=0,
        help="seed of folds and models (default 0)",
    )
    args = parser.parse_args(argv)
    if args.target and not args.csv:
        parser.error("--target needs --csv")
    if args.csv:
        if not args.target:
            parser.error("--csv needs --target")
        try:
            X, y, _ = load_csv(args.csv, args.target)
        except (OSError, ValueError) as error:
            parser.error(str(error))  # exits
        if len(y) < args.cv:
            parser.error(f"{args.csv} has {len(y)} rows: too few for --cv {args.cv}")
        if len(y) < 2 * args.cv:
            parser.error(
                f"{args.csv} has {len(y)} rows: --cv {args.cv} needs at least 2 rows in every "
                f"fold to score R^2 ({2 * args.cv} rows), or fewer folds."
            )
        source = f"{args.csv} (target {args.target!r})"
    else:
        X, y = load_diabetes(return_X_y=True)
        source = "scikit-learn's diabetes data"
    print(f"{source}: {X.shape[0]} rows x {X.shape[1]} features, {args.cv}-fold CV\n")
    compare(X, y, args.cv, args.max_iter, args.random_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
