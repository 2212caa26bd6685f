"""README.md's code runs as written, on data it names X_train, y_train, X_test."""

import os
import re
import warnings

from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_python_blocks_run_in_order():
    with open(README, encoding="utf-8") as handle:
        blocks = re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S)
    assert len(blocks) >= 2
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, random_state=0)
    namespace = {"X_train": X_train, "y_train": y_train, "X_test": X_test}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for block in blocks:
            exec(compile(block, README, "exec"), namespace)
    lower, upper = namespace["lower"], namespace["upper"]
    assert lower.shape == (len(X_test),) and (lower < upper).all()
    assert (0 <= namespace["epistemic_share"]).all() and (namespace["epistemic_share"] < 1).all()
    assert len(namespace["ensemble"][-1].estimators_) == 5
    assert namespace["search"].best_params_["hypernetregressor__kl_weight"] in (0.0, 0.1)
    assert namespace["bounds"].shape == (len(X_test), 2, 1)
