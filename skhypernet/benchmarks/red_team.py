"""Red-team pass: bad data, bad parameters, tampered saved state, harness files.

Every attempt ends in one of five outcomes:

- *works*: the call returned and everything it returned is finite and of the
  right shape;
- *clear error*: a ValueError or TypeError raised by skhypernet or
  scikit-learn's validation, not from deep inside numpy or torch;
- *silent wrong*: the call returned something non-finite or of the wrong shape;
- *crash*: any other exception, or a ValueError/TypeError from deep inside a
  library;
- *data loss*: a results file changed although the call failed.

The table counts them per category; the last three columns should be 0.
"""

import contextlib
import copy
import io
import json
import os
import tempfile
import traceback
import warnings

import numpy as np
from sklearn.base import is_classifier

from .. import HyperNetClassifier, HyperNetRegressor, SGDBaseline, SGDBaselineClassifier
from ._results import BenchmarkInputError, ResultStore, markdown_table

OUTCOMES = ("works", "clear error", "silent wrong", "crash", "data loss")
FAST = {"max_iter": 2, "random_state": 0}


def add_arguments(parser):
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated inputs (default: 0)"
    )


def classify(attempt):
    """Run ``attempt`` (returns arrays to check, or None); return its outcome."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = attempt()
    except (ValueError, TypeError) as error:
        frames = traceback.extract_tb(error.__traceback__)
        origin = frames[-1].filename if frames else ""
        ours = any(part in origin for part in ("skhypernet", "sklearn", "argparse", "_results"))
        # Raised by a check of ours, not by torch or numpy called from our frame.
        ours = ours and (frames[-1].line or "").lstrip().startswith("raise")
        return "clear error" if ours and str(error) else "crash"
    except Exception:  # noqa: BLE001 - anything else is a crash by definition
        return "crash"
    for array in results or []:
        if not np.all(np.isfinite(np.asarray(array, dtype=float))):
            return "silent wrong"
    return "works"


def _data(rng, n=40, d=3):
    X = rng.normal(size=(n, d))
    return X, X[:, 0] + 0.1 * rng.normal(size=n)


def _fit_predict(cls, X, y, sample_weight=None, **params):
    def attempt():
        model = cls(**{**FAST, **params}).fit(X, y, sample_weight=sample_weight)
        predicted = model.predict(X[:5] if np.ndim(X) == 2 else X)
        if hasattr(model, "noise_variance_") and model.noise_variance_ is not None:
            return [predicted, model.predict(X[:5], return_std=True)[1]]
        # String labels have no finiteness to check.
        return [predicted] if predicted.dtype.kind in "fiub" else []

    return attempt


def _unknown_argument(cls):
    """An attempt: an unknown constructor argument, whose TypeError (Python's
    own) is clear when it names the public class."""

    def attempt():
        try:
            cls(colour=1)
        except TypeError as error:
            if str(error).startswith(f"{cls.__name__}.__init__()"):
                raise ValueError(str(error)) from None
            raise
        return []

    return attempt


def bad_data(rng):
    X, y = _data(rng)
    cases = []
    for cls in (HyperNetRegressor, SGDBaseline):
        for value in [
            np.nan,
            np.inf,
            1e39,
            1e300,
            -1e300,
        ]:
            bad_X = X.copy()
            bad_X[3, 1] = value
            cases.append(_fit_predict(cls, bad_X, y))
            bad_y = y.copy()
            bad_y[3] = value
            cases.append(_fit_predict(cls, X, bad_y))
        for factor in (1e-300, 1e150, 1e200, 1e307):
            cases.append(_fit_predict(cls, X, factor * y))
        for weights in (
            np.full(40, 1e308),
            np.full(40, 1e-300),
            -np.ones(40),
            np.zeros(40),
            np.r_[np.nan, np.ones(39)],
            np.ones(39),
        ):
            cases.append(_fit_predict(cls, X, y, sample_weight=weights))
        cases += [
            _fit_predict(cls, X[:0], y[:0]),
            _fit_predict(cls, X[:1], y[:1]),
            _fit_predict(cls, X[:, :0], y),
            _fit_predict(cls, X[:, :, None], y),
            _fit_predict(cls, X.astype(str), y),
            _fit_predict(cls, X, y[:10]),
            # Valid: views with negative strides, which torch refuses.
            _fit_predict(cls, X[::-1], y[::-1]),
        ]
    import pandas as pd
    import scipy.sparse

    dated = pd.DataFrame(X, columns=["a", "b", "c"]).assign(when=pd.date_range("2020", periods=40))
    for cls in (HyperNetRegressor, SGDBaseline, HyperNetClassifier, SGDBaselineClassifier):
        targets = (y > 0).astype(int) if is_classifier(cls()) else y
        cases += [
            _fit_predict(cls, X, scipy.sparse.csr_matrix(targets[:, None].astype(float))),
            _fit_predict(cls, dated, targets),
            _unknown_argument(cls),
        ]
    labels = (y > 0).astype(int)
    for cls in (HyperNetClassifier, SGDBaselineClassifier):
        cases += [
            _fit_predict(cls, X, np.zeros(40)),
            _fit_predict(cls, X, np.array(["a", 1] * 20, dtype=object)),
            _fit_predict(cls, X, labels.astype(float) + 0.5),
            _fit_predict(cls, X, np.array([1, 2.0] * 20, dtype=object)),
            _fit_predict(cls, X, np.where(labels, "yes", "no")),
            _fit_predict(cls, X, labels, sample_weight=np.r_[np.zeros(20), np.ones(20)]),
            _fit_predict(cls, X[::-1], labels[::-1]),
        ]
    return cases


def bad_parameters(rng):
    X, y = _data(rng)
    values = {
        "hidden_layer_sizes": [(np.nan,), (np.inf,), (None,), [[3, 4]], (0,), (-3,), "50"],
        "hyper_hidden_layer_sizes": [(np.nan,), (0,), [[2]], "x"],
        "noise_dim": [0, -1, 2.5, np.nan, "10"],
        "hyper_dropout": [-0.1, 1.0, 1.5, np.nan],
        "kl_weight": [-1.0, np.nan, np.inf, "0.1"],
        "input_noise": [-0.5, np.nan],
        "n_predict_samples": [0, -5, 1.5],
        "batch_size": [0, -1, "big", 2.5],
        "learning_rate_init": [0.0, -1.0, np.nan, 1e6],
        "alpha": [-1.0, np.nan, np.inf, "1e-4"],
        "beta_1": [1.0, -0.1, np.nan],
        "beta_2": [1.0, 2.0],
        "epsilon": [0.0, -1e-8, np.nan],
        "max_iter": [0, -1, 2.5, "automatic"],
        "tol": [-1.0],
        "validation_fraction": [0.0, 1.0, 2.0],
        "n_iter_no_change": [0, -1, "never"],
        "early_stopping": ["yes", 2],
        "device": ["gpu", "cuda:7"],
        "loss": ["absolute_error", None],
    }
    cases = []
    for name, bad in values.items():
        for value in bad:
            cases.append(_fit_predict(HyperNetRegressor, X, y, **{name: value}))
    model = HyperNetRegressor(**FAST).fit(X, y)
    # Counts beyond any machine's memory: a clear error before allocating.
    cases += [
        lambda: [model.sample_y(X, n_samples=10**9)],
        lambda: [model.sample_weights(10**9)[0][0]],
        lambda: [HyperNetRegressor(n_predict_samples=10**9, **FAST).fit(X, y).predict(X)],
        _fit_predict(HyperNetRegressor, X, y, noise_dim=10**8),
    ]
    for n_samples in (-1, 0, 2.5, True, "3"):
        cases.append(lambda n=n_samples: [model.sample_weights(n)[0][0]])
        cases.append(lambda n=n_samples: [model.sample_y(X, n_samples=n)])
    for changed in ({"hidden_layer_sizes": (7,)}, {"noise_dim": 3}, {"loss": "gaussian_nll"}):

        def warm(changed=changed):
            warm_model = HyperNetRegressor(warm_start=True, **FAST).fit(X, y)
            return [warm_model.set_params(**changed).fit(X, y).predict(X)]

        cases.append(warm)
    return cases


def _unchanged_after_failed_refit(model, X, refit):
    """An attempt: ``refit(model)`` must raise a clear error and leave the
    model's predictions as they were (a changed prediction is silent wrong)."""

    def predictions():
        if hasattr(model, "predict_proba"):
            return model.predict_proba(X)
        return np.concatenate([np.ravel(a) for a in model.predict(X, return_std=True)])

    def attempt():
        before = predictions()
        params = model.get_params()
        try:
            refit(model)
        except ValueError:
            pass
        model.set_params(**params)
        return [] if np.array_equal(predictions(), before) else [np.nan]

    return attempt


