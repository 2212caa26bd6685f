"""Speed of the training engine, measured side by side with scikit-learn's MLP.

Prints a Markdown table of these measurements and their ratios:

1. epoch time at batch size 1 on 455 x 13 rows (the Boston shape), and of 20
   such fits in lockstep against 20 separate ones;
2. epoch time at batch size 512 on 8,192 x 8 rows (the kin8nm shape), and its
   FLOP rate against the machine's matmul rate;
3. a training step of the MNIST 2x400 hypernetwork at batch size 256:
   achieved GFLOP/s over the fp32 matmul GFLOP/s of the same machine, and the
   peak memory the step adds;
4. predict time for 10,000 rows with S = 100 weight samples;
5. the cost of ``kl_weight=0.1`` at batch sizes 1 and 32, the epoch time at
   batch size 32 on 927 x 8 rows (the Concrete shape), and the cost of the
   noise estimate after a fit relative to an epoch;
6. the first fit's warm-up in a fresh process;
7. the epoch time of a 5-member ensemble (``n_members=5``, trained in one pass)
   against one network, for both families at batch sizes 1 and 32.
"""

import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from .. import HyperNetRegressor, SGDBaseline, _engine
from .._base import fit_in_lockstep
from .._cli import at_least
from .._model import HyperNetwork, StochasticMLP, layer_shapes

MNIST_SHAPES = layer_shapes(784, [400, 400], 10)
MNIST_HYPER_HIDDEN = [100, 50]
#: Replicas of the lockstep measurement (the 20 splits of a UCI data set).
LOCKSTEP_REPLICAS = 20
#: Members of the ensemble measurement (the usual size of a deep ensemble).
ENSEMBLE_MEMBERS = 5
#: Data shape of the ensemble measurement at each batch size: the Boston shape
#: at batch size 1 (as above), a 927 x 8 set (Concrete's training rows) at 32.
ENSEMBLE_SHAPES = {1: (455, 13), 32: (927, 8)}
#: Data shape of the batch-32 measurements: Concrete's training rows.
BATCH_32_SHAPE = ENSEMBLE_SHAPES[32]


