"""The estimators inside scikit-learn's model-selection tools."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)


def test_pipeline_in_grid_search_with_two_jobs():
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=20, random_state=0))
    grid = GridSearchCV(
        pipeline,
        {
            "hypernetregressor__hidden_layer_sizes": [(20,), (50,)],
            "hypernetregressor__learning_rate_init": [1e-3, 3e-3],
        },
        cv=2,
        n_jobs=2,
    )
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_score_ > 0.2
    assert grid.predict(X[:3]).shape == (3,)


def test_cross_val_score_regressors_beside_mlp():
    X, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for model in [
            HyperNetRegressor(max_iter=60, random_state=0),
            SGDBaseline(max_iter=60, random_state=0),
            MLPRegressor(hidden_layer_sizes=(50,), max_iter=300, random_state=0),
        ]:
            pipeline = make_pipeline(StandardScaler(), model)
            scores[type(model).__name__] = cross_val_score(pipeline, X, y, cv=3).mean()
    assert scores["HyperNetRegressor"] > 0.35
    assert scores["SGDBaseline"] > 0.35
    assert scores["HyperNetRegressor"] > scores["MLPRegressor"] - 0.1


@pytest.mark.parametrize("loader", [load_iris, load_wine], ids=["iris", "wine"])
def test_cross_val_score_classifiers_beside_mlp(loader):
    X, y = loader(return_X_y=True)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for model in [
            HyperNetClassifier(random_state=0),
            SGDBaselineClassifier(random_state=0),
            MLPClassifier(max_iter=300, random_state=0),
        ]:
            pipeline = make_pipeline(StandardScaler(), model)
            scores[type(model).__name__] = cross_val_score(pipeline, X, y, cv=3).mean()
    assert scores["HyperNetClassifier"] > 0.9
    assert scores["SGDBaselineClassifier"] > 0.9
    assert scores["HyperNetClassifier"] > scores["MLPClassifier"] - 0.05


def test_hypernet_classifier_on_digits():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    model = make_pipeline(StandardScaler(), HyperNetClassifier(random_state=0))
    model.fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.95
