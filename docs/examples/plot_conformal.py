"""
Intervals with a coverage guarantee: conformal prediction
=========================================================

A model's own intervals are only as good as its noise estimate.  Split
conformal prediction (MAPIE's ``SplitConformalRegressor``) calibrates them on
rows the model did not train on and guarantees, for exchangeable data, a
coverage of at least the confidence level on new rows.  It works around both
regressors as around any scikit-learn regressor:

- ``conformity_score="absolute"``: intervals of one width, from the
  quantile of the absolute residuals;
- ``StdConformityScore()``: residuals divided by the model's
  ``predict(X, return_std=True)``, so the width follows the predictive
  standard deviation.

The data are synthetic, with noise that grows with the first feature
(1,000 rows to train, 500 to conformalize, 1,000 to test), and the model
learns that noise with ``loss='gaussian_nll'``.  Needs ``pip install mapie``.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from mapie.conformity_scores import StdConformityScore
from mapie.regression import SplitConformalRegressor
from sklearn.exceptions import ConvergenceWarning

from skhypernet import HyperNetRegressor
from skhypernet.metrics import interval_coverage, interval_width

warnings.simplefilter("ignore", ConvergenceWarning)
rng = np.random.RandomState(0)
X = rng.uniform(-2, 2, size=(2500, 4))
y = (
    np.sin(2 * X[:, 0])
    + X[:, 1] ** 2 / 2
    + (0.1 + 0.4 * (X[:, 0] + 2) / 4) * rng.normal(size=len(X))
)
X_train, y_train = X[:1000], y[:1000]
X_conformalize, y_conformalize = X[1000:1500], y[1000:1500]
X_test, y_test = X[1500:], y[1500:]


def model():
    return HyperNetRegressor(loss="gaussian_nll", max_iter=150, random_state=0)


own = model().fit(X_train, y_train)
lower, upper = own.predict_dist(X_test).interval(0.9)
intervals = {"model's own 90 % interval": (lower, upper)}
for name, score in [("conformal, absolute", "absolute"), ("conformal, std", StdConformityScore())]:
    conformal = SplitConformalRegressor(
        model(), confidence_level=0.9, conformity_score=score, prefit=False
    )
    conformal.fit(X_train, y_train).conformalize(X_conformalize, y_conformalize)
    _, bounds = conformal.predict_interval(X_test)
    intervals[name] = (bounds[:, 0, 0], bounds[:, 1, 0])

order = np.argsort(X_test[:, 0])
figure, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
for axis, (name, (low, high)) in zip(axes, intervals.items()):
    covered = np.mean((y_test >= low) & (y_test <= high))
    width = np.mean(high - low)
    print(f"{name}: coverage {covered:.3f}, mean width {width:.2f}")
    axis.fill_between(
        X_test[order, 0],
        (low - own.predict(X_test))[order],
        (high - own.predict(X_test))[order],
        color="tab:blue",
        alpha=0.3,
    )
    axis.scatter(X_test[:, 0], y_test - own.predict(X_test), s=3, color="black")
    axis.set_title(f"{name}\ncoverage {covered:.2f}, width {width:.2f}", fontsize=9)
    axis.set_xlabel("first feature")
axes[0].set_ylabel("y minus the model's mean")
figure.tight_layout()

# %%
# The same figures from :mod:`skhypernet.metrics` for the model's own
# distribution:
dist = own.predict_dist(X_test)
print(
    interval_coverage(y_test, dist, confidence=0.9), interval_width(y_test, dist, confidence=0.9)
)