def _interrupt_seen_after_the_step(X, y):
    """An attempt: Ctrl-C recorded during the 5th step of a batch-1 epoch must stop
    it after that step (a chunk of noise is thousands of steps: seconds)."""
    from .. import _engine

    def attempt():
        model = HyperNetRegressor(batch_size=1, max_iter=1, early_stopping=False, random_state=0)
        training = model._prepare_training(X, y, None, incremental=False)
        optimizer = model._optimizer([model.network_])
        interrupted, steps = [], []
        step = optimizer.step

        def counted(n_rows):
            step(n_rows)
            steps.append(n_rows)
            if len(steps) == 5:
                interrupted.append("SIGINT")

        optimizer.step = counted
        try:
            _engine.run_epoch(
                [model.network_],
                optimizer,
                training.data,
                1,
                True,
                [model._generator],
                interrupted=interrupted,
            )
        except KeyboardInterrupt:
            pass
        return [] if len(steps) == 5 else [np.nan]

    return attempt


def refits_and_predictions(rng):
    """Failed refits, predictions outside float32, parameters set after fit,
    a NaN-making update, unweighted validation rows, Ctrl-C at batch size 1."""
    X, y = _data(rng, n=60)
    labels = np.array(["a", "b", "c"])[np.arange(60) % 3]
    cases = []
    for cls in (HyperNetRegressor, SGDBaseline, HyperNetClassifier, SGDBaselineClassifier):
        classifier = is_classifier(cls())
        for n_members in (1, 2):
            model = cls(n_members=n_members, **FAST).fit(X, labels if classifier else y)
            new = [np.zeros(60), labels] if classifier else [1000 * y, np.column_stack([y, y])]
            for target in new:
                cases.append(
                    _unchanged_after_failed_refit(
                        model, X, lambda m, t=target: m.set_params(device="cuda").fit(X, t)
                    )
                )
            cases.append(
                _unchanged_after_failed_refit(model, X, lambda m: m.fit(np.full_like(X, 1e300), y))
            )
            cases.append(lambda m=model: [m.predict(np.full_like(X, 1e300))])
        weights = np.r_[np.ones(3), np.zeros(57)]
        targets = y > 0 if classifier else y
        cases.append(_fit_predict(cls, X, targets, sample_weight=weights, early_stopping=True))
    for value in (0, -3, 2.5, "many"):
        model = HyperNetRegressor(**FAST).fit(X, y)
        cases.append(lambda m=model, v=value: [m.set_params(n_predict_samples=v).predict(X)])
    cases.append(_interrupt_seen_after_the_step(X, y))
    # Probabilities that underflow: their logs must stay finite.
    sure = SGDBaselineClassifier(max_iter=60, learning_rate_init=0.1, random_state=0)
    cases.append(lambda: [sure.fit(100 * X, y > 0).predict_log_proba(100 * X)])
    diverging = HyperNetClassifier(beta_2=0.0, learning_rate_init=0.01, max_iter=6, random_state=0)
    cases.append(lambda: [diverging.fit(X, y > 0).predict_proba(X)])
    return cases


def tampered_state(rng):
    X, y = _data(rng)
    regressor = HyperNetRegressor(**FAST).fit(X, y)
    classifier = HyperNetClassifier(**FAST).fit(X, y > 0)
    tampers = [
        (regressor, lambda s: s.update(target_mean_=np.zeros(3))),
        (regressor, lambda s: s.update(target_scale_=np.ones((1, 2)))),
        (regressor, lambda s: s.update(noise_variance_=np.ones(4))),
        (regressor, lambda s: s.update(n_features_in_=5)),
        (regressor, lambda s: s.update(target_scale_=np.array([-5.0]))),
        (regressor, lambda s: s.update(target_scale_=np.array([np.nan]))),
        (regressor, lambda s: s.update(noise_variance_=np.array([-1.0]))),
        (regressor, lambda s: s["network_"].update(shapes=[[20000, 20000], [20000, 1]])),
        (regressor, lambda s: s["network_"].update(shapes=[[3, 50], [7, 1]])),
        (regressor, lambda s: s["network_"].update(noise_dim=4)),
        (regressor, lambda s: s["network_"].update(hidden_sizes=[100, 60])),
        (classifier, lambda s: s.update(classes_=np.arange(5))),
        (classifier, lambda s: s.update(classes_=np.arange(1))),
    ]
    cases = []
    for model, tamper in tampers:

        def attempt(model=model, tamper=tamper):
            state = copy.deepcopy(model.__getstate__())
            tamper(state)
            clone = type(model).__new__(type(model))
            clone.__setstate__(state)
            predicted = clone.predict(X)
            return [np.asarray(predicted, dtype=float)]

        cases.append(attempt)
    return cases


