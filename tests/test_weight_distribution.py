"""The weight distribution: its collapse diagnostic, the KL term, the noise
estimate and the Gaussian likelihood's weight-independent noise."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetClassifier, HyperNetRegressor, SGDBaseline, _engine
from skhypernet._model import StochasticMLP
from skhypernet.regression import held_out_noise_variance


def sine(n=120, noise=0.2, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-3, 3, size=(n, 1))
    return X, np.sin(X[:, 0]) + noise * rng.normal(size=n)


def fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


LONG = dict(
    batch_size=1, max_iter=100, n_iter_no_change=np.inf, early_stopping=False, random_state=0
)


@pytest.fixture(scope="module")
def paper_and_regularised():
    """Both modes after 15,000 Adam steps (150 rows, batch size 1, 100 epochs)."""
    X, y = sine(n=150)
    paper = fit_quietly(HyperNetRegressor(**LONG), X, y)
    regularised = fit_quietly(HyperNetRegressor(kl_weight=0.1, **LONG), X, y)
    return X, y, paper, regularised


def test_collapse_step_is_the_first_epoch_below_one_percent_of_the_initial_spread(
    paper_and_regularised,
):
    _, _, model, _ = paper_and_regularised
    steps = model.weight_diffusion_steps_
    np.testing.assert_array_equal(steps, 150 * np.arange(1, model.n_iter_ + 1))
    spread = model.weight_diffusion_[:, 0]
    assert model.initial_weight_diffusion_ > 0
    below = np.flatnonzero(spread < 0.01 * model.initial_weight_diffusion_)
    # The paper's objective shrinks the distribution to a point within this budget.
    assert below.size, "the paper's objective kept the spread above 1 % of its start"
    assert model.weight_collapse_step_ == steps[below[0]]


def test_kl_weight_keeps_the_weight_distribution_alive(paper_and_regularised):
    X, y, paper, regularised = paper_and_regularised
    assert regularised.weight_collapse_step_ is None
    assert regularised.weight_diffusion_[-1, 0] > 5 * paper.weight_diffusion_[-1, 0]
    assert regularised.weight_diffusion_[-1, 0] > 0.1 * regularised.initial_weight_diffusion_
    # The fit still follows the data.
    assert regularised.score(X, y) > 0.8


def test_kl_weight_enters_the_reported_loss():
    X, y = sine(n=60)
    settings = dict(max_iter=3, n_iter_no_change=np.inf, random_state=0)
    paper = fit_quietly(HyperNetRegressor(**settings), X, y)
    regularised = fit_quietly(HyperNetRegressor(kl_weight=1.0, **settings), X, y)
    # The same first epoch's data loss, plus the KL term (positive).
    assert regularised.loss_curve_[0] > paper.loss_curve_[0]


def test_kl_weight_works_for_the_classifier_and_survives_pickling():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    model = fit_quietly(HyperNetClassifier(kl_weight=0.5, max_iter=10, random_state=0), X, y)
    assert model.score(X, y) > 0.8
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert restored.weight_collapse_step_ == model.weight_collapse_step_


@pytest.mark.parametrize("activation, revives", [("relu", False), ("leaky_relu", True)])
def test_leaky_hidden_units_switched_off_still_feel_the_kl_term(activation, revives):
    # Every unit of the hypernetwork's last hidden layer off for every draw:
    # the weights stop varying, the KL term asks for spread, and only leaky
    # units pass that on to the layers before them.
    X, y = sine(n=40)
    model = fit_quietly(
        HyperNetRegressor(hyper_activation=activation, max_iter=1, random_state=0), X, y
    )
    network = model.network_
    with torch.no_grad():
        network.weight_generator.hidden_biases[-1].fill_(-1e3)
    optimizer = _engine.FlatOptimizer([network], 1e-3)
    generator = network.weight_generator
    with torch.no_grad():
        _engine.kl_gradients(
            optimizer.values,
            optimizer.grads,
            torch.randn(1, 32, generator.noise_dim, generator=torch.Generator().manual_seed(0)),
            torch.ones(1, 1, 1),
            0,
            generator.negative_slope,
        )
    grad_last_hidden = optimizer.grads.hidden_weights[-1]
    assert bool(torch.count_nonzero(grad_last_hidden)) == revives


def test_leaky_hidden_units_survive_pickle_and_skops(tmp_path):
    sio = pytest.importorskip("skops.io")
    from skhypernet import SKOPS_TRUSTED_TYPES

    X, y = sine(n=60)
    model = fit_quietly(
        HyperNetRegressor(hyper_activation="leaky_relu", max_iter=3, random_state=0), X, y
    )
    assert model.network_.weight_generator.negative_slope == 0.01
    sio.dump(model, tmp_path / "model.skops")
    for restored in (
        pickle.loads(pickle.dumps(model)),
        sio.load(tmp_path / "model.skops", trusted=SKOPS_TRUSTED_TYPES),
    ):
        assert restored.network_.weight_generator.negative_slope == 0.01
        np.testing.assert_array_equal(
            restored.predict(X, return_std=True), model.predict(X, return_std=True)
        )
    # The leaky units are what prediction uses: ReLU units give other outputs.
    relu = pickle.loads(pickle.dumps(model))
    relu.network_.weight_generator.negative_slope = 0.0
    assert not np.array_equal(relu.predict(X), model.predict(X))


@pytest.mark.parametrize("slope", [-0.1, 1.0, float("nan"), "0.01"])
def test_a_saved_network_with_an_impossible_slope_is_refused(slope):
    X, y = sine(n=40)
    model = fit_quietly(HyperNetRegressor(max_iter=1, random_state=0), X, y)
    arrays = model.network_.to_arrays()
    arrays["negative_slope"] = slope
    with pytest.raises(ValueError, match="negative slope must be a number in"):
        StochasticMLP.from_arrays(arrays)


@pytest.mark.parametrize("cls", [HyperNetRegressor, SGDBaseline])
def test_noise_without_validation_rows_is_the_last_epochs_training_loss(cls):
    X, y = sine()
    model = fit_quietly(cls(max_iter=5, early_stopping=False, random_state=0), X, y)
    np.testing.assert_allclose(
        model.noise_variance_ / model.target_scale_**2, [model.loss_curve_[-1]], rtol=1e-6
    )


def test_noise_with_early_stopping_is_cross_fitted_on_the_held_out_rows(monkeypatch):
    # Each half of the validation rows scores the epoch the other half scores best.
    residuals_by_epoch = []
    score = HyperNetRegressor._validation_score

    def recording_score(self, X, y, sample_weight):
        residuals_by_epoch.append((y - self._predict_tensor(X)) / self.target_scale_)
        return score(self, X, y, sample_weight)

    monkeypatch.setattr(HyperNetRegressor, "_validation_score", recording_score)
    X, y = sine(n=80, noise=0.5, seed=1)
    model = fit_quietly(
        HyperNetRegressor(early_stopping=True, validation_fraction=0.25, max_iter=30),
        X,
        y,
    )
    squared = np.array(residuals_by_epoch) ** 2
    assert squared.shape[1] == 20 and len(squared) > 1
    first, second = squared[:, 0::2].mean(axis=1), squared[:, 1::2].mean(axis=1)
    expected = (second[np.argmin(first)] + first[np.argmin(second)]) / 2
    np.testing.assert_allclose(model.noise_variance_ / model.target_scale_**2, [expected])


def test_held_out_noise_is_free_of_the_bias_of_choosing_the_epoch():
    # Simulated validation residuals of 500 epochs whose models are equally
    # good on new rows (expected squared error 1 + 0.5**2): the best epoch's
    # error on the rows that chose it is far below that, the cross-fitted one is not.
    rng = np.random.RandomState(0)
    expected_error = 1.25
    kept, cross_fitted = [], []
    for _ in range(200):
        residuals = rng.normal(size=40) + 0.5 * rng.normal(size=(500, 40))
        squared = residuals**2
        halves = np.stack([squared[:, 0::2].mean(1), squared[:, 1::2].mean(1)], axis=1)
        kept.append(squared.mean(1).min())
        cross_fitted.append(held_out_noise_variance(halves[:, :, None])[0])
    assert np.mean(kept) < 0.85 * expected_error
    assert abs(np.mean(cross_fitted) / expected_error - 1) < 0.05


def test_gaussian_nll_hypernet_trains_at_batch_size_one_on_real_data():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    settings = dict(
        loss="gaussian_nll", batch_size=1, max_iter=10, n_iter_no_change=np.inf, random_state=0
    )
    hypernet = fit_quietly(HyperNetRegressor(**settings), X, y)
    baseline = fit_quietly(SGDBaseline(**settings), X, y)
    # Before the log-variance was made independent of the sampled weights,
    # this fit's error was several times the baseline's.
    assert hypernet.score(X, y) > 0.4
    assert hypernet.score(X, y) > baseline.score(X, y) - 0.1
    last = hypernet.network_.weight_generator.heads[-1]
    assert float(last.detach()[:-1, :, 1:].abs().max()) == 0.0
    _, std = hypernet.predict(X, return_std=True)
    assert np.all(np.isfinite(std)) and np.all(std > 0)


def test_regularised_spread_grows_beyond_the_data_but_not_in_the_gap():
    # The gallery's example: data on -4 < x < -1 and 1 < x < 4.
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.uniform(-4, -1, 150), rng.uniform(1, 4, 150)])[:, None]
    y = np.sin(X[:, 0]) + 0.1 * X[:, 0] ** 2 + 0.15 * rng.normal(size=len(X))
    model = fit_quietly(HyperNetRegressor(max_iter=400, kl_weight=0.1, random_state=0), X, y)
    points = np.array([[-6.0], [6.0], [-2.5], [2.5], [0.0]])
    _, std = model.predict(points, return_std=True)
    epistemic = np.sqrt(np.maximum(std**2 - model.noise_variance_, 0.0))
    beyond, on_data, gap = epistemic[:2].mean(), epistemic[2:4].mean(), epistemic[4]
    assert beyond > 2 * on_data
    # What the gallery says: no widening between the clusters.
    assert gap < 2 * on_data
