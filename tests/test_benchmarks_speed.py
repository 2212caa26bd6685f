"""The speed benchmark: figures are printed, never asserted against time."""

import pytest

from skhypernet import _engine
from skhypernet.benchmarks import speed
from skhypernet.benchmarks.__main__ import main


def test_mnist_step_flops_counts_forward_and_backward():
    # 51 codes x (785 x 400 + 401 x 400 + 401 x 10) main parameters, plus the
    # hypernetwork's 10 x 100 + 100 x 50, times 6 FLOPs per multiply-add.
    main_params = 51 * (785 * 400 + 401 * 400 + 401 * 10)
    model = speed.mnist_model(1)[0]
    assert _engine.step_flops(model, 256) == 6 * 256 * (main_params + 10 * 100 + 100 * 50)


def test_report_shows_ratios_and_targets():
    figures = {
        "torch": "2.x",
        "torch_threads": 2,
        "batch_1": {"HyperNetRegressor": 0.06, "SGDBaseline": 0.02, "MLPRegressor": 0.05},
        "batch_512": {"HyperNetRegressor": 0.03, "SGDBaseline": 0.002, "MLPRegressor": 0.005},
        "mnist_step_seconds": 0.16,
        "mnist_step_gflops": 230.0,
        "matmul_gflops": 400.0,
        "mnist_step_peak_bytes": 100 * 2**20,
        "predict_seconds": 0.3,
        "batch_1_kl": 0.072,
        "batch_32": {"HyperNetRegressor": 0.012, "SGDBaseline": 0.004, "MLPRegressor": 0.006},
        "batch_32_kl": 0.018,
        "noise_pass_fractions": {"False": 0.0001, "True": 0.002},
        "batch_512_gflops": 120.0,
        "lockstep_replicas": 20,
        "batch_1_lockstep": 0.2,
        "warm_up_seconds": 0.25,
        "ensemble_members": 5,
        "ensembles": {
            "HyperNetRegressor batch 32": {"one": 0.02, "members": 0.05},
            "SGDBaseline batch 1": {"one": 0.01, "members": 0.015},
        },
    }
    table = speed.report(figures)
    assert "| 1.20 | <= 1.0 |" in table
    assert "| 0.40 | <= 0.5 |" in table
    assert "| 15.00 | <= 3.0 |" in table
    assert "| 0.30 | >= 0.50 |" in table
    assert "| 0.57 | >= 0.70 |" in table
    assert "| 12.0 ms / 4.0 ms | 3.00 | <= 2.0 |" in table
    assert "kl_weight=0.1 / kl_weight=0 | 72.0 ms / 60.0 ms | 1.20 | <= 1.3 |" in table
    assert "kl_weight=0.1 / kl_weight=0 | 18.0 ms / 12.0 ms | 1.50 | <= 1.3 |" in table
    assert "| 0.25 s |" in table
    assert "| 1200 ms / 200 ms | 6.00 | >= 5.0 |" in table
    assert "100 MB" in table
    assert (
        "| epoch, batch 32, 927 x 8: HyperNetRegressor(n_members=5) / one network "
        "| 50.0 ms / 20.0 ms | 2.50 | <= 1.5 |" in table
    )
    assert "SGDBaseline(n_members=5) / one network | 15.0 ms / 10.0 ms | 1.50 |  |" in table


def test_mnist_step_peak_memory_is_measured():
    peak = speed.mnist_step_peak_bytes(16, threads=1)
    if peak is None:
        pytest.skip("no /proc on this system")
    assert 0 < peak < 150 * 2**20


@pytest.mark.slow
def test_speed_benchmark_runs(capsys, tmp_path):
    assert main(["speed", "--repeats", "1", "--json", str(tmp_path / "speed.json")]) == 0
    assert "MNIST 2x400 step" in capsys.readouterr().out
    assert (tmp_path / "speed.json").exists()


def test_memory_benchmark_reports_predict_peak(capsys):
    assert main(["memory", "--rows", "2000", "--samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "predict on 2,000 rows" in out
    assert "n/a" in out or out.count("peak extra memory") == 2


def test_search_benchmark_runs(capsys):
    assert main(["search", "--max-iter", "1", "--cv", "2"]) == 0
    out = capsys.readouterr().out
    assert "16 candidates" in out and "speed-up:" in out