def results_files():
    """Cases of results files: ``(content, resume, overwrite, record keys,
    whether another run holds the file)``."""
    keys = ("dataset", "split")
    record = json.dumps({"dataset": "a", "split": 0}) + "\n"
    contents = [
        record,
        record * 3,
        "not json\n",
        "123\n{}\n",
        record + '{"dataset": "a", "sp',
        "my notes\nsecond line",
        "single line",
        record + "my notes\n" + '{"dataset": "a", "sp',
    ]
    cases = []
    for text in contents:
        for resume, overwrite in [(False, False), (True, False)]:
            cases.append((text, resume, overwrite, keys, False))
    # A second run on a results file that a first run holds.
    cases += [(record, True, False, keys, True), (record, False, True, keys, True)]
    return cases


def run_results_file_case(case):
    text, resume, overwrite, keys, second_run = case
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "results.jsonl")
        with open(path, "w") as handle:
            handle.write(text)
        kept = text.split("\n")[:-1]
        if second_run:
            first = ResultStore(path, resume=True, record_keys=keys)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ResultStore(path, resume=resume, overwrite=overwrite, record_keys=keys)
            outcome = "works"
        except BenchmarkInputError:
            outcome = "clear error"
        except Exception:  # noqa: BLE001
            outcome = "crash"
        if second_run:
            first.close()
        with open(path) as handle:
            content = handle.read()
        # Only a last line cut short by a crash may go, and only from a file taken.
        lost = any(line not in content.split("\n") for line in kept)
        if lost or (outcome == "clear error" and content != text):
            outcome = "data loss"
    return outcome


