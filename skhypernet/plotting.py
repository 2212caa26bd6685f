"""Plots (matplotlib is an optional dependency: ``pip install skhypernet[plot]``)."""

import numpy as np


def plot_weight_diffusion(records, path):
    """Figure 2 of the paper: weight diffusion and test RMSE per epoch.

    One row per data set, one column per repetition.  Blue: the mean over the
    hypernetwork's outputs of their standard deviation across 10 samples, with
    a gray band of 3 standard deviations of those deviations; red (right
    axis): the test RMSE of every epoch.

    Parameters
    ----------
    records : list of dict
        UCI benchmark records of HyperNet runs that tracked every epoch (with
        ``weight_diffusion`` and ``rmse_tracked_epochs``).
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
        if record.get("method") == "HyperNet" and "weight_diffusion" in record:
            runs.setdefault(record["dataset"], []).append(record)
    if not runs:
        raise ValueError("No HyperNet records with weight diffusion to plot.")
    n_columns = max(len(found) for found in runs.values())
    figure, axes = plt.subplots(
        len(runs), n_columns, squeeze=False, figsize=(4 * n_columns, 2.8 * len(runs))
    )
    for row, (dataset, found) in enumerate(sorted(runs.items())):
        for column, record in enumerate(sorted(found, key=lambda r: r["split"])):
            axis = axes[row][column]
            diffusion = np.asarray(record["weight_diffusion"])
            epochs = np.arange(1, len(diffusion) + 1)
            mean, spread = diffusion[:, 0], diffusion[:, 1]
            axis.fill_between(epochs, mean - 3 * spread, mean + 3 * spread, color="0.85")
            axis.plot(epochs, mean, color="tab:blue")
            axis.set_title(f"{dataset}, split {record['split']}", fontsize=9)
            axis.set_xlabel("epoch")
            if column == 0:
                axis.set_ylabel("std of hypernet outputs", color="tab:blue")
            rmse = np.asarray(record["rmse_tracked_epochs"])
            twin = axis.twinx()
            twin.plot(epochs[len(epochs) - len(rmse) :], rmse, color="tab:red")
            if column == n_columns - 1:
                twin.set_ylabel("test RMSE", color="tab:red")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure
