"""Public regressors: HyperNetRegressor and SGDBaseline."""

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.validation import validate_data

from ._base import BaseStochasticNetwork, HyperNetworkFamily, PointEstimateFamily
from ._docstrings import fill_doc


class _StochasticRegressor(RegressorMixin, BaseStochasticNetwork):
    """Regression task: standardised targets, squared-error loss."""

    def _validate_targets(self, X, y, reset):
        return validate_data(
            self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=np.float64
        )

    def _encode_targets(self, y, sample_weight, first_pass, incremental):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if first_pass:
            self.n_outputs_ = y.shape[1]
            mean = np.average(y, axis=0, weights=sample_weight)
            scale = np.sqrt(np.average((y - mean) ** 2, axis=0, weights=sample_weight))
            # A constant target would divide by zero; it is then only centred.
            scale[~(scale > 0)] = 1.0
            self._y_mean, self._y_scale = mean, scale
        elif y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y.shape[1]} outputs, but {type(self).__name__} was fitted "
                f"with {self.n_outputs_} outputs."
            )
        return (y - self._y_mean) / self._y_scale, y.shape[1]

    def _targets_tensor(self, targets, device):
        return torch.tensor(targets, dtype=torch.float32, device=device)

    def _predict_tensor(self, X_tensor):
        y = self._predictive_mean(X_tensor) * self._y_scale + self._y_mean
        return y.ravel() if self.n_outputs_ == 1 else y

    def _validation_score(self, X, y, sample_weight):
        return r2_score(y, self._predict_tensor(X), sample_weight=sample_weight)

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

    def predict(self, X):
        """Predict with the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predicted values, in the units of the training targets.
        """
        return self._predict_tensor(self._validate_X_predict(X))

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


@fill_doc
class SGDBaseline(PointEstimateFamily, _StochasticRegressor):
    """Regressor with point-estimate weights: the paper's "SGD" baseline.

    The same main network, input noise, training loop and optimiser as
    :class:`HyperNetRegressor`, with ordinary weights in place of the
    hypernetwork.

    {baseline_parameters}

    {regressor_attributes}

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
