"""Public classifiers: HyperNetClassifier and SGDBaselineClassifier."""

import numbers

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
)
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _engine
from ._base import (
    BaseStochasticNetwork,
    HyperNetworkFamily,
    PointEstimateFamily,
    _store_params,
    check_input_kinds,
    unchanged_on_failure,
)
from ._docstrings import fill_doc


def mean_log_likelihood(probabilities, class_indices, sample_weight):
    """Minus :func:`sklearn.metrics.log_loss`, without its input checks.

    The validation rows are scored after every epoch, where ``log_loss``'s
    checks took about a fifteenth of a small data set's fit time.

    Parameters
    ----------
    probabilities : ndarray of shape (n_samples, n_classes)
        Predicted class probabilities.
    class_indices : ndarray of shape (n_samples,)
        The column of each row's true class.
    sample_weight : ndarray of shape (n_samples,)
        Non-negative weights of the rows.

    Returns
    -------
    score : float
        Weighted mean log-probability of the true classes, the probabilities
        clipped to ``[eps, 1 - eps]`` as ``log_loss`` clips them.
    """
    eps = np.finfo(probabilities.dtype).eps
    chosen = probabilities[np.arange(len(class_indices)), class_indices]
    return -float(np.average(-np.log(np.clip(chosen, eps, 1 - eps)), weights=sample_weight))


