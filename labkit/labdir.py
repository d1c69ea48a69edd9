"""The lab directory: everything a lab owns on the controlling machine, in one predictable place.

``$LABKIT_HOME/labs/<name>/`` (default ``~/.labkit/labs/<name>/``) holds:

- ``lab.json``: the resolved lab model; ``inventory.json``: how to reach each host (after ``up``);
- ``state.jsonl``: the journal of every resource created, each line written and fsync'd *before* the
  resource is created, so ``labkit down`` can remove exactly what exists, also after a crash or SIGKILL;
- ``keys/``: the lab's own SSH client key pair and known_hosts; ``hosts/<host>/``: per-host files;
- ``logs/``: a log of every command labkit ran for this lab; ``lock``: one lab operation at a time.

labkit runs as root and the lab directory holds the keys its hosts' sshd accept for root logins, so the
directory is a trust boundary: ``LabDir`` takes a lab *name* (never a path), and ``secure()`` refuses a lab
directory, or any directory on the way to it, that anyone but this user (or root) owns or can write to
(a sticky, world-writable directory such as /tmp is accepted on the way, as OpenSSH's StrictModes would not:
nobody else can rename or replace what this user owns in it). What labkit creates there is private (0700).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError, LabkitError
from labkit.names import check_lab_name, is_lab_name


def labkit_home() -> Path:
    return Path(os.environ.get("LABKIT_HOME") or Path.home() / ".labkit")


def untrusted_reason(path: Path, *, leaf_sticky_ok: bool = False) -> str | None:
    """Why ``path`` (an existing file or directory) cannot be trusted by this user, or None.

    Trusted: owned by this user or root and not writable by group or others; a symlink is judged by what it
    points to, and so is every directory above it up to /. A directory that is world-writable with the sticky
    bit (/tmp) is accepted above ``path`` (and as ``path`` itself with ``leaf_sticky_ok``)."""
    uid = os.geteuid()
    try:
        real = Path(os.path.realpath(path))
    except OSError as exc:  # pragma: no cover - realpath does not raise for ordinary paths
        return f"cannot resolve {path}: {exc}"
    node = real
    first = True
    while True:
        try:
            st = os.lstat(node)
        except OSError as exc:
            return f"cannot inspect {node}: {exc.strerror or exc}"
        if st.st_uid not in (0, uid):
            return f"{node} is owned by uid {st.st_uid}, not by this user (uid {uid}) or root"
        sticky_ok = (not first or leaf_sticky_ok) and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not sticky_ok:
            return f"{node} is writable by {'group and others' if st.st_mode & 0o002 else 'its group'} " \
                   f"(mode {stat.S_IMODE(st.st_mode):04o})"
        if node == node.parent:
            return None
        node = node.parent
        first = False


def secure_mkdir(path: Path) -> None:
    """Create ``path`` (and missing parents) private to this user, or check an existing one can be trusted."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    why = untrusted_reason(p, leaf_sticky_ok=True)
    if why:
        raise ConfigError(f"LABKIT_HOME: refusing {path}: {why} (labkit runs as root and keeps SSH keys there; "
                          f"use a directory only you can write to)")
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass  # created meanwhile: checked below
    why = untrusted_reason(path)
    if why:
        raise ConfigError(f"LABKIT_HOME: refusing {path}: {why} (labkit runs as root and keeps SSH keys there; "
                          f"use a directory only you can write to)")


class LabDir:
    """A lab's directory, by lab name (a name, never a path: checked here)."""

    def __init__(self, name: str, home: Path | None = None):
        self.name = check_lab_name(name)
        self.home = home or labkit_home()
        self.path = self.home / "labs" / name

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

    def secure(self, deep: bool = True) -> None:
        """Create the lab directory (private) or check that it and every directory above it can be trusted (see
        the module docstring), and with ``deep`` everything already in it; a ConfigError naming the culprit.

        ``up`` checks deep (a directory someone prepared in advance); later operations check the directory and
        its ancestors only (once made private by ``up``, nobody else can put anything inside)."""
        secure_mkdir(self.path)
        if not deep:
            return
        for root, dirs, files in os.walk(self.path):
            for entry in dirs + files:
                p = Path(root) / entry
                st = os.lstat(p)
                foreign = st.st_uid not in (0, os.geteuid())
                if foreign or st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
                    what = f"owned by uid {st.st_uid}" if foreign else "writable by others"
                    raise ConfigError(f"--lab: refusing lab directory {self.path}: {p} is {what} "
                                      f"(remove {self.path} or choose another name)")
                if stat.S_ISLNK(st.st_mode):
                    raise ConfigError(f"--lab: refusing lab directory {self.path}: {p} is a symbolic link "
                                      f"(labkit never makes one there; remove {self.path})")

    def create(self) -> None:
        self.secure()
        for d in (self.keys, self.logs, self.path / "hosts"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        self.secure(deep=False)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fh = os.fdopen(fd, "r+")
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
    return sorted(p.name for p in root.iterdir()
                  if is_lab_name(p.name) and ((p / "lab.json").exists() or (p / "state.jsonl").exists()))
