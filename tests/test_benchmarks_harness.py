"""The benchmark harness, with tiny budgets on tiny folders written here."""

import argparse
import json
import os

import numpy as np
import pytest

from skhypernet.benchmarks.__main__ import main
from skhypernet.benchmarks._results import (
    BenchmarkInputError,
    ResultStore,
    mean_and_standard_error,
)
from skhypernet.benchmarks.defaults import build_estimator
from skhypernet.benchmarks.defaults import summary as defaults_summary
from skhypernet.benchmarks.uci import build_model

from .conftest import write_mnist_folder, write_uci_folder

TINY = ["--epochs", "3", "--track-epochs", "2", "--predict-samples", "5"]


def read_records(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_uci_harness_records_table_and_resume(tmp_path, capsys):
    write_uci_folder(tmp_path / "data", name="toy", n_splits=3)
    write_uci_folder(tmp_path / "data", name="other", n_rows=30, n_splits=2, seed=1)
    results = tmp_path / "out" / "uci.jsonl"
    args = [
        "uci",
        "--data",
        str(tmp_path / "data"),
        "--splits",
        "2",
        "--results",
        str(results),
        *TINY,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = read_records(results)
    assert len(records) == 2 * 2 * 3  # data sets x splits x methods
    record = records[0]
    assert set(record) >= {"dataset", "split", "method", "rmse", "settings", "fit_seconds"}
    assert record["settings"]["epochs"] == 3 and record["settings"]["batch_size"] == 1
    assert len(record["rmse_tracked_epochs"]) == 2
    assert "| SGD (ours) | HyperNet (ours) | HyperNet-KL (ours) |" in out
    assert "| LL SGD | LL HyperNet | LL HyperNet-KL |" in out
    assert "| final spread HyperNet | final spread HyperNet-KL |" in out
    regularised = next(r for r in records if r["method"] == "HyperNet-KL")
    assert regularised["settings"]["kl_weight"] > 0
    # The regularised method holds out rows for its noise and keeps its best epoch.
    assert regularised["settings"]["held_out"] == 0.1
    assert 1 <= regularised["kept_epoch"] <= 3 and len(regularised["rmse_tracked_epochs"]) == 1
    assert all("held_out" not in r["settings"] for r in records if r["method"] != "HyperNet-KL")
    assert "kl_weight" not in record["settings"] or record["method"] == "HyperNet-KL"
    assert len(regularised["weight_diffusion_steps"]) == 3
    assert 0 <= record["coverage_90"] <= 1 and np.isfinite(record["ll"])
    assert "[12/12]" in out  # progress per data set and split

    assert main(args + ["--resume"]) == 0
    assert "12 of 12 results already present; running 0." in capsys.readouterr().out
    assert len(read_records(results)) == 12
    assert (
        main(
            [
                "uci",
                "--data",
                str(tmp_path / "data"),
                "--splits",
                "3",
                "--datasets",
                "toy",
                "--results",
                str(results),
                "--resume",
                *TINY,
            ]
        )
        == 0
    )
    assert "6 of 9 results already present; running 3." in capsys.readouterr().out


def test_uci_splits_in_lockstep_give_the_records_of_separate_runs(tmp_path):
    write_uci_folder(tmp_path / "data", name="toy", n_splits=3)
    records = {}
    for lockstep in (1, 3):
        results = tmp_path / f"lockstep_{lockstep}.jsonl"
        arguments = ["uci", "--data", str(tmp_path / "data"), "--results", str(results)]
        assert main([*arguments, "--lockstep", str(lockstep), *TINY]) == 0
        records[lockstep] = sorted(read_records(results), key=lambda r: (r["method"], r["split"]))
    assert {r["lockstep_replicas"] for r in records[1]} == {1}
    assert {r["lockstep_replicas"] for r in records[3]} == {3}
    for alone, together in zip(records[1], records[3]):
        assert (alone["method"], alone["split"]) == (together["method"], together["split"])
        assert together["rmse"] == pytest.approx(alone["rmse"], rel=1e-3)
        assert together["ll"] == pytest.approx(alone["ll"], rel=1e-3, abs=1e-3)


def test_uci_harness_options_reach_the_model(tmp_path):
    write_uci_folder(tmp_path / "data")
    results = tmp_path / "uci.jsonl"
    main(
        [
            "uci",
            "--data",
            str(tmp_path / "data"),
            "--splits",
            "1",
            "--hidden",
            "7",
            "--batch-rule",
            "16",
            "--seed",
            "5",
            "--methods",
            "SGD",
            "--results",
            str(results),
            *TINY,
        ]
    )
    (record,) = read_records(results)
    assert record["method"] == "SGD"
    assert record["settings"] == {
        "epochs": 3,
        "track_epochs": 2,
        "hidden": 7,
        "batch_size": 16,
        "predict_samples": 5,
        "seed": 5,
        "loss": "squared_error",
    }


def test_uci_hyper_activation_reaches_the_hypernetworks_only(tmp_path):
    write_uci_folder(tmp_path / "data")
    results = tmp_path / "uci.jsonl"
    argv = ["uci", "--data", str(tmp_path / "data"), "--splits", "1", "--results", str(results)]
    main([*argv, "--hyper-activation", "leaky_relu", *TINY])
    records = {r["method"]: r for r in read_records(results)}
    assert "hyper_activation" not in records["SGD"]["settings"]
    for method in ("HyperNet", "HyperNet-KL"):
        settings = records[method]["settings"]
        assert settings["hyper_activation"] == "leaky_relu"
        assert build_model(method, settings).hyper_activation == "leaky_relu"
    # The paper's activation leaves the records' keys as they were.
    assert build_model("HyperNet", records["SGD"]["settings"]).hyper_activation == "relu"


@pytest.mark.parametrize("method", ["SGD", "HyperNet", "HyperNet-KL"])
def test_uci_protocol_trains_on_every_training_row(method):
    # The estimators hold out validation rows by default; the paper's protocol does not.
    settings = {"hidden": 5, "loss": "squared_error", "batch_size": 1, "seed": 0}
    settings.update(predict_samples=5, kl_weight=0.1)
    model = build_model(method, settings)
    X = np.random.RandomState(0).normal(size=(200, 3))
    model.set_params(max_iter=1).fit(X, X[:, 0])
    assert model.t_ == 200 and model.validation_scores_ is None


def test_defaults_command_table_checks_and_resume(tmp_path, capsys):
    write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=2)
    protocol = tmp_path / "protocol.jsonl"
    protocol.write_text(
        "".join(
            json.dumps(
                {
                    "dataset": "toy",
                    "split": split,
                    "method": "HyperNet",
                    "settings": {
                        "epochs": 3,
                        "hidden": 4,
                        "batch_size": 8,
                        "predict_samples": 5,
                        "loss": "squared_error",
                        "seed": split,
                    },
                    "rmse": 0.5,
                    "fit_seconds": 100.0,
                }
            )
            + "\n"
            for split in range(2)
        )
    )
    results = tmp_path / "defaults.jsonl"
    args = [
        "defaults",
        "--data",
        str(tmp_path / "data"),
        "--datasets",
        "toy",
        "iris",
        "--splits",
        "2",
        "--methods",
        "HyperNet",
        "Ridge",
        "HistGradientBoosting",
        "MLP, scaled y, 2,000 iter",
        "LogisticRegression",
        "HyperNet, paper protocol",
        "--protocol",
        str(protocol),
        "--results",
        str(results),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = read_records(results)
    # toy: 4 regression methods x 2 splits and the protocol refitted on each;
    # iris: 3 classification methods x 2.
    assert len(records) == 16
    toy = [r for r in records if r["dataset"] == "toy"]
    assert all(r["n_train"] + r["n_test"] == 60 and r["rmse"] >= 0 for r in toy)
    iris = [r for r in records if r["dataset"] == "iris"]
    assert all(r["n_test"] == 30 and 0 <= r["accuracy"] <= 1 for r in iris)
    refits = [r for r in toy if r["method"] == "HyperNet, paper protocol"]
    assert [r["settings"]["protocol"]["seed"] for r in refits] == [0, 1]
    assert "| HistGradientBoosting | Ridge | HyperNet, paper protocol |" in out
    # The uci run's column shows its scores, not its lockstep fit times.
    assert "| HyperNet, paper protocol, uci run |" in out and "0.500 ± 0.000, 3 epochs |" in out
    assert "| data set | splits | HyperNet | HistGradientBoosting | LogisticRegression |" in out
    ratio = np.mean([r["fit_seconds"] for r in toy if r["method"] == "HyperNet"]) / np.mean(
        [r["fit_seconds"] for r in refits]
    )
    assert f"| {ratio:.2f} |" in out and "(1 timed side by side)" in out
    assert "Within 10% of the protocol's RMSE:" in out and "/1;" in out
    assert main(args + ["--resume"]) == 0
    assert "16 of 16 results already present; running 0." in capsys.readouterr().out


def test_defaults_protocol_refit_is_the_uci_runs_model():
    settings = {"epochs": 7, "hidden": 4, "batch_size": 1, "predict_samples": 5}
    settings.update(loss="squared_error", seed=3)
    task = {"dataset": "toy", "split": 3, "estimator": "HyperNet, paper protocol"}
    model = build_estimator({**task, "settings": {"task": "regression", "protocol": settings}})
    expected = build_model("HyperNet", settings).set_params(max_iter=7)
    assert model.get_params() == expected.get_params()
    assert model.early_stopping is False and model.random_state == 3


def test_defaults_command_scores_settings_on_validation_rows_only(tmp_path, capsys):
    folder, X, y = write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=1)
    test_rows = np.loadtxt(os.path.join(folder, "data", "index_test_0.txt"), dtype=int)
    # Test targets no fit could predict: a score that read them would be huge.
    data = np.loadtxt(os.path.join(folder, "data", "data.txt"))
    data[test_rows, 1] = 1e6
    np.savetxt(os.path.join(folder, "data", "data.txt"), data)
    args = [
        "defaults",
        "--data",
        str(tmp_path / "data"),
        "--datasets",
        "toy",
        "--splits",
        "1",
        "--methods",
        "HyperNet",
        "Ridge",
        "--validation",
        "0.25",
        "--params",
        "hidden_layer_sizes=[3]",
        "max_iter=2",
        "--results",
        str(tmp_path / "v.jsonl"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = {r["method"]: r for r in read_records(tmp_path / "v.jsonl")}
    label = "HyperNet hidden_layer_sizes=[3] max_iter=2"
    assert set(records) == {label, "Ridge"}
    assert all(r["n_train"] + r["n_test"] == 48 and r["n_test"] == 12 for r in records.values())
    assert all(r["rmse"] < 100 for r in records.values())
    assert records[label]["settings"]["params"] == [["hidden_layer_sizes", [3]], ["max_iter", 2]]
    assert "params" not in records["Ridge"]["settings"]
    assert "Regression: validation RMSE" in out and f"| {label} |" in out
    task = {k: records[label][k] for k in ("dataset", "split", "estimator", "settings")}
    model = build_estimator(task)
    assert model.hidden_layer_sizes == (3,) and model.max_iter == 2
    # Settings read back from JSON (lists) match the planned ones (tuples).
    assert main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 results already present; running 0." in out and f"| {label} |" in out


@pytest.mark.parametrize(
    "command, options, message",
    [
        ("defaults", ["--datasets", "nowhere"], "not built in"),
        ("defaults", ["--methods", "XGBoost"], "Unknown methods"),
        ("defaults", ["--splits", "0"], "argument --splits: must be at least 1"),
        ("defaults", ["--protocol", "missing.jsonl"], "not a file"),
        ("defaults", ["--validation", "1.5"], "must be in [0, 1)"),
        ("defaults", ["--validation", "0.2", "--protocol", "p.jsonl"], "cannot be combined"),
        ("defaults", ["--params", "hidden_layer_sizes"], "NAME=VALUE"),
        ("defaults", ["--params", "activation=tanh"], "not a JSON value"),
        ("defaults", ["--params", "colour=1"], "not parameters of HyperNet"),
        (
            "defaults",
            ["--methods", "SGDBaseline", "--params", "noise_dim=5"],
            "not parameters of SGDBaseline",
        ),
        ("uncertainty", ["--datasets", "toy"], "need --data"),
        ("uncertainty", ["--datasets", "iris", "--methods", "NGBoost"], "has a classification"),
        ("uncertainty", ["--validation", "1"], "must be in [0, 1)"),
        ("uncertainty", ["--validation", "nan"], "must be in [0, 1)"),
        ("uci", ["--held-out", "1.5"], "must be in [0, 1)"),
        ("gap", ["--half-gaps", "4"], "not between 0 and 4"),
        ("gap", ["--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        ("gap", ["--members", "1"], "argument --members: must be at least 2, got 1"),
    ],
)
def test_commands_report_input_problems_in_one_line(tmp_path, capsys, command, options, message):
    with pytest.raises(SystemExit) as stop:
        main([command, "--results", str(tmp_path / "r.jsonl"), *options])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.jsonl").exists()


# Every number a command takes, at a value below its range: argparse's own
# one-line error before anything runs (these crashed deep inside the run,
# ran nothing silently, or ran on with a value that has no meaning).
BAD_NUMBERS = [
    ("uci", "--epochs", "0", "at least 1"),
    ("uci", "--track-epochs", "-1", "at least 1"),
    ("uci", "--hidden", "0", "at least 1"),
    ("uci", "--predict-samples", "0", "at least 1"),
    ("uci", "--kl-weight", "-1", "at least 0"),
    ("uci", "--kl-weight", "nan", "at least 0"),
    ("uci", "--seed", "-1", "at least 0"),
    ("uci", "--jobs", "0", "must not be 0"),
    ("uci", "--lockstep", "-1", "at least 1"),
    ("uci", "--splits", "-1", "at least 1"),
    ("uci", "--splits", "two", "an integer"),
    ("figure2", "--repetitions", "0", "at least 1"),
    ("mnist", "--batch-size", "0", "at least 1"),
    ("mnist", "--train-rows", "0", "at least 1"),
    ("mnist", "--epochs", "-1", "at least 1"),
    ("defaults", "--seed", "-1", "at least 0"),
    ("defaults", "--jobs", "0", "must not be 0"),
    ("kl-weight", "--weights", "-1", "at least 0"),
    ("kl-weight", "--split", "-1", "at least 0"),
    ("kl-weight", "--folds", "1", "at least 2"),
    ("kl-weight", "--epochs", "0", "at least 1"),
    ("gap", "--jobs", "0", "must not be 0"),
    ("gap", "--epochs", "0", "at least 1"),
    ("speed", "--threads", "0", "at least 1"),
    ("speed", "--repeats", "0", "at least 1"),
    ("memory", "--rows", "0", "at least 1"),
    ("memory", "--samples", "-1", "at least 1"),
    ("search", "--max-iter", "0", "at least 1"),
    ("search", "--cv", "1", "at least 2"),
]
REQUIRED = {
    "uci": ["--data", "d", "--results", "r.jsonl"],
    "figure2": ["--data", "d", "--results", "r.jsonl", "--figure", "f.png"],
    "mnist": ["--data", "d", "--results", "r.jsonl"],
    "defaults": ["--results", "r.jsonl"],
    "kl-weight": ["--data", "d", "--results", "r.jsonl"],
    "gap": ["--results", "r.jsonl"],
}


@pytest.mark.parametrize("command, option, value, message", BAD_NUMBERS)
def test_numbers_out_of_range_stop_the_command_line(
    tmp_path, monkeypatch, capsys, command, option, value, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([command, *REQUIRED.get(command, []), option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command, options",
    [
        ("uci", ["--jobs", "-1", "--seed", "0", "--kl-weight", "0", "--held-out", "0"]),
        ("kl-weight", ["--split", "0", "--weights", "0", "0.5", "--folds", "2"]),
        ("gap", ["--members", "2", "--jobs", "-2"]),
    ],
)
def test_numbers_at_the_edge_of_their_range_are_accepted(command, options):
    from skhypernet.benchmarks import gap, kl_weight, uci

    parser = argparse.ArgumentParser()
    {"uci": uci, "kl-weight": kl_weight, "gap": gap}[command].add_arguments(parser)
    parser.parse_args([*REQUIRED[command], *options])


KEYS = ("dataset", "split")


def test_result_store_drops_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path, resume=False, record_keys=KEYS)
    store.append({"dataset": "a", "split": 0})
    store.append({"dataset": "a", "split": 1})
    store.close()
    with open(path, "a") as handle:
        handle.write('{"dataset": "a", "spl')
    resumed = ResultStore(path, resume=True, record_keys=KEYS)
    assert [r["split"] for r in resumed.records] == [0, 1]
    resumed.append({"dataset": "a", "split": 2})
    assert [r["split"] for r in read_records(path)] == [0, 1, 2]
    assert resumed.has({"dataset": "a", "split": 2})


def test_result_store_never_destroys_a_file_by_accident(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultStore(path, resume=False, record_keys=KEYS).append({"dataset": "a", "split": 0})
    with pytest.raises(BenchmarkInputError, match="--resume .* or --overwrite"):
        ResultStore(path, resume=False, record_keys=KEYS)
    # With --overwrite the old file stays until the first new record arrives.
    replacing = ResultStore(path, resume=False, overwrite=True, record_keys=KEYS)
    assert len(read_records(path)) == 1 and replacing.records == []
    replacing.append({"dataset": "b", "split": 0})
    assert read_records(path) == [{"dataset": "b", "split": 0}]


def test_result_store_refuses_foreign_files_and_skips_foreign_lines(tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes\n123\n")
    with pytest.raises(BenchmarkInputError, match="not a results file"):
        ResultStore(foreign, resume=True, record_keys=KEYS)
    assert foreign.read_text() == "my notes\n123\n"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"dataset": "a", "split": 0}\n123\n{}\n{"dataset": "a"}\n')
    with pytest.warns(UserWarning, match="skipped 3 line"):
        store = ResultStore(mixed, resume=True, record_keys=KEYS)
    assert store.records == [{"dataset": "a", "split": 0}]


def test_uci_command_reports_input_problems_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    results = tmp_path / "uci.jsonl"
    results.write_text('{"dataset": "toy", "split": 0, "method": "SGD", "settings": {}}\n')
    for data in [tmp_path / "empty", tmp_path / "missing"]:
        with pytest.raises(SystemExit) as stop:
            main(["uci", "--data", str(data), "--results", str(results)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    # The data were checked before the results file was touched.
    assert len(read_records(results)) == 1


def test_a_resumed_table_never_mixes_settings(tmp_path, capsys):
    write_uci_folder(tmp_path / "data", name="toy", n_splits=1)
    results = tmp_path / "uci.jsonl"
    base = ["uci", "--data", str(tmp_path / "data"), "--results", str(results), "--methods", "SGD"]
    tiny = ["--track-epochs", "2", "--predict-samples", "5"]
    assert main(base + ["--epochs", "3"] + tiny) == 0
    assert main(base + ["--epochs", "4", "--resume"] + tiny) == 0
    out = capsys.readouterr().out
    table = out[out.rindex("| Dataset | N |") :]
    assert "| 1 | 4 |" in table  # one split, 4 epochs: the 3-epoch record is left out
    assert len(read_records(results)) == 2


def test_predictive_scores():
    from skhypernet.benchmarks.uci import predictive_scores

    y = np.array([0.0, 1.0, 2.0, 10.0])
    scores = predictive_scores(y, np.array([0.0, 1.0, 2.0, 0.0]), np.ones(4))
    assert scores["coverage_90"] == 0.75
    assert scores["rmse"] == pytest.approx(5.0)
    assert scores["ll"] == pytest.approx(-0.5 * np.log(2 * np.pi) - 100 / 8)


def test_mean_and_standard_error():
    mean, error = mean_and_standard_error([1.0, 2.0, 3.0])
    assert mean == 2.0 and error == pytest.approx(1.0 / 3**0.5)


def test_figure2_harness_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    write_uci_folder(tmp_path / "data", name="toy", n_splits=2)
    figure = tmp_path / "figure2.png"
    assert (
        main(
            [
                "figure2",
                "--data",
                str(tmp_path / "data"),
                "--repetitions",
                "2",
                "--results",
                str(tmp_path / "fig.jsonl"),
                "--figure",
                str(figure),
                "--epochs",
                "3",
                "--predict-samples",
                "5",
            ]
        )
        == 0
    )
    assert figure.stat().st_size > 1000
    records = read_records(tmp_path / "fig.jsonl")
    assert sorted(r["method"] for r in records) == ["HyperNet"] * 2 + ["HyperNet-KL"] * 2
    for record in records:
        assert len(record["weight_diffusion"]) == 3 == len(record["rmse_tracked_epochs"])
        assert len(record["weight_diffusion_steps"]) == 3


def test_mnist_harness(tmp_path, capsys):
    write_mnist_folder(tmp_path / "mnist")
    results = tmp_path / "mnist.jsonl"
    assert (
        main(
            [
                "mnist",
                "--data",
                str(tmp_path / "mnist"),
                "--architectures",
                "3x150",
                "--results",
                str(results),
                "--batch-size",
                "32",
                *TINY,
            ]
        )
        == 0
    )
    records = read_records(results)
    assert {r["method"] for r in records} == {"HyperNet", "SGD"}
    assert all(0 <= r["error_percent"] <= 100 for r in records)
    assert records[0]["settings"]["hyper_hidden"] == "100,20"
    assert "| 3x150 |" in capsys.readouterr().out


def test_shared_uci_data_in_the_harness(shared_datasets, tmp_path):
    results = tmp_path / "uci.jsonl"
    assert (
        main(
            [
                "uci",
                "--data",
                os.path.join(shared_datasets, "uci"),
                "--datasets",
                "bostonHousing",
                "--splits",
                "1",
                "--epochs",
                "1",
                "--track-epochs",
                "1",
                "--predict-samples",
                "5",
                "--methods",
                "SGD",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    (record,) = read_records(results)
    assert record["n_train"] + record["n_test"] == 506


def test_kl_weight_cross_validation_uses_training_rows_only(tmp_path, capsys, monkeypatch):
    from skhypernet.benchmarks import kl_weight

    write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=1)
    seen = []
    original = kl_weight.load_uci

    def recording_load(folder, split):
        parts = original(folder, split)
        seen.append(parts)
        return parts

    monkeypatch.setattr(kl_weight, "load_uci", recording_load)
    results = tmp_path / "cv.jsonl"
    args = ["kl-weight", "--data", str(tmp_path / "data"), "--datasets", "toy"]
    args += ["--weights", "0", "0.5", "--folds", "2", "--epochs", "2", "--results", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = read_records(results)
    assert len(records) == 2 * 2  # weights x folds
    assert "Best mean rank of validation log-likelihood: kl_weight=" in out
    n_train = len(seen[0][2])
    # Every fold scores rows of the training part of the split: half of them.
    assert all(r["n_validation"] == n_train // 2 for r in records)


def test_every_benchmark_option_has_help_and_no_markup(capsys):
    import argparse

    from skhypernet.benchmarks import __main__ as command_line

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        parsers.append(parser)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            command_line.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    commands = next(
        action for action in parsers[0]._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, subparser in commands.choices.items():
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"


def test_defaults_table_shows_tiny_errors_to_three_significant_digits():
    records = [
        {"dataset": "naval", "split": split, "method": "HyperNet", "rmse": rmse}
        | {"settings": {"task": "regression"}, "fit_seconds": 1.0}
        for split, rmse in enumerate([0.00089, 0.00091])
    ]
    assert "| naval | 2 | 0.000900 ± 0.000010 (1.0 s) |" in defaults_summary(records)


def test_gap_command_records_table_and_resume(tmp_path, capsys):
    from skhypernet.benchmarks.gap import gap_data, scored_points

    results = tmp_path / "gap.jsonl"
    args = ["gap", "--half-gaps", "2", "--seeds", "2", "--epochs", "3", "--members", "2"]
    assert main(args + ["--results", str(results)]) == 0
    records = read_records(results)
    assert len(records) == 10  # five methods, two seeds
    for record in records:
        assert record["ratio"] == pytest.approx(record["std_gap"] / record["std_on_data"])
    # A model with a single set of weights has the same std everywhere: its noise.
    baseline = [r for r in records if r["method"] == "SGDBaseline"]
    assert all(r["ratio"] == pytest.approx(1.0) for r in baseline)
    out = capsys.readouterr().out
    assert "| -2 < x < 2 | GP (ML-II) | 2 |" in out
    assert main(args + ["--results", str(results), "--resume"]) == 0
    assert "10 of 10 results already present; running 0." in capsys.readouterr().out
    # The gallery's data: no row in the gap, the scored points at the centres.
    X, _ = gap_data(1.0, seed=0)
    assert X.shape == (300, 1) and not np.any(np.abs(X) < 1.0)
    np.testing.assert_allclose(scored_points(1.0)[:, 0], [0.0, -2.5, 2.5])


def test_inputs_that_exist_only_in_the_data_stop_the_command_line(tmp_path, capsys):
    # A split beyond the data set's and training rows of one class used to end
    # in a ValueError's traceback from inside the run.
    write_uci_folder(str(tmp_path / "uci"), n_splits=2)
    write_mnist_folder(str(tmp_path / "mnist"))
    results = str(tmp_path / "r.jsonl")
    for argv, message in [
        (
            ["kl-weight", "--data", str(tmp_path / "uci"), "--datasets", "toy", "--split", "2"],
            "--split 2 is beyond",
        ),
        (["mnist", "--data", str(tmp_path / "mnist"), "--train-rows", "1"], "one class"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--results", results])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not os.path.exists(results)


def test_tracked_epochs_recorded_are_those_tracked(tmp_path):
    # More tracked epochs than epochs track them all; the record said the
    # number asked for.
    write_uci_folder(tmp_path / "data")
    results = tmp_path / "uci.jsonl"
    main(
        [
            *("uci", "--data", str(tmp_path / "data"), "--splits", "1", "--methods", "SGD"),
            *("--epochs", "2", "--track-epochs", "5", "--predict-samples", "5"),
            *("--results", str(results)),
        ]
    )
    (record,) = read_records(results)
    assert record["settings"]["track_epochs"] == 2
    assert len(record["rmse_tracked_epochs"]) == 2


def test_uncertainty_command_scores_distributions_and_resumes(tmp_path, capsys):
    folder, X, y = write_uci_folder(tmp_path / "data", name="toy", n_rows=80, n_splits=2)
    methods = ["SGDBaseline", "SGDBaseline, 5 members", "Gaussian process", "conformal HGB"]
    args = ["uncertainty", "--data", str(tmp_path / "data"), "--datasets", "toy", "--methods"]
    args += methods + ["--results", str(tmp_path / "u.jsonl")]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = read_records(tmp_path / "u.jsonl")
    assert len(records) == 2 * len(methods)
    for record in records:
        for field in ("nll", "crps", "rmse", "width_90", "fit_seconds", "predict_seconds"):
            assert np.isfinite(record[field])
        assert 0 <= record["coverage_90"] <= 1 and record["n_test"] == 16
    ensemble = [r for r in records if r["method"] == "SGDBaseline, 5 members"]
    assert all(0 < r["epistemic_share_test"] < r["epistemic_share_far"] < 1 for r in ensemble)
    assert all("epistemic_share_test" not in r for r in records if r["method"] == "conformal HGB")
    assert "test NLL (lower is better)" in out and "Mean rank in CRPS over 1 data sets" in out
    assert "| toy |" in out and "beyond the data" in out
    assert main(args + ["--resume"]) == 0
    assert "8 of 8 results already present; running 0." in capsys.readouterr().out


def test_uncertainty_command_never_reads_test_rows_with_validation(tmp_path, capsys):
    folder, X, y = write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=1)
    test_rows = np.loadtxt(os.path.join(folder, "data", "index_test_0.txt"), dtype=int)
    data = np.loadtxt(os.path.join(folder, "data", "data.txt"))
    data[test_rows, 1] = 1e6  # a score that read them would be huge
    np.savetxt(os.path.join(folder, "data", "data.txt"), data)
    args = ["uncertainty", "--data", str(tmp_path / "data"), "--datasets", "toy"]
    args += ["--methods", "Gaussian process", "--validation", "0.25"]
    assert main(args + ["--results", str(tmp_path / "v.jsonl")]) == 0
    (record,) = read_records(tmp_path / "v.jsonl")
    assert record["n_train"] + record["n_test"] == 48 and record["n_test"] == 12
    assert record["rmse"] < 100 and record["settings"]["validation"] == 0.25
    assert "validation NLL" in capsys.readouterr().out


def test_uncertainty_gp_fits_on_a_random_subset_of_large_training_sets(tmp_path, monkeypatch):
    from skhypernet.benchmarks import uncertainty

    write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=3)
    monkeypatch.setattr(uncertainty, "GP_MAX_ROWS", 30)
    args = argparse.Namespace(
        data=str(tmp_path / "data"),
        datasets=["toy", "diabetes"],
        splits=1,
        methods=["Gaussian process"],
        seed=0,
        validation=0.0,
        params=[],
    )
    tasks = uncertainty.plan(args)
    # The toy set's 54 training rows are above the limit, diabetes' 353 too.
    assert [t["settings"].get("max_rows") for t in tasks] == [30, 30]
    record = uncertainty.run_task(tasks[0])
    assert record["n_train"] == 30 and np.isfinite(record["nll"])
    monkeypatch.setattr(uncertainty, "GP_MAX_ROWS", 2000)
    assert all("max_rows" not in t["settings"] for t in uncertainty.plan(args))


def test_uncertainty_classification_sets_run_the_classifiers(tmp_path, capsys):
    from skhypernet.benchmarks import uncertainty

    args = argparse.Namespace(
        data=None,
        datasets=["iris", "diabetes"],
        splits=1,
        methods=["HyperNet", "NGBoost", "MLPClassifier"],
        seed=0,
        validation=0.0,
        params=[],
    )
    tasks = uncertainty.plan(args)
    # Each data set runs the requested methods its task has.
    assert {(t["dataset"], t["method"], t["settings"]["task"]) for t in tasks} == {
        ("iris", "HyperNet", "classification"),
        ("iris", "MLPClassifier", "classification"),
        ("diabetes", "HyperNet", "regression"),
        ("diabetes", "NGBoost", "regression"),
    }
    record = uncertainty.run_task(next(t for t in tasks if t["method"] == "MLPClassifier"))
    assert 0.8 < record["accuracy"] <= 1 and record["log_loss"] > 0 and 0 <= record["ece"] < 1
    assert record["n_train"] + record["n_test"] == 150
    table = uncertainty.summary([record])
    assert "test log loss" in table and "Mean rank in log loss" in table
    assert "NLL" not in table


@pytest.mark.parametrize("text", ["my notes\nsecond line", "single line", '{"x": 1}\nlast'])
def test_resume_never_touches_a_file_it_refuses(tmp_path, text):
    path = tmp_path / "notes.txt"
    path.write_text(text)
    with pytest.raises(BenchmarkInputError, match="not a results file"):
        ResultStore(path, resume=True, record_keys=KEYS)
    assert path.read_text() == text


def test_a_cut_last_line_is_repaired_only_among_records(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"dataset": "a", "split": 0}\nmy notes\n{"dataset": "a", "spl')
    with pytest.raises(BenchmarkInputError, match="not a results file"):
        ResultStore(path, resume=True, record_keys=KEYS)
    assert path.read_text().endswith('{"dataset": "a", "spl')


def test_a_results_file_in_use_is_refused_by_a_second_run(tmp_path):
    path = tmp_path / "results.jsonl"
    first = ResultStore(path, resume=False, record_keys=KEYS)
    first.append({"dataset": "a", "split": 0})
    for options in ({"resume": True}, {"resume": False, "overwrite": True}):
        with pytest.raises(BenchmarkInputError, match="in use by another run"):
            ResultStore(path, record_keys=KEYS, **options)
    assert read_records(path) == [{"dataset": "a", "split": 0}]
    first.close()
    ResultStore(path, resume=True, record_keys=KEYS).close()


def test_records_of_one_key_are_read_once(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [{"dataset": "a", "split": 0, "v": 1}, {"dataset": "a", "split": 0, "v": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.warns(UserWarning, match="1 duplicate"):
        store = ResultStore(path, resume=True, record_keys=KEYS)
    assert store.records == [lines[0]]


def test_results_paths_that_cannot_hold_results_are_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    cases = [
        (tmp_path, {"resume": True}, "Cannot use"),
        (tmp_path, {"resume": False}, "Cannot use"),
        (tmp_path / "afile" / "r.jsonl", {"resume": False}, "Cannot use"),
        ("", {"resume": False}, "needs a file name"),
        (tmp_path / "binary.jsonl", {"resume": True}, "not UTF-8 text"),
    ]
    for path, options, message in cases:
        with pytest.raises(BenchmarkInputError, match=message):
            ResultStore(path, record_keys=KEYS, **options)
    assert (tmp_path / "binary.jsonl").read_bytes() == b"\xff\xfe\x00garbage"


def test_uncertainty_params_reach_our_methods_only(tmp_path):
    from skhypernet.benchmarks import uncertainty

    write_uci_folder(tmp_path / "data", name="toy", n_rows=60, n_splits=1)
    args = argparse.Namespace(
        data=str(tmp_path / "data"),
        datasets=["toy"],
        splits=1,
        methods=["SGDBaseline", "conformal HGB"],
        seed=0,
        validation=0.0,
        params=['loss="gaussian_nll"', "hidden_layer_sizes=[3]"],
    )
    ours, theirs = uncertainty.plan(args)
    assert ours["method"] == 'SGDBaseline hidden_layer_sizes=[3] loss="gaussian_nll"'
    assert ours["settings"]["params"] == [("hidden_layer_sizes", [3]), ("loss", "gaussian_nll")]
    assert theirs["method"] == "conformal HGB" and "params" not in theirs["settings"]
    record = uncertainty.run_task(json.loads(json.dumps(ours)))
    assert record["estimator"] == "SGDBaseline" and np.isfinite(record["nll"])
    args.params = ["colour=1"]
    with pytest.raises(BenchmarkInputError, match="not parameters"):
        uncertainty.plan(args)


@pytest.mark.parametrize("damage", ["not numbers", "no splits"])
def test_damaged_data_files_stop_the_run_in_one_line(tmp_path, capsys, damage):
    folder, _, _ = write_uci_folder(tmp_path / "data", name="toy", n_rows=40, n_splits=2)
    if damage == "not numbers":
        with open(os.path.join(folder, "data", "data.txt"), "a") as handle:
            handle.write("1 2 x y\n")
    else:
        (tmp_path / "data" / "toy" / "data" / "n_splits.txt").write_text("0\n")
    args = ["uci", "--data", str(tmp_path / "data"), "--epochs", "1", "--methods", "SGD"]
    with pytest.raises(SystemExit) as stop:
        main(args + ["--results", str(tmp_path / "r.jsonl")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("not a table of numbers" if damage == "not numbers" else "at least 1 split") in err


def test_a_results_file_that_cannot_be_appended_to_is_refused_at_start(tmp_path, monkeypatch):
    import builtins

    from skhypernet.benchmarks import _results

    path = tmp_path / "results.jsonl"
    path.write_text('{"dataset": "a", "split": 0}\n')

    def read_only(file, mode="r", *args, **kwargs):
        # What a read-only file gives a user who is not root.
        if os.fspath(file) == os.fspath(path) and mode != "r":
            raise PermissionError(13, "Permission denied")
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(_results, "open", read_only, raising=False)
    for options in ({"resume": True}, {"resume": False, "overwrite": True}):
        with pytest.raises(BenchmarkInputError, match="Cannot use .*Permission denied"):
            ResultStore(path, record_keys=KEYS, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.jsonl.lock", "results.jsonl"]
