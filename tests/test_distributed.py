"""GridSearchCV on a dask.distributed cluster through joblib's dask backend."""

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhypernet import HyperNetRegressor


def test_grid_search_on_a_local_cluster_with_two_worker_processes():
    distributed = pytest.importorskip("distributed")
    import joblib

    X, y = load_diabetes(return_X_y=True)
    grid = {
        "hypernetregressor__hidden_layer_sizes": [(10,), (20,)],
        "hypernetregressor__input_noise": [0.1, 0.5],
    }

    def search():
        model = make_pipeline(StandardScaler(), HyperNetRegressor(max_iter=5, random_state=0))
        return GridSearchCV(model, grid, cv=2, n_jobs=-1).fit(X, y)

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            with joblib.parallel_backend("dask"):
                on_cluster = search()
    local = search()
    np.testing.assert_allclose(
        on_cluster.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert on_cluster.best_params_ == local.best_params_
