"""Predictive distributions against scipy.stats and brute force."""

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from skhypernet.distributions import Normal, NormalMixture


def random_mixture(seed, batch_shape=(6,), n_components=4):
    rng = np.random.RandomState(seed)
    shape = (*batch_shape, n_components)
    return rng.normal(scale=3, size=shape), rng.uniform(0.2, 2.0, size=shape)


def explicit(locs, scales, y):
    """Component-wise cdf and pdf of ``y`` from scipy, for explicit sums."""
    y = np.asarray(y)[..., None]
    return norm.cdf(y, locs, scales), norm.pdf(y, locs, scales)


@pytest.mark.parametrize("batch_shape", [(7,), (5, 3)])
def test_normal_matches_scipy(batch_shape):
    rng = np.random.RandomState(0)
    loc, scale = rng.normal(size=batch_shape), rng.uniform(0.1, 3, size=batch_shape)
    y, q = rng.normal(size=batch_shape), rng.uniform(size=batch_shape)
    dist, reference = Normal(loc, scale), norm(loc, scale)
    assert dist.batch_shape == batch_shape
    for ours, theirs in [
        (dist.cdf(y), reference.cdf(y)),
        (dist.pdf(y), reference.pdf(y)),
        (dist.logpdf(y), reference.logpdf(y)),
        (dist.ppf(q), reference.ppf(q)),
        (dist.mean(), reference.mean()),
        (dist.std(), reference.std()),
        (dist.var(), reference.var()),
        (dist.aleatoric_var(), reference.var()),
        (dist.interval(0.8), reference.interval(0.8)),
    ]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(dist.epistemic_var(), 0.0)


