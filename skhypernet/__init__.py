"""Scikit-learn estimators that train neural networks through a hypernetwork.

Implements Sheikh et al., "Stochastic Maximum Likelihood Optimization via
Hypernetworks": a hypernetwork turns Gaussian noise into the weights of a
main network, trained with one weight sample per data point; predictions
average several weight samples.
"""

from .classification import HyperNetClassifier, SGDBaselineClassifier
from .regression import HyperNetRegressor, SGDBaseline

__version__ = "0.1.0"

#: The project's types, to declare trusted when loading with skops.io:
#: ``skops.io.load(path, trusted=skhypernet.SKOPS_TRUSTED_TYPES)``.
SKOPS_TRUSTED_TYPES = [
    "skhypernet.classification.HyperNetClassifier",
    "skhypernet.classification.SGDBaselineClassifier",
    "skhypernet.regression.HyperNetRegressor",
    "skhypernet.regression.SGDBaseline",
]

__all__ = [
    "HyperNetClassifier",
    "HyperNetRegressor",
    "SGDBaseline",
    "SGDBaselineClassifier",
    "SKOPS_TRUSTED_TYPES",
    "__version__",
]
