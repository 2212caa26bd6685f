"""Predictive distributions of regressors, with scipy.stats-style methods.

A regressor's prediction for a batch of rows is a distribution per row (and
output): :class:`Normal` for independent Gaussians, :class:`NormalMixture`
for equal-weight mixtures of Gaussians.  Both share the interface of
:class:`PredictiveDistribution`: moments and the split of the variance into
its epistemic and aleatoric parts, ``cdf``, ``pdf``, ``logpdf``, ``ppf``,
central intervals and draws, all elementwise over the batch shape.
"""

import numbers
from abc import ABC, abstractmethod

import numpy as np
from scipy.special import logsumexp, ndtr, ndtri
from sklearn.utils import check_random_state

#: Most pairwise component entries a mixture's CRPS holds at once: its
#: O(K^2) term per element is computed in chunks of rows.  Arrays of this
#: size (2 MB) stay in cache; 4 million entries ran at half the speed.
_PAIRWISE_CHUNK = 250_000
_PPF_MAX_ITER = 100
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _finite(value, name):
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        n_bad = np.count_nonzero(~np.isfinite(array))
        raise ValueError(f"{name} must be finite; it holds {n_bad} NaN or infinite values.")
    return array


def _positive_scales(scales, shape, name):
    # Validated before broadcasting: a broadcast (n, K) view of (n, 1) scales
    # would make the checks materialise n * K values.
    scales = _finite(scales, name)
    if np.any(scales <= 0):
        raise ValueError(f"{name} must be > 0; its smallest value is {scales.min()}.")
    try:
        return np.broadcast_to(scales, shape)
    except ValueError:
        message = f"{name} of shape {scales.shape} does not broadcast to {shape}."
        raise ValueError(message) from None


def _log_density(z, scales):
    """Log density of ``N(loc, scales**2)`` at ``loc + scales * z``."""
    return -0.5 * z**2 - np.log(scales) - _LOG_SQRT_2PI


def _abs_moment(m, v):
    """``E|X|`` for ``X ~ N(m, v)``, the building block of the Gaussian CRPS."""
    sd = np.sqrt(v)
    z = m / sd
    return m * (2 * ndtr(z) - 1) + 2 * sd * np.exp(_log_density(z, 1.0))