@pytest.mark.parametrize("scale_shape", ["full", "per_row", "scalar"])
def test_mixture_matches_explicit_sums(scale_shape):
    locs, scales = random_mixture(1)
    scales = {"full": scales, "per_row": scales[:, :1], "scalar": 0.7}[scale_shape]
    dist = NormalMixture(locs, scales)
    full_scales = np.broadcast_to(scales, locs.shape)
    y = np.random.RandomState(2).normal(scale=3, size=len(locs))
    cdfs, pdfs = explicit(locs, full_scales, y)
    np.testing.assert_allclose(dist.cdf(y), cdfs.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(dist.pdf(y), pdfs.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(dist.logpdf(y), np.log(pdfs.mean(axis=-1)), rtol=1e-12)
    mean = locs.mean(axis=-1)
    np.testing.assert_allclose(dist.mean(), mean, rtol=1e-12)
    # The variance by the law of total variance, computed another way.
    second_moment = np.mean(full_scales**2 + locs**2, axis=-1)
    np.testing.assert_allclose(dist.var(), second_moment - mean**2, rtol=1e-10)
    np.testing.assert_allclose(dist.epistemic_var(), np.var(locs, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(dist.aleatoric_var(), np.mean(full_scales**2, axis=-1))
    np.testing.assert_array_equal(dist.var(), dist.epistemic_var() + dist.aleatoric_var())
    np.testing.assert_array_equal(dist.std(), np.sqrt(dist.var()))


def test_mixture_with_two_batch_axes_works_per_element():
    locs, scales = random_mixture(3, batch_shape=(4, 2), n_components=3)
    dist = NormalMixture(locs, scales)
    y = np.linspace(-2, 2, 8).reshape(4, 2)
    assert dist.batch_shape == (4, 2) and len(dist) == 4
    for i, j in np.ndindex(4, 2):
        element = NormalMixture(locs[i, j], scales[i, j])
        assert element.batch_shape == ()
        for method in ("cdf", "pdf", "logpdf"):
            np.testing.assert_allclose(
                getattr(dist, method)(y)[i, j], getattr(element, method)(y[i, j]), rtol=1e-12
            )
        np.testing.assert_allclose(dist.ppf(0.3)[i, j], element.ppf(0.3), rtol=1e-12)


def test_mixture_logpdf_is_finite_far_in_the_tail():
    dist = NormalMixture([[0.0, 1.0]], 1.0)
    # The component at 1 dominates: log(phi(999) / 2 * (1 + exp(-999.5))).
    expected = norm.logpdf(999.0) - np.log(2)
    np.testing.assert_allclose(dist.logpdf(1e3), [expected], rtol=1e-14)
    assert np.isfinite(dist.logpdf(-1e3)).all()


def cdf_minus(x, dist, q):
    return dist.cdf(x) - q


MIXTURES = {
    "random": random_mixture(4, batch_shape=(12,), n_components=5),
    "bimodal": (np.array([[-20.0, 20.0], [-6.0, 6.0], [0.0, 50.0]]), np.ones((3, 2))),
    "scales_far_apart": (np.array([[0.0, 0.0], [0.0, 5.0], [3.0, -3.0]]), [[1e-3, 1e3]]),
    "narrow_and_distant": (np.array([[0.0, 1e8], [0.0, -1e8], [-1.0, 1.0]]), [[1e-3, 1.0]]),
}


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_ppf_inverts_the_cdf_and_matches_brentq(name):
    locs, scales = MIXTURES[name]
    dist = NormalMixture(locs, scales)
    q = np.random.RandomState(5).uniform(1e-4, 1 - 1e-4, size=len(dist))
    q[0] = 1e-9  # deep in the lower tail, where an absolute residual would stop early
    x = dist.ppf(q)
    np.testing.assert_allclose(dist.cdf(x), q, rtol=1e-9, atol=1e-12)
    for i in range(len(dist)):
        expected = brentq(cdf_minus, -1e9, 1e9, args=(dist[i], q[i]), xtol=1e-13, rtol=1e-14)
        np.testing.assert_allclose(x[i], expected, rtol=1e-8, atol=1e-8)


def test_mixture_ppf_edges_and_central_interval():
    dist = NormalMixture(*random_mixture(6))
    assert np.all(dist.ppf(0.0) == -np.inf) and np.all(dist.ppf(1.0) == np.inf)
    lower, upper = dist.interval(0.9)
    np.testing.assert_allclose(dist.cdf(lower), 0.05, atol=1e-12)
    np.testing.assert_allclose(dist.cdf(upper), 0.95, atol=1e-12)
    # q broadcasts against the batch shape.
    q = np.linspace(0.1, 0.9, len(dist))
    np.testing.assert_allclose(dist.cdf(dist.ppf(q)), q, atol=1e-12)


def test_mixture_of_identical_components_is_the_normal():
    rng = np.random.RandomState(7)
    loc, scale = rng.normal(size=5), rng.uniform(0.5, 2, size=5)
    mixture = NormalMixture(np.repeat(loc[:, None], 4, axis=1), scale[:, None])
    normal = Normal(loc, scale)
    q = rng.uniform(size=5)
    np.testing.assert_allclose(mixture.ppf(q), normal.ppf(q), rtol=1e-12)
    np.testing.assert_allclose(mixture.interval(0.5), normal.interval(0.5), rtol=1e-12)
    np.testing.assert_allclose(mixture.logpdf(q), normal.logpdf(q), rtol=1e-12)
    np.testing.assert_allclose(mixture.var(), normal.var(), rtol=1e-12)


def test_rvs_moments_and_shapes():
    n_draws = 20_000
    normal = Normal([1.0, -2.0], [0.5, 3.0])
    draws = normal.rvs(size=n_draws, random_state=0)
    assert draws.shape == (n_draws, 2)
    standard_error = normal.std() / np.sqrt(n_draws)
    assert np.all(np.abs(draws.mean(axis=0) - normal.mean()) < 4 * standard_error)
    np.testing.assert_allclose(draws.var(axis=0), normal.var(), rtol=0.05)

    # Two well-separated components with different noise: each half of the draws.
    mixture = NormalMixture([[-10.0, 10.0]], [[1.0, 2.0]])
    draws = mixture.rvs(size=n_draws, random_state=1)[:, 0]
    assert abs(np.mean(draws > 0) - 0.5) < 4 * np.sqrt(0.25 / n_draws)
    assert abs(draws.mean() - mixture.mean()[0]) < 4 * mixture.std()[0] / np.sqrt(n_draws)
    np.testing.assert_allclose(draws.var(), mixture.var()[0], rtol=0.05)
    np.testing.assert_allclose(draws[draws > 0].std(), 2.0, rtol=0.05)

    two_axes = NormalMixture(*random_mixture(8, batch_shape=(3, 2)))
    assert two_axes.rvs(random_state=0).shape == (3, 2)
    assert two_axes.rvs(size=4, random_state=0).shape == (4, 3, 2)


@pytest.mark.parametrize("dist", [Normal([0.0, 1.0], 1.0), NormalMixture([[0.0, 5.0]] * 2, 1.0)])
def test_rvs_is_repeatable_with_a_seed(dist):
    np.testing.assert_array_equal(
        dist.rvs(size=5, random_state=3), dist.rvs(size=5, random_state=3)
    )
    same_generator = np.random.RandomState(3)
    np.testing.assert_array_equal(
        dist.rvs(size=5, random_state=same_generator), dist.rvs(size=5, random_state=3)
    )
    assert not np.array_equal(dist.rvs(size=5, random_state=3), dist.rvs(size=5, random_state=4))


def test_indexing_selects_rows_of_the_batch():
    locs, scales = random_mixture(9, batch_shape=(5, 2), n_components=3)
    dist = NormalMixture(locs, scales)
    rows = dist[1:3]
    assert isinstance(rows, NormalMixture) and rows.batch_shape == (2, 2)
    np.testing.assert_array_equal(rows.locs, locs[1:3])
    # An Ellipsis picks the last batch axis (an output), not a component.
    first_output = dist[..., 0]
    assert first_output.batch_shape == (5,) and first_output.locs.shape == (5, 3)
    np.testing.assert_array_equal(first_output.mean(), dist.mean()[:, 0])
    mask = np.array([True, False, True, False, False])
    np.testing.assert_array_equal(dist[mask].cdf(0.0), dist.cdf(0.0)[mask])
    normal = Normal(np.arange(4.0), 2.0)
    assert isinstance(normal[[0, 2]], Normal)
    np.testing.assert_array_equal(normal[[0, 2]].mean(), [0.0, 2.0])
    assert normal[1].batch_shape == ()
    with pytest.raises(TypeError, match="batch shape"):
        len(normal[1])


def test_mixture_keeps_broadcast_scales_as_a_view():
    locs = np.zeros((1000, 50))
    scales = np.ones((1000, 1))
    dist = NormalMixture(locs, scales)
    assert dist.scales.shape == (1000, 50) and dist.scales.strides[-1] == 0
    assert np.shares_memory(dist.scales, scales) and np.shares_memory(dist.locs, locs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Normal([0.0, np.nan], 1.0), "loc must be finite"),
        (lambda: Normal([0.0, 1.0], [1.0, np.inf]), "scale must be finite"),
        (lambda: Normal([0.0, 1.0], [1.0, 0.0]), "scale must be > 0"),
        (lambda: Normal([0.0, 1.0], [1.0, 1.0, 1.0]), "does not broadcast"),
        (lambda: NormalMixture([[0.0, np.inf]], 1.0), "locs must be finite"),
        (lambda: NormalMixture([[0.0, 1.0]], [[1.0, -1.0]]), "scales must be > 0"),
        (lambda: NormalMixture([[0.0, 1.0]], 0.0), "scales must be > 0"),
        (lambda: NormalMixture(np.zeros((3, 0)), 1.0), "length >= 1"),
        (lambda: NormalMixture(0.0, 1.0), "last axis"),
        (lambda: NormalMixture(np.zeros((3, 2)), np.ones(3)), "does not broadcast"),
    ],
)
def test_constructors_reject_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("dist", [Normal(np.zeros(3), 1.0), NormalMixture(np.zeros((3, 2)), 1.0)])
def test_methods_reject_bad_arguments(dist):
    with pytest.raises(ValueError, match="does not broadcast to the batch shape"):
        dist.cdf(np.zeros(4))
    with pytest.raises(ValueError, match="does not broadcast to the batch shape"):
        dist.logpdf(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="y holds NaN"):
        dist.pdf([0.0, np.nan, 1.0])
    for q in (-0.1, 1.5, [0.2, 0.5, 1.01]):
        with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
            dist.ppf(q)
    with pytest.raises(ValueError, match="q holds NaN"):
        dist.ppf(np.nan)
    for confidence in (0, 1, 1.5, -0.2, np.nan, "0.9", [0.5, 0.9]):
        with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\)"):
            dist.interval(confidence)
    for size in (-1, 2.5, (2, 3)):
        with pytest.raises(ValueError, match="size must be None or a non-negative int"):
            dist.rvs(size=size)
