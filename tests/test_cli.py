"""``python -m skhypernet``: the main job."""

import re
import subprocess
import sys

import numpy as np
import pytest

from skhypernet.__main__ import main


def test_main_job_on_builtin_data(capsys):
    assert main(["--cv", "2", "--max-iter", "3"]) == 0
    out = capsys.readouterr().out
    assert "diabetes" in out
    for name in ["HyperNetRegressor", "SGDBaseline", "MLPRegressor"]:
        assert f"| {name} |" in out


def test_main_job_on_csv(tmp_path, capsys):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = X @ [1.0, -2.0, 0.5]
    path = tmp_path / "data.csv"
    rows = ["a,b,price,c"] + [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(X, y)]
    path.write_text("\n".join(rows) + "\n")
    assert main(["--csv", str(path), "--target", "price", "--cv", "2", "--max-iter", "3"]) == 0
    assert "60 rows x 3 features" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--csv", "missing.csv", "--target", "y"], "No such file"),
        (["--csv", "{path}"], "--csv needs --target"),
        (["--csv", "{path}", "--target", "nope"], "'nope' is not in"),
        (["--target", "y"], "--target needs --csv"),
        (["--cv", "1"], "must be at least 2"),
        (["--max-iter", "0"], "must be at least 1"),
        (["--random-state", "-1"], "must be from 0 to 4294967295, got -1"),
        (["--random-state", "4294967296"], "must be from 0 to 4294967295"),
        (["--csv", "{header_only}", "--target", "y"], "no rows of data"),
        (["--csv", "{target_only}", "--target", "y"], "no feature column"),
        (["--csv", "{nan_target}", "--target", "y"], "'y' of .* holds NaN"),
        (["--csv", "{inf_feature}", "--target", "y"], r"\['x'\] of .* hold NaN or infinite"),
        (["--csv", "{twice}", "--target", "y"], "2 columns named 'y'"),
        (["--csv", "{latin1}", "--target", "y"], "not UTF-8"),
        (["--csv", "{path}", "--target", "y", "--cv", "5"], "too few for --cv 5"),
        # Folds of one row: R^2 is undefined on them.
        (["--csv", "{path}", "--target", "y", "--cv", "2"], "at least 2 rows in every fold"),
        (["--csv", "{bom}", "--target", "y", "--cv", "2"], "at least 2 rows in every fold"),
        (["--csv", "{short_row}", "--target", "y"], "line 3 has 1 value"),
        (["--csv", "{huge}", "--target", "y"], "beyond the float32 range"),
    ],
)
def test_main_job_reports_bad_arguments(tmp_path, args, message):
    files = {
        "path": "x,y\n1,2\n3,4\n",
        "header_only": "x,y\n",
        "target_only": "y\n1\n2\n",
        "nan_target": "x,y\n1,nan\n3,4\n",
        "inf_feature": "x,y\n1,2\ninf,4\n",
        "twice": "x,y,y\n1,2,3\n3,4,5\n",
        "bom": "\ufeffy,x\n1,2\n3,4\n",  # what spreadsheet programs write
        "short_row": "x,y\n1,2\n3\n4,5\n",
        "huge": "x,y\n1e300,2\n3,4\n5,6\n7,8\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
    (tmp_path / "latin1.csv").write_bytes("x,y,größe\n1,2,3\n".encode("latin-1"))
    for name in [*files, "latin1"]:
        args = [arg.replace("{" + name + "}", str(tmp_path / f"{name}.csv")) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "skhypernet", *args], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_pandas_index_column_is_not_a_feature(tmp_path, capsys):
    rng = np.random.RandomState(0)
    rows = [",a,b,y"] + [f"{i},{rng.normal()},{rng.normal()},{rng.normal()}" for i in range(20)]
    path = tmp_path / "frame.csv"
    path.write_text("\n".join(rows) + "\n")
    assert main(["--csv", str(path), "--target", "y", "--cv", "2", "--max-iter", "2"]) == 0
    assert "20 rows x 2 features" in capsys.readouterr().out
