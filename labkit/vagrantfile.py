"""Render the lab's Vagrantfile from the lab model (``Vagrantfile.j2``); pure: no I/O but reading the template.

The Vagrantfile places the hosts only (box, hostnames, the two isolated data networks with static
addresses, memory and CPUs per role, VirtualBox and libvirt settings); labkit provisions and shapes the
hosts over SSH afterwards. Every name the lab creates starts with ``lk-<lab>-`` so ``labkit down`` can find it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from labkit import __version__
from labkit.errors import ConfigError
from labkit.model import Lab
from labkit.resources import resource

PROVIDERS = ("libvirt", "virtualbox")
DEFAULT_MEMORY_MIB = {"cpo": 1024, "gateway": 512, "evse": 512}
DEFAULT_CPUS = {"cpo": 1, "gateway": 1, "evse": 1}
#: the management network when neither the lab file nor the backend chose one (libvirt only)
DEFAULT_MGMT = ipaddress.IPv4Network("10.251.0.0/24")
LIBVIRT_URI = "qemu:///system"
_OPTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def prefix(lab_name: str) -> str:
    """Prefix of every VM, volume and network name of a lab."""
    return f"lk-{lab_name}-"


def network_name(lab_name: str, network: str) -> str:
    """libvirt network / VirtualBox internal network name of a data network (``cpo``, ``evse``, ``mgmt``)."""
    return f"lk-{lab_name}-{network}"


def bridge_name(lab_name: str, network: str) -> str:
    """Host bridge of a libvirt network: ``lk<lab><c|e|m>`` (at most 15 characters)."""
    return f"lk{lab_name}{network[0]}"


def domain_name(lab_name: str, host: str) -> str:
    return prefix(lab_name) + host


def ruby(value: Any) -> str:
    """A Ruby literal for a plain value (strings single-quoted: nothing in them is interpolated)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ruby(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby(str(k))} => {ruby(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"vagrant.libvirt: cannot express {value!r} ({type(value).__name__}) in a Vagrantfile")


@dataclass
class _Net:
    name: str
    cidr: str


def render(lab: Lab, provider: str = "libvirt", *, mgmt: ipaddress.IPv4Network | None = None,
           console_dir: Path | None = None) -> str:
    """The Vagrantfile of ``lab`` with ``provider`` as its default provider.

    ``mgmt`` is the libvirt management network (default: the lab file's ``networks.mgmt``, else
    10.251.0.0/24); ``console_dir``, when given, receives each libvirt VM's serial console log.
    """
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider: {provider!r} is not a provider labkit renders "
                          f"(allowed: {', '.join(PROVIDERS)})")
    spec = lab.spec
    opts = spec.vagrant
    mgmt = mgmt or spec.networks.mgmt or DEFAULT_MGMT
    memory = {**DEFAULT_MEMORY_MIB, **opts.memory}
    cpus = {**DEFAULT_CPUS, **opts.cpus}
    nets = {"cpo": spec.networks.cpo, "evse": spec.networks.evse}

    libvirt_options = []
    for key, value in opts.libvirt.items():
        if not _OPTION_RE.match(str(key)):
            raise ConfigError(f"vagrant.libvirt.{key}: not a vagrant-libvirt setting name (lowercase letters, "
                              "digits and '_', such as driver or cpu_mode)")
        if key in ("uri", "default_prefix") or key.startswith("management_network"):
            raise ConfigError(f"vagrant.libvirt.{key}: labkit sets this itself (allowed: any other "
                              "vagrant-libvirt provider setting, such as driver, kernel, initrd, cmd_line, cpu_mode)")
        ruby(value)  # fail early on what Ruby cannot hold
        libvirt_options.append((key, value))

    hosts = []
    for h in lab.hosts:
        hosts.append({
            "name": h.name,
            "memory": memory[h.role],
            "cpus": cpus[h.role],
            "networks": [
                {"name": network_name(lab.name, net), "ip": str(addr), "netmask": str(nets[net].netmask)}
                for net, addr in h.addresses.items()
            ],
            "console_log": str(console_dir / f"console-{h.name}.log") if console_dir else None,
        })

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["ruby"] = ruby
    template = env.from_string(resource("Vagrantfile.j2").read_text(encoding="utf-8"))
    return template.render(
        lab=lab.name,
        version=__version__,
        evse_count=len(lab.evses),
        provider=provider,
        box=opts.box_for(provider),
        box_version=opts.box_version,
        boot_timeout=opts.boot_timeout,
        prefix=prefix(lab.name),
        libvirt_uri=LIBVIRT_URI,
        mgmt=_Net(network_name(lab.name, "mgmt"), str(mgmt)),
        networks={n: _Net(network_name(lab.name, n), str(net)) for n, net in nets.items()},
        libvirt_options=libvirt_options,
        hosts=hosts,
    )
