"""Peak memory of predict on many rows (chunked evaluation).

Fits a HyperNetRegressor (Boston shape: 13 features, 50 hidden units) for
one epoch, then measures in a fresh process how much memory ``predict`` adds
on ``--rows`` rows with ``--samples`` weight samples, beside the size of X
itself and of the result.
"""

from .._cli import at_least
from .speed import measure_in_fresh_process

_PREDICT_SCRIPT = """
import time, warnings, numpy as np, torch
from skhypernet import HyperNetRegressor
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
model = HyperNetRegressor(max_iter=1, n_predict_samples={samples}, random_state=0)
model.fit(rng.normal(size=(455, 13)), rng.normal(size=455))
X = rng.normal(size=({rows}, 13))
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
start = time.perf_counter()
y = model.predict(X, return_std={return_std})
seconds = time.perf_counter() - start
assert np.all(np.isfinite(y[0] if {return_std} else y))
print(seconds, status("VmHWM") - before)
"""


def add_arguments(parser):
    parser.add_argument(
        "--rows", type=at_least(1), default=1_000_000, help="rows to predict (default: 1,000,000)"
    )
    parser.add_argument(
        "--samples", type=at_least(1), default=100, help="weight samples S per row (default: 100)"
    )


def run(args):
    rows, samples = args.rows, args.samples
    print(f"predict on {rows:,} rows x 13 features, S = {samples} weight samples")
    x_megabytes, result_megabytes = rows * 13 * 8 / 2**20, rows * 8 / 2**20
    print(f"X itself: {x_megabytes:.0f} MB (float64); the result: {result_megabytes:.0f} MB")
    for return_std in (False, True):
        figures = measure_in_fresh_process(
            _PREDICT_SCRIPT.format(rows=rows, samples=samples, return_std=return_std)
        )
        if figures is None:
            print("peak memory: n/a (needs Linux's /proc)")
            return 0
        seconds, peak = figures
        print(f"return_std={return_std}: {seconds:.1f} s, peak extra memory {peak / 2**20:.0f} MB")
    return 0
