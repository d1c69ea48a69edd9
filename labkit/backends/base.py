"""The backend interface: a backend only decides where a lab's hosts live.

``preflight`` checks everything it can without changing anything (root, tools, providers) and raises
``ConfigError``/``BackendError`` with one line. ``up`` places the hosts, records every resource in the lab
directory's journal *before* creating it, and returns an ``Inventory`` of SSH-reachable hosts. ``down``
removes exactly what the journal lists and is idempotent: it must work after a crash or SIGKILL of ``up``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from labkit.inventory import Inventory
from labkit.labdir import LabDir
from labkit.model import Lab

#: progress callback: (message, done, total) -- total may be None
Progress = Callable[[str, int, "int | None"], None]


def no_progress(message: str, done: int = 0, total: int | None = None) -> None:
    return None


@dataclass
class HostState:
    name: str
    role: str
    running: bool
    detail: str = ""
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why not (used by ``--backend auto``)."""

    def preflight(self, lab: Lab, labdir: LabDir) -> None:
        """Raise a one-line error if ``up`` cannot work; change nothing."""

    def up(self, lab: Lab, labdir: LabDir, progress: Progress = no_progress) -> Inventory:
        """Place every host; return how to reach them. Journal first, create second."""

    def status(self, lab: Lab, labdir: LabDir) -> list[HostState]:
        """What is running now."""

    def down(self, labdir: LabDir, progress: Progress = no_progress) -> None:
        """Remove everything the journal lists (idempotent; works from the journal alone)."""
