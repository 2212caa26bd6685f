"""Results of benchmark runs: crash-safe JSON-lines storage, summaries, tables."""

import csv
import json
import math
import os
from importlib import resources

import numpy as np


class ResultStore:
    """Append-only JSON-lines file, one record per finished unit of work.

    Each record is written and flushed to disk before the next unit starts, so
    a killed run loses at most the unit in progress.  On opening, a last line
    cut short by a crash is dropped, so that appending continues cleanly.

    Parameters
    ----------
    path : str or path-like
    resume : bool
        Keep the records already in ``path``; otherwise start a new file.
    """

    def __init__(self, path, resume):
        self.path = os.fspath(path)
        self.records = []
        if resume and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().split("\n")
            for line in lines:
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # an empty line, or one cut short by a crash
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def has(self, key):
        """Whether a record with these key fields exists."""
        return any(all(record.get(k) == v for k, v in key.items()) for record in self.records)

    def append(self, record):
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)


def mean_and_standard_error(values):
    """Mean and standard error (sample standard deviation / sqrt(n))."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def format_estimate(mean, error, digits=2):
    if math.isnan(error):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {error:.{digits}f}"


def read_reference(name):
    """Rows of a shipped reference CSV file (``reference/<name>``) as dicts."""
    text = resources.files(__package__).joinpath("reference", name).read_text()
    return list(csv.DictReader(text.splitlines()))


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Progress:
    """One line per finished unit with elapsed time and an estimate of the rest."""

    def __init__(self, total, clock):
        self.total, self.done, self.clock = total, 0, clock
        self.start = clock()

    def line(self, text):
        self.done += 1
        elapsed = self.clock() - self.start
        remaining = elapsed / self.done * (self.total - self.done)
        return (
            f"[{self.done}/{self.total}] {text}  "
            f"(elapsed {elapsed:.0f}s, about {remaining:.0f}s left)"
        )
