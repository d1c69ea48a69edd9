"""The inventory: what a backend returns after placing a lab's hosts, and all the rest of labkit needs.

For every host: how to reach it over SSH (address, port, user, key, known_hosts), whether commands need
sudo, its data addresses and the interface that holds each, and how to run labkit on it. Provisioning,
shaping and benchmarks work from this alone, so they run the same on namespaces and on VMs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class HostConn:
    name: str
    role: str  # "cpo" | "gateway" | "evse"
    ssh_host: str
    ssh_port: int = 22
    user: str = "root"
    key_file: str = ""
    known_hosts: str | None = None  # None: accept the key on first use (Vagrant); else verify strictly
    sudo: bool = False  # prefix privileged commands with sudo (VMs log in as an unprivileged user)
    #: data network name ("cpo" / "evse") -> address on that network
    addresses: dict[str, str] = field(default_factory=dict)
    #: data network name -> interface holding that address on this host (filled at up time)
    ifaces: dict[str, str] = field(default_factory=dict)
    #: how to run labkit on this host ("/path/to/venv/bin/labkit")
    labkit: str = "labkit"
    #: a directory on the host where labkit may write (pid files, logs, results before collection)
    workdir: str = "/tmp/labkit"
    index: int = 0

    @property
    def python(self) -> str:
        """The Python interpreter beside ``labkit`` (same venv)."""
        return str(Path(self.labkit).with_name("python"))


@dataclass
class Inventory:
    lab: str
    backend: str
    hosts: list[HostConn]
    #: backend-specific facts worth recording in provenance (provider, box, namespace names...)
    details: dict[str, Any] = field(default_factory=dict)

    def host(self, name: str) -> HostConn:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def by_role(self, role: str) -> list[HostConn]:
        return [h for h in self.hosts if h.role == role]

    @property
    def cpo(self) -> HostConn:
        return self.by_role("cpo")[0]

    @property
    def gateway(self) -> HostConn:
        return self.by_role("gateway")[0]

    @property
    def evses(self) -> list[HostConn]:
        return self.by_role("evse")

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "backend": self.backend, "details": self.details,
                "hosts": [asdict(h) for h in self.hosts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        return cls(lab=data["lab"], backend=data["backend"], details=data.get("details", {}),
                   hosts=[HostConn(**h) for h in data["hosts"]])

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Inventory:
        return cls.from_dict(json.loads(path.read_text()))
