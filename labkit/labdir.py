"""The lab directory: everything a lab owns on the controlling machine, in one predictable place.

``$LABKIT_HOME/labs/<name>/`` (default ``~/.labkit/labs/<name>/``) holds:

- ``lab.json``: the resolved lab model; ``inventory.json``: how to reach each host (after ``up``);
- ``state.jsonl``: the journal of every resource created, each line written and fsync'd *before* the
  resource is created, so ``labkit down`` can remove exactly what exists, also after a crash or SIGKILL;
- ``keys/``: the lab's own SSH client key pair and known_hosts; ``hosts/<host>/``: per-host files;
- ``logs/``: a log of every command labkit ran for this lab; ``lock``: one lab operation at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError


def labkit_home() -> Path:
    return Path(os.environ.get("LABKIT_HOME") or Path.home() / ".labkit")


class LabDir:
    def __init__(self, name: str, home: Path | None = None):
        self.name = name
        self.path = (home or labkit_home()) / "labs" / name

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def lab_file(self) -> Path:
        return self.path / "lab.json"

    @property
    def inventory_file(self) -> Path:
        return self.path / "inventory.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.jsonl"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def host_dir(self, host: str) -> Path:
        return self.path / "hosts" / host

    def exists(self) -> bool:
        return self.lab_file.exists() or self.state_file.exists()

    def create(self) -> None:
        for d in (self.path, self.keys, self.logs, self.path / "hosts"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys, 0o700)

    # -- journal -------------------------------------------------------------------------------------
    def record(self, kind: str, **fields: Any) -> None:
        """Append one resource to the journal and fsync, before the resource is created."""
        entry = {"kind": kind, "t": time.time(), **fields}
        with open(self.state_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def journal(self) -> list[dict[str, Any]]:
        """Every entry written so far; a torn last line (crash mid-write) is skipped."""
        if not self.state_file.exists():
            return []
        entries = []
        for line in self.state_file.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    # -- runtime files ---------------------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(self.path / name)

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def clear_runtime(self) -> None:
        """Remove everything but the logs (after a successful ``down``)."""
        if not self.path.exists():
            return
        for child in self.path.iterdir():
            if child.name in ("logs", "lock"):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    @contextmanager
    def lock(self, wait: float = 5.0) -> Iterator[None]:
        """One lab operation (up, down, bench, shape) at a time; waits up to ``wait`` seconds."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / "lock", "w")
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LabkitError(f"lab {self.name!r} is busy: another labkit command holds "
                                          f"{self.path / 'lock'}") from None
                    time.sleep(0.05)
            yield
        finally:
            fh.close()


def list_labs(home: Path | None = None) -> list[str]:
    root = (home or labkit_home()) / "labs"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists() or (p / "state.jsonl").exists())
