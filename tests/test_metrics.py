"""Proper scores, calibration error and scorers of predictive distributions."""

import pickle

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF
from sklearn.inspection import permutation_importance
from sklearn.linear_model import BayesianRidge, Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import distributions
from skhypernet.distributions import Normal, NormalMixture
from skhypernet.metrics import (
    crps,
    crps_scorer,
    expected_calibration_error,
    interval_coverage,
    interval_width,
    log_likelihood,
    log_likelihood_scorer,
    make_distribution_scorer,
    predictive_distribution,
    top_label_bins,
)


class LinearGaussian(RegressorMixin, BaseEstimator):
    """Least squares with a fixed predictive standard deviation ``noise``."""

    def __init__(self, noise=1.0):
        self.noise = noise

    def fit(self, X, y):
        self.coef_ = np.linalg.lstsq(X, y, rcond=None)[0]
        return self

    def predict(self, X, return_std=False):
        mean = X @ self.coef_
        return (mean, np.full_like(mean, self.noise)) if return_std else mean


class WithPredictDist(LinearGaussian):
    """The same Gaussians, from ``predict_dist``."""

    def predict_dist(self, X):
        return Normal(*self.predict(X, return_std=True))


def crps_by_quadrature(dist, y):
    """The integral of ``(F(x) - 1{x >= y})^2``, piecewise around y and the components."""
    locs, scales = np.ravel(dist.mean()), np.ravel(dist.std())
    if isinstance(dist, NormalMixture):
        locs, scales = np.ravel(dist.locs), np.ravel(dist.scales)
    offsets = np.array([-40, -8, -4, -2, -1, 0, 1, 2, 4, 8, 40])
    knots = np.unique(np.append((locs[:, None] + scales[:, None] * offsets).ravel(), y))
    pieces = zip(knots[:-1], knots[1:])
    return sum(quad(squared_gap, a, b, args=(dist, a >= y), epsabs=1e-13)[0] for a, b in pieces)


def squared_gap(x, dist, step):
    return (dist.cdf(x) - step) ** 2


@pytest.mark.parametrize("loc, scale, y", [(0.0, 1.0, 0.3), (2.0, 0.1, 1.5), (-1.0, 5.0, 12.0)])
def test_normal_crps_matches_quadrature_and_properscoring(loc, scale, y):
    properscoring = pytest.importorskip("properscoring")
    dist = Normal(loc, scale)
    score = crps([y], Normal([loc], [scale]))
    np.testing.assert_allclose(score, crps_by_quadrature(dist, y), rtol=1e-9)
    np.testing.assert_allclose(score, properscoring.crps_gaussian(y, loc, scale), rtol=1e-10)


@pytest.mark.parametrize(
    "locs, scales, y",
    [
        ([-3.0, 0.5, 4.0], [1.0, 0.5, 2.0], 0.2),
        ([-20.0, 20.0], [1.0, 1.0], 0.0),
        ([0.0, 1.0], [1e-2, 10.0], 1.0),
        ([5.0, 5.5, 6.0, 9.0], 0.3, -4.0),
    ],
)
def test_mixture_crps_matches_quadrature(locs, scales, y):
    dist = NormalMixture(locs, scales)
    score = crps([y], NormalMixture([locs], np.atleast_1d(scales)[None]))
    np.testing.assert_allclose(score, crps_by_quadrature(dist, y), rtol=1e-9)


def test_one_component_mixture_crps_is_the_normal_crps():
    rng = np.random.RandomState(0)
    loc, scale, y = rng.normal(size=8), rng.uniform(0.5, 2, size=8), rng.normal(size=8)
    np.testing.assert_allclose(
        crps(y, NormalMixture(loc[:, None], scale[:, None])), crps(y, (loc, scale)), rtol=1e-12
    )


