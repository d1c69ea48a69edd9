"""Settings shared by the CSMS and the fleet: OCPP versions, WebSocket options, schema validation mode.

Every setting has an explicit unit in its name (``_s`` seconds, ``_bytes``) and is checked in
``check()``, which raises ``ConfigError`` naming the flag, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from typing import Any

from labkit.errors import ConfigError

#: OCPP version -> WebSocket subprotocol
SUBPROTOCOLS: dict[str, str] = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}
VERSION_OF: dict[str, str] = {v: k for k, v in SUBPROTOCOLS.items()}
VERSIONS = tuple(SUBPROTOCOLS)

#: schema validation (labkit.sim.validation): ``fast`` (the ocpp package's schemas compiled by fastjsonschema),
#: ``sync`` (the library's jsonschema validation in the event loop), ``async`` (the library's default: in a
#: thread executor, about 0.4 ms a call more), ``off``.
VALIDATION_MODES = ("fast", "sync", "async", "off")


#: a charging station identity (the last segment of the connection URL path): OCPP 2.0.1 Part 4 section 3.1.1,
#: identifierString (a-z A-Z 0-9 * - _ = : + | @ .) without the colon (the Basic auth user name), at most 48
IDENTITY_CHARS = "A-Z a-z 0-9 * - _ = + | @ ."
IDENTITY_MAX_CHARS = 48
_IDENTITY = re.compile(r"[A-Za-z0-9*\-_=+|@.]+")


def valid_identity(ident: str) -> bool:
    """Whether ``ident`` is made of the characters OCPP allows in a station identity (length not checked)."""
    return _IDENTITY.fullmatch(ident) is not None


#: where the HTTP Basic auth password comes from when no --password-file is given
PASSWORD_ENV = "LABKIT_OCPP_PASSWORD"


def read_password(password_file: str | None, *, argv_password: str | None = None) -> str | None:
    """The Basic auth password: from ``password_file`` (first line, without its line ending), else from the
    environment variable ``LABKIT_OCPP_PASSWORD``, else None (no authentication).

    A password on the command line (``argv_password``: the old ``--password``) is refused: every local user
    reads argv with ``ps``. An unreadable or empty file, or an empty variable, is bad input (ConfigError)."""
    if argv_password is not None:
        raise ConfigError.at(
            "--password",
            f"not accepted on the command line (every local user can read it with ps); "
            f"use --password-file FILE or the environment variable {PASSWORD_ENV}",
        )
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError.at("--password-file", f"{password_file}: cannot read it: {why}") from None
        password = text.split("\n", 1)[0].rstrip("\r")
        if not password:
            raise ConfigError.at("--password-file", f"{password_file}: the first line (the password) is empty")
        return password
    value = os.environ.get(PASSWORD_ENV)
    if value is None:
        return None
    if not value:
        raise ConfigError.at(PASSWORD_ENV, "is set but empty (unset it for no authentication)")
    return value


def version_module(version: str) -> Any:
    """The ocpp package module (v16, v201, v21) for a version."""
    if version == "1.6":
        from ocpp import v16 as mod
    elif version == "2.0.1":
        from ocpp import v201 as mod
    elif version == "2.1":
        from ocpp import v21 as mod
    else:  # pragma: no cover - checked before
        raise ConfigError.at("--ocpp", f"unknown OCPP version {version!r}; allowed: {', '.join(VERSIONS)}")
    return mod


def set_validation(mode: str) -> None:
    """Select how the ocpp library runs its JSON-schema validation (a module-level switch)."""
    from labkit.sim import validation

    if mode not in VALIDATION_MODES:
        raise ConfigError.at("--validation", f"{mode!r} not allowed; allowed: {', '.join(VALIDATION_MODES)}")
    validation.install(mode)
    from labkit.sim import fastkeys

    fastkeys.install()


@dataclass
class WsSettings:
    """WebSocket settings; ``None`` (flag value 0) turns a keepalive or timeout off."""

    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    open_timeout_s: float | None = 10.0
    close_timeout_s: float | None = 10.0
    compression: bool = False
    max_message_bytes: int = 256 * 1024

    def check(self) -> WsSettings:
        for name in ("ping_interval_s", "ping_timeout_s", "open_timeout_s", "close_timeout_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise ConfigError.at(flag, f"must be >= 0 seconds (0 = off), got {value}")
            if value == 0:
                setattr(self, name, None)
        if self.max_message_bytes < 1024:
            raise ConfigError.at("--max-message-bytes", f"must be >= 1024 bytes, got {self.max_message_bytes}")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for websockets' ``connect()`` and ``serve()``."""
        return {
            "ping_interval": self.ping_interval_s,
            "ping_timeout": self.ping_timeout_s,
            "open_timeout": self.open_timeout_s,
            "close_timeout": self.close_timeout_s,
            "compression": "deflate" if self.compression else None,
            "max_size": self.max_message_bytes,
        }

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard limit (thousands of sockets); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def parse_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ConfigError.at(flag, f"{value!r} is not HOST:PORT with PORT 0..65535")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