def command_line_files():
    """CSV files for ``python -m skhypernet --csv``, damaged UCI folders and
    results paths that cannot hold results (a directory, a path under a file, an
    empty name, a binary file): a clear error is the command line's one-line exit
    with status 2, or the benchmarks' input error."""
    from .. import __main__ as main_job
    from ..datasets import DatasetError, load_uci

    def csv_attempt(text, *options):
        def attempt():
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "data.csv")
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
                try:
                    # The job's table and usage lines are not this pass's output.
                    with (
                        contextlib.redirect_stdout(io.StringIO()),
                        contextlib.redirect_stderr(io.StringIO()),
                    ):
                        main_job.main(
                            ["--csv", path, "--target", "y", "--max-iter", "1", *options]
                        )
                except SystemExit as stop:
                    if stop.code == 2:
                        raise ValueError("usage error") from None
                    raise
            return []

        return attempt

    def uci_attempt(damage):
        def attempt():
            with tempfile.TemporaryDirectory() as folder:
                data = os.path.join(folder, "data.txt")
                np.savetxt(data, np.arange(24.0).reshape(8, 3))
                for name, values in [
                    ("index_features", [0, 1]),
                    ("index_target", [2]),
                    ("n_splits", [1]),
                    ("index_train_0", range(6)),
                    ("index_test_0", [6, 7]),
                ]:
                    np.savetxt(os.path.join(folder, name + ".txt"), list(values), fmt="%d")
                damage(folder)
                try:
                    return list(load_uci(folder, 0))
                except DatasetError as error:
                    raise ValueError(str(error)) from None

        return attempt

    def nan_target(folder):
        values = np.arange(24.0).reshape(8, 3)
        values[7, 2] = np.nan
        np.savetxt(os.path.join(folder, "data.txt"), values)

    def no_splits(folder):
        np.savetxt(os.path.join(folder, "n_splits.txt"), [0], fmt="%d")

    def results_path(make_path):
        def attempt():
            with tempfile.TemporaryDirectory() as folder:
                ResultStore(make_path(folder), resume=True, record_keys=("dataset",))
            return []

        return attempt

    def under_a_file(folder):
        with open(os.path.join(folder, "afile"), "w") as handle:
            handle.write("x")
        return os.path.join(folder, "afile", "r.jsonl")

    def binary(folder):
        path = os.path.join(folder, "r.jsonl")
        with open(path, "wb") as handle:
            handle.write(b"\xff\xfe\x00binary")
        return path

    rows = "".join(f"{i},{2 * i + 1}\n" for i in range(12))
    return [
        results_path(lambda folder: folder),
        results_path(under_a_file),
        results_path(lambda folder: ""),
        results_path(binary),
        csv_attempt("\ufeffx,y\n" + rows),  # a byte-order mark: works
        csv_attempt("x,y\n1,2\n3\n" + rows),
        csv_attempt("x,y\n1e300,2\n" + rows),
        csv_attempt("x,y\n1,2\n3,4\n", "--cv", "2"),
        uci_attempt(nan_target),
        uci_attempt(no_splits),
    ]


CATEGORIES = {
    "bad data": bad_data,
    "bad parameters": bad_parameters,
    "tampered saved state": tampered_state,
    "failed refits and predictions": refits_and_predictions,
    "command-line files": lambda rng: command_line_files(),
}


def measure(seed=0):
    """``{category: {outcome: count}}``."""
    counts = {}
    for name, make_cases in CATEGORIES.items():
        tally = dict.fromkeys(OUTCOMES, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fits that set the cases up
            cases = make_cases(np.random.RandomState(seed))
        for attempt in cases:
            tally[classify(attempt)] += 1
        counts[name] = tally
    tally = dict.fromkeys(OUTCOMES, 0)
    for case in results_files():
        tally[run_results_file_case(case)] += 1
    counts["benchmark results files"] = tally
    return counts


def run(args, out=None):
    import sys

    out = out or sys.stdout
    counts = measure(args.seed)
    header = ["category", "inputs tried", *OUTCOMES]
    rows = [
        [name, sum(tally.values()), *(tally[outcome] for outcome in OUTCOMES)]
        for name, tally in counts.items()
    ]
    print(markdown_table(header, rows), file=out)
    failures = sum(tally[o] for tally in counts.values() for o in OUTCOMES[2:])
    return 1 if failures else 0
