"""
Grid search beside scikit-learn's MLP
=====================================

HyperNetRegressor is an ordinary scikit-learn estimator: it goes into a
``Pipeline`` and a ``GridSearchCV`` like ``MLPRegressor`` does.  Both are tuned
over two hyperparameters on the diabetes data and compared on a held-out set.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetRegressor

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

searches = {
    "HyperNetRegressor": GridSearchCV(
        make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=60, random_state=0)),
        {
            "hypernetregressor__hidden_layer_sizes": [(20,), (50,)],
            "hypernetregressor__input_noise": [0.1, 0.5],
        },
        cv=3,
    ),
    "MLPRegressor": GridSearchCV(
        make_pipeline(
            StandardScaler(),
            TransformedTargetRegressor(
                MLPRegressor(max_iter=300, random_state=0), transformer=StandardScaler()
            ),
        ),
        {
            "transformedtargetregressor__regressor__hidden_layer_sizes": [(20,), (50,)],
            "transformedtargetregressor__regressor__alpha": [1e-4, 1e-1],
        },
        cv=3,
    ),
}
scores = {}
for name, search in searches.items():
    search.fit(X_train, y_train)
    scores[name] = search.score(X_test, y_test)
    print(f"{name}: best parameters {search.best_params_}, test R^2 {scores[name]:.3f}")

figure, axis = plt.subplots(figsize=(5, 3))
axis.bar(list(scores), list(scores.values()), color=["tab:blue", "tab:gray"])
axis.set_ylabel("test R^2")
axis.set_ylim(0, max(0.6, np.max(list(scores.values())) + 0.05))
figure.tight_layout()
plt.show()