LOOPS = ("auto", "asyncio", "uvloop")


def run_loop(coro: Any, loop: str = "auto") -> Any:
    """Run ``coro`` on uvloop when asked (``auto``: when it is installed), else on asyncio's loop."""
    import asyncio

    if loop not in LOOPS:
        raise ConfigError.at("--loop", f"{loop!r} not allowed; allowed: {', '.join(LOOPS)}")
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ConfigError.at("--loop", "uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def loop_name() -> str:
    import asyncio

    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def provenance(validation: str) -> dict[str, Any]:
    """What really runs, for the status files (call inside the running loop): ``event_loop`` ("uvloop" or
    "asyncio"), ``event_loop_version`` (uvloop's, "" for asyncio), ``validation`` and ``versions``."""
    import platform

    from labkit import __version__

    loop = loop_name()
    versions = {
        "python": platform.python_version(),
        "labkit": __version__,
        "ocpp": _dist_version("ocpp"),
        "websockets": _dist_version("websockets"),
        "uvloop": _dist_version("uvloop"),
    }
    return {
        "event_loop": loop,
        "event_loop_version": versions["uvloop"] if loop == "uvloop" else "",
        "validation": validation,
        "versions": versions,
    }


async def gc_freezer(interval_s: float = 2.0) -> None:
    """Keep Python's garbage collector from pausing a big simulator for seconds.

    With thousands of connections the heap holds millions of long-lived objects, and every full
    collection walks all of them (about 2 s for 10,000 stations, seen as a p99 of 600 ms). Every
    ``interval_s`` the survivors of a young-generation collection are moved to the permanent generation
    (``gc.freeze()``), so full collections only ever see recent objects. Short-lived garbage is still
    freed at once (reference counting) or by the young collections; only a reference cycle that
    survives ``interval_s`` is kept for good, which the simulators do not make in any number.
    """
    import asyncio
    import gc

    while True:
        await asyncio.sleep(interval_s)
        gc.collect(1)
        gc.freeze()


class LoopHealth:
    """Event-loop lag and garbage-collector pauses, for the status file (what delays every call).

    ``run()`` sleeps 100 ms at a time and records how late it woke up (the time the loop was busy or the
    process was not scheduled); a ``gc.callbacks`` hook records every collection's pause.
    """

    def __init__(self, keep: int = 600):
        import collections
        import gc

        self.lag_ms: collections.deque[float] = collections.deque(maxlen=keep)
        # the GC callback only appends to a plain list; summary() swaps it out (a collection can run,
        # and call back, in the middle of any allocation, so nothing here iterates what it appends to)
        self._gc_new: list[tuple[float, int, float]] = []
        self.gc_ms: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=100_000)
        self.window_s = keep * 0.1
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        import time

        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            now = time.perf_counter()
            self._gc_new.append((now, info.get("generation", -1), (now - self._gc_t0) * 1e3))

    async def run(self, period_s: float = 0.1) -> None:
        import asyncio
        import time

        while True:
            t = time.monotonic()
            await asyncio.sleep(period_s)
            self.lag_ms.append((time.monotonic() - t - period_s) * 1e3)

    def summary(self) -> dict:
        lags = sorted(self.lag_ms)
        out: dict = {}
        if lags:
            out["loop_lag_ms"] = {
                "p50": round(lags[len(lags) // 2], 2),
                "p99": round(lags[int(len(lags) * 0.99)], 2),
                "max": round(lags[-1], 2),
                "window_s": round(len(lags) * 0.1, 1),
            }
        import time

        fresh, self._gc_new = self._gc_new, []
        self.gc_ms.extend(fresh)
        since = time.perf_counter() - self.window_s
        recent = [(g, ms) for t, g, ms in self.gc_ms if t >= since]
        if recent:
            pauses: dict = {}
            for g, ms in recent:
                key = f"gen{g}_max"
                pauses[key] = max(pauses.get(key, 0.0), round(ms, 2))
            pauses["count"] = len(recent)
            out["gc_pause_ms"] = pauses
        return out

    def close(self) -> None:
        import gc

        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
