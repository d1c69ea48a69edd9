"""Backends place a lab's hosts; this module names them and decides ``--backend auto``.

The rule for ``auto``: ``hosts`` when an inventory is given (labkit.lifecycle), else ``vagrant`` when the
vagrant command and a working provider (libvirt or VirtualBox) are present, otherwise ``netns`` (Linux
namespaces on this machine; needs root).
"""

from __future__ import annotations

import importlib

from labkit.backends.base import Backend
from labkit.errors import ConfigError

_BACKENDS = {
    "netns": "labkit.backends.netns:NetnsBackend",
    "vagrant": "labkit.backends.vagrant:VagrantBackend",
    "docker": "labkit.backends.docker:DockerBackend",
    "hosts": "labkit.backends.hosts:HostsBackend",
}


def names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    target = _BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"backend: unknown backend {name!r} (allowed: auto, {', '.join(_BACKENDS)})")
    module, attr = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ConfigError(f"backend: {name} is not available in this version of labkit") from None
        raise
    return getattr(mod, attr)()


def resolve(name: str) -> Backend:
    """The backend for ``name``; ``auto`` picks vagrant when it can run here, else netns."""
    if name != "auto":
        return get_backend(name)
    try:
        vagrant = get_backend("vagrant")
        ok, _ = vagrant.available()
        if ok:
            return vagrant
    except ConfigError:
        pass
    return get_backend("netns")