class _StochasticClassifier(ClassifierMixin, BaseStochasticNetwork):
    """Classification task: one logit per class, cross-entropy loss."""

    def _loss(self):
        return _engine.CROSS_ENTROPY

    def _validate_targets(self, X, y, reset):
        check_input_kinds(X, y)
        X, y = validate_data(self, X, y, reset=reset, dtype=np.float64)
        if y.dtype == object:
            # Sorting a mix of strings and numbers fails deep inside numpy.
            is_string = np.array([isinstance(label, str) for label in np.ravel(y)])
            if is_string.any() and not is_string.all():
                raise ValueError(
                    "Mix of label input types (string and number) in y: use labels of one type."
                )
            integral = {isinstance(label, numbers.Integral) for label in np.ravel(y)}
            if not is_string.any() and len(integral) > 1:
                raise ValueError(
                    "y is an object array whose labels mix number types (integers and "
                    "floats): convert it to one type, for example with y.astype(float)."
                )
        check_classification_targets(y)
        return X, y

    def _encode_targets(self, y, sample_weight, first_pass, incremental):
        # partial_fit takes the classes from its `classes` argument.
        if first_pass and not incremental:
            self.classes_ = np.unique(y)
        present = np.unique(y)
        unknown = np.setdiff1d(present, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains classes {unknown.tolist()} that are not in classes_ "
                f"{self.classes_.tolist()}."
            )
        if self.warm_start and not first_pass and present.size != self.classes_.size:
            raise ValueError(
                "warm_start can only be used where y has the same classes as in the "
                f"previous call to fit. Previously got {self.classes_}, y has {present}."
            )
        if not incremental:
            weighted = np.unique(y[sample_weight > 0])
            if weighted.size < 2 or self.classes_.size < 2:
                raise ValueError(
                    "The classifier needs samples of at least 2 classes with positive "
                    f"sample_weight; got one class: {weighted.tolist()}."
                )
        return np.searchsorted(self.classes_, y), self.classes_.size

    def _check_outputs(self, n_network_outputs):
        if n_network_outputs != len(self.classes_):
            raise ValueError(
                f"The saved model is inconsistent: classes_ holds {len(self.classes_)} classes "
                f"but its network has {n_network_outputs} outputs."
            )

    def _pool_task_attributes(self, members):
        self.classes_ = members[0].classes_

    def _share_with_members(self, members):
        # partial_fit takes the classes from its first call's argument, which
        # the ensemble received.
        if hasattr(self, "classes_"):
            for member in members:
                member.classes_ = self.classes_

    def _reference_loss(self):
        return self._loss().reference_loss(self.classes_.size)

    def _targets_tensor(self, targets, device):
        return torch.tensor(targets, dtype=torch.long, device=device)

    def _proba_tensor(self, X_tensor):
        return self._predictive_mean(X_tensor, transform=_engine.CROSS_ENTROPY.transform)

    def _validation_score(self, X, y, sample_weight):
        # The log-likelihood, not the accuracy: on a few dozen validation rows
        # the accuracy ties from epoch to epoch, so the stopping rule stopped
        # and kept early, under-trained parameters.
        class_indices = np.searchsorted(self.classes_, y)
        return mean_log_likelihood(self._proba_tensor(X), class_indices, sample_weight)

    @unchanged_on_failure
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train for one epoch on X and y, continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows' losses.
        classes : array-like of shape (n_classes,), default=None
            All classes across the calls to ``partial_fit``.  Required on the
            first call, ignored afterwards.

        Returns
        -------
        self : object
            The estimator.
        """
        self._validate_params()
        if _check_partial_fit_first_call(self, classes) and self.classes_.size < 2:
            raise ValueError(
                f"classes must hold at least 2 classes, got {self.classes_.tolist()}."
            )
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities averaged over weight samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of the classes in the order of ``classes_``; rows sum
            to 1.
        """
        return self._proba_tensor(self._validate_X_predict(X))

    def predict_proba_samples(self, X):
        """Class probabilities of every weight sample, before averaging.

        For measures of uncertainty beyond :meth:`predict_proba`, which is
        their mean: the entropy of the mean is the total predictive
        uncertainty, the mean entropy of the samples its aleatoric part, and
        their difference the mutual information between prediction and
        weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        proba : ndarray of shape (n_weight_samples, n_samples, n_classes)
            ``n_predict_samples`` weight samples for the hypernetwork (the same
            ones :meth:`predict_proba` averages), 1 for point estimates.
        """
        outputs = self._prediction_outputs(self._validate_X_predict(X))
        outputs = outputs - outputs.max(axis=-1, keepdims=True)
        proba = np.exp(outputs)
        return proba / proba.sum(axis=-1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities of the classes in the order of ``classes_``.
        """
        X_tensor = self._validate_X_predict(X)
        proba = self._proba_tensor(X_tensor)
        with np.errstate(divide="ignore"):
            log_proba = np.log(proba)
        # Where a mean probability underflowed, the log of the mean of the
        # samples' probabilities, computed in logs.
        rows = np.flatnonzero(np.any(proba < np.finfo(proba.dtype).tiny, axis=1))
        if rows.size:
            outputs = self._prediction_outputs(X_tensor[rows])
            log_softmax = outputs - logsumexp(outputs, axis=-1, keepdims=True)
            log_proba[rows] = logsumexp(log_softmax, axis=0) - np.log(len(outputs))
        return log_proba

    def predict(self, X):
        """Predict class labels: the class of highest mean probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted labels, of the type of the training labels.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


@fill_doc
class HyperNetClassifier(HyperNetworkFamily, _StochasticClassifier):
    """Classifier whose network weights are drawn from a trained hypernetwork.

    A hypernetwork ``g(eps; Theta)`` maps Gaussian noise to the whole weight
    vector of a ReLU main network with one output per class.  Training draws
    one weight sample per row and minimises the cross-entropy; prediction
    averages the class probabilities of ``n_predict_samples`` weight samples
    (Sheikh et al., "Stochastic Maximum Likelihood Optimization via
    Hypernetworks").

    {hypernet_parameters}

    {classifier_attributes}

    {hypernet_attributes}

    See Also
    --------
    SGDBaselineClassifier : The same network and loop with point-estimate weights.
    sklearn.neural_network.MLPClassifier : Scikit-learn's multi-layer perceptron.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skhypernet import HyperNetClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), HyperNetClassifier(random_state=0)).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        hidden_layer_sizes=(50,),
        *,
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
class SGDBaselineClassifier(PointEstimateFamily, _StochasticClassifier):
    """Classifier with point-estimate weights: the paper's "SGD" baseline.

    The same main network, input noise, training loop and optimiser as
    :class:`HyperNetClassifier`, with ordinary weights in place of the
    hypernetwork.

    {baseline_parameters}

    {classifier_attributes}

    {baseline_attributes}

    See Also
    --------
    HyperNetClassifier : The hypernetwork method.
    SGDBaseline : The regression twin.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skhypernet import SGDBaselineClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), SGDBaselineClassifier(random_state=0)).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        hidden_layer_sizes=(50,),
        *,
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
