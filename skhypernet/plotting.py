"""Plots (matplotlib is an optional dependency: ``pip install skhypernet[plot]``)."""

import numpy as np


def plot_weight_diffusion(records, path):
    """Figure 2 of the paper: weight diffusion and test RMSE against Adam steps.

    One row per data set and hypernetwork mode (the paper's objective,
    ``HyperNet``, and the KL-regularised one, ``HyperNet-KL``), one column per
    repetition.  Blue: the mean over the hypernetwork's outputs of their
    standard deviation across 10 samples, with a gray band of 3 standard
    deviations of those deviations, on a logarithmic scale; a dashed line
    marks ``weight_collapse_step_``, where the mean fell below 1 % of its
    initial value.  Red (right axis): the test RMSE of every epoch.

    Parameters
    ----------
    records : list of dict
        UCI benchmark records of hypernetwork runs that tracked every epoch
        (with ``weight_diffusion``, ``weight_diffusion_steps`` and
        ``rmse_tracked_epochs``).
    path : str
        PNG file to write.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    runs = {}
    for record in records:
        if "weight_diffusion_steps" in record:
            runs.setdefault((record["dataset"], record["method"]), []).append(record)
    if not runs:
        raise ValueError("No hypernetwork records with weight diffusion to plot.")
    n_columns = max(len(found) for found in runs.values())
    figure, axes = plt.subplots(
        len(runs), n_columns, squeeze=False, figsize=(4 * n_columns, 2.8 * len(runs))
    )
    for row, ((dataset, method), found) in enumerate(sorted(runs.items())):
        for column, record in enumerate(sorted(found, key=lambda r: r["split"])):
            axis = axes[row][column]
            diffusion = np.asarray(record["weight_diffusion"])
            steps = np.asarray(record["weight_diffusion_steps"])
            mean, spread = diffusion[:, 0], diffusion[:, 1]
            lower = np.maximum(mean - 3 * spread, mean / 10)
            axis.fill_between(steps, lower, mean + 3 * spread, color="0.85")
            axis.plot(steps, np.maximum(mean, 1e-6), color="tab:blue")
            axis.set_yscale("log")
            collapse = record.get("weight_collapse_step")
            title = f"{dataset}, split {record['split']}, {method}"
            if collapse is not None:
                axis.axvline(collapse, color="tab:blue", linestyle="--", linewidth=1)
                title += f"\n< 1 % of initial spread at step {collapse:,}"
            axis.set_title(title, fontsize=8)
            axis.set_xlabel("Adam steps")
            if column == 0:
                axis.set_ylabel("std of hypernet outputs", color="tab:blue")
            rmse = np.asarray(record["rmse_tracked_epochs"])
            twin = axis.twinx()
            twin.plot(steps[len(steps) - len(rmse) :], rmse, color="tab:red")
            if column == n_columns - 1:
                twin.set_ylabel("test RMSE", color="tab:red")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(ax, n_axes, width):
    """``ax`` (one or a sequence of ``n_axes``) and its figure, or new ones."""
    if ax is None:
        figure, ax = _pyplot().subplots(1, n_axes, figsize=(width * n_axes, 3.2), squeeze=False)
        ax = list(ax[0])
    else:
        ax = list(np.atleast_1d(ax))
        if len(ax) != n_axes:
            raise ValueError(f"ax must hold {n_axes} axes, got {len(ax)}.")
    return ax[0].figure, ax


def plot_calibration(y_true, y_dist, *, levels=None, n_bins=10, ax=None):
    """Calibration of a predictive distribution: coverage and PIT histogram.

    Left: the observed coverage of central intervals against their
    confidence level (on the diagonal where calibrated; below it, intervals
    too narrow).  Right: the histogram of the probability integral transform
    ``F(y_true)`` (flat where calibrated; U-shaped for too narrow intervals,
    peaked for too wide ones).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed targets.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Their predictive distribution, for example ``model.predict_dist(X)``.
    levels : array-like of float in (0, 1), default=None
        Confidence levels of the intervals; 0.05 to 0.95 by 0.05 by default.
    n_bins : int, default=10
        Bins of the PIT histogram.
    ax : sequence of two matplotlib Axes, default=None
        Where to draw; new ones by default.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skhypernet.distributions import Normal
    >>> from skhypernet.plotting import plot_calibration
    >>> y = np.random.RandomState(0).normal(size=500)
    >>> figure = plot_calibration(y, Normal(np.zeros(500), np.ones(500)))
    """
    from .metrics import as_distribution, interval_coverage

    dist = as_distribution(y_dist)
    y_true = np.asarray(y_true, dtype=np.float64)
    levels = np.arange(0.05, 0.96, 0.05) if levels is None else np.asarray(levels, float)
    observed = [interval_coverage(y_true, dist, confidence=level) for level in levels]
    pit = np.ravel(dist.cdf(y_true.reshape(dist.batch_shape)))
    figure, (coverage_axis, pit_axis) = _axes(ax, 2, 3.6)
    coverage_axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    coverage_axis.plot(levels, observed, marker="o", markersize=3, color="tab:blue")
    coverage_axis.set_xlabel("confidence level of central interval")
    coverage_axis.set_ylabel("observed coverage")
    coverage_axis.set_xlim(0, 1)
    coverage_axis.set_ylim(0, 1)
    pit_axis.hist(pit, bins=n_bins, range=(0, 1), density=True, color="tab:blue", alpha=0.7)
    pit_axis.axhline(1.0, color="0.6", linestyle="--", linewidth=1)
    pit_axis.set_xlabel("PIT, F(y)")
    pit_axis.set_ylabel("density")
    figure.tight_layout()
    return figure


def plot_intervals(x, y_dist, y_true=None, *, confidence=0.9, ax=None):
    """Prediction with uncertainty bands along one feature.

    The mean, the central interval of the whole predictive distribution
    (light band), and the part of it from the weight distribution alone
    (dark band: mean plus or minus the same number of epistemic standard
    deviations as a Gaussian interval of that confidence has).

    Parameters
    ----------
    x : array-like of shape (n_samples,)
        The feature to plot against, one value per row of the distribution.
    y_dist : PredictiveDistribution or tuple of (mean, std)
        Predictive distribution of one target, batch shape ``(n_samples,)``.
    y_true : array-like of shape (n_samples,), default=None
        Observed targets, drawn as points.
    confidence : float, default=0.9
        Confidence level of the bands.
    ax : matplotlib Axes, default=None
        Where to draw; a new one by default.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skhypernet.distributions import NormalMixture
    >>> from skhypernet.plotting import plot_intervals
    >>> x = np.linspace(-1, 1, 50)
    >>> locs = np.sin(3 * x)[:, None] + np.linspace(-0.1, 0.1, 5) * (1 + x[:, None] ** 2)
    >>> figure = plot_intervals(x, NormalMixture(locs, 0.1))
    """
    from scipy.stats import norm

    from .metrics import as_distribution

    dist = as_distribution(y_dist)
    x = np.ravel(np.asarray(x, dtype=np.float64))
    if dist.batch_shape != x.shape:
        raise ValueError(
            f"x has {x.size} values but the distribution has batch shape {dist.batch_shape}: "
            "plot one target, one value of x per row."
        )
    order = np.argsort(x, kind="stable")
    mean = dist.mean()[order]
    lower, upper = (bound[order] for bound in dist.interval(confidence))
    epistemic = norm.ppf(0.5 + confidence / 2) * np.sqrt(dist.epistemic_var()[order])
    figure, (axis,) = _axes(ax, 1, 5.0)
    axis.fill_between(
        x[order],
        lower,
        upper,
        color="tab:blue",
        alpha=0.2,
        linewidth=0,
        label=f"{confidence:.0%} interval, total",
    )
    axis.fill_between(
        x[order],
        mean - epistemic,
        mean + epistemic,
        color="tab:blue",
        alpha=0.45,
        linewidth=0,
        label="from the weight distribution",
    )
    axis.plot(x[order], mean, color="tab:blue", label="mean")
    if y_true is not None:
        axis.scatter(x, np.ravel(y_true), s=6, color="black", label="observed")
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def plot_reliability(y_true, y_prob, *, classes=None, n_bins=10, ax=None):
    """Reliability diagram of a classifier's probabilities.

    The accuracy of the predicted class against its predicted probability,
    in equal-width bins of that probability, with the expected calibration
    error (:func:`skhypernet.metrics.expected_calibration_error`) in the
    title.  Points below the diagonal: overconfident.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities, for example ``model.predict_proba(X)``.
    classes : array-like of shape (n_classes,), default=None
        The labels of ``y_prob``'s columns (``model.classes_``); the sorted
        unique labels of ``y_true`` by default.
    n_bins : int, default=10
        Number of probability bins.
    ax : matplotlib Axes, default=None
        Where to draw; a new one by default.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skhypernet.plotting import plot_reliability
    >>> y = np.array([0, 1, 1, 0, 1])
    >>> proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    >>> figure = plot_reliability(y, proba)
    """
    from .metrics import expected_calibration_error, top_label_bins

    ece = expected_calibration_error(y_true, y_prob, classes=classes, n_bins=n_bins)
    confidence, accuracy, counts = top_label_bins(y_true, y_prob, classes=classes, n_bins=n_bins)
    filled = counts > 0
    figure, (axis,) = _axes(ax, 1, 4.0)
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    axis.plot(confidence[filled], accuracy[filled], marker="o", color="tab:blue")
    axis.set_xlabel("predicted probability of the predicted class")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(f"expected calibration error {ece:.3f}", fontsize=9)
    figure.tight_layout()
    return figure
