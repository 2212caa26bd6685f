"""
Tuning for log-likelihood
=========================

``GridSearchCV`` picks the setting with the highest score, and the default
score of a regressor is R², which ignores the predicted uncertainty.
:data:`skhypernet.metrics.log_likelihood_scorer` (mean log predictive
density) and :data:`~skhypernet.metrics.crps_scorer` (negative CRPS) are
higher-is-better scorers that read each model's predictive distribution, so
the search chooses for calibrated uncertainty.  They work for any regressor
with ``predict_dist`` or ``predict(X, return_std=True)`` (a Gaussian process,
``BayesianRidge``), inside pipelines too.

Here the search is over ``kl_weight`` (0: the paper's objective) and
``n_members`` on the diabetes data, with 3-fold cross-validation on the
training rows and a final check on held-out rows.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetRegressor
from skhypernet.metrics import crps_scorer, log_likelihood_scorer

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

search = GridSearchCV(
    make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=100, random_state=0)),
    {"hypernetregressor__kl_weight": [0.0, 0.1], "hypernetregressor__n_members": [1, 3]},
    scoring={"log_likelihood": log_likelihood_scorer, "crps": crps_scorer},
    refit="log_likelihood",
    cv=3,
)
search.fit(X_train, y_train)
print("best:", search.best_params_)
held_out = log_likelihood_scorer(search.best_estimator_, X_test, y_test)
print(f"held-out log-likelihood {held_out:.3f}")

results = search.cv_results_
labels = [
    f"kl_weight={p['hypernetregressor__kl_weight']}\nn_members={p['hypernetregressor__n_members']}"
    for p in results["params"]
]
figure, axis = plt.subplots(figsize=(6, 3))
axis.bar(
    labels,
    results["mean_test_log_likelihood"],
    yerr=results["std_test_log_likelihood"],
    color="tab:blue",
)
axis.set_ylabel("cross-validated log-likelihood")
axis.set_ylim(np.min(results["mean_test_log_likelihood"]) - 0.2, None)
figure.tight_layout()