def test_crps_chunking_bounds_memory_and_does_not_change_the_result(monkeypatch):
    rng = np.random.RandomState(1)
    dist = NormalMixture(rng.normal(size=(7, 2, 5)), rng.uniform(0.5, 2, size=(7, 2, 1)))
    y = rng.normal(size=(7, 2))
    whole = dist._crps(y)
    for i, j in np.ndindex(7, 2):
        np.testing.assert_allclose(crps([y[i, j]], dist[i : i + 1, j]), whole[i, j], rtol=1e-12)
    sizes, original = [], distributions._abs_moment

    def recording(m, v):
        sizes.append(np.size(m))
        return original(m, v)

    monkeypatch.setattr(distributions, "_abs_moment", recording)
    # One row, then two rows, of 5 components at a time: 5 or 10 entries against y.
    for chunk, most in [(1, 5), (12, 10)]:
        sizes.clear()
        monkeypatch.setattr(distributions, "_PAIRWISE_CHUNK", chunk)
        np.testing.assert_allclose(dist._crps(y), whole, rtol=1e-12)
        assert max(sizes) == most


def test_log_likelihood_matches_scipy_with_two_outputs_and_weights():
    rng = np.random.RandomState(2)
    mean, std = rng.normal(size=(30, 2)), rng.uniform(0.5, 2, size=(30, 2))
    y = rng.normal(size=(30, 2))
    logpdf = norm.logpdf(y, mean, std)
    np.testing.assert_allclose(log_likelihood(y, (mean, std)), logpdf.mean(), rtol=1e-12)
    weight = rng.uniform(0, 3, size=30)
    expected = np.mean(np.sum(weight[:, None] * logpdf, axis=0) / weight.sum())
    score = log_likelihood(y, Normal(mean, std), sample_weight=weight)
    np.testing.assert_allclose(score, expected, rtol=1e-12)


def test_mixture_log_likelihood_is_the_log_of_the_mean_density():
    locs, y = np.array([[0.0, 2.0], [1.0, 1.0]]), np.array([1.5, -1.0])
    expected = np.log(norm.pdf(y[:, None], locs, 0.5).mean(axis=1)).mean()
    np.testing.assert_allclose(log_likelihood(y, NormalMixture(locs, 0.5)), expected)


@pytest.mark.parametrize("score", [log_likelihood, crps, interval_coverage, interval_width])
def test_integer_weights_repeat_rows(score):
    rng = np.random.RandomState(3)
    locs, y = rng.normal(size=(6, 3)), rng.normal(size=6)
    weight = np.array([1, 0, 3, 2, 1, 4])
    repeated = np.repeat(np.arange(6), weight)
    np.testing.assert_allclose(
        score(y, NormalMixture(locs, 0.7), sample_weight=weight),
        score(y[repeated], NormalMixture(locs[repeated], 0.7)),
        rtol=1e-12,
    )


def test_interval_coverage_and_width_match_direct_computation():
    rng = np.random.RandomState(4)
    mean, std = rng.normal(size=200), rng.uniform(0.5, 2, size=200)
    y = mean + std * rng.standard_t(df=3, size=200)
    lower, upper = mean + std * norm.ppf(0.1), mean + std * norm.ppf(0.9)
    covered = (y >= lower) & (y <= upper)
    assert interval_coverage(y, (mean, std), confidence=0.8) == np.mean(covered)
    np.testing.assert_allclose(
        interval_width(y, (mean, std), confidence=0.8), np.mean(upper - lower), rtol=1e-12
    )
    np.testing.assert_allclose(interval_width(y, (mean, std)), 2 * norm.ppf(0.95) * std.mean())


def test_scores_reject_bad_input():
    dist = Normal(np.zeros(4), 1.0)
    # One target as a column is that target, as in scikit-learn's metrics.
    assert log_likelihood(np.zeros((4, 1)), dist) == log_likelihood(np.zeros(4), dist)
    with pytest.raises(ValueError, match=r"y_true has shape \(4, 2\) but .* batch shape \(4,\)"):
        log_likelihood(np.zeros((4, 2)), dist)
    with pytest.raises(ValueError, match=r"y_true has shape \(3,\)"):
        crps(np.zeros(3), dist)
    with pytest.raises(ValueError, match="y_true has shape"):
        crps(np.zeros(4), NormalMixture(np.zeros((4, 3, 2)), 1.0))
    with pytest.raises(ValueError, match="y_true contains NaN"):
        log_likelihood([0.0, np.nan, 0.0, 0.0], dist)
    with pytest.raises(ValueError, match=r"tuple \(mean, std\)"):
        log_likelihood(np.zeros(4), (np.zeros(4),))
    with pytest.raises(ValueError, match="scale must be > 0"):
        log_likelihood(np.zeros(4), (np.zeros(4), np.zeros(4)))
    with pytest.raises(ValueError, match="sample_weight"):
        crps(np.zeros(4), dist, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="Negative values.*sample_weight"):
        crps(np.zeros(4), dist, sample_weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\)"):
        interval_coverage(np.zeros(4), dist, confidence=90)


