"""Public regressors: HyperNetRegressor and SGDBaseline."""

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import validate_data

from . import _engine
from ._base import (
    BaseStochasticNetwork,
    HyperNetworkFamily,
    PointEstimateFamily,
    _store_params,
    check_input_kinds,
    check_memory,
    check_n_samples,
    unchanged_on_failure,
)
from ._docstrings import fill_doc
from .distributions import Normal, NormalMixture

#: Byte budget of one chunk of ``sample_y``'s draws (of each of its three arrays).
SAMPLE_Y_CHUNK_BYTES = 64 * 2**20


def weighted_r2(y, residuals, sample_weight):
    """R^2 as :func:`sklearn.metrics.r2_score` computes it, from the residuals.

    The validation rows are scored after every epoch, where ``r2_score``'s
    input checks took about a tenth of a small data set's fit time.

    Parameters
    ----------
    y : ndarray of shape (n_samples, n_outputs)
        True targets.
    residuals : ndarray of shape (n_samples, n_outputs)
        ``y`` minus the predictions.
    sample_weight : ndarray of shape (n_samples,)
        Non-negative weights of the rows.

    Returns
    -------
    score : float
        The mean over outputs of ``1 - SS_res / SS_tot``; an output with
        constant targets scores 1 when predicted exactly, else 0.
    """
    weights = sample_weight[:, None]
    numerator = np.sum(weights * residuals**2, axis=0)
    centred = y - np.average(y, axis=0, weights=sample_weight)
    denominator = np.sum(weights * centred**2, axis=0)
    scores = np.where(numerator == 0, 1.0, 0.0)
    defined = denominator != 0
    scores[defined] = 1 - numerator[defined] / denominator[defined]
    return float(np.mean(scores))


def held_out_noise_variance(half_errors):
    """Observation noise estimated on held-out rows, cross-fitted on their halves.

    The epoch whose parameters are kept is the one that scores best on the
    validation rows, so their error at that epoch is the lowest of many noisy
    values and falls below the error on new rows, the more so the more epochs
    were compared and the fewer rows compared them.  Instead, each half of the rows
    picks the epoch it scores best and the other half measures that epoch's
    error; the noise is the mean of the two measurements.  That is honest for
    a model chosen on half the rows and a little conservative for the kept
    one, chosen on all of them.

    Parameters
    ----------
    half_errors : ndarray of shape (n_epochs, 2, n_outputs)
        Mean squared residual, in standardised target units, of each half of
        the validation rows at each scored epoch.

    Returns
    -------
    noise_variance : ndarray of shape (n_outputs,)
        The noise variance per output, in standardised units.
    """
    # The halves choose nearly as the kept epoch is chosen (R^2 averaged over
    # the outputs): by the standardised errors summed over the outputs.
    first_pick, second_pick = np.argmin(half_errors.sum(axis=2), axis=0)
    return (half_errors[first_pick, 1] + half_errors[second_pick, 0]) / 2


