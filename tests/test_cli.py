"""``python -m skhypernet``: the main job."""

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
    ],
)
def test_main_job_reports_bad_arguments(tmp_path, args, message):
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1,2\n3,4\n")
    args = [arg.replace("{path}", str(path)) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "skhypernet", *args], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr
