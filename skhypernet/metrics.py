"""Proper scores of predictive distributions, calibration errors and scorers.

The regression scores take the observed targets and their predictive
distribution: a :class:`~skhypernet.distributions.PredictiveDistribution`
(``predict_dist(X)``) or a tuple ``(mean, std)`` (``predict(X,
return_std=True)``), read as independent Gaussians.  They average over rows
(weighted by ``sample_weight``) and then uniformly over outputs.  The scorers
turn them into ``scoring=`` arguments of scikit-learn's model selection.
"""

import inspect
import numbers

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array
from sklearn.utils.validation import _check_sample_weight

from .distributions import Normal, PredictiveDistribution


def as_distribution(y_dist):
    """The predictive distribution given as a distribution or as ``(mean, std)``.

    Parameters
    ----------
    y_dist : PredictiveDistribution or tuple of (mean, std)
        A distribution, returned as it is, or the means and standard
        deviations of independent Gaussians.

    Returns
    -------
    dist : PredictiveDistribution

    Examples
    --------
    >>> from skhypernet.metrics import as_distribution
    >>> as_distribution(([0.0, 1.0], [1.0, 2.0])).std()
    array([1., 2.])
    """
    if isinstance(y_dist, PredictiveDistribution):
        return y_dist
    if isinstance(y_dist, tuple) and len(y_dist) == 2:
        return Normal(*y_dist)
    raise ValueError(
        "y_dist must be a PredictiveDistribution or a tuple (mean, std), got "
        f"{type(y_dist).__name__}."
    )


def _check_targets(y_true, y_dist):
    dist = as_distribution(y_dist)
    y_true = check_array(y_true, ensure_2d=False, dtype=np.float64, input_name="y_true")
    if {y_true.shape, dist.batch_shape} == {(len(y_true), 1), (len(y_true),)}:
        # One target as a column or as a vector, as scikit-learn's metrics take it.
        y_true = y_true.reshape(dist.batch_shape)
    if y_true.shape != dist.batch_shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} but the predictive distribution has batch shape "
            f"{dist.batch_shape}; they must be equal."
        )
    return y_true, dist


def _average(values, y_true, sample_weight):
    weights = _check_sample_weight(sample_weight, y_true, ensure_non_negative=True)
    return float(np.mean(np.average(values, axis=0, weights=weights)))


def log_likelihood(y_true, y_dist, *, sample_weight=None):
    """Mean log predictive density of the observed targets (higher is better).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed targets, of the distribution's batch shape.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Their predictive distribution.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from skhypernet.metrics import log_likelihood
    >>> print(f"{log_likelihood([0.0, 1.0], ([0.0, 0.0], [1.0, 1.0])):.4f}")
    -1.1689
    """
    y_true, dist = _check_targets(y_true, y_dist)
    return _average(dist.logpdf(y_true), y_true, sample_weight)


def crps(y_true, y_dist, *, sample_weight=None):
    """Mean continuous ranked probability score (lower is better).

    ``CRPS(F, y) = E|X - y| - E|X - X'| / 2`` for independent ``X, X' ~ F``,
    in the units of the targets, in closed form for Gaussians and for
    equal-weight Gaussian mixtures (Grimit et al., 2006).  A mixture of K
    components costs O(K^2) per row, in chunks of bounded memory.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed targets, of the distribution's batch shape.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Their predictive distribution.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from skhypernet.metrics import crps
    >>> print(f"{crps([0.0], ([0.0], [1.0])):.4f}")
    0.2337
    """
    y_true, dist = _check_targets(y_true, y_dist)
    return _average(dist._crps(y_true), y_true, sample_weight)


def interval_coverage(y_true, y_dist, *, confidence=0.9, sample_weight=None):
    """Fraction of the targets inside their central predictive interval.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed targets, of the distribution's batch shape.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Their predictive distribution.
    confidence : float in (0, 1), default=0.9
        Probability of the central interval; calibrated intervals cover
        that fraction.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    coverage : float

    Examples
    --------
    >>> from skhypernet.metrics import interval_coverage
    >>> interval_coverage([0.0, 3.0], ([0.0, 0.0], [1.0, 1.0]), confidence=0.9)
    0.5
    """
    y_true, dist = _check_targets(y_true, y_dist)
    lower, upper = dist.interval(confidence)
    return _average((y_true >= lower) & (y_true <= upper), y_true, sample_weight)


