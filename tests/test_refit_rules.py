"""A fit that raises leaves the estimator as it was; predictions are finite or refused."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

ALL = [HyperNetRegressor, SGDBaseline, HyperNetClassifier, SGDBaselineClassifier]
REGRESSORS = [HyperNetRegressor, SGDBaseline]
CLASSIFIERS = [HyperNetClassifier, SGDBaselineClassifier]


def data_for(cls, n=60):
    if cls in CLASSIFIERS:
        return make_classification(n_samples=n, n_features=4, random_state=0)
    return make_regression(n_samples=n, n_features=4, noise=1.0, random_state=0)


def fitted(cls, **params):
    X, y = data_for(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(max_iter=3, random_state=0, **params).fit(X, y), X, y


def outputs(model, X):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    return np.concatenate([np.ravel(a) for a in model.predict(X, return_std=True)])


def failing_refits(cls, X, y):
    """(parameters, X, y) of refits that raise after the parameters are valid."""
    if cls in CLASSIFIERS:
        labels = np.array(["a", "b", "c"])[np.arange(len(y)) % 3]
        return [
            ({"device": "cuda"}, X, labels),
            ({}, X, np.zeros(len(y))),  # one class
            ({}, np.full_like(X, 1e300), labels),
        ]
    return [
        ({"device": "cuda"}, X, 1000 * y),
        ({"device": "cuda"}, X, np.column_stack([y, y])),
        ({"loss": "gaussian_nll", "device": "cuda"}, X, y),
        ({}, np.full_like(X, 1e300), y),
    ]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("n_members", [1, 2])
def test_a_refit_that_raises_leaves_the_model_as_it_was(cls, n_members):
    model, X, y = fitted(cls, n_members=n_members)
    before = outputs(model, X)
    params_before, attributes = model.get_params(), sorted(vars(model))
    for params, X_new, y_new in failing_refits(cls, X, y):
        model.set_params(**params)
        with pytest.raises(ValueError):
            model.fit(X_new, y_new)
        model.set_params(**params_before)
        assert sorted(vars(model)) == attributes
        np.testing.assert_array_equal(outputs(model, X), before)
        np.testing.assert_array_equal(outputs(pickle.loads(pickle.dumps(model)), X), before)


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_a_partial_fit_that_raises_leaves_the_classes_as_they_were(cls):
    X, y = data_for(cls)
    model = cls(random_state=0, device="cuda")
    with pytest.raises(ValueError, match="CUDA"):
        model.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(model, "classes_")


@pytest.mark.parametrize("cls", ALL)
def test_predicting_beyond_float32_is_refused_like_fitting(cls):
    model, X, _ = fitted(cls)
    huge = np.full_like(X[:3], 1e300)
    methods = ["predict", "score"] + (["predict_proba"] if cls in CLASSIFIERS else [])
    for method in methods:
        args = (huge, np.zeros(3)) if method == "score" else (huge,)
        with pytest.raises(ValueError, match="beyond the float32 range"):
            getattr(model, method)(*args)
    if cls in REGRESSORS:
        for call in (
            lambda: model.predict(huge, return_std=True),
            lambda: model.predict_dist(huge),
            lambda: model.sample_y(huge),
        ):
            with pytest.raises(ValueError, match="beyond the float32 range"):
                call()


@pytest.mark.parametrize("cls", [HyperNetRegressor, HyperNetClassifier])
@pytest.mark.parametrize("value", [0, -3, 2.5, "many"])
def test_n_predict_samples_is_checked_at_predict_time(cls, value):
    model, X, _ = fitted(cls)
    model.set_params(n_predict_samples=value)
    method = model.predict_proba if cls in CLASSIFIERS else model.predict
    with pytest.raises(ValueError, match="n_predict_samples"):
        method(X)


@pytest.mark.parametrize("cls", ALL)
def test_a_step_that_makes_the_parameters_nan_is_rolled_back(cls):
    X, y = data_for(cls)
    # beta_2 = 0: Adam divides by the last squared gradient alone, and the
    # parameters can become NaN while the epoch's loss is still finite
    # (HyperNetClassifier at 0.01 did).
    for learning_rate in (1e-3, 1e-2, 1e-1):
        model = cls(beta_2=0.0, learning_rate_init=learning_rate, max_iter=6, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        parameters = [p.detach().numpy() for p in model.network_.parameters()]
        assert all(np.all(np.isfinite(p)) for p in parameters)
        assert np.all(np.isfinite(outputs(model, X)))


@pytest.mark.parametrize("cls", ALL)
def test_early_stopping_with_unweighted_validation_rows_is_a_clear_error(cls):
    X, y = data_for(cls, n=200)
    weights = np.zeros(len(y))
    weights[:3] = 1.0
    refused = 0
    for seed in range(10):
        model = cls(max_iter=2, early_stopping=True, random_state=seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, y, sample_weight=weights)
        except ValueError as error:
            assert "all with sample_weight 0" in str(error)
            refused += 1
        else:
            assert np.isfinite(model.best_validation_score_)
    assert refused > 0


def test_counts_too_large_for_memory_are_refused_before_allocating(monkeypatch):
    import skhypernet._base as base

    model, X, _ = fitted(HyperNetRegressor)
    classifier, X_c, _ = fitted(HyperNetClassifier)
    # A machine of 1 GiB: the counts below need more, and nothing is allocated.
    monkeypatch.setattr(base, "_physical_memory", lambda: 2**30)
    calls = [
        lambda: model.sample_y(X, n_samples=10**9),
        lambda: model.sample_weights(10**9),
        lambda: model.set_params(n_predict_samples=10**9).predict(X),
        lambda: model.set_params(n_predict_samples=10**6).predict_dist(X),
        lambda: classifier.set_params(n_predict_samples=10**8).predict_proba_samples(X_c),
        lambda: HyperNetRegressor(noise_dim=10**8, max_iter=1).fit(X, X[:, 0]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="GiB of memory, more than this machine has"):
            call()


def test_sample_y_draws_in_chunks_of_bounded_memory(monkeypatch):
    import skhypernet.regression as regression

    model, X, _ = fitted(HyperNetRegressor)
    whole = model.sample_y(X[:4], n_samples=600, random_state=0)
    monkeypatch.setattr(regression, "SAMPLE_Y_CHUNK_BYTES", 4 * 8 * 50)  # 50 draws a chunk
    sizes = []
    original = HyperNetRegressor._random_outputs

    def recording(self, X_tensor, n_samples, rng):
        sizes.append(n_samples)
        return original(self, X_tensor, n_samples, rng)

    monkeypatch.setattr(HyperNetRegressor, "_random_outputs", recording)
    chunked = model.sample_y(X[:4], n_samples=600, random_state=0)
    assert max(sizes) == 50 and sum(sizes) == 600
    assert chunked.shape == whole.shape == (4, 600)
    np.testing.assert_array_equal(chunked, model.sample_y(X[:4], n_samples=600, random_state=0))
    # Other draws of the same distribution.
    mean, std = model.predict(X[:4], return_std=True)
    assert np.all(np.abs(chunked.mean(axis=1) - mean) < 4 * std / np.sqrt(600))
