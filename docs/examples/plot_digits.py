"""
Classifying digits
==================

HyperNetClassifier on scikit-learn's built-in 8x8 digits, beside the
point-estimate baseline.  ``predict_proba_samples`` gives each weight sample's
probabilities: the disagreement between samples (mutual information) is
higher on the test images the model gets wrong.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetClassifier, SGDBaselineClassifier

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

hypernet = HyperNetClassifier(random_state=0).fit(X_train, y_train)
baseline = SGDBaselineClassifier(random_state=0).fit(X_train, y_train)
print(f"HyperNetClassifier accuracy {hypernet.score(X_test, y_test):.3f}")
print(f"SGDBaselineClassifier accuracy {baseline.score(X_test, y_test):.3f}")


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=-1)


samples = hypernet.predict_proba_samples(X_test)  # (S, n, classes)
mutual_information = entropy(samples.mean(axis=0)) - entropy(samples).mean(axis=0)
wrong = hypernet.predict(X_test) != y_test

figure, axis = plt.subplots(figsize=(5, 3))
bins = np.linspace(0, mutual_information.max(), 30)
axis.hist(mutual_information[~wrong], bins=bins, alpha=0.6, density=True, label="correct")
axis.hist(mutual_information[wrong], bins=bins, alpha=0.6, density=True, label="wrong")
axis.set_xlabel("mutual information between prediction and weights")
axis.legend()
figure.tight_layout()
plt.show()
