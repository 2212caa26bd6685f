"""scikit-learn's own estimator checks on all four estimators."""

import pytest
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

# The checks fit hundreds of tiny data sets: 200 epochs each (the default
# 'auto' budget would run 2,000 on them) keep the run short and still fit well.
ESTIMATORS = [
    HyperNetRegressor(max_iter=200, random_state=0),
    SGDBaseline(max_iter=200, random_state=0),
    HyperNetClassifier(max_iter=200, random_state=0),
    SGDBaselineClassifier(max_iter=200, random_state=0),
    # Ensembles: their members trained in one pass, the predictions pooled.
    HyperNetRegressor(n_members=2, max_iter=100, random_state=0),
    SGDBaseline(n_members=2, max_iter=100, random_state=0),
    HyperNetClassifier(n_members=2, max_iter=100, random_state=0),
    SGDBaselineClassifier(n_members=2, max_iter=100, random_state=0),
]

EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": (
        "one noise draw per row: a row of weight k sees one draw per epoch, k "
        "repeated rows see k independent draws, so the fits differ"
    ),
}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda est: type(est).__name__)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)