class _StochasticRegressor(RegressorMixin, BaseStochasticNetwork):
    """Regression task: standardised targets, squared error or Gaussian likelihood.

    The predictive distribution of a row is the mixture over weight samples
    of Gaussians: with ``loss='squared_error'`` their variance is the
    ``noise_variance_`` estimated from the residuals of held-out rows (or of
    the training rows without early stopping); with
    ``loss='gaussian_nll'`` the network outputs a mean and a log-variance per
    target, so the noise is learned and may depend on x.
    """

    _loss_constraint = {"loss": [StrOptions({"squared_error", "gaussian_nll"})]}

    def _loss(self):
        # The loss the network was built for: changing ``loss`` after fit
        # takes effect at the next fit, as any parameter does.
        return _engine.LOSSES[self._architecture["loss"]]

    def _architecture_params(self):
        return {**super()._architecture_params(), "loss": self.loss}

    def _check_outputs(self, n_network_outputs):
        self._check_shapes(n_network_outputs)
        # Shapes are right: now the values, which an edited file may have changed.
        if not np.all(np.isfinite(self.target_mean_)):
            raise ValueError(
                "The saved model is inconsistent: target_mean_ must hold finite values."
            )
        if not np.all(np.isfinite(self.target_scale_) & (self.target_scale_ > 0)):
            raise ValueError(
                "The saved model is inconsistent: target_scale_ must hold finite positive values."
            )
        if self.noise_variance_ is None:
            return
        noise = np.asarray(self.noise_variance_)
        if not np.all(np.isfinite(noise) & (noise > 0)):
            raise ValueError(
                "The saved model is inconsistent: noise_variance_ must hold finite positive "
                "values."
            )
        predicted_with = self._standardised_noise * self.target_scale_**2
        if not np.allclose(noise, predicted_with, rtol=1e-9, atol=0):
            raise ValueError(
                f"The saved model is inconsistent: noise_variance_ {noise.tolist()} disagrees "
                f"with the noise the model predicts with ({predicted_with.tolist()})."
            )

    def _check_shapes(self, n_network_outputs):
        expected = self._loss().n_outputs(self.n_outputs_)
        arrays = {"target_mean_": self.target_mean_, "target_scale_": self.target_scale_}
        if self.noise_variance_ is not None:
            arrays["noise_variance_"] = self.noise_variance_
        wrong = [name for name, value in arrays.items() if np.shape(value) != (self.n_outputs_,)]
        if n_network_outputs != expected or wrong:
            raise ValueError(
                f"The saved model is inconsistent: n_outputs_ is {self.n_outputs_}, its network "
                f"has {n_network_outputs} outputs (expected {expected})"
                + (f", and {wrong} do not have shape ({self.n_outputs_},)." if wrong else ".")
            )

    def _reference_loss(self):
        return self._loss().reference_loss(self.n_outputs_)

    def _weight_independent_outputs(self):
        return self._loss().weight_independent_outputs(self.n_outputs_)

    def _validate_targets(self, X, y, reset):
        check_input_kinds(X, y)
        return validate_data(
            self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=np.float64
        )

    def _encode_targets(self, y, sample_weight, first_pass, incremental):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if first_pass:
            self.n_outputs_ = y.shape[1]
            # Relative weights: sums of weights near the float64 limit overflow.
            weights = sample_weight / sample_weight.max()
            mean = np.average(y, axis=0, weights=weights)
            # Deviations are divided by the largest one before squaring, so the
            # scale stays finite for targets near the float64 limit.
            largest = np.max(np.abs(y - mean), axis=0)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(largest))):
                raise ValueError(
                    "y spans more than the float64 range allows to standardise it "
                    f"(largest magnitude {np.max(np.abs(y)):.3g}); rescale the targets."
                )
            unit = np.where(largest > 0, largest, 1.0)
            scale = unit * np.sqrt(np.average(((y - mean) / unit) ** 2, axis=0, weights=weights))
            with np.errstate(over="ignore"):
                variance_overflows = not np.all(np.isfinite(scale**2))
            if variance_overflows:
                raise ValueError(
                    f"The standard deviation of y ({np.max(scale):.3g}) is too large for its "
                    "variance to be represented in float64; rescale the targets."
                )
            # A constant target would divide by zero; it is then only centred.
            scale[~(scale > 0)] = 1.0
            self.target_mean_, self.target_scale_ = mean, scale
        elif y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y.shape[1]} outputs, but {type(self).__name__} was fitted "
                f"with {self.n_outputs_} outputs."
            )
        return (y - self.target_mean_) / self.target_scale_, self._loss().n_outputs(y.shape[1])

    def _targets_tensor(self, targets, device):
        return torch.tensor(targets, dtype=torch.float32, device=device)

    def _moments(self, X_tensor, with_variance):
        """Predictive mean and, optionally, variance in standardised units."""
        loss = self._loss()

        def moments(outputs):
            means, noise = loss.predictive(outputs)
            noise = torch.zeros_like(means) if noise is None else noise
            return torch.cat([means, means.square(), noise], dim=-1)

        first, second, noise = np.split(self._predictive_mean(X_tensor, moments), 3, axis=1)
        if not with_variance:
            return first, None
        spread = np.maximum(second - first**2, 0.0)
        if not loss.learns_noise:
            noise = np.broadcast_to(self._standardised_noise, first.shape)
        return first, spread + noise

    def _to_output_shape(self, y):
        return y.reshape(len(y), -1)[:, 0] if self.n_outputs_ == 1 else y

    def _predict_tensor(self, X_tensor, return_std=False):
        mean, variance = self._moments(X_tensor, return_std)
        mean = self._to_output_shape(mean * self.target_scale_ + self.target_mean_)
        if not return_std:
            return mean
        return mean, self._to_output_shape(np.sqrt(variance) * self.target_scale_)

    def _after_training(self):
        # The observation noise of the squared-error model.  Held-out rows give
        # an honest estimate (see held_out_noise_variance); without them, the
        # last epoch's training loss is free but optimistic where the network
        # fits the training rows closely.
        half_errors = getattr(self, "_validation_half_errors", [])
        self._validation_half_errors = []
        if self._loss().learns_noise:
            self.noise_variance_ = self._standardised_noise = None
            return
        if half_errors:
            standardised = held_out_noise_variance(np.array(half_errors))
        else:
            # Before any finished epoch the network knows nothing: the targets'
            # own (standardised) variance is the noise.
            standardised = np.asarray(self._history.last_output_losses or 1.0)
        # Kept in standardised units too: in target units it can under- or
        # overflow for targets of extreme scale.
        self._standardised_noise = standardised * np.ones_like(self.target_scale_)
        self.noise_variance_ = self._standardised_noise * self.target_scale_**2

    def _pool_task_attributes(self, members):
        first = members[0]
        self.n_outputs_ = first.n_outputs_
        self.target_mean_, self.target_scale_ = first.target_mean_, first.target_scale_
        if first._standardised_noise is None:
            self.noise_variance_ = self._standardised_noise = None
        else:
            # Every member's samples carry that member's noise, in equal numbers.
            self._standardised_noise = np.mean([m._standardised_noise for m in members], axis=0)
            self.noise_variance_ = self._standardised_noise * self.target_scale_**2

    def _components(self, outputs):
        """Means and noise standard deviations, in standardised units, of the
        weight samples' Gaussians, from this network's outputs (S, n, ...)."""
        means, noise = self._loss().predictive(torch.from_numpy(outputs))
        if noise is None:
            return outputs, np.sqrt(self._standardised_noise)
        return means.numpy(), torch.sqrt(noise).numpy()

    def _validation_score(self, X, y, sample_weight):
        y = np.reshape(y, (len(y), -1))
        residuals = y - np.reshape(self._predict_tensor(X), y.shape)
        if not self._loss().learns_noise:
            squared = (residuals / self.target_scale_) ** 2
            halves = [slice(0, None, 2), slice(1, None, 2)]
            if min(np.sum(sample_weight[half]) for half in halves) <= 0:
                # One half has no weight: both halves are the whole set.
                halves = [slice(None)] * 2
            if not hasattr(self, "_validation_half_errors"):
                self._validation_half_errors = []
            self._validation_half_errors.append(
                [np.average(squared[half], axis=0, weights=sample_weight[half]) for half in halves]
            )
        return weighted_r2(y, residuals, sample_weight)

    @unchanged_on_failure
    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch on X and y, continuing from the current state.

        The first call initialises the model and standardises the targets
        with the statistics of its data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows' losses.

        Returns
        -------
        self : object
            The estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X, return_std=False):
        """Predict with the model: the mean of the predictive distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        return_std : bool, default=False
            Also return the standard deviation of the predictive distribution:
            the spread of the weight samples' predictions combined with the
            observation noise (see the class description).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predicted values, in the units of the training targets.
        y_std : ndarray of the same shape, only with ``return_std=True``
            Predictive standard deviations, in the same units.
        """
        return self._predict_tensor(self._validate_X_predict(X), return_std)

    def predict_dist(self, X):
        """The predictive distribution of every row.

        For a hypernetwork, the exact equal-weight mixture of the Gaussians of
        the prediction's weight samples (``n_predict_samples`` per member):
        each is centred on that sample's prediction, with the observation
        noise as its variance (see the class description).  For point
        estimates, a Gaussian (a mixture of the members' Gaussians with
        ``n_members > 1``).  Its mean and standard deviation are those of
        ``predict(X, return_std=True)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        dist : NormalMixture or Normal
            A distribution of batch shape ``(n_samples,)``, or
            ``(n_samples, n_outputs)`` for several targets, in the units of
            the training targets, with scipy.stats-style methods (``mean``,
            ``std``, ``interval``, ``ppf``, ``cdf``, ``logpdf``, ``rvs``) and
            the split of its variance into ``epistemic_var`` (the spread of
            the weight samples' predictions) and ``aleatoric_var`` (the
            noise); see :mod:`skhypernet.distributions`.
        """
        X_tensor = self._validate_X_predict(X)
        locs, scales = [], []
        for member, outputs in self._member_prediction_outputs(X_tensor):
            means, noise_stds = member._components(outputs)
            locs.append(means)
            scales.append(np.broadcast_to(noise_stds, means.shape))
        # (S, n, n_outputs) -> (n, n_outputs, S), in target units.
        unit, offset = self.target_scale_[:, None], self.target_mean_[:, None]
        locs = np.moveaxis(np.concatenate(locs), 0, -1) * unit + offset
        scales = np.moveaxis(np.concatenate(scales), 0, -1) * unit
        if self.n_outputs_ == 1:
            locs, scales = locs[:, 0], scales[:, 0]
        if locs.shape[-1] == 1:
            return Normal(locs[..., 0], scales[..., 0])
        return NormalMixture(locs, scales)

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw targets from the predictive distribution.

        Each draw takes a fresh weight sample, shared by all rows (so a draw
        is one function), and adds observation noise.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Input data.
        n_samples : int, default=1
            Number of draws.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws; None gives fresh ones.

        Returns
        -------
        y_samples : ndarray of shape (n_rows, n_samples) or (n_rows, n_outputs, n_samples)
            Draws in the units of the training targets.
        """
        check_n_samples(n_samples)
        X_tensor = self._validate_X_predict(X)
        values_per_draw = X_tensor.shape[0] * self.n_outputs_
        check_memory(
            8 * n_samples * values_per_draw,
            f"sample_y of {n_samples} draws for {X_tensor.shape[0]} rows",
        )
        rng = check_random_state(random_state)
        # The network's outputs, the noise and the draws of a chunk, float64.
        chunk = max(1, SAMPLE_Y_CHUNK_BYTES // (8 * values_per_draw))

        def draw(member, count):
            draws = None
            for start in range(0, count, chunk):
                size = min(chunk, count - start)
                outputs = member._random_outputs(X_tensor, size, rng)
                means, noise_std = member._components(outputs)
                block = means + noise_std * rng.standard_normal(means.shape)
                if draws is None:
                    draws = np.empty((count, *block.shape[1:]))
                draws[start : start + size] = block
            return [draws]

        (draws,) = self._pooled_draws(draw, n_samples, rng)
        draws *= self.target_scale_
        draws += self.target_mean_  # (S, n, n_outputs)
        draws = np.moveaxis(draws, 0, -1)
        return draws[:, 0, :] if self.n_outputs_ == 1 else draws

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


@fill_doc
class HyperNetRegressor(HyperNetworkFamily, _StochasticRegressor):
    """Regressor whose network weights are drawn from a trained hypernetwork.

    A hypernetwork ``g(eps; Theta)`` maps Gaussian noise to the whole weight
    vector of a ReLU main network.  Training draws one weight sample per row
    and minimises the squared error of the main network; prediction averages
    the outputs of ``n_predict_samples`` weight samples (Sheikh et al.,
    "Stochastic Maximum Likelihood Optimization via Hypernetworks").
    Targets are standardised internally; predictions are in original units.

    {hypernet_parameters}

    {loss_parameter}

    {regressor_attributes}

    {hypernet_attributes}

    See Also
    --------
    SGDBaseline : The same network and training loop with point-estimate weights.
    sklearn.neural_network.MLPRegressor : Scikit-learn's multi-layer perceptron.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from skhypernet import HyperNetRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    >>> reg = HyperNetRegressor(random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **HyperNetworkFamily._parameter_constraints,
        **_StochasticRegressor._loss_constraint,
    }

    def __init__(
        self,
        hidden_layer_sizes=(50,),
        *,
        loss="squared_error",
        noise_dim=10,
        hyper_hidden_layer_sizes=(100, 50),
        hyper_dropout=0.5,
        hyper_activation="relu",
        kl_weight=0.0,
        input_noise=0.5,
        n_predict_samples=100,
        batch_size="auto",
        learning_rate_init=1e-3,
        alpha=0.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        max_iter="auto",
        shuffle=True,
        tol=1e-4,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change="auto",
        warm_start=False,
        random_state=None,
        verbose=0,
        device="cpu",
        n_members=1,
    ):
        _store_params(self, locals())


@fill_doc
class SGDBaseline(PointEstimateFamily, _StochasticRegressor):
    """Regressor with point-estimate weights: the paper's "SGD" baseline.

    The same main network, input noise, training loop and optimiser as
    :class:`HyperNetRegressor`, with ordinary weights in place of the
    hypernetwork.

    {baseline_parameters}

    {loss_parameter}

    {regressor_attributes}

    {baseline_attributes}

    See Also
    --------
    HyperNetRegressor : The hypernetwork method.
    SGDBaselineClassifier : The classification twin.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from skhypernet import SGDBaseline
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    >>> reg = SGDBaseline(random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **PointEstimateFamily._parameter_constraints,
        **_StochasticRegressor._loss_constraint,
    }

    def __init__(
        self,
        hidden_layer_sizes=(50,),
        *,
        loss="squared_error",
        input_noise=0.5,
        batch_size="auto",
        learning_rate_init=1e-3,
        alpha=0.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        max_iter="auto",
        shuffle=True,
        tol=1e-4,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change="auto",
        warm_start=False,
        random_state=None,
        verbose=0,
        device="cpu",
        n_members=1,
    ):
        _store_params(self, locals())