def add_arguments(parser):
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        help="torch threads (default: torch's own default)",
    )
    parser.add_argument(
        "--repeats",
        type=at_least(1),
        default=3,
        help="timings per measurement; the fastest counts",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")


def epoch_seconds(fit, repeats, epochs=(1, 4)):
    """Seconds per epoch of ``fit(n_epochs)``: the difference of fits of two
    lengths, fastest of repeats.

    Subtracting a short fit removes per-fit costs (validation, set-up).
    """
    fit(1)  # warm-up: imports, thread pools
    best = {}
    for _ in range(repeats):
        for n_epochs in epochs:
            start = time.perf_counter()
            fit(n_epochs)
            best[n_epochs] = min(best.get(n_epochs, np.inf), time.perf_counter() - start)
    return (best[epochs[1]] - best[epochs[0]]) / (epochs[1] - epochs[0])


def estimator_epoch_seconds(make_estimator, X, y, repeats):
    """:func:`epoch_seconds` of ``make_estimator(n_epochs).fit(X, y)``."""
    return epoch_seconds(lambda n_epochs: make_estimator(n_epochs).fit(X, y), repeats)


def linear_data(n_samples, n_features):
    """A noisy linear regression problem of the given shape: ``(X, y)``."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_samples, n_features))
    return X, X @ rng.normal(size=n_features) + rng.normal(size=n_samples)


def compare_epochs(n_samples, n_features, batch_size, repeats):
    """Epoch seconds of the three estimators at one data shape and batch size."""
    X, y = linear_data(n_samples, n_features)

    def ours(cls):
        return lambda n_epochs: cls(
            batch_size=batch_size,
            max_iter=n_epochs,
            n_iter_no_change=np.inf,
            early_stopping=False,
            random_state=0,
        )

    def mlp(n_epochs):
        return MLPRegressor(
            hidden_layer_sizes=(50,),
            batch_size=batch_size,
            max_iter=n_epochs,
            n_iter_no_change=np.inf,
            random_state=0,
        )

    return {
        "HyperNetRegressor": estimator_epoch_seconds(ours(HyperNetRegressor), X, y, repeats),
        "SGDBaseline": estimator_epoch_seconds(ours(SGDBaseline), X, y, repeats),
        "MLPRegressor": estimator_epoch_seconds(mlp, X, y, repeats),
    }


def kl_epoch_seconds(n_samples, n_features, batch_size, repeats):
    """Epoch seconds of ``HyperNetRegressor(kl_weight=0.1)`` at one data shape
    and batch size."""
    return estimator_epoch_seconds(
        lambda n_epochs: HyperNetRegressor(
            batch_size=batch_size,
            max_iter=n_epochs,
            kl_weight=0.1,
            n_iter_no_change=np.inf,
            early_stopping=False,
            random_state=0,
        ),
        *linear_data(n_samples, n_features),
        repeats,
    )


def lockstep_epoch_seconds(n_replicas, repeats, n_samples=455, n_features=13):
    """Epoch seconds of ``n_replicas`` batch-1 HyperNetRegressors of different
    seeds fitted in lockstep (:func:`~skhypernet._base.fit_in_lockstep`),
    measured like :func:`epoch_seconds`."""
    X, y = linear_data(n_samples, n_features)

    def fit(n_epochs):
        estimators = [
            HyperNetRegressor(
                batch_size=1,
                max_iter=n_epochs,
                n_iter_no_change=np.inf,
                early_stopping=False,
                random_state=seed,
            )
            for seed in range(n_replicas)
        ]
        fit_in_lockstep(estimators, [X] * n_replicas, [y] * n_replicas)

    return epoch_seconds(fit, repeats)


def ensemble_epoch_seconds(repeats):
    """Epoch seconds of one network and of an ensemble of ``ENSEMBLE_MEMBERS``,
    per family and batch size: ``{"<class> batch <b>": {"one": s, "members": s}}``."""
    figures = {}
    for batch_size, shape in ENSEMBLE_SHAPES.items():
        X, y = linear_data(*shape)
        for cls in (HyperNetRegressor, SGDBaseline):

            def make(n_members, cls=cls, batch_size=batch_size):
                return lambda n_epochs: cls(
                    n_members=n_members,
                    batch_size=batch_size,
                    max_iter=n_epochs,
                    n_iter_no_change=np.inf,
                    early_stopping=False,
                    random_state=0,
                )

            figures[f"{cls.__name__} batch {batch_size}"] = {
                "one": estimator_epoch_seconds(make(1), X, y, repeats),
                "members": estimator_epoch_seconds(make(ENSEMBLE_MEMBERS), X, y, repeats),
            }
    return figures


def matmul_gflops(repeats, size=2048):
    """Measured fp32 matrix-multiplication rate of this machine, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def mnist_model(batch_size):
    generator = torch.Generator().manual_seed(0)
    weights = HyperNetwork(MNIST_SHAPES, 10, MNIST_HYPER_HIDDEN, 0.5, generator)
    model = StochasticMLP(weights, input_noise=0.5)
    optimizer = _engine.FlatOptimizer([model], 1e-3)
    data = _engine.TrainingData.single(
        X=torch.rand(batch_size, 784, generator=generator),
        targets=torch.randint(0, 10, (batch_size,), generator=generator),
        weights=torch.ones(batch_size),
        loss=_engine.CROSS_ENTROPY,
    )
    return model, optimizer, data


def mnist_step_seconds(batch_size, repeats):
    """Fastest training step of the MNIST model, and the FLOPs of a step."""
    model, optimizer, data = mnist_model(batch_size)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad(), _engine.flushed_denormals():
        _engine.run_epoch([model], optimizer, data, batch_size, False, [generator])
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            _engine.run_epoch([model], optimizer, data, batch_size, False, [generator])
            best = min(best, time.perf_counter() - start)
    return best, _engine.step_flops(model, batch_size)


_STATUS_HELPER = """
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
"""

_MNIST_STEP_SCRIPT = """
import torch
from skhypernet import _engine
from skhypernet.benchmarks.speed import mnist_model
if {threads}: torch.set_num_threads({threads})
model, optimizer, data = mnist_model({batch_size})
generator = torch.Generator().manual_seed(1)
with torch.no_grad():
    _engine.run_epoch([model], optimizer, data, {batch_size}, False, [generator])
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
    _engine.run_epoch([model], optimizer, data, {batch_size}, False, [generator])
print(status("VmHWM") - before)
"""


_WARM_UP_SCRIPT = """
import time
import numpy as np
from skhypernet import HyperNetRegressor
X = np.random.RandomState(0).normal(size=(455, 13))
seconds = []
for _ in range(2):
    start = time.perf_counter()
    HyperNetRegressor(max_iter=1, random_state=0).fit(X, X[:, 0])
    seconds.append(time.perf_counter() - start)
print(seconds[0] - seconds[1])
"""


def warm_up_seconds(threads):
    """What the first fit in a fresh process costs beyond an identical second
    fit (imports not counted)."""
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    result = subprocess.run(
        [sys.executable, "-c", _WARM_UP_SCRIPT],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    return float(result.stdout.split()[-1])


def batch_512_gflops(epoch_seconds, n_rows=8192, n_features=8, batch_size=512):
    """FLOP rate of the batch-512 HyperNetRegressor epoch of ``compare_epochs``."""
    model = HyperNetRegressor(max_iter=1, batch_size=batch_size, early_stopping=False)
    model.fit(*linear_data(n_rows, n_features))
    flops = _engine.step_flops(model.network_, batch_size) * (n_rows // batch_size)
    return flops / epoch_seconds / 1e9


def measure_in_fresh_process(script):
    """Run a memory measurement; return the numbers its last line prints.

    ``script`` resets the resident-set high-water mark, reads the resident
    set (``status("VmRSS")``) before the measured part and prints the peak
    increase, ``status("VmHWM") - before``, last.  It runs in a fresh process
    whose allocator returns large blocks to the system at once, so that the
    high-water mark follows the live arrays.  None where ``/proc`` is
    unavailable (Linux only).
    """
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run(
        [sys.executable, "-c", _STATUS_HELPER + script],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    return [float(value) for value in result.stdout.split("\n")[-2].split()]


def mnist_step_peak_bytes(batch_size, threads):
    """Peak memory one MNIST training step adds to the process.

    Parameters, gradients and Adam's moments exist before the step and do
    not count.
    """
    figures = measure_in_fresh_process(
        _MNIST_STEP_SCRIPT.format(batch_size=batch_size, threads=threads or 0)
    )
    return None if figures is None else int(figures[-1])


def predict_seconds(repeats, n_rows=10000, n_samples=100):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(455, 13))
    y = X[:, 0]
    model = HyperNetRegressor(max_iter=1, n_predict_samples=n_samples, random_state=0)
    model.fit(X, y)
    X_test = rng.normal(size=(n_rows, 13))
    model.predict(X_test)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(X_test)
        best = min(best, time.perf_counter() - start)
    return best


def noise_pass_fractions(repeats, n_rows=8192, n_features=8):
    """Seconds of the after-training pass (the noise estimate) over those of an
    epoch, at batch size 512, without and with ``early_stopping``."""
    X, y = linear_data(n_rows, n_features)
    fractions = {}
    for early_stopping in (False, True):
        model = HyperNetRegressor(
            batch_size=512, early_stopping=early_stopping, max_iter=2, random_state=0
        ).fit(X, y)
        pass_seconds = []
        after_training = model._after_training

        def timed(after_training=after_training, pass_seconds=pass_seconds):
            start = time.perf_counter()
            after_training()
            pass_seconds.append(time.perf_counter() - start)

        model._after_training = timed
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            model.set_params(max_iter=1, warm_start=True).fit(X, y)
            whole = time.perf_counter() - start
            best = min(best, pass_seconds[-1] / (whole - pass_seconds[-1]))
        fractions[str(early_stopping)] = best
    return fractions


def measure(threads=None, repeats=3):
    """Run all measurements; return a dict of figures."""
    if threads:
        torch.set_num_threads(threads)
    figures = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        figures["batch_1"] = compare_epochs(455, 13, 1, repeats)
        figures["lockstep_replicas"] = LOCKSTEP_REPLICAS
        figures["batch_1_lockstep"] = lockstep_epoch_seconds(LOCKSTEP_REPLICAS, repeats)
        figures["batch_1_kl"] = kl_epoch_seconds(455, 13, 1, repeats)
        figures["batch_32"] = compare_epochs(*BATCH_32_SHAPE, 32, repeats)
        figures["batch_32_kl"] = kl_epoch_seconds(*BATCH_32_SHAPE, 32, repeats)
        figures["noise_pass_fractions"] = noise_pass_fractions(repeats)
        figures["batch_512"] = compare_epochs(8192, 8, 512, repeats)
        figures["predict_seconds"] = predict_seconds(repeats)
        figures["ensemble_members"] = ENSEMBLE_MEMBERS
        figures["ensembles"] = ensemble_epoch_seconds(repeats)
    step, flops = mnist_step_seconds(256, repeats)
    figures["mnist_step_seconds"] = step
    figures["mnist_step_gflops"] = flops / step / 1e9
    figures["matmul_gflops"] = matmul_gflops(repeats)
    figures["mnist_step_peak_bytes"] = mnist_step_peak_bytes(256, threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        figures["batch_512_gflops"] = batch_512_gflops(figures["batch_512"]["HyperNetRegressor"])
    figures["warm_up_seconds"] = warm_up_seconds(threads)
    return figures


def _epoch_row(where, names, seconds, target):
    """A table row comparing two epoch times: ``epoch, WHERE: A / B``, both in
    ms, their ratio and the target."""
    (first, second), (numerator, denominator) = names, seconds
    return (
        f"epoch, {where}: {first} / {second}",
        f"{numerator * 1e3:.1f} ms / {denominator * 1e3:.1f} ms",
        numerator / denominator,
        target,
    )


def report(figures):
    """The Markdown table of ``figures`` with ratios and targets."""
    one, mid, big = figures["batch_1"], figures["batch_32"], figures["batch_512"]
    replicas = figures["lockstep_replicas"]
    peak = figures["mnist_step_peak_bytes"]
    rows = [
        *(
            _epoch_row(where, (name, "MLPRegressor"), (times[name], times["MLPRegressor"]), target)
            for where, times, name, target in [
                ("batch 1, 455 x 13", one, "HyperNetRegressor", "<= 1.0"),
                ("batch 1, 455 x 13", one, "SGDBaseline", "<= 0.5"),
            ]
        ),
        (
            f"epoch, batch 1, 455 x 13: {replicas} separate HyperNetRegressor fits / "
            "the same in lockstep",
            f"{replicas * one['HyperNetRegressor'] * 1e3:.0f} ms / "
            f"{figures['batch_1_lockstep'] * 1e3:.0f} ms",
            replicas * one["HyperNetRegressor"] / figures["batch_1_lockstep"],
            ">= 5.0",
        ),
        *(
            _epoch_row(
                where,
                ("HyperNetRegressor", other),
                (times["HyperNetRegressor"], times[other]),
                target,
            )
            for where, times, other, target in [
                ("batch 32, 927 x 8", mid, "SGDBaseline", "<= 2.0"),
                ("batch 32, 927 x 8", mid, "MLPRegressor", ""),
                ("batch 512, 8192 x 8", big, "SGDBaseline", "<= 3.0"),
                ("batch 512, 8192 x 8", big, "MLPRegressor", ""),
            ]
        ),
        (
            "epoch, batch 512, 8192 x 8: HyperNetRegressor GFLOP/s / matmul GFLOP/s",
            f"{figures['batch_512_gflops']:.0f} / {figures['matmul_gflops']:.0f}",
            figures["batch_512_gflops"] / figures["matmul_gflops"],
            ">= 0.50",
        ),
        (
            "MNIST 2x400 step, batch 256: GFLOP/s / matmul GFLOP/s",
            f"{figures['mnist_step_gflops']:.0f} / {figures['matmul_gflops']:.0f} "
            f"({figures['mnist_step_seconds'] * 1e3:.0f} ms per step)",
            figures["mnist_step_gflops"] / figures["matmul_gflops"],
            ">= 0.70",
        ),
        (
            "first fit in a fresh process, beyond a second identical fit",
            f"{figures['warm_up_seconds']:.2f} s",
            None,
            "<= 0.5 s",
        ),
        (
            "MNIST 2x400 step: peak extra memory",
            "n/a" if peak is None else f"{peak / 2**20:.0f} MB",
            None,
            "< 150 MB",
        ),
        ("predict, 10,000 rows, S = 100", f"{figures['predict_seconds'] * 1e3:.0f} ms", None, ""),
        *(
            _epoch_row(
                where,
                ("HyperNetRegressor kl_weight=0.1", "kl_weight=0"),
                (kl, plain["HyperNetRegressor"]),
                "<= 1.3",
            )
            for where, kl, plain in [
                ("batch 1, 455 x 13", figures["batch_1_kl"], one),
                ("batch 32, 927 x 8", figures["batch_32_kl"], mid),
            ]
        ),
        (
            "noise estimate after fit / epoch, batch 512, 8192 x 8",
            "without / with early_stopping",
            None,
            "<= 0.20",
        ),
        *(
            (f"  early_stopping={key}", "", value, "<= 0.20")
            for key, value in figures["noise_pass_fractions"].items()
        ),
    ]
    members = figures["ensemble_members"]
    for name, seconds in figures["ensembles"].items():
        family, batch = name.split(" batch ")
        shape = " x ".join(str(n) for n in ENSEMBLE_SHAPES[int(batch)])
        rows.append(
            _epoch_row(
                f"batch {batch}, {shape}",
                (f"{family}(n_members={members})", "one network"),
                (seconds["members"], seconds["one"]),
                "<= 1.5" if batch == "32" else "",
            )
        )
    lines = [
        f"torch {figures['torch']}, {figures['torch_threads']} thread(s)",
        "",
        "| measurement | figures | ratio | target |",
        "|---|---|---|---|",
    ]
    for name, values, ratio, target in rows:
        ratio_text = "" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {name} | {values} | {ratio_text} | {target} |")
    return "\n".join(lines)


def run(args):
    figures = measure(args.threads, args.repeats)
    print(report(figures))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0
