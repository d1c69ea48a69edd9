"""What the labs on one machine share: a machine-wide lock, a private runtime directory, shared settings.

Labs in different lab directories (another ``LABKIT_HOME``, another user's sudo) still share this machine's
routes, subnets and kernel settings. Anything two labs could both take or change (a management subnet, a
Docker network, a machine-wide sysctl) is decided and created under ``machine_lock()``, and a machine-wide
setting a lab changes is reference-counted here (``share_setting`` / ``release_setting``): it is put back
only when the last lab using it goes down.

The runtime directory is ``/run/labkit`` for root (cleared at boot, as the things it describes are) and
``$XDG_RUNTIME_DIR/labkit`` or ``$LABKIT_HOME/run`` otherwise; it is created private (0700) and refused
when anyone else could write to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labkit.errors import LabkitError
from labkit.labdir import LabDir, labkit_home, secure_mkdir


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        base = Path("/run/labkit")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "labkit"
    else:
        base = labkit_home() / "run"
    secure_mkdir(base)
    return base


@contextmanager
def machine_lock(wait: float = 120.0, what: str = "", name: str = "machine") -> Iterator[None]:
    """Hold a machine-wide lock; waits up to ``wait`` seconds. ``machine`` (the default) guards what labs choose
    and create from shared name and address spaces (namespaces, interfaces, subnets, networks) and shared
    settings; other names guard slower shared resources (``libvirt-pool``) without holding the main one."""
    path = runtime_dir() / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabkitError(f"another labkit command has held {path} for {wait:.0f} s"
                                      + (f" ({what})" if what else "")) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def lab_key(labdir: LabDir) -> str:
    """A short id of a lab directory that is unique on this machine (two homes may hold labs of one name)."""
    return labdir.name + "-" + hashlib.sha256(str(labdir.path.resolve()).encode()).hexdigest()[:12]


def _setting_dir(path: str) -> Path:
    d = runtime_dir() / "settings" / hashlib.sha256(path.encode()).hexdigest()[:16]
    secure_mkdir(d)
    return d


def _live_users(d: Path) -> list[Path]:
    """The labs registered as users of a setting whose lab directory still has a journal (others are stale)."""
    users = []
    for f in d.glob("user-*.json"):
        try:
            labpath = Path(json.loads(f.read_text())["labdir"])
        except (OSError, ValueError, KeyError):
            f.unlink(missing_ok=True)
            continue
        if (labpath / "state.jsonl").exists():
            users.append(f)
        else:
            f.unlink(missing_ok=True)
    return users


def share_setting(labdir: LabDir, path: str, wanted: str, change: callable) -> bool:
    """Register ``labdir`` as a user of the machine-wide setting in file ``path`` (a /proc/sys file).

    ``change(before) -> after`` computes the new value; it is applied when the setting does not already say
    ``wanted`` (the first lab to need it records the value from before). Returns whether this lab is now a
    user (the journal should say so, so that ``down`` releases it). Call under ``machine_lock()``."""
    d = _setting_dir(path)
    p = Path(path)
    before = p.read_text().strip()
    if wanted not in before.split():
        # also when another lab registered first: the value is what counts (someone may have put it back since)
        after = change(before)
        if not (d / "original.json").exists():
            (d / "original.json").write_text(json.dumps({"path": path, "before": before, "after": after}))
        p.write_text(after + "\n")
    if (d / "original.json").exists():
        (d / f"user-{lab_key(labdir)}.json").write_text(json.dumps({"labdir": str(labdir.path)}))
        return True
    return False


def release_setting(labdir: LabDir, path: str) -> None:
    """``labdir`` no longer needs the setting; the last user puts the value from before back (unless someone
    changed it again since). Call under ``machine_lock()``."""
    d = _setting_dir(path)
    (d / f"user-{lab_key(labdir)}.json").unlink(missing_ok=True)
    if _live_users(d):
        return
    original = d / "original.json"
    if not original.exists():
        return
    try:
        entry = json.loads(original.read_text())
        p = Path(entry["path"])
        if p.read_text().strip() == entry["after"]:
            p.write_text(entry["before"] + "\n")
    except (OSError, ValueError, KeyError):
        pass
    original.unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:
        pass
