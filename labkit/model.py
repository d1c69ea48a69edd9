"""The lab model: one description of a lab (hosts, networks, addresses) that every backend places.

A lab has a CPO host (the central system), a gateway and N EVSE hosts (chargers). Two data networks join
them: the CPO side and the EVSE side, routed through the gateway. A third, the management network, carries
only control traffic (SSH); lab traffic never takes it. ``LabSpec`` is what the user writes (a lab file and
flags); ``Lab`` is the resolved model with every address assigned.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labkit.errors import ConfigError
from labkit.names import NAME_RE, NAME_RULE
from labkit.yamlfile import FieldError, load_yaml, validate

BACKENDS = ("auto", "netns", "vagrant", "docker", "hosts")
ROLES = ("cpo", "gateway", "evse")
MAX_EVSE = 1000

#: Offsets of the fixed hosts inside each data network; EVSE i takes ``EVSE_BASE + i``.
GATEWAY_OFFSET = 1
CPO_OFFSET = 10
EVSE_BASE = 10


class Networks(BaseModel):
    """The lab's networks (IPv4)."""

    model_config = ConfigDict(extra="forbid")

    cpo: ipaddress.IPv4Network = Field(default=ipaddress.IPv4Network("192.168.10.0/24"),
                                       description="CPO-side data network (CPO host and gateway)")
    evse: ipaddress.IPv4Network = Field(default=ipaddress.IPv4Network("192.168.20.0/24"),
                                        description="EVSE-side data network (EVSE hosts and gateway)")
    mgmt: ipaddress.IPv4Network | None = Field(
        default=None, description="management network for SSH only (netns, docker); chosen automatically when unset")

    @field_validator("cpo", "evse", "mgmt", mode="before")
    @classmethod
    def _strict_network(cls, value: Any) -> Any:
        if value is None:
            return value
        try:
            return ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network in CIDR form such as 192.168.10.0/24 ({exc})") from None

    @model_validator(mode="after")
    def _no_overlap(self) -> Networks:
        nets = {"cpo": self.cpo, "evse": self.evse}
        if self.mgmt is not None:
            nets["mgmt"] = self.mgmt
        names = list(nets)
        for i, a in enumerate(names):
            if nets[a].prefixlen > 29:
                raise FieldError(f"networks.{a} {nets[a]} is too small (a /29 or larger is needed)", a)
            for b in names[i + 1:]:
                if nets[a].overlaps(nets[b]):
                    # point at a network the file gives (the other may be a default)
                    raise FieldError(f"networks.{a} {nets[a]} overlaps networks.{b} {nets[b]}",
                                     b if b in self.model_fields_set else a)
        return self


#: Ubuntu LTS boxes that carry each provider (bento publishes no libvirt boxes).
DEFAULT_BOXES = {"virtualbox": "bento/ubuntu-24.04", "libvirt": "generic/ubuntu2404"}


class VagrantOptions(BaseModel):
    """Settings only the vagrant backend reads."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["auto", "virtualbox", "libvirt"] = "auto"
    box: str | None = Field(default=None, description="Vagrant box; default per provider (DEFAULT_BOXES)")
    box_version: str | None = None
    memory: dict[Literal["cpo", "gateway", "evse"], int] = Field(
        default_factory=lambda: {"cpo": 1024, "gateway": 512, "evse": 512})
    cpus: dict[Literal["cpo", "gateway", "evse"], int] = Field(
        default_factory=lambda: {"cpo": 1, "gateway": 1, "evse": 1})
    # extra provider settings the test box needs (kernel/initrd for direct boot, domain type...)
    libvirt: dict[str, Any] = Field(default_factory=dict)
    boot_timeout: int = Field(default=600, ge=30, le=7200,
                              description="seconds Vagrant waits for each VM to boot and answer SSH")

    def box_for(self, provider: str) -> str:
        """The box to use with ``provider``: the one asked for, else the provider's default Ubuntu LTS box."""
        return self.box or DEFAULT_BOXES.get(provider, DEFAULT_BOXES["virtualbox"])

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: dict) -> dict:
        for role, mib in value.items():
            if not 128 <= mib <= 65536:
                raise ValueError(f"memory for {role} must be 128-65536 MiB (got {mib})")
        return value

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, value: dict) -> dict:
        for role, n in value.items():
            if not 1 <= n <= 64:
                raise ValueError(f"cpus for {role} must be 1-64 (got {n})")
        return value