def test_ece_is_near_zero_when_calibrated():
    rng = np.random.RandomState(5)
    confidence = rng.uniform(0.5, 1.0, size=20_000)
    predicted = rng.randint(2, size=20_000)
    correct = rng.uniform(size=20_000) < confidence
    y = np.where(correct, predicted, 1 - predicted)
    proba = np.where(predicted[:, None] == [0, 1], confidence[:, None], 1 - confidence[:, None])
    assert expected_calibration_error(y, proba) < 0.02
    # The same probabilities, sharpened, are overconfident.
    assert expected_calibration_error(y, np.where(proba > 0.5, 1.0, 0.0)) > 0.2


def test_ece_of_a_hand_computed_case():
    # Columns in the order of classes: the predictions are "b", "b", "c", "a".
    classes = ["c", "b", "a"]
    proba = [[0.03, 0.95, 0.02], [0.1, 0.85, 0.05], [0.65, 0.2, 0.15], [0.3, 0.15, 0.55]]
    y = ["b", "a", "c", "a"]
    expected = (0.05 + 0.85 + 0.35 + 0.45) / 4
    ece = expected_calibration_error(y, proba, classes=classes)
    np.testing.assert_allclose(ece, expected, rtol=1e-12)
    # In one bin, accuracy 3/4 and mean confidence 0.75 cancel.
    assert expected_calibration_error(y, proba, classes=classes, n_bins=2) < 1e-12
    confidence, accuracy, counts = top_label_bins(y, proba, classes=classes, n_bins=4)
    np.testing.assert_array_equal(counts, [0, 0, 2, 2])
    np.testing.assert_allclose(confidence[2:], [0.6, 0.9])
    np.testing.assert_allclose(accuracy[2:], [1.0, 0.5])
    assert np.isnan(confidence[:2]).all()
    weighted = expected_calibration_error(y, proba, classes=classes, sample_weight=[2, 1, 0, 1])
    repeated = expected_calibration_error(
        ["b", "b", "a", "a"], [proba[0], proba[0], proba[1], proba[3]], classes=classes
    )
    np.testing.assert_allclose(weighted, repeated, rtol=1e-12)


