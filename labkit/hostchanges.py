"""What labkit changes on machines it did not make (the hosts backend): journalled first, undone at ``down``.

Each change is appended to the lab's journal (``LabDir.record``, fsync'd) *before* it is made, with what is
needed to put the machine back: a sysctl's value before, the route labkit added or the one it replaced, a
directory labkit made (with a marker file holding a random token, so ``undo`` never removes a directory it did
not make). ``undo`` walks the journal backwards and returns what it could not put back; running it twice is
harmless. Every value that reaches a shell is quoted.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import shlex
from pathlib import PurePosixPath
from typing import Any

from labkit.errors import ConfigError, LabkitError
from labkit.inventory import HostConn
from labkit.labdir import LabDir
from labkit.remote import Remote

SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
MARKER = ".labkit-made"
KINDS = ("host-sysctl", "host-route", "host-dir")


def _q(value: object) -> str:
    return shlex.quote(str(value))


class HostChanges:
    """Changes on the hosts of one lab, recorded in its lab directory's journal."""

    def __init__(self, labdir: LabDir, remote: Remote):
        self.labdir = labdir
        self.remote = remote

    def set_sysctl(self, host: str | HostConn, key: str, value: str) -> None:
        h = self.remote.host(host)
        if not SYSCTL_RE.fullmatch(key):
            raise ConfigError(f"sysctl: {key!r} is not a sysctl name")
        # read from /proc/sys (sysctl is in /usr/sbin, outside a non-root user's PATH); written through sudo
        before = self.remote.run(h, f"cat -- {_q('/proc/sys/' + key.replace('.', '/'))}").stdout.strip()
        if before.split() == str(value).split():
            return  # already so: nothing to put back
        self.labdir.record("host-sysctl", host=h.name, key=key, before=before)
        self.remote.run(h, f"sysctl -q -w {_q(f'{key}={value}')}", sudo=True)

    def route(self, host: str | HostConn, dst: str, via: str, dev: str) -> None:
        """Make ``dst`` go via ``via`` on ``dev`` (``ip route replace``), remembering the route it replaces."""
        h = self.remote.host(host)
        dst_n, via_a = ipaddress.IPv4Network(dst), ipaddress.IPv4Address(via)
        if not IFACE_RE.fullmatch(dev):
            raise ConfigError(f"route: {dev!r} is not an interface name")
        out = self.remote.run(h, f"ip -j -4 route show exact {_q(dst_n)}").stdout
        before = next(iter(json.loads(out or "[]")), None)
        self.labdir.record("host-route", host=h.name, dst=str(dst_n), via=str(via_a), dev=dev, before=before)
        self.remote.run(h, f"ip route replace {_q(dst_n)} via {_q(via_a)} dev {_q(dev)}", sudo=True)

    def make_dir(self, host: str | HostConn, path: str) -> None:
        """Create directory ``path`` (0700, as the SSH user); refuse one that exists (labkit takes over nothing)."""
        h = self.remote.host(host)
        p = PurePosixPath(path)
        if not p.is_absolute() or ".." in p.parts or str(p) != path or len(p.parts) < 3:
            raise ConfigError(f"directory: {path!r} is not an absolute path at least two levels deep")
        token = secrets.token_hex(8)
        self.labdir.record("host-dir", host=h.name, path=path, token=token)
        res = self.remote.run(h, f"mkdir -m 0700 -- {_q(path)} && printf %s {_q(token)} > {_q(f'{path}/{MARKER}')}",
                              check=False)
        if not res.ok:
            tail = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise LabkitError(f"{h.name}: cannot create {path}: {tail[-1] if tail else res.exited}")

    def entries(self) -> list[dict[str, Any]]:
        return [e for e in self.labdir.journal() if e.get("kind") in KINDS]

    def undo(self) -> list[str]:
        """Put every host back as the journal says it was, newest change first; returns what failed."""
        failed = []
        for e in reversed(self.entries()):
            try:
                h = self.remote.host(e["host"])
                self._undo(h, e)
            except (LabkitError, KeyError) as exc:
                failed.append(f"{e.get('host')}: {e.get('kind')}: {exc}")
        return failed

    def _undo(self, h: HostConn, e: dict[str, Any]) -> None:
        kind = e["kind"]
        if kind == "host-sysctl":
            self.remote.run(h, f"sysctl -q -w {_q(e['key'] + '=' + e['before'])}", sudo=True)
        elif kind == "host-route":
            before = e.get("before")
            if before:
                parts = [f"ip route replace {_q(e['dst'])}"]
                if before.get("gateway"):
                    parts.append(f"via {_q(before['gateway'])}")
                parts.append(f"dev {_q(before['dev'])}")
                if before.get("metric") is not None:
                    parts.append(f"metric {_q(before['metric'])}")
                self.remote.run(h, " ".join(parts), sudo=True)
            else:
                # gone already (a second undo, a crash before the change) is what is wanted
                self.remote.run(h, f"ip route del {_q(e['dst'])} via {_q(e['via'])} dev {_q(e['dev'])} "
                                f"2>/dev/null; ! ip -4 route show exact {_q(e['dst'])} | grep -q .", sudo=True)
        elif kind == "host-dir":
            path, marker = e["path"], f"{e['path']}/{MARKER}"
            # as root: labkit's processes ran as root and left files of root's in it
            self.remote.run(h, f"if [ \"$(cat -- {_q(marker)} 2>/dev/null)\" = {_q(e['token'])} ]; then "
                            f"rm -rf -- {_q(path)}; fi", sudo=True)
