"""Sample files: the CSV sinks for ``ocpp/calls-<host>.csv``, ``ocpp/events-<host>.csv`` and ``ocpp/csms.csv``
(columns from ``labkit.resultsformat``, explained in docs/results.md), a reader that skips a torn last line,
and the atomic JSON status file.

Each row is written with one ``write()`` and flushed at once, so a process killed mid-run leaves every
row it finished. Opening an existing file appends (no second header) and first ends a torn last line.
A row that cannot be written (a full disk: ENOSPC, EIO) is not a silent gap: the sink keeps the first
error, counts the rows it could not write and calls its ``on_error`` once, and the simulators stop and
exit 1 saying so (a run whose samples are incomplete must not look complete).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labkit import resultsformat

#: the tables as labkit.resultsformat defines them (one definition for writers and readers)
CALLS = resultsformat.CALLS
EVENTS = resultsformat.EVENTS
CSMS = resultsformat.CSMS
#: their columns, in file order (the names the simulators used before resultsformat existed)
CALL_COLUMNS = CALLS.columns
EVENT_COLUMNS = EVENTS.columns
CSMS_COLUMNS = CSMS.columns

#: outcomes of a call as the fleet records them (``bad_response``: a CallResult that failed validation)
CALL_OUTCOMES = ("ok", "call_error", "timeout", "connection_lost", "send_failed", "bad_response")


class CsvSink:
    """An append-only CSV file, one flushed write per row. ``path=None`` discards rows (counts them).

    After a failed write (``error`` set, ``on_error(sink)`` called once) the file is closed and later rows
    are only counted in ``lost``, with the row that failed."""

    def __init__(self, path: str | os.PathLike | None, columns: tuple[str, ...],
                 on_error: Callable[[CsvSink], None] | None = None):
        self.columns = columns
        self._ncols = len(columns)
        self.rows = 0
        self.lost = 0
        self.error: OSError | None = None
        self.on_error = on_error
        self.write_max_s = 0.0  # the longest single row write (a blocked disk blocks the event loop)
        self.path = Path(path) if path is not None else None
        self._file: io.TextIOBase | None = None
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")
        if self.path is None:
            return
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - kept open
        if fresh:
            self._file.write(",".join(columns) + "\n")
        elif torn:
            self._file.write("\n")  # end a line torn by a crash; readers skip it
        self._file.flush()

    def write(self, values: tuple | list) -> None:
        if len(values) != self._ncols:  # a row readers would skip: a writer's bug, never silent
            raise ValueError(f"{len(values)} values for {self._ncols} columns ({', '.join(self.columns)})")
        self.rows += 1
        if self._file is None:
            if self.error is not None:
                self.lost += 1
            return
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._writer.writerow(values)
        t = time.perf_counter()
        try:
            self._file.write(buf.getvalue())
            self._file.flush()
        except OSError as exc:
            self.lost += 1
            self._failed(exc)
            return
        dt = time.perf_counter() - t
        if dt > self.write_max_s:
            self.write_max_s = dt

    def describe_error(self) -> str:
        """'' before any failed write; else one line: the file, the error and the rows not written."""
        if self.error is None:
            return ""
        why = self.error.strerror or str(self.error)
        return f"{self.path}: {why} ({self.lost} row{'s' if self.lost != 1 else ''} not written)"

    def _failed(self, exc: OSError) -> None:
        fh, self._file = self._file, None
        if self.error is None:
            self.error = exc
        if fh is not None:
            try:
                fh.close()  # flushes what the buffer still holds once more; it fails the same way
            except OSError:
                pass
        if self.on_error is not None:
            callback, self.on_error = self.on_error, None
            callback(self)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                self._file.close()
            except OSError as exc:
                self._failed(exc)
            self._file = None


def read_rows(path: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Rows of a samples CSV as dicts, skipping torn or malformed lines (wrong field count)."""
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    lines = text.split("\n")
    if lines and not text.endswith("\n"):
        lines = lines[:-1]  # torn last line
    reader = csv.reader(line for line in lines if line)
    header = next(reader, None)
    if header is None:
        return
    for fields in reader:
        if len(fields) != len(header) or fields == header:
            continue
        yield dict(zip(header, fields, strict=True))


class StatusFile:
    """A JSON document rewritten atomically (write a temp file, then rename over the old one)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is None:
            return
        doc = dict(doc, t_wall=round(time.time(), 3))
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk must not keep half a status file beside the last good one
            raise

    def write_last(self, doc: dict[str, Any]) -> None:
        """The final write at exit: a failure is one line on stderr (the process exits with its own status)."""
        try:
            self.write(doc)
        except OSError as exc:
            say(f"labkit: last status file not written: {self.path}: {exc.strerror or exc}")

    async def keep_writing(self, status: Callable[[], dict[str, Any]], interval_s: float) -> None:
        """Rewrite the file every ``interval_s`` until cancelled; a failure is reported once, never fatal."""
        warned = False
        while True:
            try:
                self.write(status())
            except Exception as exc:  # noqa: BLE001 - a status problem must not stop the run
                if not warned:
                    say(f"labkit: status file not written: {type(exc).__name__}: {exc}")
                    warned = True
            await asyncio.sleep(interval_s)


def say(line: str) -> None:
    """One line on stderr, never raising (stderr may be a log file on the disk that just filled up)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def keep_exit_status() -> None:
    """Before returning an exit status: a stdout or stderr that cannot be flushed (a log file on the disk that
    filled) is pointed at /dev/null, or Python would exit 120 on its way out instead of with our status."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.flush()
        except (OSError, ValueError):
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives until exit


def printable(text: str) -> str:
    """``text`` for a CSV cell or a log line: unchanged when printable, else with control characters and
    other unprintable ones escaped as Python does (``\\n``, ``\\x00``), so a row stays one line."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def fmt_ms(ns: int | None) -> str:
    """Nanoseconds -> milliseconds text with microsecond resolution ('' for None)."""
    return "" if ns is None else f"{ns / 1e6:.3f}"