def interval_width(y_true, y_dist, *, confidence=0.9, sample_weight=None):
    """Mean width of the central predictive intervals.

    ``y_true`` is only checked against the batch shape, so that this has the
    signature of the other scores.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed targets, of the distribution's batch shape.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Their predictive distribution.
    confidence : float in (0, 1), default=0.9
        Probability of the central interval.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    width : float

    Examples
    --------
    >>> from skhypernet.metrics import interval_width
    >>> print(f"{interval_width([0.0], ([0.0], [1.0]), confidence=0.95):.3f}")
    3.920
    """
    y_true, dist = _check_targets(y_true, y_dist)
    lower, upper = dist.interval(confidence)
    return _average(upper - lower, y_true, sample_weight)


def top_label_bins(y_true, y_prob, *, classes=None, n_bins=10, sample_weight=None):
    """Confidence and accuracy of the predicted class in equal-width bins.

    The confidence of a row is its largest probability, the predicted class
    the one it goes to; rows fall into ``n_bins`` equal-width bins
    ``[k / n_bins, (k + 1) / n_bins)`` of their confidence (the last closed).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities, rows summing to 1.
    classes : array-like of shape (n_classes,), default=None
        The labels of ``y_prob``'s columns (``model.classes_``); the sorted
        unique labels of ``y_true`` by default.
    n_bins : int, default=10
        Number of bins.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    confidence : ndarray of shape (n_bins,)
        Mean confidence per bin, NaN for empty bins.
    accuracy : ndarray of shape (n_bins,)
        Fraction of correct predictions per bin, NaN for empty bins.
    weights : ndarray of shape (n_bins,)
        Total weight (number of rows without ``sample_weight``) per bin.

    Examples
    --------
    >>> from skhypernet.metrics import top_label_bins
    >>> confidence, accuracy, weights = top_label_bins(
    ...     [0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], n_bins=2
    ... )
    >>> print(f"{confidence[1]:.2f} {accuracy[1]:.4f}", weights)
    0.80 0.6667 [0. 3.]
    """
    y_true = np.asarray(y_true)
    y_prob = check_array(y_prob, dtype=np.float64, input_name="y_prob")
    if y_true.ndim != 1 or len(y_true) != len(y_prob):
        raise ValueError(
            f"y_true must hold one label per row of y_prob ({len(y_prob)}); got shape "
            f"{y_true.shape}."
        )
    if np.any((y_prob < 0) | (y_prob > 1)) or np.any(np.abs(y_prob.sum(axis=1) - 1) > 1e-6):
        raise ValueError("y_prob must hold probabilities in [0, 1] whose rows sum to 1.")
    classes = np.unique(y_true) if classes is None else np.asarray(classes)
    if len(classes) != y_prob.shape[1]:
        raise ValueError(
            f"y_prob has {y_prob.shape[1]} columns but there are {len(classes)} classes; pass "
            "classes= (for example model.classes_) when y_true lacks some of them."
        )
    if not np.all(np.isin(y_true, classes)):
        raise ValueError("y_true holds labels that are not in classes.")
    if not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}.")
    weights = _check_sample_weight(sample_weight, y_prob, ensure_non_negative=True)
    confidence = y_prob.max(axis=1)
    correct = classes[y_prob.argmax(axis=1)] == y_true
    bins = np.minimum((confidence * n_bins).astype(np.intp), n_bins - 1)
    totals = np.bincount(bins, weights=weights, minlength=n_bins)
    means = (
        np.divide(
            np.bincount(bins, weights=weights * values, minlength=n_bins),
            totals,
            out=np.full(n_bins, np.nan),
            where=totals > 0,
        )
        for values in (confidence, correct)
    )
    return (*means, totals)


def expected_calibration_error(y_true, y_prob, *, classes=None, n_bins=10, sample_weight=None):
    """Top-label expected calibration error of a classifier's probabilities.

    The mean over equal-width bins of the predicted class's probability of
    ``|accuracy - confidence|``, weighted by the bins' shares of the rows
    (see :func:`top_label_bins`).  0 for calibrated probabilities, up to
    sampling noise; it is not a proper score, so use it next to the log loss.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, binary or multiclass.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities (``predict_proba``), rows summing to 1.
    classes : array-like of shape (n_classes,), default=None
        The labels of ``y_prob``'s columns (``model.classes_``); the sorted
        unique labels of ``y_true`` by default.
    n_bins : int, default=10
        Number of bins.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows.

    Returns
    -------
    ece : float

    Examples
    --------
    >>> from skhypernet.metrics import expected_calibration_error
    >>> y_prob = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]
    >>> print(f"{expected_calibration_error([0, 1, 1], y_prob, n_bins=2):.4f}")
    0.1333
    """
    confidence, accuracy, weights = top_label_bins(
        y_true, y_prob, classes=classes, n_bins=n_bins, sample_weight=sample_weight
    )
    filled = weights > 0
    gaps = np.abs(accuracy[filled] - confidence[filled])
    return float(np.sum(weights[filled] * gaps) / np.sum(weights))


