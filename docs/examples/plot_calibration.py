"""
Predictive distributions and their calibration
==============================================

``predict_dist`` returns each row's predictive distribution: for
``HyperNetRegressor`` the exact mixture of the Gaussians of its weight
samples, for ``SGDBaseline`` a Gaussian, and for ``n_members > 1`` the
mixture over every member.  :mod:`skhypernet.metrics` scores them with proper
scoring rules (log-likelihood, CRPS) and interval coverage, and
:func:`~skhypernet.plotting.plot_calibration` shows whether central intervals
cover what they claim (left) and the histogram of the probability integral
transform (right: flat when calibrated).

The data are scikit-learn's diabetes set (442 rows); the figures are those
of this one split, so differences of a few hundredths are noise.
"""

import warnings

from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetRegressor, SGDBaseline
from skhypernet.metrics import crps, interval_coverage, log_likelihood
from skhypernet.plotting import plot_calibration

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

models = {
    "HyperNetRegressor (paper)": HyperNetRegressor(random_state=0),
    "SGDBaseline, 5 members": SGDBaseline(n_members=5, random_state=0),
}
for name, model in models.items():
    dist = model.fit(X_train, y_train).predict_dist(X_test)
    print(
        f"{name}: log-likelihood {log_likelihood(y_test, dist):.3f}, "
        f"CRPS {crps(y_test, dist):.2f}, "
        f"90 % coverage {interval_coverage(y_test, dist, confidence=0.9):.2f}"
    )
    figure = plot_calibration(y_test, dist)
    figure.suptitle(name, fontsize=9)
    figure.tight_layout()

# %%
# The variance splits into the part from the weight distribution (the
# spread of the weight samples' predictions: epistemic) and the noise
# (aleatoric).  Under the paper's objective the weight distribution has
# shrunk, so nearly all of the variance is noise; the members of an ensemble
# disagree more.
for name, model in models.items():
    dist = model.predict_dist(X_test)
    share = dist.epistemic_var().mean() / dist.var().mean()
    print(f"{name}: share of the variance from the weights {share:.3f}")

# The same model inside a pipeline: call the last step on transformed rows.
pipeline = make_pipeline(StandardScaler(), SGDBaseline(random_state=0)).fit(X, y)
print(pipeline[-1].predict_dist(pipeline[:-1].transform(X[:3])).interval(0.9))
