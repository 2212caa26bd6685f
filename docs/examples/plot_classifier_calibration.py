"""
Classifier probabilities and their calibration
==============================================

A reliability diagram (:func:`~skhypernet.plotting.plot_reliability`) bins
the predicted probability of the predicted class and plots the accuracy in
each bin; the expected calibration error
(:func:`~skhypernet.metrics.expected_calibration_error`) is their weighted
distance from the diagonal.  ``predict_proba_samples`` gives the
probabilities of every weight sample: the entropy of their mean is the total
uncertainty, the mean of their entropies the aleatoric part, their
difference the mutual information with the weights (epistemic).

Data: scikit-learn's breast cancer set, a stratified 75/25 split.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetClassifier, SGDBaselineClassifier
from skhypernet.metrics import expected_calibration_error
from skhypernet.plotting import plot_reliability

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

models = {
    "HyperNetClassifier": HyperNetClassifier(random_state=0),
    "SGDBaselineClassifier, 5 members": SGDBaselineClassifier(n_members=5, random_state=0),
}
figure, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for axis, (name, model) in zip(axes, models.items()):
    proba = model.fit(X_train, y_train).predict_proba(X_test)
    print(
        f"{name}: accuracy {accuracy_score(y_test, model.predict(X_test)):.3f}, "
        f"log-loss {log_loss(y_test, proba):.3f}, "
        f"ECE {expected_calibration_error(y_test, proba, n_bins=5):.3f}"
    )
    plot_reliability(y_test, proba, n_bins=5, ax=axis)
    axis.set_title(f"{name}\n{axis.get_title()}", fontsize=9)
figure.tight_layout()

# %%
# Total, aleatoric and epistemic uncertainty of the hypernetwork's
# predictions, averaged over the test rows (in nats).


def entropy(proba):
    return -np.sum(proba * np.log(np.clip(proba, 1e-12, 1)), axis=-1)


samples = models["HyperNetClassifier"].predict_proba_samples(X_test)
total = entropy(samples.mean(axis=0))
aleatoric = entropy(samples).mean(axis=0)
print(
    f"total {total.mean():.4f}, aleatoric {aleatoric.mean():.4f}, "
    f"epistemic {(total - aleatoric).mean():.4f}"
)
