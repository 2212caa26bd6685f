"""
Weight diffusion during training
================================

Figure 2 of the paper: how the distribution of the weights that the
hypernetwork generates shrinks as training goes on.  ``weight_diffusion_``
holds, per epoch, the mean over all main-network parameters of their standard
deviation across 10 fixed noise draws, and the spread of those deviations.
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

figure, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for seed, axis in enumerate(axes):
    model = HyperNetRegressor(max_iter=150, n_iter_no_change=np.inf, random_state=seed)
    model.fit(X, y)
    mean, spread = model.weight_diffusion_.T
    epochs = np.arange(1, len(mean) + 1)
    axis.fill_between(epochs, mean - 3 * spread, mean + 3 * spread, color="0.85")
    axis.plot(epochs, mean, color="tab:blue")
    axis.set_title(f"random_state={seed}")
    axis.set_xlabel("epoch")
axes[0].set_ylabel("std of hypernetwork outputs")
figure.tight_layout()
plt.show()
