"""Parameters fixed when the network is built: clear errors, never silent."""

import copy
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skhypernet import HyperNetClassifier, HyperNetRegressor, SGDBaseline


def data(n=30, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    return X, X[:, 0] + 0.1 * rng.normal(size=n)


def fitted(cls=HyperNetRegressor, **params):
    X, y = data()
    if cls is HyperNetClassifier:
        y = y > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(max_iter=2, warm_start=True, random_state=0, **params).fit(X, y)


@pytest.mark.parametrize("value", [(np.nan,), (np.inf,), (None,), [[3, 4]], (0,), (2.5,), (True,)])
@pytest.mark.parametrize("name", ["hidden_layer_sizes", "hyper_hidden_layer_sizes"])
def test_invalid_layer_sizes_are_named(name, value):
    X, y = data()
    with pytest.raises(ValueError, match=f"{name} must contain positive integers"):
        HyperNetRegressor(max_iter=1, **{name: value}).fit(X, y)


CHANGES = [
    ("hidden_layer_sizes", (7,)),
    ("noise_dim", 3),
    ("hyper_hidden_layer_sizes", (10,)),
    ("hyper_dropout", 0.1),
    ("hyper_activation", "leaky_relu"),
    ("input_noise", 0.0),
    ("loss", "gaussian_nll"),
]


@pytest.mark.parametrize("name, value", CHANGES)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_warm_start_and_partial_fit_refuse_changed_architecture(name, value, method):
    model = fitted()
    before = model.predict(data()[0])
    model.set_params(**{name: value})
    X, y = data()
    with pytest.raises(ValueError, match=f"{name} changed since"):
        getattr(model, method)(X, y)
    # The fitted model is untouched and still predicts as before.
    np.testing.assert_array_equal(model.predict(X), before)


def test_changing_the_loss_after_fit_affects_only_the_next_fit():
    model = fitted(SGDBaseline)
    X, y = data()
    mean, std = model.predict(X, return_std=True)
    model.set_params(loss="gaussian_nll", warm_start=False)
    np.testing.assert_array_equal(model.predict(X, return_std=True)[1], std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert model.noise_variance_ is None
    assert np.all(np.isfinite(model.predict(X, return_std=True)[1]))


def test_parameters_that_do_not_shape_the_network_may_change():
    model = fitted(HyperNetClassifier)
    X, y = data()
    model.set_params(kl_weight=0.1, learning_rate_init=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y > 0)
    assert model.n_iter_ == 4


@pytest.mark.parametrize(
    "case, message", [("not converged", "maximum iterations"), ("diverged", "diverged")]
)
def test_convergence_warnings_point_at_the_callers_line(case, message):
    X, y = data()
    if case == "diverged":  # raised inside the training engine
        model, X = HyperNetRegressor(learning_rate_init=1e6, max_iter=20, random_state=0), 1e6 * X
    else:
        model = HyperNetRegressor(max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning, match=message) as record:
        model.fit(X, y)
    assert record[0].filename == __file__


@pytest.mark.parametrize("factor", [1e39, 1e300])
def test_features_beyond_float32_are_refused(factor):
    X, y = data()
    with pytest.raises(ValueError, match="beyond the float32 range"):
        HyperNetRegressor(max_iter=1).fit(factor * X, y)


@pytest.mark.parametrize("factor", [1e200, 1e307])
def test_targets_whose_variance_overflows_are_refused(factor):
    X, y = data()
    with pytest.raises(ValueError, match="rescale the targets"):
        HyperNetRegressor(max_iter=1).fit(X, factor * y)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no overflow on the way either
@pytest.mark.parametrize("cls", [HyperNetRegressor, SGDBaseline])
def test_large_but_representable_targets_and_weights_give_finite_predictions(cls):
    X, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        big_targets = cls(max_iter=3, random_state=0).fit(X, 1e150 * y)
        big_weights = cls(max_iter=3, random_state=0).fit(X, y, sample_weight=np.full(30, 1e308))
    for model in (big_targets, big_weights):
        mean, std = model.predict(X, return_std=True)
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    # Weights that are all equal, however large, change nothing.
    reference = fitted(cls).set_params(max_iter=3, warm_start=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(X, y)
    np.testing.assert_allclose(big_weights.predict(X), reference.predict(X), rtol=1e-6)


@pytest.mark.parametrize("n_samples", [-1, 0, 2.5, True])
def test_sample_weights_refuses_a_bad_count(n_samples):
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        fitted().sample_weights(n_samples)


def test_mixed_label_types_are_named():
    X, _ = data()
    y = np.array(["a", 1] * 15, dtype=object)
    with pytest.raises(ValueError, match="Mix of label input types"):
        HyperNetClassifier(max_iter=1).fit(X, y)


@pytest.mark.parametrize("cls", [HyperNetRegressor, SGDBaseline, HyperNetClassifier])
def test_a_runaway_fit_warns_even_when_every_loss_is_finite(cls):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=100)
    if cls is HyperNetClassifier:
        y = y > 0
    with pytest.warns(ConvergenceWarning, match="not found a useful fit") as record:
        cls(learning_rate_init=10.0, max_iter=20, early_stopping=False, random_state=0).fit(X, y)
    assert any(r.filename == __file__ for r in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        cls(max_iter=50, n_iter_no_change=5, early_stopping=False, random_state=0).fit(X, y)


def restored(model, tamper):
    """``model`` rebuilt from its saved state after ``tamper(state)``."""
    state = copy.deepcopy(model.__getstate__())
    tamper(state)
    clone = type(model).__new__(type(model))
    clone.__setstate__(state)
    return clone


def test_untampered_state_restores():
    model = fitted()
    X, _ = data()
    np.testing.assert_array_equal(restored(model, lambda state: None).predict(X), model.predict(X))


@pytest.mark.parametrize(
    "cls, tamper, message",
    [
        (
            HyperNetRegressor,
            lambda s: s.update(target_mean_=np.zeros(3)),
            r"\['target_mean_'\] do not have shape",
        ),
        (
            HyperNetClassifier,
            lambda s: s.update(classes_=np.arange(5)),
            "classes_ holds 5 classes but its network has 2 outputs",
        ),
        (
            HyperNetRegressor,
            lambda s: s["network_"].update(shapes=[[20000, 20000], [20000, 1]]),
            "do not have the shapes its architecture implies",
        ),
        (
            HyperNetRegressor,
            lambda s: s["network_"].update(shapes=[[3, 50], [7, 1]]),
            "do not form a network",
        ),
        (HyperNetRegressor, lambda s: s.update(n_features_in_=4), "takes 3 inputs"),
    ],
)
def test_tampered_saved_state_is_refused(cls, tamper, message):
    with pytest.raises(ValueError, match=message):
        restored(fitted(cls), tamper)


@pytest.mark.parametrize("cls", [HyperNetRegressor, HyperNetClassifier])
def test_a_rows_prediction_depends_on_other_rows_only_through_rounding(cls):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 8))
    y = X @ rng.normal(size=8)
    if cls is HyperNetClassifier:
        y = y > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = cls(max_iter=3, random_state=0).fit(X, y)
    predict = model.predict_proba if cls is HyperNetClassifier else model.predict
    np.testing.assert_allclose(predict(X)[:5], predict(X[:5]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(predict(X)[7], predict(X[7:8])[0], rtol=1e-12, atol=1e-14)


def test_tiny_targets_give_a_finite_standard_deviation():
    X, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HyperNetRegressor(max_iter=2, random_state=0).fit(X, 1e-300 * y)
    mean, std = model.predict(X, return_std=True)
    assert np.all(np.isfinite(std)) and np.all(std > 0)
    assert np.all(np.isfinite(model.sample_y(X, n_samples=2, random_state=0)))


def test_red_team_pass_finds_no_silent_wrong_result_crash_or_data_loss():
    from skhypernet.benchmarks import red_team

    counts = red_team.measure(seed=0)
    assert set(counts) == {
        "bad data",
        "bad parameters",
        "tampered saved state",
        "failed refits and predictions",
        "command-line files",
        "benchmark results files",
    }
    for category, tally in counts.items():
        assert sum(tally.values()) >= 6, category
        for outcome in ("silent wrong", "crash", "data loss"):
            assert tally[outcome] == 0, (category, outcome, tally)


def test_tampered_skops_file_is_refused_on_load(tmp_path):
    skops_io = pytest.importorskip("skops.io")
    import skhypernet

    model = fitted()
    model.target_mean_ = np.zeros(3)  # what an edited file would hold
    path = tmp_path / "model.skops"
    skops_io.dump(model, path)
    with pytest.raises(ValueError, match="do not have shape"):
        skops_io.load(path, trusted=skhypernet.SKOPS_TRUSTED_TYPES)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("target_scale_", [-5.0], "target_scale_ must hold finite positive"),
        ("target_scale_", [np.nan], "target_scale_ must hold finite positive"),
        ("target_mean_", [np.inf], "target_mean_ must hold finite"),
        ("noise_variance_", [-1.0], "noise_variance_ must hold finite positive"),
        ("noise_variance_", [123.0], "disagrees with the noise the model predicts with"),
    ],
)
def test_tampered_values_are_refused_on_load(tmp_path, name, value, message):
    skops_io = pytest.importorskip("skops.io")
    import skhypernet

    model = fitted()
    setattr(model, name, np.array(value))
    path = tmp_path / "model.skops"
    skops_io.dump(model, path)
    with pytest.raises(ValueError, match=message):
        skops_io.load(path, trusted=skhypernet.SKOPS_TRUSTED_TYPES)