class DockerOptions(BaseModel):
    """Settings only the docker backend reads."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(default=None, description="an image to run instead of the one labkit builds "
                              "(it needs sshd, python3, iproute2, iperf3, ping and iptables)")
    suite: Literal["bookworm"] = Field(default="bookworm", description="the Debian release labkit builds the "
                                       "image from (labkit image build)")


class LabSpec(BaseModel):
    """What the user asks for: a lab file (YAML) and flags, validated before anything is touched."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="lab", description=NAME_RULE)
    backend: Literal["auto", "netns", "vagrant", "docker", "hosts"] = "auto"
    evse: int = Field(default=1, description=f"number of EVSE hosts, 1-{MAX_EVSE} (hosts: the inventory's)")
    inventory: str | None = Field(default=None, description="hosts backend: an Ansible inventory (YAML or INI) of "
                                  "existing machines in the groups cpo, gateway and evse")
    routes: bool = Field(default=False, description="hosts backend: add the routes through the gateway that "
                         "endpoints lack (removed at down)")
    accept_new_host_keys: bool = Field(default=False, description="hosts backend: accept the host keys of "
                                       "machines no known_hosts file knows (kept in the lab directory)")
    networks: Networks = Field(default_factory=Networks)
    vagrant: VagrantOptions = Field(default_factory=VagrantOptions)
    docker: DockerOptions = Field(default_factory=DockerOptions)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ValueError(f"invalid lab name {value!r}: {NAME_RULE}")
        return value

    @field_validator("evse", mode="before")
    @classmethod
    def _evse(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value), 10)
            except ValueError:
                raise ValueError(f"must be a whole number from 1 to {MAX_EVSE} (got {value!r})") from None
        if not 1 <= value <= MAX_EVSE:
            raise ValueError(f"must be from 1 to {MAX_EVSE} (got {value})")
        return value

    @model_validator(mode="after")
    def _hosts_need_an_inventory(self) -> LabSpec:
        if self.backend == "hosts" and not self.inventory:
            raise FieldError("the hosts backend needs an inventory (labkit up -i INVENTORY)", "inventory")
        if self.inventory and self.backend not in ("hosts", "auto"):
            raise FieldError(f"an inventory names existing machines: it goes with the hosts backend, "
                             f"not {self.backend}", "inventory")
        return self

    @model_validator(mode="after")
    def _fits(self) -> LabSpec:
        room = self.networks.evse.num_addresses - 2 - EVSE_BASE
        if self.evse > room:
            raise FieldError(f"{self.evse} EVSE hosts do not fit networks.evse {self.networks.evse} "
                             f"(at most {max(room, 0)}; use a larger network)", "evse")
        if self.networks.cpo.num_addresses - 2 < CPO_OFFSET:
            raise FieldError(f"networks.cpo {self.networks.cpo} is too small for the CPO address .{CPO_OFFSET}",
                             "networks", "cpo")
        if self.networks.mgmt is not None and self.networks.mgmt.num_addresses - 3 < self.evse + 2:
            raise FieldError(f"networks.mgmt {self.networks.mgmt} is too small for {self.evse + 2} hosts",
                             "networks", "mgmt")
        return self


@dataclass(frozen=True)
class Host:
    """One lab host: its name, role and data addresses (network name -> address)."""

    name: str
    role: str
    addresses: dict[str, ipaddress.IPv4Address]
    index: int = 0  # EVSE number (1..N); 0 for the CPO and the gateway

    def address(self, network: str) -> ipaddress.IPv4Address:
        return self.addresses[network]


