"""Property-based tests: any input either works or fails with a clear error.

For random shapes, dtypes, scales, constant columns and targets, single rows
and features, multi-output targets, imbalanced and string labels, and NaN or
inf anywhere: fit and predict either succeed with finite output of the right
shape (probabilities summing to 1) or raise ValueError/TypeError whose message
names the problem.  Never a torch RuntimeError or a silent NaN.
"""

import warnings

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

SMALL = dict(hidden_layer_sizes=(5,), max_iter=2, random_state=0)
HYPER = dict(hyper_hidden_layer_sizes=(8,), noise_dim=3, n_predict_samples=3)
REGRESSORS = [HyperNetRegressor(**SMALL, **HYPER), SGDBaseline(**SMALL)]
CLASSIFIERS = [HyperNetClassifier(**SMALL, **HYPER), SGDBaselineClassifier(**SMALL)]
EXPECTED_MESSAGES = (
    "NaN",
    "infinity",
    "class",
    "sample",
    "feature",
    "dtype",
    "convert",
    "string",
    "Complex",
    "numeric",
)


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 25))
    d = draw(st.integers(1, 6))
    scale = 10.0 ** draw(st.integers(-8, 8))
    rng = np.random.RandomState(draw(st.integers(0, 2**16)))
    X = scale * rng.normal(size=(n, d))
    if draw(st.booleans()):
        X[:, draw(st.integers(0, d - 1))] = draw(st.floats(-1e3, 1e3))  # a constant column
    kind = draw(st.sampled_from(["float64", "float32", "int", "bool", "object"]))
    if kind == "float32":
        X = X.astype(np.float32)
    elif kind == "int":
        X = np.round(X).clip(-1e9, 1e9).astype(np.int64)
    elif kind == "bool":
        X = X > 0
    elif kind == "object":
        X = X.astype(object)
    if draw(st.integers(0, 4)) == 0:  # sometimes a NaN or inf somewhere
        X = X.astype(np.float64)
        X[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    return X, rng


def check_outcome(fit_and_predict):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            outcome = fit_and_predict()
        event("fitted and predicted")
        return outcome
    except (ValueError, TypeError) as error:
        message = str(error)
        event(f"{type(error).__name__}: {message[:40]}")
        assert any(word.lower() in message.lower() for word in EXPECTED_MESSAGES), message
        return None


@pytest.mark.parametrize("estimator", REGRESSORS, ids=lambda e: type(e).__name__)
@given(
    data=inputs(),
    n_targets=st.integers(1, 3),
    constant_target=st.booleans(),
    target_scale=st.integers(-8, 8),
)
def test_regressors_work_or_explain(estimator, data, n_targets, constant_target, target_scale):
    X, rng = data
    y = 10.0**target_scale * rng.normal(size=(len(X), n_targets))
    if constant_target:
        y[:] = 3.0
    y = y[:, 0] if n_targets == 1 else y

    def fit_and_predict():
        model = estimator.__class__(**estimator.get_params()).fit(X, y)
        mean, std = model.predict(X, return_std=True)
        return model, mean, std

    outcome = check_outcome(fit_and_predict)
    if outcome is not None:
        _, mean, std = outcome
        assert mean.shape == y.shape and std.shape == y.shape
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))


@pytest.mark.parametrize("estimator", CLASSIFIERS, ids=lambda e: type(e).__name__)
@given(
    data=inputs(),
    n_classes=st.integers(1, 4),
    strings=st.booleans(),
    imbalance=st.floats(0.0, 0.95),
)
def test_classifiers_work_or_explain(estimator, data, n_classes, strings, imbalance):
    X, rng = data
    y = rng.randint(0, n_classes, size=len(X))
    y[rng.uniform(size=len(X)) < imbalance] = 0
    if strings:
        y = np.array(["cat", "dog", "emu", "yak"])[y]

    def fit_and_predict():
        model = estimator.__class__(**estimator.get_params()).fit(X, y)
        return model, model.predict(X), model.predict_proba(X)

    outcome = check_outcome(fit_and_predict)
    if outcome is not None:
        model, predicted, proba = outcome
        assert predicted.shape == (len(X),)
        assert set(predicted) <= set(model.classes_)
        assert proba.shape == (len(X), len(model.classes_))
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@given(
    target_exponent=st.integers(-300, 153),
    feature_exponent=st.integers(-300, 300),
    weight_exponent=st.integers(-300, 308),
    estimator=st.sampled_from(REGRESSORS),
)
def test_extreme_scales_work_or_are_refused_clearly(
    target_exponent, feature_exponent, weight_exponent, estimator
):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(12, 2)) * 10.0**feature_exponent
    y = rng.normal(size=12) * 10.0**target_exponent
    weights = np.full(12, 10.0**weight_exponent)
    model = clone(estimator)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y, sample_weight=weights)
    except ValueError as error:
        event("refused")
        assert "float32 range" in str(error) or "rescale the targets" in str(error)
        assert 10.0**feature_exponent > 1e37 or abs(target_exponent) > 150
        return
    event("fitted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean, std = model.predict(X, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)


@given(
    sizes=st.lists(
        st.one_of(
            st.integers(-3, 6),
            st.floats(allow_nan=True, allow_infinity=True),
            st.none(),
            st.booleans(),
            st.text(max_size=2),
        ),
        max_size=3,
    )
)
def test_layer_sizes_are_positive_integers_or_a_clear_error(sizes):
    X, y = np.random.RandomState(0).normal(size=(10, 2)), np.arange(10.0)
    model = HyperNetRegressor(hidden_layer_sizes=sizes, max_iter=1, random_state=0)
    valid = all(
        not isinstance(s, (bool, str))
        and s is not None
        and np.isfinite(s)
        and s >= 1
        and s == int(s)
        for s in sizes
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
    except ValueError as error:
        assert "hidden_layer_sizes" in str(error)
        # Valid sizes are refused only when the network cannot be allocated.
        assert not valid or "more than this machine has" in str(error)
        return
    assert valid
