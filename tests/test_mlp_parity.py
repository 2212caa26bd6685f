"""Parameters and attributes that MLPRegressor users look for."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import load_iris, make_regression
from sklearn.neural_network import MLPRegressor

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

ALL = [HyperNetRegressor, HyperNetClassifier, SGDBaseline, SGDBaselineClassifier]


def forward(X, coefs, intercepts):
    hidden = X
    for index, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        hidden = hidden @ coef + intercept
        if index < len(coefs) - 1:
            hidden = np.maximum(hidden, 0.0)
    return hidden


def test_baseline_regressor_coefs_reproduce_predictions():
    X, y = make_regression(n_samples=120, n_features=4, noise=1.0, random_state=0)
    model = SGDBaseline(hidden_layer_sizes=(7, 5), max_iter=5, random_state=0).fit(X, y)
    reference = MLPRegressor(hidden_layer_sizes=(7, 5), max_iter=5).fit(X, y)
    assert [c.shape for c in model.coefs_] == [c.shape for c in reference.coefs_]
    assert [b.shape for b in model.intercepts_] == [b.shape for b in reference.intercepts_]
    standardised = forward(X, model.coefs_, model.intercepts_)[:, 0]
    predicted = standardised * model.target_scale_ + model.target_mean_
    np.testing.assert_allclose(predicted, model.predict(X), rtol=1e-5, atol=1e-5)


def test_baseline_classifier_coefs_reproduce_probabilities():
    X, y = load_iris(return_X_y=True)
    model = SGDBaselineClassifier(max_iter=5, random_state=0).fit(X, y)
    probabilities = softmax(forward(X, model.coefs_, model.intercepts_), axis=1)
    np.testing.assert_allclose(probabilities, model.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_coefs_are_copies_that_later_training_does_not_change():
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    model = SGDBaseline(max_iter=2, random_state=0).fit(X, y)
    before = [c.copy() for c in model.coefs_]
    kept = model.coefs_
    model.partial_fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(kept, before))
    assert not all(np.array_equal(a, b) for a, b in zip(model.coefs_, before))


@pytest.mark.parametrize("estimator", [SGDBaseline, HyperNetRegressor])
def test_alpha_shrinks_the_main_network_weights(estimator):
    X, y = make_regression(n_samples=100, n_features=4, noise=1.0, random_state=0)

    def weight_norm(alpha):
        model = estimator(alpha=alpha, max_iter=300, early_stopping=False, random_state=0)
        model.fit(X, y)
        if hasattr(model, "coefs_"):
            return sum(float(np.sum(c**2)) for c in model.coefs_)
        coefs, _ = model.sample_weights(20, random_state=0)
        return sum(float(np.mean(np.sum(c**2, axis=(1, 2)))) for c in coefs)

    assert weight_norm(1.0) < 0.5 * weight_norm(0.0)


@pytest.mark.parametrize("estimator", ALL)
@pytest.mark.parametrize(
    "params",
    [{"beta_1": 1.0}, {"beta_2": -0.1}, {"epsilon": 0.0}, {"alpha": -1.0}],
    ids=str,
)
def test_adam_settings_and_alpha_are_validated(estimator, params):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=next(iter(params))):
        estimator(**params, max_iter=1).fit(X, y)


def test_adam_settings_change_training():
    X, y = make_regression(n_samples=80, n_features=3, random_state=0)
    default = SGDBaseline(max_iter=3, random_state=0).fit(X, y)
    other = SGDBaseline(max_iter=3, beta_1=0.5, random_state=0).fit(X, y)
    assert not np.allclose(default.coefs_[0], other.coefs_[0])
