"""
Weight diffusion during training
================================

Figure 2 of the paper: how the distribution of the weights that the
hypernetwork generates changes as training goes on.  ``weight_diffusion_``
holds, per epoch, the mean over all main-network parameters of their standard
deviation across 10 fixed noise draws, and ``weight_diffusion_steps_`` the
Adam steps taken by then.

With the paper's objective (left) the spread shrinks to nothing: every step
of eq. 3 penalises spread, so after some 10,000 Adam steps the hypernetwork
is in effect one network, and ``weight_collapse_step_`` (dashed) says when
its spread fell below 1 % of its start.  With ``kl_weight=0.1`` (right, an
extension beyond the paper) a KL term towards a Gaussian prior holds the
spread up to the end.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetRegressor

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_diabetes(return_X_y=True)
X = StandardScaler().fit_transform(X)

figure, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for axis, kl_weight in zip(axes, [0.0, 0.1]):
    model = HyperNetRegressor(
        batch_size=1,
        max_iter=30,
        n_iter_no_change=np.inf,
        early_stopping=False,
        kl_weight=kl_weight,
        random_state=0,
    )
    model.fit(X, y)
    mean, spread = model.weight_diffusion_.T
    steps = model.weight_diffusion_steps_
    axis.fill_between(
        steps, np.maximum(mean - 3 * spread, mean / 10), mean + 3 * spread, color="0.85"
    )
    axis.plot(steps, np.maximum(mean, 1e-6), color="tab:blue")
    axis.axhline(model.initial_weight_diffusion_, color="0.5", linewidth=1, label="at start")
    if model.weight_collapse_step_ is not None:
        axis.axvline(
            model.weight_collapse_step_,
            color="tab:blue",
            linestyle="--",
            label=f"< 1 % at step {model.weight_collapse_step_:,}",
        )
    axis.set_yscale("log")
    axis.set_title("paper's objective" if kl_weight == 0 else f"kl_weight={kl_weight}")
    axis.set_xlabel("Adam steps")
    axis.legend(fontsize=8)
axes[0].set_ylabel("std of hypernetwork outputs")
figure.tight_layout()
plt.show()
