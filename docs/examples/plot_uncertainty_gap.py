"""
Uncertainty where there is no data
==================================

A 1-D regression whose training data has a gap between x = -1 and x = 1.
HyperNetRegressor's predictive band (mean +- 2 standard deviations) widens in
the gap, where the weight samples disagree; SGDBaseline's band, the noise term
alone, does not.
"""

import matplotlib.pyplot as plt
import numpy as np

from skhypernet import HyperNetRegressor, SGDBaseline

rng = np.random.RandomState(0)
X = np.concatenate([rng.uniform(-4, -1, 150), rng.uniform(1, 4, 150)])[:, None]
y = np.sin(X[:, 0]) + 0.1 * X[:, 0] ** 2 + 0.15 * rng.normal(size=len(X))
grid = np.linspace(-5, 5, 400)[:, None]

figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for axis, model in zip(
    axes,
    [HyperNetRegressor(max_iter=400, random_state=0), SGDBaseline(max_iter=400, random_state=0)],
):
    model.fit(X, y)
    mean, std = model.predict(grid, return_std=True)
    axis.fill_between(
        grid[:, 0],
        mean - 2 * std,
        mean + 2 * std,
        color="tab:blue",
        alpha=0.25,
        label="mean ± 2 std",
    )
    axis.plot(grid[:, 0], mean, color="tab:blue", label="predictive mean")
    axis.scatter(X[:, 0], y, s=6, color="k", label="training data")
    axis.axvspan(-1, 1, color="0.92", zorder=0)
    axis.set_title(type(model).__name__)
    axis.set_xlabel("x")
axes[0].set_ylabel("y")
axes[0].legend(loc="upper center", fontsize=8)
figure.tight_layout()
plt.show()