class PredictiveDistribution(ABC):
    """Base class of predictive distributions: one distribution per batch element.

    The batch shape is that of the predictions, ``(n_rows,)`` or
    ``(n_rows, n_outputs)``.  Every method works elementwise over it; its
    arguments broadcast to the batch shape, and the results are float64
    arrays of the batch shape.  Indexing selects rows: ``dist[:10]`` is the
    distribution of the first ten.

    The subclasses store their parameters as arrays whose leading axes are
    the batch axes (named by ``_params``, with ``_n_component_axes`` further
    axes) and implement the private counterparts of the public methods.

    Examples
    --------
    >>> from skhypernet.distributions import Normal
    >>> dist = Normal([0.0, 1.0, 2.0], [1.0, 1.0, 2.0])
    >>> len(dist), dist.batch_shape
    (3, (3,))
    >>> dist[1:].mean()
    array([1., 2.])
    """

    _params = ()
    _n_component_axes = 0

    @property
    def batch_shape(self):
        """Shape of the batch of distributions.

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[0.0, 1.0], [2.0, 3.0]], 1.0).batch_shape
        (2,)
        """
        shape = getattr(self, self._params[0]).shape
        return shape[: len(shape) - self._n_component_axes]

    def __len__(self):
        if not self.batch_shape:
            raise TypeError("len() of a distribution with batch shape ().")
        return self.batch_shape[0]

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        # Full trailing slices keep an Ellipsis in the index off the component axes.
        index += (slice(None),) * self._n_component_axes
        return type(self)(*(getattr(self, name)[index] for name in self._params))

    def __repr__(self):
        return f"{type(self).__name__}(batch_shape={self.batch_shape})"

    def _broadcast(self, value, name):
        array = np.asarray(value, dtype=np.float64)
        if np.any(np.isnan(array)):
            raise ValueError(f"{name} holds NaN.")
        try:
            return np.broadcast_to(array, self.batch_shape)
        except ValueError:
            raise ValueError(
                f"{name} of shape {array.shape} does not broadcast to the batch shape "
                f"{self.batch_shape}."
            ) from None

    def mean(self):
        """Mean of every distribution.

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[0.0, 2.0]], 1.0).mean()
        array([1.])
        """
        return self._mean()

    def epistemic_var(self):
        """The part of the variance from the spread of the components' means.

        For a mixture over weight samples, the variance that comes from the
        weight distribution: the population variance of the component means.
        0 for a :class:`Normal`.

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[0.0, 2.0]], 1.0).epistemic_var()
        array([1.])
        """
        return self._epistemic_var()

    def aleatoric_var(self):
        """The part of the variance from the noise: the mean of the components' variances.

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[0.0, 2.0]], [[1.0, 3.0]]).aleatoric_var()
        array([5.])
        """
        return self._aleatoric_var()

    def var(self):
        """Variance: ``epistemic_var() + aleatoric_var()``.

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[0.0, 2.0]], 1.0).var()
        array([2.])
        """
        return self.epistemic_var() + self.aleatoric_var()

    def std(self):
        """Standard deviation, the square root of :meth:`var`.

        Examples
        --------
        >>> from skhypernet.distributions import Normal
        >>> Normal([0.0, 0.0], [1.0, 3.0]).std()
        array([1., 3.])
        """
        return np.sqrt(self.var())

    def cdf(self, y):
        """Cumulative distribution function at ``y``.

        Parameters
        ----------
        y : array-like, broadcastable to the batch shape
            Where to evaluate; infinite values are allowed, NaN is not.

        Returns
        -------
        cdf : ndarray of the batch shape

        Examples
        --------
        >>> from skhypernet.distributions import Normal
        >>> Normal([0.0, 1.0], 1.0).cdf(1.0)
        array([0.84134475, 0.5       ])
        """
        return self._cdf(self._broadcast(y, "y"))

    def pdf(self, y):
        """Probability density at ``y``.

        Parameters
        ----------
        y : array-like, broadcastable to the batch shape
            Where to evaluate; infinite values are allowed, NaN is not.

        Returns
        -------
        pdf : ndarray of the batch shape

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[-1.0, 1.0]], 1.0).pdf(0.0)
        array([0.24197072])
        """
        return self._pdf(self._broadcast(y, "y"))

    def logpdf(self, y):
        """Log of the probability density at ``y``, stable far in the tails.

        Parameters
        ----------
        y : array-like, broadcastable to the batch shape
            Where to evaluate; infinite values are allowed, NaN is not.

        Returns
        -------
        logpdf : ndarray of the batch shape

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[-1.0, 1.0]], 1.0).logpdf(1000.0)
        array([-499002.11208571])
        """
        return self._logpdf(self._broadcast(y, "y"))

    def ppf(self, q):
        """Quantile function, the inverse of :meth:`cdf`.

        Parameters
        ----------
        q : float or array-like, broadcastable to the batch shape
            Probabilities in [0, 1]; 0 gives ``-inf`` and 1 gives ``inf``.

        Returns
        -------
        ppf : ndarray of the batch shape

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> dist = NormalMixture([[-1.0, 1.0]], 1.0)
        >>> dist.ppf(0.5), dist.ppf([0.0])
        (array([0.]), array([-inf]))
        """
        q = self._broadcast(q, "q")
        if np.any((q < 0) | (q > 1)):
            raise ValueError(f"q must lie in [0, 1]; got values from {q.min()} to {q.max()}.")
        return self._ppf(q)

    def interval(self, confidence):
        """Central interval holding probability ``confidence``.

        Parameters
        ----------
        confidence : float in (0, 1)
            Probability between the bounds.

        Returns
        -------
        lower, upper : ndarrays of the batch shape
            ``ppf((1 - confidence) / 2)`` and ``ppf((1 + confidence) / 2)``.

        Examples
        --------
        >>> from skhypernet.distributions import Normal
        >>> lower, upper = Normal([0.0], [1.0]).interval(0.95)
        >>> print(f"{lower[0]:.2f} {upper[0]:.2f}")
        -1.96 1.96
        """
        if not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
            raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}.")
        return self.ppf((1 - confidence) / 2), self.ppf((1 + confidence) / 2)

    def rvs(self, size=None, random_state=None):
        """Random draws.

        Parameters
        ----------
        size : int, default=None
            Number of draws per batch element; None draws one, without the
            leading axis.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws; None uses numpy's global random state.

        Returns
        -------
        draws : ndarray of shape ``batch_shape`` or ``(size, *batch_shape)``

        Examples
        --------
        >>> from skhypernet.distributions import NormalMixture
        >>> NormalMixture([[-10.0, 10.0]] * 3, 1.0).rvs(size=4, random_state=0).shape
        (4, 3)
        """
        if size is None:
            shape = self.batch_shape
        elif isinstance(size, numbers.Integral) and size >= 0:
            shape = (int(size), *self.batch_shape)
        else:
            raise ValueError(f"size must be None or a non-negative int, got {size!r}.")
        rng = check_random_state(random_state)
        locs, scales = self._draw_components(shape, rng)
        return locs + scales * rng.standard_normal(shape)

    @abstractmethod
    def _mean(self): ...

    @abstractmethod
    def _epistemic_var(self): ...

    @abstractmethod
    def _aleatoric_var(self): ...

    @abstractmethod
    def _cdf(self, y): ...

    @abstractmethod
    def _pdf(self, y): ...

    @abstractmethod
    def _logpdf(self, y): ...

    @abstractmethod
    def _ppf(self, q): ...

    @abstractmethod
    def _draw_components(self, shape, rng):
        """Location and scale of the Gaussian of every draw of that shape."""

    @abstractmethod
    def _crps(self, y):
        """Continuous ranked probability score of ``y`` (of the batch shape)."""


class Normal(PredictiveDistribution):
    """Independent Gaussians, one per batch element.

    In skhypernet, ``SGDBaseline.predict_dist`` returns a ``Normal`` for a
    single network: its mean is the network's output and its variance the
    observation noise.

    Parameters
    ----------
    loc : array-like
        Means; their shape is the batch shape.
    scale : array-like, broadcastable to the shape of ``loc``
        Standard deviations, finite and > 0.

    Examples
    --------
    >>> from skhypernet.distributions import Normal
    >>> dist = Normal([0.0, 10.0], 2.0)
    >>> dist.std(), dist.epistemic_var()
    (array([2., 2.]), array([0., 0.]))
    """

    _params = ("loc", "scale")

    def __init__(self, loc, scale):
        self.loc = _finite(loc, "loc")
        self.scale = _positive_scales(scale, self.loc.shape, "scale")

    def _mean(self):
        return self.loc.copy()

    def _epistemic_var(self):
        return np.zeros(self.batch_shape)

    def _aleatoric_var(self):
        return self.scale**2

    def _cdf(self, y):
        return ndtr((y - self.loc) / self.scale)

    def _pdf(self, y):
        return np.exp(self._logpdf(y))

    def _logpdf(self, y):
        return _log_density((y - self.loc) / self.scale, self.scale)

    def _ppf(self, q):
        return self.loc + self.scale * ndtri(q)

    def _draw_components(self, shape, rng):
        return self.loc, self.scale

    def _crps(self, y):
        return _abs_moment(y - self.loc, self.scale**2) - self.scale / np.sqrt(np.pi)


class NormalMixture(PredictiveDistribution):
    """Equal-weight mixtures of K Gaussian components, one per batch element.

    In skhypernet, ``HyperNetRegressor.predict_dist`` returns a
    ``NormalMixture`` whose components are the Gaussians of its S weight
    samples: each is centred on that sample's network output, with the
    observation noise as its variance.  ``SGDBaseline.predict_dist`` returns
    one over its ensemble members when it has several.  The spread of the
    component means is the epistemic part of the variance, the mean of their
    variances the aleatoric part.

    Parameters
    ----------
    locs : array-like of shape ``batch_shape + (K,)``
        Means of the components, on the last axis.
    scales : array-like, broadcastable to the shape of ``locs``
        Standard deviations of the components, finite and > 0: for example of
        shape ``(*batch_shape, 1)`` for one noise level per element, or a
        scalar.  They are stored as a broadcast view, without a copy.

    Examples
    --------
    >>> from skhypernet.distributions import NormalMixture
    >>> dist = NormalMixture([[-1.0, 1.0], [0.0, 0.0]], [[1.0], [2.0]])
    >>> dist.var(), dist.epistemic_var()
    (array([2., 4.]), array([1., 0.]))
    """

    _params = ("locs", "scales")
    _n_component_axes = 1

    def __init__(self, locs, scales):
        self.locs = _finite(locs, "locs")
        if self.locs.ndim == 0 or self.locs.shape[-1] == 0:
            raise ValueError(
                f"locs must have the components on a last axis of length >= 1; got shape "
                f"{self.locs.shape}."
            )
        self.scales = _positive_scales(scales, self.locs.shape, "scales")

    def _mean(self):
        return self.locs.mean(axis=-1)

    def _epistemic_var(self):
        return self.locs.var(axis=-1)

    def _aleatoric_var(self):
        return np.mean(self.scales**2, axis=-1)

    def _cdf(self, y):
        return ndtr((y[..., None] - self.locs) / self.scales).mean(axis=-1)

    def _pdf(self, y):
        z = (y[..., None] - self.locs) / self.scales
        return np.exp(_log_density(z, self.scales)).mean(axis=-1)

    def _logpdf(self, y):
        z = (y[..., None] - self.locs) / self.scales
        n_components = self.locs.shape[-1]
        return logsumexp(_log_density(z, self.scales), axis=-1) - np.log(n_components)

    def _ppf(self, q):
        # Every component's own q-quantile: the mixture's CDF is <= q at the
        # smallest of them and >= q at the largest, so they bracket the root.
        own = self.locs + self.scales * ndtri(q)[..., None]
        n_components = own.shape[-1]
        lower, upper = own.min(axis=-1).ravel(), own.max(axis=-1).ravel()
        result = own.mean(axis=-1).ravel()
        active = np.flatnonzero(lower < upper)
        locs = self.locs.reshape(-1, n_components)[active]
        scales = self.scales.reshape(-1, n_components)[active]
        q, lower, upper, x = (v.ravel()[active] for v in (q, lower, upper, result))
        # Relative to x, with the narrowest component setting the absolute scale.
        narrowest = scales.min(axis=-1)
        for _ in range(_PPF_MAX_ITER):
            if active.size == 0:
                break
            z = (x[:, None] - locs) / scales
            residual = ndtr(z).mean(axis=-1) - q
            density = np.exp(_log_density(z, scales)).mean(axis=-1)
            below = residual < 0
            lower, upper = np.where(below, x, lower), np.where(below, upper, x)
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                step = residual / density
            newton = x - step
            inside = (newton > lower) & (newton < upper)
            new = np.where(inside, newton, 0.5 * (lower + upper))
            # Relative to the tail probability: an absolute residual would stop
            # at once for q near 0.
            fitted = np.abs(residual) <= 1e-14 * np.minimum(q, 1 - q)
            result[active] = np.where(fitted, x, new)
            tolerance = 1e-12 * (np.abs(x) + narrowest)
            done = fitted | (upper - lower <= tolerance) | (inside & (np.abs(step) <= tolerance))
            keep = ~done
            active, locs, scales, q, lower, upper, x, narrowest = (
                v[keep] for v in (active, locs, scales, q, lower, upper, new, narrowest)
            )
        return result.reshape(self.batch_shape)

    def _draw_components(self, shape, rng):
        n_components = self.locs.shape[-1]
        picked = rng.randint(n_components, size=shape)[..., None]
        return tuple(
            np.take_along_axis(np.broadcast_to(v, (*shape, n_components)), picked, axis=-1)[..., 0]
            for v in (self.locs, self.scales)
        )

    def _crps(self, y):
        # Grimit et al. (2006): E|X - y| - E|X - X'| / 2 for independent X, X'.
        # Chunks of rows bound the memory of the O(K^2) pair term.
        n_components = self.locs.shape[-1]
        locs, scales = (v.reshape(-1, n_components) for v in (self.locs, self.scales))
        y = y.reshape(-1, 1)
        result = np.empty(len(locs))
        rows = max(1, _PAIRWISE_CHUNK // n_components)
        for start in range(0, len(locs), rows):
            chunk = slice(start, start + rows)
            mu, var = locs[chunk], scales[chunk] ** 2
            to_y = _abs_moment(y[chunk] - mu, var).mean(axis=-1)
            # The pair term is even in the difference of the means: each pair
            # i < j counts twice; the diagonal is E|N(0, 2 s^2)| = 2 s / sqrt(pi).
            between = 2 / np.sqrt(np.pi) * scales[chunk].sum(axis=-1)
            # Slices against one component at a time: no gathered copies.
            for i in range(n_components - 1):
                m, v = mu[:, i, None] - mu[:, i + 1 :], var[:, i, None] + var[:, i + 1 :]
                between += 2 * _abs_moment(m, v).sum(axis=-1)
            result[chunk] = to_y - 0.5 * between / n_components**2
        return result.reshape(self.batch_shape)
