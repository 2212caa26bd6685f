"""Faults: divergence, interruption, threads, persistence, killed benchmark runs."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning

from skhypernet import (
    HyperNetClassifier,
    HyperNetRegressor,
    SGDBaseline,
    SGDBaselineClassifier,
)

from .conftest import write_uci_folder

ALL = [HyperNetRegressor, SGDBaseline, HyperNetClassifier, SGDBaselineClassifier]


def data_for(cls, n=100):
    if "Classifier" in cls.__name__:
        return make_classification(n_samples=n, n_features=4, random_state=0)
    return make_regression(n_samples=n, n_features=4, noise=1.0, random_state=0)


def predictions(model, X):
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


@pytest.mark.parametrize("cls", [HyperNetRegressor, SGDBaseline])
def test_divergence_stops_with_a_warning_and_finite_predictions(cls):
    X, y = data_for(cls)
    with pytest.warns(ConvergenceWarning, match="diverged.*Lower learning_rate_init"):
        model = cls(learning_rate_init=1e6, max_iter=20, random_state=0).fit(1e6 * X, y)
    assert np.all(np.isfinite(model.predict(X)))
    mean, std = model.predict(X, return_std=True)
    assert np.all(np.isfinite(std))


@pytest.mark.parametrize("cls", ALL)
def test_huge_learning_rate_never_predicts_nan(cls):
    X, y = data_for(cls)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = cls(learning_rate_init=1e4, max_iter=10, random_state=0).fit(X, y)
    assert np.all(np.isfinite(predictions(model, X)))


_INTERRUPT_SCRIPT = """
import os, signal, threading, warnings, numpy as np
from skhypernet import HyperNetRegressor
# A parent that ignores SIGINT (pytest-xdist's workers) passes that on: restore
# Python's own handler, which raises KeyboardInterrupt as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
rng = np.random.RandomState(0)
X = rng.normal(size=(400, 5)); y = X @ rng.normal(size=5)
model = HyperNetRegressor(batch_size=1, max_iter=10000, n_iter_no_change=np.inf,
                          random_state=0)
threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.fit(X, y)
print([str(w.message) for w in caught])
print(model.n_iter_, len(model.loss_curve_), bool(np.isfinite(model.predict(X)).all()))
"""


def test_ctrl_c_keeps_a_usable_model_at_the_last_finished_epoch():
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    messages, summary = result.stdout.strip().splitlines()[-2:]
    assert "interrupted by user" in messages
    n_iter, n_losses, finite = summary.split()
    assert int(n_iter) == int(n_losses) >= 1 and int(n_iter) < 10000
    assert finite == "True"


def test_ctrl_c_in_process_stops_at_a_finished_epoch():
    X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    model = HyperNetRegressor(
        batch_size=1, max_iter=100000, n_iter_no_change=np.inf, early_stopping=False
    )
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.warns(UserWarning, match="interrupted by user"):
            model.fit(X, y)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert 1 <= model.n_iter_ == len(model.loss_curve_) < 100000
    assert np.all(np.isfinite(model.predict(X)))


def test_an_error_that_mentions_keyboardinterrupt_is_not_taken_for_ctrl_c(monkeypatch):
    from skhypernet import _engine

    def failing(*args):
        raise RuntimeError("KeyboardInterrupt: not a Ctrl-C")

    monkeypatch.setattr(_engine.loop, "kl_scale", failing)
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    with pytest.raises(RuntimeError, match="not a Ctrl-C"):
        HyperNetRegressor(max_iter=2).fit(X, y)


@pytest.mark.parametrize("cls", ALL)
def test_predict_from_several_threads(cls):
    X, y = data_for(cls)
    model = cls(max_iter=10, random_state=0).fit(X, y)
    expected = predictions(model, X)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: predictions(model, X), range(8)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("cls", ALL)
def test_joblib_and_pickle_round_trips(cls, tmp_path):
    X, y = data_for(cls)
    model = cls(max_iter=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        predictions(joblib.load(tmp_path / "model.joblib"), X), predictions(model, X)
    )
    np.testing.assert_array_equal(
        predictions(pickle.loads(pickle.dumps(model)), X), predictions(model, X)
    )


def _harness_command(data, results):
    return [
        sys.executable,
        "-m",
        "skhypernet.benchmarks",
        "uci",
        "--data",
        str(data),
        "--splits",
        "3",
        "--epochs",
        "4",
        "--track-epochs",
        "2",
        "--predict-samples",
        "5",
        "--results",
        str(results),
        "--resume",
    ]


def _comparable(path):
    with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for record in records:
        record.pop("fit_seconds")
    return sorted(records, key=lambda r: (r["dataset"], r["split"], r["method"]))


def test_killed_benchmark_run_resumes_to_the_same_results(tmp_path):
    write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=3)
    reference = tmp_path / "reference.jsonl"
    subprocess.run(
        _harness_command(tmp_path / "data", reference),
        check=True,
        capture_output=True,
        timeout=300,
    )
    interrupted = tmp_path / "interrupted.jsonl"
    rng = random.Random(0)
    for _ in range(3):  # kill at random moments, then resume
        process = subprocess.Popen(
            _harness_command(tmp_path / "data", interrupted),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.5, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run(
        _harness_command(tmp_path / "data", interrupted),
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert _comparable(interrupted) == _comparable(reference)
    assert len(_comparable(reference)) == 9  # 3 splits x 3 methods
    assert not os.path.exists(str(interrupted) + ".tmp")


@pytest.mark.parametrize("cls", ALL)
def test_skops_round_trip_with_the_project_types_trusted(cls, tmp_path):
    sio = pytest.importorskip("skops.io")
    from skhypernet import SKOPS_TRUSTED_TYPES

    X, y = data_for(cls)
    if "Classifier" in cls.__name__:
        y = np.array(["no", "yes"])[y]
    model = cls(max_iter=10, warm_start=True, random_state=0).fit(X, y)
    sio.dump(model, tmp_path / "model.skops")
    assert set(sio.get_untrusted_types(file=tmp_path / "model.skops")) <= set(SKOPS_TRUSTED_TYPES)
    loaded = sio.load(tmp_path / "model.skops", trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(predictions(loaded, X), predictions(model, X))
    loaded.fit(X, y)  # training continues from the loaded state
    model.fit(X, y)
    np.testing.assert_array_equal(predictions(loaded, X), predictions(model, X))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_harness_stops_its_workers(tmp_path, stop):
    psutil = pytest.importorskip("psutil")
    write_uci_folder(tmp_path / "data", name="toy", n_rows=200, n_splits=4)
    command = [
        sys.executable,
        "-m",
        "skhypernet.benchmarks",
        "uci",
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "500",
        "--jobs",
        "2",
        "--results",
        str(tmp_path / "results.jsonl"),
    ]
    # A parent that ignores SIGINT (pytest-xdist's workers) passes that on.
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 60
    workers = []
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        workers = [
            child
            for child in parent.children(recursive=True)
            if "loky" in " ".join(child.cmdline()) or "joblib" in " ".join(child.cmdline())
        ]
    assert len(workers) >= 2, "the harness never started its worker processes"
    time.sleep(2)  # the workers are inside their first fits
    process.send_signal(stop)
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"{len(alive)} worker(s) still running after the harness stopped"


@pytest.mark.parametrize("first_fit", [True, False])
def test_ctrl_c_after_training_leaves_a_complete_consistent_model(monkeypatch, first_fit):
    X, y = make_regression(n_samples=60, n_features=3, noise=1.0, random_state=0)
    model = HyperNetRegressor(max_iter=3, random_state=0)
    if not first_fit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
    after_training = type(model)._after_training

    def interrupted(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in the middle
        after_training(self)

    monkeypatch.setattr(type(model), "_after_training", interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.warns(UserWarning, match="Interrupted by user after training"):
            model.set_params(max_iter=4).fit(X, y)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert model.n_iter_ == 4
    np.testing.assert_allclose(
        model.noise_variance_ / model.target_scale_**2, [model.loss_curve_[-1]], rtol=1e-6
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_a_single_process_run_stops_it_and_records_no_cut_short_fit(tmp_path, stop):
    # With --jobs 1 the fits run in the harness's own process, where the
    # estimators take Ctrl-C for the end of one fit: the run went on and would
    # have recorded the cut-short fit as a finished one.
    write_uci_folder(tmp_path / "data", name="toy", n_rows=200, n_splits=2)
    results = tmp_path / "results.jsonl"
    command = [
        *("python", "-m", "skhypernet.benchmarks", "uci", "--data", str(tmp_path / "data")),
        *("--epochs", "2000", "--results", str(results)),
    ]
    command[0] = sys.executable
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    assert "running" in process.stdout.readline()  # the plan is made; training starts
    time.sleep(2)
    process.send_signal(stop)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the run went on after the signal")
    assert process.returncode == 128 + stop
    assert "stopped by" in err and "Traceback" not in err
    assert not results.exists() or results.read_text() == ""


def test_ctrl_c_is_seen_after_the_step_in_progress():
    # At batch size 1 a chunk of noise is 16,384 steps (seconds): the
    # interrupt must not wait for the chunk's end.  The red-team pass's case:
    # Ctrl-C recorded during the 5th step stops the epoch after that step.
    from skhypernet.benchmarks.red_team import _interrupt_seen_after_the_step

    X, y = make_regression(n_samples=300, n_features=4, noise=1.0, random_state=0)
    assert _interrupt_seen_after_the_step(X, y)() == []