@pytest.mark.parametrize(
    "y, proba, kwargs, match",
    [
        ([0, 1], [[0.5, 0.6], [0.5, 0.5]], {}, "rows sum to 1"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], {}, r"in \[0, 1\]"),
        ([0, 0], [[0.5, 0.5], [0.5, 0.5]], {}, "2 columns but there are 1 classes"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], {"classes": [0, 1]}, "not in classes"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], {}, "one label per row"),
        ([0, 1], [0.5, 0.5], {}, "2D array"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], {"n_bins": 0}, "n_bins must be a positive int"),
    ],
)
def test_ece_rejects_bad_input(y, proba, kwargs, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(y, proba, **kwargs)


def test_predictive_distribution_reads_predict_dist_and_return_std():
    X, y = load_diabetes(return_X_y=True)
    model = BayesianRidge().fit(X, y)
    dist = predictive_distribution(model, X[:5])
    mean, std = model.predict(X[:5], return_std=True)
    assert isinstance(dist, Normal)
    np.testing.assert_array_equal(dist.mean(), mean)
    np.testing.assert_array_equal(dist.std(), std)
    # In a pipeline, predict_dist sees the transformed rows.
    pipeline = make_pipeline(StandardScaler(), WithPredictDist()).fit(X, y)
    scaled = pipeline[0].transform(X[:5])
    np.testing.assert_allclose(
        predictive_distribution(pipeline, X[:5]).mean(), pipeline[-1].predict(scaled)
    )
    alone = make_pipeline(WithPredictDist()).fit(X, y)
    np.testing.assert_allclose(predictive_distribution(alone, X[:5]).mean(), alone.predict(X[:5]))
    with pytest.raises(ValueError, match="Ridge has no predictive distribution.*predict_dist"):
        predictive_distribution(make_pipeline(StandardScaler(), Ridge()).fit(X, y), X)
    with pytest.raises(ValueError, match="LinearGaussian predicts zero spread"):
        predictive_distribution(LinearGaussian(noise=0.0).fit(X, y), X)


def test_grid_search_picks_the_highest_log_likelihood_not_r2():
    X, y = load_diabetes(return_X_y=True)
    gp = GaussianProcessRegressor(RBF(1.0), optimizer=None, normalize_y=True)
    search = GridSearchCV(
        gp,
        {"alpha": [1e-3, 1.0]},
        scoring={"ll": log_likelihood_scorer, "crps": crps_scorer, "r2": "r2"},
        refit="ll",
        cv=3,
    ).fit(X, y)
    results = search.cv_results_
    # R^2 prefers the nearly noiseless fit, whose intervals are far too narrow.
    assert np.argmax(results["mean_test_r2"]) == 0
    assert search.best_params_ == {"alpha": 1.0}
    assert results["mean_test_ll"][1] > results["mean_test_ll"][0] + 100
    expected = []
    for train, test in KFold(3).split(X):
        mean, std = gp.set_params(alpha=1e-3).fit(X[train], y[train]).predict(X[test], True)
        expected.append(norm.logpdf(y[test], mean, std).mean())
    np.testing.assert_allclose(results["mean_test_ll"][0], np.mean(expected), rtol=1e-8)


def test_scorers_choose_the_true_noise_level():
    rng = np.random.RandomState(6)
    X = rng.normal(size=(600, 3))
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=600)
    for scorer in (log_likelihood_scorer, crps_scorer):
        search = GridSearchCV(LinearGaussian(), {"noise": [0.3, 1.0, 3.0]}, scoring=scorer)
        assert search.fit(X, y).best_params_ == {"noise": 1.0}
    model = LinearGaussian().fit(X, y)
    np.testing.assert_allclose(crps_scorer(model, X, y), -crps(y, model.predict(X, True)))
    weight = rng.uniform(size=600)
    np.testing.assert_allclose(
        log_likelihood_scorer(model, X, y, sample_weight=weight),
        log_likelihood(y, model.predict(X, True), sample_weight=weight),
    )


def test_scorers_in_cross_validate_and_permutation_importance():
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), BayesianRidge())
    scores = cross_validate(
        pipeline, X, y, cv=3, scoring={"ll": log_likelihood_scorer, "crps": crps_scorer}
    )
    for i, (train, test) in enumerate(KFold(3).split(X)):
        dist = pipeline.fit(X[train], y[train]).predict(X[test], return_std=True)
        np.testing.assert_allclose(scores["test_ll"][i], log_likelihood(y[test], dist))
        np.testing.assert_allclose(scores["test_crps"][i], -crps(y[test], dist))
    # A column of noise does not matter; bmi (column 2) does.
    X = np.column_stack([X, np.random.RandomState(0).normal(size=len(X))])
    pipeline.fit(X, y)
    importance = permutation_importance(
        pipeline, X, y, scoring=log_likelihood_scorer, n_repeats=5, random_state=0
    ).importances_mean
    assert importance[2] > 0.1 and abs(importance[-1]) < 0.01


def test_scorers_pickle_and_describe_themselves():
    X, y = load_diabetes(return_X_y=True)
    model = BayesianRidge().fit(X, y)
    for scorer in (log_likelihood_scorer, crps_scorer):
        restored = pickle.loads(pickle.dumps(scorer))
        assert restored(model, X, y) == scorer(model, X, y)
    assert repr(crps_scorer) == "make_distribution_scorer(crps, greater_is_better=False)"
    coverage = make_distribution_scorer(interval_coverage, confidence=0.5)
    assert repr(pickle.loads(pickle.dumps(coverage))) == repr(coverage)
    assert coverage(model, X, y) == interval_coverage(y, model.predict(X, True), confidence=0.5)
    with pytest.raises(ValueError, match="score_func must be callable"):
        make_distribution_scorer("crps")
