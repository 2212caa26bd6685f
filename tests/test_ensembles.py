"""Ensembles: ``n_members`` networks trained in one pass, their predictions pooled."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning

import skhypernet
from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)
from skhypernet._base import fit_in_lockstep

REGRESSORS = [HyperNetRegressor, SGDBaseline]
CLASSIFIERS = [HyperNetClassifier, SGDBaselineClassifier]
ALL = REGRESSORS + CLASSIFIERS


def data_for(cls, n=120, n_targets=1):
    if cls in CLASSIFIERS:
        return make_classification(
            n_samples=n, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
        )
    return make_regression(
        n_samples=n, n_features=5, n_targets=n_targets, noise=5.0, random_state=0
    )


def quietly(method, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return method(*args, **kwargs)


def ensemble(cls, n_members=3, **params):
    return cls(n_members=n_members, **{"max_iter": 6, "random_state": 0, **params})


@pytest.mark.parametrize("cls", ALL)
def test_members_are_separate_fits_that_differ_in_seed_only(cls):
    X, y = data_for(cls)
    model = quietly(ensemble(cls, early_stopping=False).fit, X, y)
    assert len(model.estimators_) == 3 and not hasattr(model, "network_")
    seeds = [member.random_state for member in model.estimators_]
    assert len(set(seeds)) == 3
    for member in model.estimators_:
        assert member.n_members == 1
        alone = quietly(clone(member).fit, X, y)
        # One pass of the engine for all: batched products round differently.
        np.testing.assert_allclose(member.loss_curve_, alone.loss_curve_, rtol=1e-4)
    assert model.n_iter_ == 6
    np.testing.assert_allclose(
        model.loss_curve_, np.mean([m.loss_curve_ for m in model.estimators_], axis=0)
    )


@pytest.mark.parametrize("cls", ALL)
def test_members_share_validation_rows_and_keep_their_own_best_epoch(cls, monkeypatch):
    import skhypernet._base as base

    splits = []
    original = base.train_test_split

    def recording_split(*arrays, **options):
        result = original(*arrays, **options)
        splits.append(result[1])  # the validation rows of X
        return result

    monkeypatch.setattr(base, "train_test_split", recording_split)
    X, y = data_for(cls, n=200)
    model = quietly(ensemble(cls, early_stopping=True, max_iter=30, n_iter_no_change=2).fit, X, y)
    assert len(splits) == 3
    for validation_rows in splits[1:]:
        np.testing.assert_array_equal(validation_rows, splits[0])
    for member in model.estimators_:
        assert member.best_validation_score_ == max(member.validation_scores_)
    assert model.n_iter_ == max(member.n_iter_ for member in model.estimators_)
    assert model.best_validation_score_ == pytest.approx(
        np.mean([member.best_validation_score_ for member in model.estimators_])
    )


@pytest.mark.parametrize("cls", REGRESSORS)
@pytest.mark.parametrize("n_targets", [1, 2])
def test_regression_pools_the_members_as_a_mixture(cls, n_targets):
    X, y = data_for(cls, n_targets=n_targets)
    model = quietly(ensemble(cls).fit, X, y)
    mean, std = model.predict(X, return_std=True)
    parts = [member.predict(X, return_std=True) for member in model.estimators_]
    means = np.array([m for m, _ in parts])
    variances = np.array([s**2 for _, s in parts])
    np.testing.assert_allclose(mean, means.mean(axis=0), rtol=1e-10, atol=1e-8)
    # The mixture's variance: mean of (member variance + member mean^2) - mean^2.
    pooled = (variances + means**2).mean(axis=0) - mean**2
    np.testing.assert_allclose(std**2, pooled, rtol=1e-6, atol=1e-6 * np.var(y))
    np.testing.assert_allclose(
        model.noise_variance_, np.mean([m.noise_variance_ for m in model.estimators_], axis=0)
    )
    draws = model.sample_y(X[:4], n_samples=300, random_state=0)
    assert draws.shape == ((4, 300) if n_targets == 1 else (4, n_targets, 300))
    np.testing.assert_array_equal(draws, model.sample_y(X[:4], n_samples=300, random_state=0))


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_classification_averages_the_members_probabilities(cls):
    X, y = data_for(cls)
    model = quietly(ensemble(cls).fit, X, y)
    members = np.array([member.predict_proba(X) for member in model.estimators_])
    np.testing.assert_allclose(model.predict_proba(X), members.mean(axis=0), rtol=1e-10)
    samples = model.predict_proba_samples(X)
    per_member = model.estimators_[0].predict_proba_samples(X).shape[0]
    assert samples.shape == (3 * per_member, 120, 3)
    np.testing.assert_allclose(samples.mean(axis=0), model.predict_proba(X), rtol=1e-8)
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])


def test_hypernetwork_weight_samples_come_from_every_member():
    X, y = data_for(HyperNetRegressor)
    model = quietly(ensemble(HyperNetRegressor).fit, X, y)
    coefs, intercepts = model.sample_weights(60, random_state=0)
    assert coefs[0].shape == (60, 5, 50) and intercepts[-1].shape == (60, 1)
    # Each drawn network's output layer bias lies on one member's distribution:
    # members' constant parts differ, so draws cluster around three centres.
    own = [m.sample_weights(200, random_state=1)[1][-1][:, 0] for m in model.estimators_]
    nearest = [
        np.argmin([abs(bias - centre.mean()) for centre in own]) for bias in intercepts[-1][:, 0]
    ]
    assert len(set(nearest)) == 3
    again = model.sample_weights(60, random_state=0)
    np.testing.assert_array_equal(coefs[0], again[0][0])


def test_pooled_weight_diffusion_stays_above_the_members_own():
    X, y = data_for(HyperNetRegressor)
    model = quietly(ensemble(HyperNetRegressor, max_iter=8, early_stopping=False).fit, X, y)
    assert model.weight_diffusion_.shape == (8, 2)
    np.testing.assert_array_equal(
        model.weight_diffusion_steps_, model.estimators_[0].weight_diffusion_steps_
    )
    for member in model.estimators_:
        # Between members the weights differ whatever each one's own spread.
        assert model.initial_weight_diffusion_ > member.initial_weight_diffusion_
        assert model.weight_diffusion_[-1, 0] > member.weight_diffusion_[-1, 0]
    assert not hasattr(quietly(ensemble(SGDBaseline).fit, X, y), "weight_diffusion_")


@pytest.mark.parametrize("cls", ALL)
def test_ensembles_survive_pickle_and_skops(cls, tmp_path):
    X, y = data_for(cls)
    model = quietly(ensemble(cls, n_members=2).fit, X, y)
    method = "predict_proba" if cls in CLASSIFIERS else "predict"
    expected = getattr(model, method)(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(getattr(restored, method)(X), expected)
    skops_io = pytest.importorskip("skops.io")
    path = tmp_path / "model.skops"
    skops_io.dump(model, path)
    loaded = skops_io.load(path, trusted=skhypernet.SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(getattr(loaded, method)(X), expected)


def test_a_restored_ensemble_with_members_missing_is_refused():
    X, y = data_for(SGDBaseline)
    model = quietly(ensemble(SGDBaseline).fit, X, y)
    state = model.__getstate__()
    state["estimators_"] = state["estimators_"][:2]
    with pytest.raises(ValueError, match="n_members=3"):
        SGDBaseline().__setstate__(state)


@pytest.mark.parametrize("cls", ALL)
def test_warm_start_continues_every_member(cls):
    X, y = data_for(cls)
    model = quietly(ensemble(cls, warm_start=True, max_iter=3, tol=0).fit, X, y)
    first_members = list(model.estimators_)
    quietly(model.fit, X, y)
    assert model.estimators_ == first_members
    assert model.n_iter_ == 6 and len(model.loss_curve_) == 6
    assert all(member.n_iter_ == 6 for member in model.estimators_)
    model.set_params(n_members=2)
    with pytest.raises(ValueError, match="n_members"):
        model.fit(X, y)


@pytest.mark.parametrize("cls", ALL)
def test_partial_fit_trains_every_member(cls):
    X, y = data_for(cls)
    model = ensemble(cls)
    extra = {"classes": np.unique(y)} if cls in CLASSIFIERS else {}
    model.partial_fit(X[:60], y[:60], **extra)
    model.partial_fit(X[60:], y[60:])
    assert model.n_iter_ == 2
    assert all(member.n_iter_ == 2 for member in model.estimators_)


@pytest.mark.parametrize("cls", ALL)
def test_refitting_with_another_number_of_members_starts_afresh(cls):
    X, y = data_for(cls)
    model = quietly(ensemble(cls).fit, X, y)
    quietly(model.set_params(n_members=1).fit, X, y)
    assert not hasattr(model, "estimators_") and hasattr(model, "network_")
    single = quietly(cls(max_iter=6, random_state=0).fit, X, y)
    np.testing.assert_array_equal(model.loss_curve_, single.loss_curve_)
    quietly(model.set_params(n_members=2).fit, X, y)
    assert len(model.estimators_) == 2 and not hasattr(model, "network_")


def test_ensembles_are_repeatable():
    X, y = data_for(HyperNetRegressor)
    first = quietly(ensemble(HyperNetRegressor).fit, X, y).predict(X)
    second = quietly(ensemble(HyperNetRegressor).fit, X, y).predict(X)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("value", [0, -1, 1.5, "5"])
def test_n_members_must_be_a_positive_integer(value):
    X, y = data_for(SGDBaseline)
    with pytest.raises(ValueError, match="n_members"):
        SGDBaseline(n_members=value).fit(X, y)


def test_fit_in_lockstep_refuses_ensembles():
    X, y = data_for(SGDBaseline)
    with pytest.raises(ValueError, match="n_members=1"):
        fit_in_lockstep([SGDBaseline(n_members=2)], [X], [y])
