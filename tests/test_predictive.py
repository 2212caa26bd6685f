"""The regressors' predictive distributions and the tools built on them:
scorers in model selection, conformal intervals, calibration pictures."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetClassifier, HyperNetRegressor, SGDBaseline
from skhypernet.distributions import Normal, NormalMixture
from skhypernet.metrics import (
    crps_scorer,
    interval_coverage,
    log_likelihood,
    log_likelihood_scorer,
    predictive_distribution,
)


def quietly(method, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return method(*args, **kwargs)


def data(n=150, n_targets=1):
    return make_regression(
        n_samples=n, n_features=4, n_targets=n_targets, noise=10.0, random_state=0
    )


@pytest.mark.parametrize(
    "model, kind, n_components",
    [
        (HyperNetRegressor(n_predict_samples=40), NormalMixture, 40),
        (HyperNetRegressor(n_predict_samples=20, n_members=3), NormalMixture, 60),
        (HyperNetRegressor(n_predict_samples=30, loss="gaussian_nll"), NormalMixture, 30),
        (SGDBaseline(), Normal, None),
        (SGDBaseline(loss="gaussian_nll"), Normal, None),
        (SGDBaseline(n_members=4), NormalMixture, 4),
    ],
    ids=["hypernet", "hypernet-members", "hypernet-nll", "sgd", "sgd-nll", "sgd-members"],
)
@pytest.mark.parametrize("n_targets", [1, 2])
def test_predict_dist_has_the_moments_of_predict(model, kind, n_components, n_targets):
    X, y = data(n_targets=n_targets)
    model = quietly(model.set_params(max_iter=10, random_state=0).fit, X, y)
    dist = model.predict_dist(X)
    assert isinstance(dist, kind)
    assert dist.batch_shape == np.shape(y)
    if n_components is not None:
        assert dist.locs.shape[-1] == n_components
    mean, std = model.predict(X, return_std=True)
    np.testing.assert_allclose(dist.mean(), mean, rtol=1e-9, atol=1e-9 * np.std(y))
    np.testing.assert_allclose(dist.std(), std, rtol=1e-7)
    np.testing.assert_allclose(dist.var(), dist.epistemic_var() + dist.aleatoric_var())


def test_the_variance_splits_into_weight_spread_and_noise():
    X, y = data()
    model = quietly(HyperNetRegressor(max_iter=5, random_state=0).fit, X, y)
    dist = model.predict_dist(X)
    # The noise of the squared-error model is noise_variance_, the same for every row.
    np.testing.assert_allclose(dist.aleatoric_var(), model.noise_variance_[0], rtol=1e-12)
    samples = model._prediction_outputs(model._validate_X_predict(X))[:, :, 0]
    expected = np.var(samples * model.target_scale_[0], axis=0)
    np.testing.assert_allclose(dist.epistemic_var(), expected, rtol=1e-8)
    assert np.all(dist.epistemic_var() > 0)
    # A point network has no weight spread.
    baseline = quietly(SGDBaseline(max_iter=5, random_state=0).fit, X, y).predict_dist(X)
    np.testing.assert_array_equal(baseline.epistemic_var(), 0.0)


def test_predict_dist_quantiles_are_the_mixtures():
    X, y = data()
    model = quietly(HyperNetRegressor(max_iter=5, n_predict_samples=25, random_state=0).fit, X, y)
    dist = model.predict_dist(X[:10])
    lower, upper = dist.interval(0.9)
    np.testing.assert_allclose(dist.cdf(lower), 0.05, atol=1e-9)
    np.testing.assert_allclose(dist.cdf(upper), 0.95, atol=1e-9)
    draws = dist.rvs(size=3, random_state=0)
    assert draws.shape == (3, 10)


def test_predictive_distribution_reads_pipelines_and_return_std():
    X, y = data()
    pipeline = quietly(
        make_pipeline(StandardScaler(), SGDBaseline(max_iter=5, random_state=0)).fit, X, y
    )
    dist = predictive_distribution(pipeline, X)
    expected = pipeline[-1].predict_dist(pipeline[:-1].transform(X))
    np.testing.assert_array_equal(dist.mean(), expected.mean())
    with pytest.raises(ValueError, match="predict_dist"):
        predictive_distribution(HyperNetClassifier(), X)


def test_grid_search_picks_by_log_likelihood():
    X, y = load_diabetes(return_X_y=True)
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=40, random_state=0)),
        {"hypernetregressor__kl_weight": [0, 0.1]},
        scoring=log_likelihood_scorer,
        cv=cv,
    )
    quietly(search.fit, X, y)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_index_ == int(np.argmax(scores))
    # The score is the mean log predictive density of each held-out fold.
    train, test = next(cv.split(X))
    model = make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=40, random_state=0))
    model.set_params(**search.cv_results_["params"][0])
    quietly(model.fit, X[train], y[train])
    expected = log_likelihood(y[test], model[-1].predict_dist(model[:-1].transform(X[test])))
    assert search.cv_results_["split0_test_score"][0] == pytest.approx(expected, rel=1e-9)
    assert -10 < scores.max() < 0


def test_cross_validate_takes_both_scorers_for_an_ensemble():
    X, y = data()
    results = quietly(
        cross_validate,
        SGDBaseline(max_iter=5, n_members=2, random_state=0),
        X,
        y,
        cv=2,
        scoring={"ll": log_likelihood_scorer, "crps": crps_scorer},
    )
    assert np.all(results["test_ll"] < 0) and np.all(results["test_crps"] < 0)


@pytest.mark.parametrize("cls", [HyperNetRegressor, SGDBaseline])
def test_conformal_intervals_cover_new_rows(cls):
    regression = pytest.importorskip("mapie.regression")
    from mapie.conformity_scores import StdConformityScore

    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(1600, 3))
    y = np.sin(X[:, 0]) + (0.1 + 0.3 * (X[:, 0] + 2)) * rng.normal(size=len(X))
    parts = [(X[:600], y[:600]), (X[600:900], y[600:900]), (X[900:], y[900:])]
    for score in ["absolute", StdConformityScore()]:
        conformal = regression.SplitConformalRegressor(
            cls(max_iter=20, random_state=0),
            confidence_level=0.9,
            conformity_score=score,
            prefit=False,
        )
        quietly(conformal.fit, *parts[0]).conformalize(*parts[1])
        _, bounds = conformal.predict_interval(parts[2][0])
        y_test = parts[2][1]
        covered = np.mean((y_test >= bounds[:, 0, 0]) & (y_test <= bounds[:, 1, 0]))
        # 700 test rows: the guarantee is >= 0.9 in expectation; 3 standard errors.
        assert covered > 0.9 - 3 * np.sqrt(0.09 / 700)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_calibration_plot_shows_the_coverage_of_each_level(n_targets):
    pytest.importorskip("matplotlib")
    from skhypernet.plotting import plot_calibration

    X, y = data(n_targets=n_targets)
    model = quietly(HyperNetRegressor(max_iter=5, random_state=0).fit, X, y)
    dist = model.predict_dist(X)
    figure = plot_calibration(y, dist, levels=[0.5, 0.9])
    coverage_axis, pit_axis = figure.axes
    observed = coverage_axis.lines[1].get_ydata()
    np.testing.assert_allclose(
        observed, [interval_coverage(y, dist, confidence=c) for c in (0.5, 0.9)]
    )
    assert sum(patch.get_height() for patch in pit_axis.patches) == pytest.approx(10.0)


def test_interval_plot_draws_total_and_epistemic_bands():
    pytest.importorskip("matplotlib")
    from skhypernet.plotting import plot_intervals

    X, y = data()
    model = quietly(HyperNetRegressor(max_iter=5, n_members=2, random_state=0).fit, X, y)
    dist = model.predict_dist(X)
    figure = plot_intervals(X[:, 0], dist, y)
    total, epistemic = figure.axes[0].collections[:2]
    lower, upper = dist.interval(0.9)
    heights = [np.ptp(band.get_paths()[0].vertices[:, 1]) for band in (total, epistemic)]
    assert heights[0] == pytest.approx(np.max(upper) - np.min(lower))
    assert heights[1] < heights[0]
    with pytest.raises(ValueError, match="one value of x per row"):
        plot_intervals(X[:10, 0], dist)


def test_reliability_plot_titles_the_expected_calibration_error():
    pytest.importorskip("matplotlib")
    from skhypernet.metrics import expected_calibration_error
    from skhypernet.plotting import plot_reliability

    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    model = quietly(HyperNetClassifier(max_iter=10, random_state=0).fit, X, y)
    proba = model.predict_proba(X)
    figure = plot_reliability(y, proba, n_bins=5)
    ece = expected_calibration_error(y, proba, n_bins=5)
    assert f"{ece:.3f}" in figure.axes[0].get_title()


def test_an_ensemble_predicts_its_distribution_with_its_own_sample_count():
    X, y = data()
    model = quietly(HyperNetRegressor(max_iter=3, n_members=2, random_state=0).fit, X, y)
    model.set_params(n_predict_samples=7)  # after fit: the members keep 100
    dist = model.predict_dist(X)
    assert dist.locs.shape == (len(X), 14)
    np.testing.assert_allclose(dist.mean(), model.predict(X), rtol=1e-9, atol=1e-9 * np.std(y))
