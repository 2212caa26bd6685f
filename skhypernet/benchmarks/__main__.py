"""Command line of the benchmarks: ``python -m skhypernet.benchmarks COMMAND``.

Commands: ``uci`` (Table 1), ``mnist`` (Table 2), ``figure2`` (weight
diffusion, Figure 2), ``defaults`` (every estimator with its defaults beside
scikit-learn's), ``kl-weight`` (cross-validation of ``kl_weight`` on
training rows), ``gap`` (predictive std between two clusters of data, beside
a deep ensemble and a Gaussian process), ``speed`` (the training engine against scikit-learn's
MLP), ``memory`` (peak memory of predict on many rows), ``search`` (a
parallel GridSearchCV), ``red-team`` (bad inputs) and ``uncertainty``
(predictive distributions beside deep ensembles, NGBoost, Gaussian processes
and conformal intervals).  ``COMMAND --help`` lists each one's options.
"""

import argparse
import signal
import sys

from ..datasets import DatasetError
from . import defaults, gap, kl_weight, memory, mnist, red_team, search, speed, uci, uncertainty
from ._results import BenchmarkInputError


class RunStopped(BaseException):
    """SIGINT or SIGTERM: the run stops.

    Not a KeyboardInterrupt: the estimators take that for the end of one fit
    and return it with its last finished epoch, so a run that trains in its
    own process (``--jobs 1``) went on and recorded the cut-short fit.
    joblib stops its workers on any exception, this one included.
    """


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_run(signum, frame):
    raise RunStopped(signum)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m skhypernet.benchmarks",
        # The docstring's reStructuredText literals read as plain text here.
        description=__doc__.split("\n\n")[1].replace("``", ""),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    uci.add_arguments(commands.add_parser("uci", help="UCI regression, Table 1"))
    mnist.add_arguments(commands.add_parser("mnist", help="MNIST, Table 2"))
    uci.add_arguments(
        commands.add_parser("figure2", help="weight diffusion, Figure 2"), figure=True
    )
    defaults.add_arguments(
        commands.add_parser("defaults", help="every estimator with its defaults, side by side")
    )
    kl_weight.add_arguments(
        commands.add_parser("kl-weight", help="choose kl_weight by cross-validation")
    )
    gap.add_arguments(commands.add_parser("gap", help="in-between uncertainty beside references"))
    speed.add_arguments(commands.add_parser("speed", help="training engine speed"))
    memory.add_arguments(commands.add_parser("memory", help="peak memory of predict"))
    search.add_arguments(commands.add_parser("search", help="GridSearchCV, n_jobs=1 vs 2"))
    red_team.add_arguments(
        commands.add_parser("red-team", help="bad inputs: clear errors, never silent or lost")
    )
    uncertainty.add_arguments(
        commands.add_parser(
            "uncertainty", help="predictive uncertainty beside deep ensembles, NGBoost, GP"
        )
    )
    args = parser.parse_args(argv)
    previous = {signum: signal.signal(signum, _stop_run) for signum in STOP_SIGNALS}
    runners = {
        "uci": uci.run,
        "mnist": mnist.run,
        "figure2": uci.run_figure,
        "defaults": defaults.run,
        "kl-weight": kl_weight.run,
        "gap": gap.run,
        "speed": speed.run,
        "memory": memory.run,
        "search": search.run,
        "red-team": red_team.run,
        "uncertainty": uncertainty.run,
    }
    try:
        return runners[args.command](args)
    except (BenchmarkInputError, DatasetError) as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except RunStopped as stop:
        (signum,) = stop.args
        print(
            f"{parser.prog} {args.command}: stopped by {signal.Signals(signum).name}; the "
            "records written so far are kept (--resume continues the run).",
            file=sys.stderr,
        )
        return 128 + signum
    finally:
        # main() also runs inside other programs (the tests): give back their handlers.
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
