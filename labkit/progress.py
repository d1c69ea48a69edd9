"""Progress for anything that takes more than a few seconds.

On a terminal, a rich progress bar on stderr; elsewhere (CI, pipes, ``--quiet`` off) one plain line per
phase change, so logs stay readable. Library code takes a plain callable ``(message, done, total)``; the
CLI passes ``Reporter.update``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Reporter:
    def __init__(self, title: str, *, quiet: bool = False, stream: TextIO | None = None, live: bool | None = None):
        self.title = title
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = (self.stream.isatty() if live is None else live) and not quiet
        self._progress = None
        self._task = None
        self._last_message: str | None = None
        self._t0 = time.monotonic()

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=None)
        return self

    def update(self, message: str, done: int = 0, total: int | None = None) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.title}: {message}", completed=done, total=total)
            return
        if message != self._last_message:
            self._last_message = message
            elapsed = time.monotonic() - self._t0
            count = f" [{done}/{total}]" if total else ""
            print(f"labkit {self.title}: {message}{count} ({elapsed:.1f} s)", file=self.stream, flush=True)

    def log(self, message: str) -> None:
        """A line that stays on screen."""
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
