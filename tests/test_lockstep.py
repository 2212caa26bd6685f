"""Fitting several estimators in lockstep equals fitting them one by one."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetClassifier, HyperNetRegressor, SGDBaseline
from skhypernet._base import fit_in_lockstep


def quietly(fit, *args):
    """``fit(*args)`` without the warning that the iteration budget ran out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(*args)


def fit_quietly(estimator, X, y):
    return quietly(estimator.fit, X, y)


def fit_quietly_lockstep(estimators, Xs, ys):
    return quietly(fit_in_lockstep, estimators, Xs, ys)


def subsets(X, y, n_subsets, n_rows):
    rng = np.random.RandomState(0)
    rows = [rng.permutation(len(y))[:n_rows] for _ in range(n_subsets)]
    return [X[r] for r in rows], [y[r] for r in rows]


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: HyperNetRegressor(max_iter=4, batch_size=1, random_state=seed),
        # Each replica stops on its own validation rows.
        lambda seed: HyperNetRegressor(max_iter=25, early_stopping=True, random_state=seed),
        lambda seed: HyperNetRegressor(max_iter=4, kl_weight=0.1, random_state=seed),
        lambda seed: SGDBaseline(max_iter=4, random_state=seed),
    ],
)
def test_regressors_in_lockstep_equal_separate_fits(make):
    X, y = load_diabetes(return_X_y=True)
    Xs, ys = subsets(StandardScaler().fit_transform(X), y, 3, 300)
    alone = [
        fit_quietly(make(seed), X_part, y_part)
        for seed, (X_part, y_part) in enumerate(zip(Xs, ys))
    ]
    together = [make(seed) for seed in range(3)]
    assert fit_quietly_lockstep(together, Xs, ys) is together
    for separate, joint in zip(alone, together):
        assert joint.n_iter_ == separate.n_iter_
        # Batched matrix products round differently from single ones.
        np.testing.assert_allclose(
            joint.predict(Xs[0]), separate.predict(Xs[0]), rtol=1e-4, atol=1e-2
        )
        np.testing.assert_allclose(joint.noise_variance_, separate.noise_variance_, rtol=1e-3)
        assert joint.loss_curve_ == pytest.approx(separate.loss_curve_, rel=1e-4)


def test_classifiers_in_lockstep_equal_separate_fits():
    X, y = load_iris(return_X_y=True)
    Xs, ys = subsets(StandardScaler().fit_transform(X), y, 2, 120)
    alone = [
        fit_quietly(HyperNetClassifier(max_iter=10, random_state=seed), X_part, y_part)
        for seed, (X_part, y_part) in enumerate(zip(Xs, ys))
    ]
    together = fit_quietly_lockstep(
        [HyperNetClassifier(max_iter=10, random_state=seed) for seed in range(2)], Xs, ys
    )
    for separate, joint in zip(alone, together):
        np.testing.assert_allclose(
            joint.predict_proba(X), separate.predict_proba(X), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize(
    "estimators, sizes, message",
    [
        ([HyperNetRegressor(), HyperNetRegressor(max_iter=5)], (50, 50), "same parameters"),
        ([HyperNetRegressor(), SGDBaseline()], (50, 50), "one class"),
        ([HyperNetRegressor(), HyperNetRegressor()], (50, 60), "one shape"),
        ([HyperNetRegressor(warm_start=True)], (50,), "warm_start=False"),
        ([], (), "at least one"),
    ],
)
def test_lockstep_needs_one_architecture_and_shape(estimators, sizes, message):
    rng = np.random.RandomState(0)
    Xs = [rng.normal(size=(n, 3)) for n in sizes]
    ys = [X[:, 0] for X in Xs]
    with pytest.raises(ValueError, match=message):
        fit_in_lockstep(estimators, Xs, ys)


def test_lockstep_warnings_point_at_the_callers_line():
    X = np.random.RandomState(0).normal(size=(40, 3))
    estimators = [HyperNetRegressor(max_iter=1, random_state=seed) for seed in range(2)]
    with pytest.warns(ConvergenceWarning, match="maximum iterations") as record:
        fit_in_lockstep(estimators, [X, X], [X[:, 0], X[:, 1]])
    assert {warning.filename for warning in record} == {__file__}