@dataclass
class Lab:
    """The resolved lab: the spec plus every host with its addresses."""

    spec: LabSpec
    hosts: list[Host] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cpo(self) -> Host:
        return self.by_role("cpo")[0]

    @property
    def gateway(self) -> Host:
        return self.by_role("gateway")[0]

    @property
    def evses(self) -> list[Host]:
        return self.by_role("evse")

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise ConfigError(f"host: unknown host {name!r} in lab {self.name!r} "
                          f"(hosts: {', '.join(h.name for h in self.hosts)})")

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "hosts": [
                {"name": h.name, "role": h.role, "index": h.index,
                 "addresses": {k: str(v) for k, v in h.addresses.items()}}
                for h in self.hosts
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lab:
        spec = LabSpec.model_validate(data["spec"])
        if spec.backend == "hosts":  # existing machines: names and addresses are the inventory's
            return Lab(spec=spec, hosts=[Host(h["name"], h["role"],
                                              {k: ipaddress.IPv4Address(v) for k, v in h["addresses"].items()},
                                              index=h.get("index", 0)) for h in data["hosts"]])
        return build_lab(spec)


def lab_of_hosts(spec: LabSpec, inventory: Any) -> Lab:
    """The lab of existing machines (hosts backend): names, roles and addresses as ``inventory`` (a
    ``labkit.inventory.Inventory`` that discovery filled) has them."""
    hosts = [Host(h.name, h.role, {k: ipaddress.IPv4Address(v) for k, v in h.addresses.items()}, index=h.index)
             for h in inventory.hosts]
    return Lab(spec=spec.model_copy(update={"evse": len(inventory.evses)}), hosts=hosts)


def build_lab(spec: LabSpec) -> Lab:
    """Assign addresses: gateway .1 on both data networks, CPO .10, EVSE i at .(10 + i)."""
    cpo_net, evse_net = spec.networks.cpo, spec.networks.evse
    hosts = [
        Host("cpo", "cpo", {"cpo": cpo_net[CPO_OFFSET]}),
        Host("gw", "gateway", {"cpo": cpo_net[GATEWAY_OFFSET], "evse": evse_net[GATEWAY_OFFSET]}),
    ]
    for i in range(1, spec.evse + 1):
        hosts.append(Host(f"evse{i}", "evse", {"evse": evse_net[EVSE_BASE + i]}, index=i))
    return Lab(spec=spec, hosts=hosts)


def load_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> LabSpec:
    """Read a lab file (optional) and apply flag overrides (``None`` values are ignored); validate all."""
    data: Any = {}
    root: Any = None
    filename = "command line"
    if path is not None:
        root = load_yaml(path)
        filename = str(path)
        if root is None:
            raise ConfigError.at("(top level)", "the lab file is empty (write at least 'name: lab', or give no "
                                 "-f to use the defaults)", file=filename, line=1)
        if not isinstance(root, dict):
            raise ConfigError.at("(top level)", "a lab file must be a mapping such as 'evse: 3'", file=filename, line=1)
        data = root
        inv = data.get("inventory")
        if isinstance(inv, str) and inv and not Path(inv).is_absolute():  # beside the lab file, as Ansible's
            data = {**data, "inventory": str(Path(path).resolve().parent / inv)}
    merged = _merge(data, overrides or {})
    # Report errors in flags as flags, not as lines of the lab file.
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        try:
            validate(LabSpec, _merge({}, {key: value}), filename="command line")
        except ConfigError as exc:
            flag = "--" + key.replace("networks.", "").replace("_", "-")
            if key.startswith("networks."):
                flag += "-net"
            msg = str(exc).split(": ", 2)[-1]
            raise ConfigError(f"{flag}: {msg}") from None
    return validate(LabSpec, merged, filename=filename, root=root)


def _merge(base: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    from labkit.yamlfile import plain

    out = plain(base) if base else {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: cannot override a non-mapping")
        node[keys[-1]] = value
    return out
