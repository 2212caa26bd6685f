"""Argument types shared by the command lines (``python -m skhypernet`` and the benchmarks)."""

import argparse
import math


def at_least(minimum, kind=int, maximum=None):
    """An argparse ``type``: a finite number of ``kind`` from ``minimum`` to ``maximum``.

    Out-of-range values stop the command line with argparse's one-line error
    before any work starts.
    """

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, got {text}")
        if not (math.isfinite(value) and value >= minimum):
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def fraction(text):
    """An argparse ``type``: a fraction of rows, a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def worker_processes(text):
    """An argparse ``type``: a process count with joblib's meaning (-1: one per core)."""
    value = at_least(-math.inf)(text)  # any integer: 0 alone is refused
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (a count, or -1 for one process per core)")
    return value


def add_jobs_argument(parser):
    """``--jobs``: the worker processes of a benchmark command."""
    parser.add_argument(
        "--jobs",
        type=worker_processes,
        default=1,
        help="worker processes (default: 1; -1: one per core)",
    )