def predictive_distribution(estimator, X):
    """The predictive distribution of a fitted regressor at ``X``.

    ``estimator.predict_dist(X)`` where it exists; otherwise the Gaussians of
    ``estimator.predict(X, return_std=True)`` (``GaussianProcessRegressor``,
    ``BayesianRidge``).  For a :class:`~sklearn.pipeline.Pipeline`, the final
    step decides, on ``X`` transformed by the steps before it.

    Parameters
    ----------
    estimator : fitted regressor or Pipeline
        The model.
    X : array-like of shape (n_samples, n_features)
        Input data.

    Returns
    -------
    dist : PredictiveDistribution

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import BayesianRidge
    >>> from skhypernet.metrics import predictive_distribution
    >>> X = np.arange(10.0).reshape(-1, 1)
    >>> model = BayesianRidge().fit(X, 2 * X[:, 0])
    >>> predictive_distribution(model, X[:3])
    Normal(batch_shape=(3,))
    """
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if hasattr(final, "predict_dist"):
        if final is not estimator and len(estimator) > 1:
            X = estimator[:-1].transform(X)
        return final.predict_dist(X)
    predict = getattr(final, "predict", None)
    if predict is None or "return_std" not in inspect.signature(predict).parameters:
        raise ValueError(
            f"{type(final).__name__} has no predictive distribution: it needs a predict_dist "
            "method or predict(X, return_std=True)."
        )
    mean, std = estimator.predict(X, return_std=True)
    if np.any(np.asarray(std) == 0):
        raise ValueError(
            f"{type(final).__name__} predicts zero spread (standard deviation 0) for some rows, "
            "where the log-likelihood is undefined."
        )
    return Normal(mean, std)


class _DistributionScorer:
    """A scorer, ``scorer(estimator, X, y)``, from a score of predictive distributions."""

    def __init__(self, score_func, sign, kwargs):
        self._score_func = score_func
        self._sign = sign
        self._kwargs = kwargs

    def __call__(self, estimator, X, y_true, sample_weight=None):
        dist = predictive_distribution(estimator, X)
        score = self._score_func(y_true, dist, sample_weight=sample_weight, **self._kwargs)
        return self._sign * score

    def __repr__(self):
        arguments = [self._score_func.__name__]
        if self._sign < 0:
            arguments.append("greater_is_better=False")
        arguments += [f"{name}={value!r}" for name, value in self._kwargs.items()]
        return f"make_distribution_scorer({', '.join(arguments)})"


def make_distribution_scorer(score_func, *, greater_is_better=True, **kwargs):
    """A scorer for ``scoring=`` from a score of predictive distributions.

    The scorer, ``scorer(estimator, X, y, sample_weight=None)``, computes
    :func:`predictive_distribution` of the estimator at ``X`` and scores it
    against ``y``, negated when lower scores are better, so that higher is
    always better as scikit-learn's model selection expects.  It can be
    pickled (for ``n_jobs > 1``) when ``score_func`` can.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, y_dist, *, sample_weight=None, **kwargs)``, such
        as :func:`log_likelihood` or :func:`crps`.
    greater_is_better : bool, default=True
        Whether higher values of ``score_func`` are better.
    **kwargs
        Further keyword arguments of ``score_func``.

    Returns
    -------
    scorer : callable

    Examples
    --------
    >>> from skhypernet.metrics import interval_coverage, make_distribution_scorer
    >>> make_distribution_scorer(interval_coverage, confidence=0.8)
    make_distribution_scorer(interval_coverage, confidence=0.8)
    """
    if not callable(score_func):
        raise ValueError(f"score_func must be callable, got {score_func!r}.")
    return _DistributionScorer(score_func, 1 if greater_is_better else -1, kwargs)


#: Mean log predictive density, for ``scoring=``.
log_likelihood_scorer = make_distribution_scorer(log_likelihood)
#: Negative mean CRPS, for ``scoring=`` (higher is better).
crps_scorer = make_distribution_scorer(crps, greater_is_better=False)
