"""Results of benchmark runs: crash-safe JSON-lines storage, summaries, tables."""

import csv
import json
import math
import os
import warnings
from importlib import resources

import numpy as np


class BenchmarkInputError(ValueError):
    """A problem with a benchmark's inputs (data folder, results file), reported
    by the command line as a one-line error."""


def add_store_arguments(parser):
    """The options of a results file: ``--results``, ``--resume``, ``--overwrite``."""
    parser.add_argument(
        "--results", required=True, help="JSON-lines file that receives one record per result"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="keep the records already in --results and skip their work",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --results file (it is kept until the first new record)",
    )


class ResultStore:
    """Append-only JSON-lines file, one record per finished unit of work.

    Each record is written and flushed to disk before the next unit starts, so
    a killed run loses at most the unit in progress.  An existing file is
    never lost by accident: without ``resume`` or ``overwrite`` it is refused;
    with ``overwrite`` it is replaced only when the first new record is
    written; with ``resume`` its records are kept, a last line cut short by a
    crash is dropped, other lines that are not records are skipped with a
    warning, and a file with no record at all is refused.

    Parameters
    ----------
    path : str or path-like
    resume : bool
        Keep the records already in ``path``.
    overwrite : bool, default=False
        Replace an existing ``path``.
    record_keys : tuple of str, default=("dataset", "method", "settings")
        Fields that every record of this harness has.
    """

    def __init__(
        self, path, resume, overwrite=False, record_keys=("dataset", "method", "settings")
    ):
        self.path = os.fspath(path)
        self.records = []
        self.record_keys = tuple(record_keys)
        self._replace_on_first_append = False
        if not self.path:
            raise BenchmarkInputError("--results needs a file name.")
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._lock = _locked(self.path)
            exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            if os.path.isdir(self.path):
                raise IsADirectoryError(21, "Is a directory")
            if exists:
                # Refused now, not after the first unit of work: a file this run cannot append to.
                open(self.path, "a", encoding="utf-8").close()
            if exists and resume:
                self._load()
            elif exists and not overwrite:
                raise BenchmarkInputError(
                    f"{self.path} already holds results: pass --resume to continue that run, "
                    "or --overwrite to replace the file."
                )
            else:
                self._replace_on_first_append = exists
                if not exists:
                    open(self.path, "w", encoding="utf-8").close()
        except BenchmarkInputError:
            self.close()
            raise
        except OSError as error:
            self.close()
            raise BenchmarkInputError(
                f"Cannot use {self.path} as a results file: {error.strerror or error}."
            ) from None

    def close(self):
        """Release the results file for other runs."""
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            lock.close()

    def _is_record(self, value):
        return isinstance(value, dict) and all(key in value for key in self.record_keys)

    def _load(self):
        # Everything is checked before the file is touched: a file this
        # benchmark refuses is never changed.
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except UnicodeDecodeError:
            raise BenchmarkInputError(
                f"{self.path} is not a results file of this benchmark: it is not UTF-8 text. "
                "Choose another --results file."
            ) from None
        lines = text.split("\n")
        values = []
        for line in lines:
            try:
                values.append(json.loads(line) if line.strip() else None)
            except json.JSONDecodeError:
                values.append(_NOT_JSON)
        # A last line without its newline that is not JSON was cut short by a crash.
        cut = bool(lines[-1].strip()) and values[-1] is _NOT_JSON
        checked = values[:-1] if cut else values
        skipped = [
            number
            for number, value in enumerate(checked, start=1)
            if value is not None and not self._is_record(value)
        ]
        records = [value for value in checked if self._is_record(value)]
        if not records or (cut and skipped):
            raise BenchmarkInputError(
                f"{self.path} is not a results file of this benchmark: "
                + (
                    f"none of its lines is a record with the fields {list(self.record_keys)}"
                    if not records
                    else "its last line is cut short and other lines are not records"
                )
                + ". Choose another --results file."
            )
        if skipped:
            warnings.warn(
                f"{self.path}: skipped {len(skipped)} line(s) that are not records of this "
                f"benchmark (lines {skipped[:10]}{' ...' if len(skipped) > 10 else ''}).",
                stacklevel=2,
            )
        seen = set()
        for record in records:
            key = json.dumps([record[k] for k in self.record_keys], sort_keys=True)
            if key not in seen:
                seen.add(key)
                self.records.append(record)
        if len(self.records) < len(records):
            warnings.warn(
                f"{self.path}: ignored {len(records) - len(self.records)} duplicate record(s) "
                "of results already read (the first of each is kept).",
                stacklevel=2,
            )
        if cut:
            kept = "\n".join(lines[:-1])
            with open(self.path, "r+", encoding="utf-8") as handle:
                handle.truncate(len(kept.encode("utf-8")))
            text = kept
        if text and not text.endswith("\n"):
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("\n")

    def has(self, key):
        """Whether a record with these key fields exists."""
        return bool(self.matching([key]))

    def matching(self, keys):
        """The records whose key fields equal one of ``keys`` (dicts)."""
        # Records read back from the file hold lists where the planned keys
        # may hold tuples: compare both as JSON gives them.
        keys = [json.loads(json.dumps(key)) for key in keys]
        return [
            r
            for r in self.records
            if any(all(r.get(k) == v for k, v in key.items()) for key in keys)
        ]

    def append(self, record):
        line = json.dumps(record) + "\n"
        if self._replace_on_first_append:
            temporary = self.path + ".tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            self._replace_on_first_append = False
        else:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        # As a later run reads it back (lists, not tuples), so keys match both.
        self.records.append(json.loads(line))


#: A line that is not JSON (apart from None, a blank line).
_NOT_JSON = object()


def _locked(path):
    """An open lock file of ``path`` held for this process (a second run on the
    same results file is refused), or None where the system has no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    directory, name = os.path.split(path)
    lock_path = os.path.join(directory, f".{name}.lock")
    handle = open(lock_path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise BenchmarkInputError(
            f"{path} is in use by another run (it holds {lock_path}); let that run finish "
            "or choose another --results file."
        ) from None
    return handle


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
