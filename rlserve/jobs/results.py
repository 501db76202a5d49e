"""The per-iteration result files of a training run: JSON lines, CSV and TensorBoard events.

:class:`ResultLogger` writes every ``Algorithm.train()`` result into a run directory:

``results.jsonl``
    The whole nested result (``config`` included), one JSON object a line; NaN stays ``NaN``.
``progress.csv``
    One row per iteration. The columns are the result's scalar entries (numbers, booleans,
    strings; ``config`` and lists left out), flattened with ``/``
    (``env_runners/episode_return_mean``), in the order they were first seen. When a result
    brings a key that the header lacks (``evaluation/...`` on the first evaluation iteration),
    the file is rewritten once through a temporary file and an atomic rename with the wider
    header; earlier rows leave the new cells empty, as rows do for keys a result lacks.
``events.out.tfevents.*``
    TensorBoard scalars: every finite number of the flattened result (booleans, ``pid`` and
    ``timestamp`` left out), tagged with its CSV column name. The step is
    ``num_env_steps_sampled_lifetime``, as Ray Tune's TensorBoard logger takes the lifetime
    env steps when a result has them (``training_iteration`` is one of the scalars), so runs
    with different batch sizes line up; results without it use ``training_iteration``.

Every file is flushed after each result (the event file is also fsynced, by tensorboardX), so a
crash or Ctrl-C loses nothing already logged, and a SIGINT arriving while a result is being
written is held back until all three files have it. A run directory that already holds these
files is continued: ``results.jsonl`` and ``progress.csv`` are appended to, and each logger
starts a new event file beside the old ones (TensorBoard reads them all).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import numbers
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TextIO

import numpy as np

from training.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME, TRAINING_ITERATION

__all__ = [
    "CSV_FILE",
    "JSONL_FILE",
    "ResultLogger",
    "Scalar",
    "flatten_result",
    "tensorboard_scalars",
    "tensorboard_step",
]

JSONL_FILE = "results.jsonl"
CSV_FILE = "progress.csv"
# Top-level entries that are not metrics: the config (in results.jsonl only), and process facts
# that only clutter TensorBoard (Ray Tune's TensorBoard logger leaves these out too).
_NOT_FLATTENED = frozenset({"config"})
_NOT_IN_TENSORBOARD = frozenset({"pid", "timestamp"})

Scalar = int | float | bool | str | None


def flatten_result(result: Mapping[str, Any]) -> dict[str, Scalar]:
    """The scalar entries of a nested result, keyed by ``/``-joined paths, in result order.

    ``config`` and non-scalar values (lists, arrays) are left out; numpy scalars become Python
    numbers.
    """
    flat: dict[str, Scalar] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(f"{prefix}/{key}" if prefix else str(key), item)
            return
        ok, scalar = _scalar(value)
        if ok:
            flat[prefix] = scalar

    for key, value in result.items():
        if str(key) not in _NOT_FLATTENED:
            visit(str(key), value)
    return flat


def _scalar(value: Any) -> tuple[bool, Scalar]:
    """``(True, value as a Python scalar)``, or ``(False, None)`` for a non-scalar."""
    if value is None or isinstance(value, bool | str):
        return True, value
    if isinstance(value, np.bool_):
        return True, bool(value)
    if isinstance(value, numbers.Integral):
        return True, int(value)
    if isinstance(value, numbers.Real):
        return True, float(value)
    return False, None


def tensorboard_scalars(flat: Mapping[str, Scalar]) -> dict[str, float]:
    """The entries of a flattened result that TensorBoard gets: finite numbers, no booleans."""
    return {
        key: float(value)
        for key, value in flat.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and key not in _NOT_IN_TENSORBOARD
        and math.isfinite(value)
    }


def tensorboard_step(flat: Mapping[str, Scalar], default: int) -> int:
    """The TensorBoard step of a result: lifetime env steps, else the training iteration."""
    for key in (NUM_ENV_STEPS_SAMPLED_LIFETIME, TRAINING_ITERATION):
        value = flat.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return int(value)
    return default


class ResultLogger:
    """Writes each training result to ``results.jsonl``, ``progress.csv`` and TensorBoard.

    Use it as a context manager, or call :meth:`close` in a ``finally``.

    Args:
        run_dir: The run directory (created when missing).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._closed = False
        self._jsonl = (self.run_dir / JSONL_FILE).open("a", encoding="utf-8")
        try:
            self._csv = _CsvFile(self.run_dir / CSV_FILE)
            try:
                self._events = _EventFile(self.run_dir)
            except BaseException:
                self._csv.close()
                raise
        except BaseException:
            self._jsonl.close()
            raise

    @property
    def events_path(self) -> Path:
        """This logger's TensorBoard event file."""
        return self._events.path

    def log(self, result: Mapping[str, Any]) -> None:
        """Append one result to every file and flush them.

        Raises:
            ValueError: After :meth:`close`.
        """
        if self._closed:
            raise ValueError("ResultLogger is closed")
        self._count += 1
        line = json.dumps(_jsonable(result), allow_nan=True) + "\n"
        flat = flatten_result(result)
        with _sigint_deferred():
            self._jsonl.write(line)
            self._jsonl.flush()
            self._csv.write(flat)
            self._events.write(tensorboard_scalars(flat), tensorboard_step(flat, self._count))

    def close(self) -> None:
        """Flush and close every file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._jsonl.close()
        finally:
            try:
                self._csv.close()
            finally:
                self._events.close()

    def __enter__(self) -> ResultLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _CsvFile:
    """``progress.csv``: appends rows, rewrites the file atomically when new columns appear."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as existing:
                self.columns = next(csv.reader(existing), [])
        self._file: TextIO = path.open("a", newline="", encoding="utf-8")

    def write(self, row: Mapping[str, Scalar]) -> None:
        known = set(self.columns)
        new = [key for key in row if key not in known]
        if new or not self.columns:
            self._rewrite([*self.columns, *new], row)
            return
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.columns, restval="", lineterminator="\n").writerow(_cells(row))
        self._file.write(buffer.getvalue())  # one write per row: never half a row on disk
        self._file.flush()

    def _rewrite(self, columns: list[str], row: Mapping[str, Scalar]) -> None:
        self._file.close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(
                    out, columns, restval="", extrasaction="ignore", lineterminator="\n"
                )
                writer.writeheader()
                if self.columns and self.path.is_file():
                    with self.path.open(newline="", encoding="utf-8") as old:
                        writer.writerows(csv.DictReader(old))
                writer.writerow(_cells(row))
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self._file = self.path.open("a", newline="", encoding="utf-8")
        self.columns = columns

    def close(self) -> None:
        self._file.close()


def _cells(row: Mapping[str, Scalar]) -> dict[str, Scalar]:
    return {key: "" if value is None else value for key, value in row.items()}


class _EventFile:
    """A TensorBoard event file (tensorboardX's synchronous writer; no background thread)."""

    def __init__(self, run_dir: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        # A random suffix keeps two loggers started in the same second from sharing a name
        # (tensorboardX names the file events.out.tfevents.<unix time>.<hostname><suffix>).
        suffix = f".{uuid.uuid4().hex[:8]}"
        self._writer = EventsWriter(str(run_dir / "events"), filename_suffix=suffix)
        (self.path,) = run_dir.glob(f"events.out.tfevents.*{suffix}")
        self._writer.flush()
        self._closed = False

    def write(self, scalars: Mapping[str, float], step: int) -> None:
        from tensorboardX.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
        )
        self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a SIGINT back until the block is done, then deliver it to the previous handler.

    Only in the main thread, and only when the current handler was installed from Python.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    ok, scalar = _scalar(value)
    return scalar if ok else repr(value)
