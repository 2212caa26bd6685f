"""Behaviour of the four estimators beyond scikit-learn's generic checks."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)
from skhypernet._base import resolve_batch_size

REGRESSORS = [HyperNetRegressor, SGDBaseline]
CLASSIFIERS = [HyperNetClassifier, SGDBaselineClassifier]
ALL = REGRESSORS + CLASSIFIERS
FAST = dict(max_iter=15, random_state=0)


def regression_data(n=120, n_targets=1, seed=0):
    X, y = make_regression(
        n_samples=n, n_features=5, n_targets=n_targets, noise=1.0, random_state=seed
    )
    return X, y


def classification_data(n=120, n_classes=3, seed=0):
    return make_classification(
        n_samples=n,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        random_state=seed,
    )


def data_for(cls, **kwargs):
    return classification_data(**kwargs) if cls in CLASSIFIERS else regression_data(**kwargs)


def predictions(model, X):
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


@pytest.mark.parametrize("cls", ALL)
def test_fit_returns_self_and_sets_fitted_attributes(cls):
    X, y = data_for(cls)
    model = cls(early_stopping=False, **FAST)
    assert model.fit(X, y) is model
    assert model.n_features_in_ == 5
    assert model.n_iter_ == len(model.loss_curve_) >= 1
    assert all(np.isfinite(model.loss_curve_))
    assert model.t_ == model.n_iter_ * len(X)
    assert isinstance(model.network_, torch.nn.Module)
    assert not hasattr(model, "feature_names_in_")
    if cls in CLASSIFIERS:
        np.testing.assert_array_equal(model.classes_, [0, 1, 2])


@pytest.mark.parametrize("cls", ALL)
def test_feature_names_from_dataframe(cls):
    pd = pytest.importorskip("pandas")
    X, y = data_for(cls)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    model = cls(**FAST).fit(frame, pd.Series(y, name="target"))
    np.testing.assert_array_equal(model.feature_names_in_, frame.columns)
    with pytest.warns(UserWarning, match="feature names"):
        from_array = predictions(model, X)
    np.testing.assert_allclose(predictions(model, frame), from_array)
    renamed = frame.rename(columns={"f0": "other"})
    with pytest.raises(ValueError, match="feature names"):
        predictions(model, renamed)


@pytest.mark.parametrize("cls", ALL)
def test_unfitted_model_raises_not_fitted(cls):
    with pytest.raises(NotFittedError):
        cls().predict(np.zeros((2, 3)))


def test_multi_output_regression():
    X, y = regression_data(n_targets=3)
    for cls in REGRESSORS:
        model = cls(max_iter=200, n_iter_no_change=30, random_state=0).fit(X, y)
        assert model.predict(X).shape == (120, 3)
        assert model.n_outputs_ == 3
        assert model.score(X, y) > 0.8


@pytest.mark.parametrize("cls", REGRESSORS)
def test_targets_standardised_internally(cls):
    X, y = regression_data()
    base = cls(**FAST).fit(X, y).predict(X)
    shifted = cls(**FAST).fit(X, 1e6 * y + 3e7).predict(X)
    np.testing.assert_allclose(shifted, 1e6 * base + 3e7, rtol=1e-4)


@pytest.mark.parametrize("cls", CLASSIFIERS)
@pytest.mark.parametrize("labels", [["no", "yes"], ["a", "b", "c"], [-1, 7]])
def test_any_label_type(cls, labels):
    X, y = classification_data(n_classes=len(labels))
    y_labels = np.asarray(labels)[y]
    model = cls(max_iter=30, random_state=0).fit(X, y_labels)
    assert set(model.predict(X)) <= set(labels)
    assert list(model.classes_) == sorted(labels)
    proba = model.predict_proba(X)
    assert proba.shape == (120, len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(proba))
    assert model.score(X, y_labels) > 0.7


def test_batch_size_rules():
    assert resolve_batch_size("auto", 1000) == 32
    assert resolve_batch_size("auto", 10) == 10
    # The paper's 5,000 points of a data set are 4,500 training rows of its splits.
    assert resolve_batch_size("paper", 4500) == 1
    assert resolve_batch_size("paper", 4501) == 512
    assert resolve_batch_size(64, 10) == 10
    X, y = regression_data(n=40)
    model = HyperNetRegressor(batch_size="paper", max_iter=2, random_state=0).fit(X, y)
    assert model.n_iter_ == 2


@pytest.mark.parametrize("cls", ALL)
def test_random_state_makes_fit_and_predict_bit_for_bit_repeatable(cls):
    X, y = data_for(cls)
    torch_state = torch.random.get_rng_state()
    # The legacy global state is the one that must stay untouched.
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002
    first = cls(**FAST).fit(X, y)
    second = cls(**FAST).fit(X, y)
    np.testing.assert_array_equal(predictions(first, X), predictions(second, X))
    np.testing.assert_array_equal(first.loss_curve_, second.loss_curve_)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002


@pytest.mark.parametrize("cls", ALL)
def test_random_state_none_gives_fresh_draws(cls):
    X, y = data_for(cls)
    first = cls(max_iter=3).fit(X, y)
    second = cls(max_iter=3).fit(X, y)
    assert not np.array_equal(predictions(first, X), predictions(second, X))


@pytest.mark.parametrize("cls", ALL)
def test_prediction_is_row_wise_and_repeatable(cls):
    X, y = data_for(cls)
    model = cls(**FAST).fit(X, y)
    full = predictions(model, X)
    np.testing.assert_array_equal(predictions(model, X), full)
    order = np.random.RandomState(0).permutation(len(X))
    # Other rows change only the float64 rounding (kernels sum in another order).
    np.testing.assert_allclose(predictions(model, X[order]), full[order], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(predictions(model, X[5:6]), full[5:6], rtol=1e-12, atol=1e-14)


def test_prediction_averages_n_predict_samples():
    X, y = regression_data()
    model = HyperNetRegressor(n_predict_samples=1, **FAST).fit(X, y)
    one = model.predict(X)
    model.set_params(n_predict_samples=200)
    many = model.predict(X)
    assert not np.allclose(one, many)
    # Averaging more samples gives a smoother (here: better) predictor.
    assert np.mean((many - y) ** 2) < np.mean((one - y) ** 2)


@pytest.mark.parametrize("cls", ALL)
def test_partial_fit_runs_one_epoch_per_call(cls):
    X, y = data_for(cls)
    model = cls(random_state=0)
    kwargs = {"classes": np.unique(y)} if cls in CLASSIFIERS else {}
    model.partial_fit(X, y, **kwargs)
    assert model.n_iter_ == 1
    model.partial_fit(X[:60], y[:60])
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    assert model.t_ == 180


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_classifier_partial_fit_needs_classes_first(cls):
    X, y = classification_data()
    with pytest.raises(ValueError, match="classes must be passed"):
        cls().partial_fit(X, y)
    model = cls(random_state=0).partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    assert model.predict_proba(X).shape == (120, 3)
    with pytest.raises(ValueError, match="not in classes_"):
        model.partial_fit(X, y + 5)


@pytest.mark.parametrize("cls", ALL)
def test_warm_start_continues_training(cls):
    X, y = data_for(cls)
    model = cls(warm_start=True, max_iter=5, tol=0, random_state=0).fit(X, y)
    weights = [p.detach().clone() for p in model.network_.parameters()]
    model.fit(X, y)
    assert model.n_iter_ == 10 and len(model.loss_curve_) == 10
    cold = cls(max_iter=5, tol=0, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 5
    # A cold refit starts from the same initial weights as the first fit did.
    assert not all(torch.equal(a, b) for a, b in zip(weights, model.network_.parameters()))


@pytest.mark.parametrize("cls", ALL)
def test_early_stopping_keeps_best_validation_score(cls):
    X, y = data_for(cls, n=200)
    model = cls(early_stopping=True, max_iter=60, n_iter_no_change=3, tol=0.01, random_state=0)
    model.fit(X, y)
    assert model.best_loss_ is None
    assert len(model.validation_scores_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.n_iter_ < 60
    # As in scikit-learn's MLP, partial_fit ignores early_stopping: every row trains.
    seen = model.t_
    model.partial_fit(X, y)
    assert model.t_ == seen + len(X)
    assert model.validation_scores_ is None


@pytest.mark.parametrize("cls", ALL)
def test_early_stopping_auto_holds_out_rows_where_there_are_enough(cls):
    X, y = data_for(cls, n=200)
    model = cls(**FAST).fit(X, y)
    # 20 validation rows: held out, as with early_stopping=True.
    assert len(model.validation_scores_) == model.n_iter_
    assert model.t_ == model.n_iter_ * (len(X) - 20)
    # 9 validation rows are too few to judge by: every row trains.
    small = cls(**FAST).fit(X[:90], y[:90])
    assert small.validation_scores_ is None
    assert small.t_ == small.n_iter_ * 90
    # From 91 rows (10 % rounded up is 10) it holds out rows: the documented boundary.
    assert cls(**FAST).fit(X[:91], y[:91]).validation_scores_ is not None
    assert cls(early_stopping=False, **FAST).fit(X, y).validation_scores_ is None


def test_early_stopping_auto_trains_on_every_row_where_a_stratified_split_fails():
    X, y = data_for(HyperNetClassifier, n=200)
    y = y.copy()
    y[0] = 7  # a class with a single row cannot be stratified
    model = SGDBaselineClassifier(**FAST).fit(X, y)
    assert model.validation_scores_ is None
    with pytest.raises(ValueError, match="least populated class"):
        SGDBaselineClassifier(early_stopping=True, **FAST).fit(X, y)


def test_classifier_validation_score_is_the_log_likelihood():
    X, y = data_for(HyperNetClassifier, n=200)
    model = SGDBaselineClassifier(early_stopping=True, **FAST).fit(X, y)
    assert all(score < 0 for score in model.validation_scores_)


def test_stopping_rule_and_convergence_warning():
    X, y = regression_data()
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        HyperNetRegressor(max_iter=3, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = SGDBaseline(max_iter=500, tol=10.0, n_iter_no_change=2).fit(X, y)
    # The first epoch improves on nothing; 3 more without improvement stop it.
    assert model.n_iter_ == 4


@pytest.mark.parametrize("cls", ALL)
def test_sample_weight(cls):
    X, y = data_for(cls)
    weights = np.ones(len(X))
    unweighted = predictions(cls(**FAST).fit(X, y), X)
    np.testing.assert_array_equal(
        predictions(cls(**FAST).fit(X, y, sample_weight=weights), X), unweighted
    )
    # Doubling every weight changes nothing: weights are normalised globally.
    np.testing.assert_array_equal(
        predictions(cls(**FAST).fit(X, y, sample_weight=2 * weights), X), unweighted
    )
    weights[:60] = 0
    assert not np.allclose(
        predictions(cls(**FAST).fit(X, y, sample_weight=weights), X), unweighted
    )
    for bad, message in [
        (np.full(len(X), np.nan), "NaN"),
        (-weights, "[Nn]egative"),
        (np.zeros(len(X)), "non-zero|positive"),
        (np.ones(3), "shape|samples"),
    ]:
        with pytest.raises(ValueError, match=message):
            cls(**FAST).fit(X, y, sample_weight=bad)


def test_sample_weight_moves_the_regression_fit():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 1))
    y = np.where(np.arange(200) < 100, 0.0, 10.0)  # the same X, two target levels
    weights = np.where(np.arange(200) < 100, 1.0, 0.1)
    model = SGDBaseline(max_iter=50, random_state=0).fit(X, y, sample_weight=weights)
    assert model.predict(X).mean() < 3.0


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    "bad_X, error, message",
    [
        (np.array([[np.nan, 1.0, 2.0, 3.0, 4.0]] * 10), ValueError, "NaN"),
        (np.array([[np.inf, 1.0, 2.0, 3.0, 4.0]] * 10), ValueError, "infinity"),
        (np.array([["a", "b", "c", "d", "e"]] * 10), ValueError, "convert|string"),
        (np.empty((0, 5)), ValueError, "0 sample"),
        (sp.csr_matrix(np.ones((10, 5))), TypeError, "[Ss]parse"),
    ],
    ids=["nan", "inf", "strings", "empty", "sparse"],
)
def test_bad_input_raises_clear_errors(cls, bad_X, error, message):
    y = np.arange(bad_X.shape[0]) % 2
    with pytest.raises(error, match=message):
        cls(**FAST).fit(bad_X, y)


@pytest.mark.parametrize("cls", ALL)
def test_wrong_feature_count_at_predict(cls):
    X, y = data_for(cls)
    model = cls(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 5), np.nan))


def test_invalid_parameters_are_reported():
    X, y = regression_data()
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        HyperNetRegressor(hidden_layer_sizes=(10, 0)).fit(X, y)
    with pytest.raises(ValueError, match="hyper_hidden_layer_sizes"):
        HyperNetRegressor(hyper_hidden_layer_sizes=(-3,)).fit(X, y)
    with pytest.raises(ValueError, match="hyper_dropout"):
        HyperNetRegressor(hyper_dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="batch_size"):
        SGDBaseline(batch_size="huge").fit(X, y)


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    X, y = regression_data()
    with pytest.raises(ValueError, match="CUDA is not available"):
        HyperNetRegressor(device="cuda").fit(X, y)


@pytest.mark.parametrize("cls", ALL)
def test_pickle_round_trip_gives_identical_predictions(cls):
    X, y = data_for(cls)
    model = cls(warm_start=True, **FAST).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(predictions(restored, X), predictions(model, X))
    # Training continues identically after a round trip.
    model.fit(X, y)
    restored.fit(X, y)
    np.testing.assert_array_equal(predictions(restored, X), predictions(model, X))


def _walk(obj):
    yield obj
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _walk(value)


@pytest.mark.parametrize("cls", ALL)
def test_pickled_state_holds_no_torch_objects(cls):
    # What a GPU-fitted model pickles therefore loads without CUDA.
    X, y = data_for(cls)
    state = cls(early_stopping=True, **FAST).fit(X, y).__getstate__()
    assert not any(
        isinstance(value, (torch.Tensor, torch.nn.Module, torch.Generator))
        for value in _walk(state)
    )
    assert isinstance(state["network_"]["parameters"], dict)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fitted_model_loads_on_cpu():
    X, y = regression_data()
    model = HyperNetRegressor(device="cuda", **FAST).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.network_.device.type == "cpu"
    np.testing.assert_allclose(restored.predict(X), model.predict(X), rtol=1e-5)


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = regression_data()
    HyperNetRegressor(verbose=1, max_iter=3, random_state=0).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 3 and "loss = " in lines[0]


def test_verbose_2_shows_a_progress_bar_with_eta(capsys):
    X, y = regression_data()
    HyperNetRegressor(verbose=2, max_iter=4, n_iter_no_change=np.inf, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert err.count("\r[") == 4 and "4/4" in err and "ETA" in err
    assert err.endswith("\n")


def test_iris_classification_scores_well():
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    for cls in CLASSIFIERS:
        assert cls(random_state=0).fit(X, y).score(X, y) > 0.9


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_validation_r2_is_sklearns_r2_score(n_outputs):
    # The score compared after every epoch skips r2_score's input checks
    # (about a tenth of a small fit's time) and must still be that score.
    from sklearn.metrics import r2_score

    from skhypernet.regression import weighted_r2

    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, n_outputs))
    predicted = y + rng.normal(scale=0.5, size=y.shape)
    weights = rng.uniform(0, 2, size=40)
    weights[:5] = 0.0
    cases = [(y, predicted), (y, y)]
    constant = np.ones_like(y)
    cases += [(constant, constant), (constant, predicted)]
    for truth, guess in cases:
        for w in [weights, np.ones(40)]:
            expected = r2_score(truth, guess, sample_weight=w)
            assert weighted_r2(truth, truth - guess, w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_validation_log_likelihood_is_minus_sklearns_log_loss(n_classes):
    from sklearn.metrics import log_loss

    from skhypernet.classification import mean_log_likelihood

    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(30, n_classes))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    # Certain and impossible predictions are clipped as log_loss clips them.
    probabilities[0] = np.eye(n_classes)[0]
    labels = rng.integers(n_classes, size=30)
    labels[0] = 1
    weights = rng.uniform(0, 2, size=30)
    for w in [weights, np.ones(30)]:
        expected = -log_loss(labels, probabilities, sample_weight=w, labels=range(n_classes))
        assert mean_log_likelihood(probabilities, labels, w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cls", ALL)
def test_views_with_negative_strides_are_accepted(cls):
    # X[::-1] is a view with a negative stride, which torch.tensor refuses:
    # predict crashed inside torch on such float64 input.
    X, y = data_for(cls, n=60)
    model = cls(**FAST).fit(X[::-1], y[::-1])
    np.testing.assert_array_equal(predictions(model, X[::-1]), predictions(model, X[::-1].copy()))
    if cls in REGRESSORS:
        np.testing.assert_array_equal(
            model.predict(X[::-1], return_std=True)[1],
            model.predict(X[::-1].copy(), return_std=True)[1],
        )


@pytest.mark.parametrize("cls", ALL)
def test_sparse_targets_are_refused_clearly(cls):
    X, y = data_for(cls)
    with pytest.raises(ValueError, match="y must be dense"):
        cls(max_iter=1).fit(X, sp.csr_matrix(np.reshape(y, (-1, 1)).astype(float)))


@pytest.mark.parametrize("cls", ALL)
def test_datetime_columns_are_named(cls):
    pd = pytest.importorskip("pandas")
    X, y = data_for(cls)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["when"] = pd.date_range("2020-01-01", periods=len(frame))
    with pytest.raises(ValueError, match=r"datetime or timedelta columns \['when'\]"):
        cls(max_iter=1).fit(frame, y)


def test_object_labels_mixing_number_types_are_named():
    X, _ = classification_data(n=40)
    y = np.array([1, 2.0] * 20, dtype=object)
    with pytest.raises(ValueError, match="mix number types"):
        HyperNetClassifier(max_iter=1).fit(X, y)


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_log_probabilities_stay_finite_where_probabilities_underflow(cls):
    X, y = classification_data(n=120, n_classes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = cls(max_iter=60, learning_rate_init=0.1, random_state=0).fit(100 * X, y)
    log_proba = model.predict_log_proba(100 * X)
    assert np.all(np.isfinite(log_proba))
    proba = model.predict_proba(100 * X)
    normal = proba > 1e-300
    np.testing.assert_allclose(log_proba[normal], np.log(proba[normal]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls", ALL)
def test_unknown_constructor_arguments_name_the_public_class(cls):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}\.__init__\(\) got an unexpected"):
        cls(colour=3)
