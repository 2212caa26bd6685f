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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
