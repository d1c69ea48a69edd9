"""The errors labkit raises on purpose.

A ``LabkitError`` is a user-facing failure: the CLI prints its message on one line and exits with its
``exit_code``. ``ConfigError`` is bad input (exit status 2) and must be raised before anything is changed.
"""

from __future__ import annotations


class LabkitError(Exception):
    """A failure the user can act on; its message is one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(LabkitError):
    """Bad input (a flag, a lab file, a profile): raised before anything is touched."""

    exit_code = 2

    @classmethod
    def at(cls, field: str, problem: str, *, file: str | None = None, line: int | None = None) -> ConfigError:
        """``file:line: field: problem`` (file and line when known)."""
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        return cls(f"{where}{field}: {problem}")


class BackendError(LabkitError):
    """A backend could not place or reach the lab's hosts."""


class RemoteError(LabkitError):
    """A command over SSH on a lab host failed."""
