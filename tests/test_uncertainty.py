"""Predictive uncertainty: standard deviations, draws, weight samples."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

REGRESSORS = [HyperNetRegressor, SGDBaseline]
FAST = dict(max_iter=20, random_state=0)


def noisy_sine(n, noise, seed):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-3, 3, size=(n, 1))
    return X, np.sin(X[:, 0]) + noise * rng.normal(size=n)


@pytest.mark.parametrize("cls", REGRESSORS)
@pytest.mark.parametrize("loss", ["squared_error", "gaussian_nll"])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_shapes_repeatability_and_positive_std(cls, loss, n_targets):
    X, y = make_regression(
        n_samples=80, n_features=4, n_targets=n_targets, noise=5.0, random_state=0
    )
    model = cls(loss=loss, **FAST).fit(X, y)
    mean, std = model.predict(X[:7], return_std=True)
    shape = (7,) if n_targets == 1 else (7, n_targets)
    assert mean.shape == std.shape == shape
    assert np.all(std > 0) and np.all(np.isfinite(std))
    np.testing.assert_array_equal(mean, model.predict(X[:7]))
    np.testing.assert_array_equal(std, model.predict(X[:7], return_std=True)[1])
    draws = model.sample_y(X[:7], n_samples=5, random_state=1)
    assert draws.shape == ((7, 5) if n_targets == 1 else (7, n_targets, 5))
    np.testing.assert_array_equal(draws, model.sample_y(X[:7], 5, random_state=1))
    assert not np.array_equal(draws, model.sample_y(X[:7], 5, random_state=2))
    assert model.sample_y(X[:7]).shape[-1] == 1
    if loss == "squared_error":
        assert model.noise_variance_.shape == (n_targets,)
    else:
        assert model.noise_variance_ is None


def test_baseline_std_is_the_noise_alone():
    X, y = noisy_sine(200, 0.3, seed=0)
    model = SGDBaseline(**FAST).fit(X, y)
    _, std = model.predict(X, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(model.noise_variance_[0]))


def test_hypernet_std_adds_weight_spread_to_noise():
    X, y = noisy_sine(200, 0.3, seed=0)
    model = HyperNetRegressor(**FAST).fit(X, y)
    _, std = model.predict(X, return_std=True)
    assert np.all(std > np.sqrt(model.noise_variance_[0]))


@pytest.mark.parametrize("cls", REGRESSORS)
def test_coverage_on_a_problem_with_known_noise(cls):
    # Noise sd 0.3 around sin(x): the central 90 % interval should hold about
    # 90 % of new points.  Tolerance: 82-97 % on 2,000 test points (the
    # binomial spread alone is +-1.1 %; the rest is estimation error).
    X, y = noisy_sine(600, 0.3, seed=0)
    X_test, y_test = noisy_sine(2000, 0.3, seed=1)
    model = cls(max_iter=150, random_state=0).fit(X, y)
    mean, std = model.predict(X_test, return_std=True)
    coverage = np.mean(np.abs(y_test - mean) <= 1.6449 * std)
    assert 0.82 <= coverage <= 0.97
    assert 0.2 < np.median(std) < 0.5


def test_gaussian_nll_learns_noise_that_depends_on_x():
    rng = np.random.RandomState(0)
    X = rng.uniform(-3, 3, size=(800, 1))
    noise = np.where(X[:, 0] > 0, 1.0, 0.1)
    y = np.sin(X[:, 0]) + noise * rng.normal(size=800)
    model = SGDBaseline(
        loss="gaussian_nll", max_iter=150, n_iter_no_change=50, random_state=0
    ).fit(X, y)
    _, std = model.predict(np.array([[-2.0], [2.0]]), return_std=True)
    assert std[1] > 3 * std[0]


def test_sample_y_matches_the_predictive_distribution():
    X, y = noisy_sine(300, 0.3, seed=0)
    model = HyperNetRegressor(**FAST).fit(X, y)
    mean, std = model.predict(X[:3], return_std=True)
    draws = model.sample_y(X[:3], n_samples=4000, random_state=0)
    np.testing.assert_allclose(draws.mean(axis=1), mean, atol=0.05)
    np.testing.assert_allclose(draws.std(axis=1), std, rtol=0.1)


def test_sample_weights_layout_and_values():
    X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    model = HyperNetRegressor(hidden_layer_sizes=(6, 5), **FAST).fit(X, y)
    coefs, intercepts = model.sample_weights(3, random_state=0)
    assert [c.shape for c in coefs] == [(3, 4, 6), (3, 6, 5), (3, 5, 1)]
    assert [b.shape for b in intercepts] == [(3, 6), (3, 5), (3, 1)]
    again = model.sample_weights(3, random_state=0)
    np.testing.assert_array_equal(coefs[0], again[0][0])
    assert not np.array_equal(coefs[0][0], coefs[0][1])
    # The sampled networks are the ones the model evaluates.
    hidden = X[:5]
    for index, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        hidden = (
            np.einsum("ni,sio->sno", hidden, coef)
            if index == 0
            else np.einsum("sni,sio->sno", hidden, coef)
        )
        hidden = hidden + intercept[:, None, :]
        if index < 2:
            hidden = np.maximum(hidden, 0)
    X_tensor = torch.tensor(X[:5], dtype=torch.float64)
    np.testing.assert_allclose(
        hidden, model._random_outputs(X_tensor, 3, np.random.RandomState(0)), rtol=1e-6
    )


def test_classifier_per_sample_probabilities():
    X, y = make_regression(n_samples=90, n_features=4, random_state=0)
    y = np.digitize(y, np.percentile(y, [33, 66]))
    model = HyperNetClassifier(n_predict_samples=12, **FAST).fit(X, y)
    samples = model.predict_proba_samples(X[:5])
    assert samples.shape == (12, 5, 3)
    np.testing.assert_allclose(samples.sum(axis=-1), 1.0)
    np.testing.assert_allclose(samples.mean(axis=0), model.predict_proba(X[:5]))
    assert samples.std(axis=0).max() > 0  # the weight samples disagree
    baseline = SGDBaselineClassifier(**FAST).fit(X, y)
    assert baseline.predict_proba_samples(X[:5]).shape == (1, 5, 3)


@pytest.mark.parametrize("bias, log_variance", [(40.0, 15.0), (-40.0, -15.0)])
def test_learned_noise_is_clipped_at_the_documented_bound(bias, log_variance):
    X, y = make_regression(n_samples=50, n_features=2, random_state=0)
    model = SGDBaseline(loss="gaussian_nll", max_iter=1, random_state=0).fit(X, y)
    last = model.network_.weight_generator.heads[-1]
    with torch.no_grad():
        last[0, :-1, 1] = 0.0
        last[0, -1, 1] = bias
    _, std = model.predict(X, return_std=True)
    np.testing.assert_allclose(std, np.exp(log_variance / 2) * model.target_scale_[0], rtol=1e-6)
