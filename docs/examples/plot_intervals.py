"""
Epistemic and aleatoric uncertainty along a feature
===================================================

:func:`~skhypernet.plotting.plot_intervals` draws the predictive mean, the
central interval of the whole predictive distribution (light) and the part
that comes from the weight distribution alone (dark), read from
``predict_dist``: ``epistemic_var()`` is the spread of the weight samples'
predictions, ``aleatoric_var()`` the noise.

Training rows cover -3 < x < 3.  A single hypernetwork under the paper's
objective ends close to one network, so its epistemic band is thin; five
members (``n_members=5``, trained together in one pass) disagree beyond the
data, and that disagreement is the epistemic part of the mixture.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skhypernet import HyperNetRegressor
from skhypernet.plotting import plot_intervals

warnings.simplefilter("ignore", ConvergenceWarning)
rng = np.random.RandomState(0)
X = rng.uniform(-3, 3, size=(300, 1))
y = np.sin(X[:, 0]) + 0.2 * rng.normal(size=len(X))
grid = np.linspace(-6, 6, 300)[:, None]

figure, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for axis, n_members in zip(axes, [1, 5]):
    model = HyperNetRegressor(n_members=n_members, max_iter=300, random_state=0).fit(X, y)
    dist = model.predict_dist(grid)
    plot_intervals(grid[:, 0], dist, ax=axis)
    axis.scatter(X[:, 0], y, s=4, color="black")
    axis.set_title(f"HyperNetRegressor(n_members={n_members})", fontsize=9)
    inside, outside = np.abs(grid[:, 0]) < 3, np.abs(grid[:, 0]) > 4
    share = dist.epistemic_var() / dist.var()
    print(
        f"n_members={n_members}: share of the variance from the weights "
        f"{share[inside].mean():.3f} on the data, {share[outside].mean():.3f} beyond |x| > 4"
    )
axes[0].set_ylim(-3, 3)
figure.tight_layout()
