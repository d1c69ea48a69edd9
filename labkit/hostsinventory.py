"""Ansible inventories (YAML and INI) read the way Ansible reads them, and mapped to a lab's roles.

``read_inventory`` parses a file into groups (hosts, children, vars) and each host's variables merged as
Ansible merges them (``all``, then groups by depth, ``ansible_group_priority`` and name, then the host's own).
``lab_hosts`` maps the groups ``cpo``, ``gateway`` and ``evse`` to roles and checks every host's connection
variables. Every problem is one ``ConfigError`` (exit 2) naming the file, the line when known and the host.
Host names are names (``labkit.names.is_host_name``); key files are paths the user gave, only ever read.
"""

from __future__ import annotations

import ast
import ipaddress
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from labkit.errors import ConfigError
from labkit.model import MAX_EVSE
from labkit.names import HOST_NAME_RULE, is_host_name
from labkit.yamlfile import decode_text, parse_yaml

ROLE_GROUPS = ("cpo", "gateway", "evse")
_TRUE = {"yes", "on", "1", "true", "y", "t"}
_FALSE = {"no", "off", "0", "false", "n", "f"}
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_ADDR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
_RANGE_RE = re.compile(r"\[[^\]]*:[^\]]*\]")
MAX_RANGE = 100_000  #: hosts one pattern may give (nested ranges multiply)
MAX_FILE = 16 * 2**20  #: bytes an inventory file may have


@dataclass
class Group:
    name: str
    hosts: list[str] = field(default_factory=list)  # hosts listed directly in this group
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass
class ParsedInventory:
    """An inventory as Ansible sees it: groups, and each host's own variables and first line."""

    path: str
    groups: dict[str, Group]
    host_vars: dict[str, dict[str, Any]]
    host_lines: dict[str, int | None]
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def _direct(self) -> dict[str, set[str]]:
        """host -> groups that list it (built once: an inventory may hold many hosts)."""
        if "direct" not in self._memo:
            direct: dict[str, set[str]] = {h: set() for h in self.host_vars}
            for g in self.groups.values():
                for h in g.hosts:
                    direct.setdefault(h, set()).add(g.name)
            self._memo["direct"] = direct
        return self._memo["direct"]

    def error(self, what: str, problem: str, host: str | None = None) -> ConfigError:
        line = self.host_lines.get(host) if host else None
        return ConfigError.at(what, problem, file=self.path, line=line)

    def parents(self, group: str) -> list[str]:
        key = ("parents", group)
        if key not in self._memo:
            self._memo[key] = [g.name for g in self.groups.values() if group in g.children]
        return self._memo[key]

    def depth(self, group: str, _seen: frozenset[str] = frozenset()) -> int:
        if group == "all" or group in _seen:
            return 0
        return max((self.depth(p, _seen | {group}) + 1 for p in self.parents(group)), default=1)

    def groups_of(self, host: str) -> set[str]:
        """Every group ``host`` belongs to, directly or through children (``all`` included)."""
        key = ("groups", host)
        if key not in self._memo:
            out: set[str] = set()
            todo = list(self._direct().get(host, ()))
            while todo:
                g = todo.pop()
                if g not in out:
                    out.add(g)
                    todo += self.parents(g)
            self._memo[key] = out | {"all"}
        return self._memo[key]

    def members(self, group: str) -> list[str]:
        """Hosts in ``group`` or its children, in inventory order."""
        return [h for h in self.host_vars if group in self.groups_of(h)]

    def vars_of(self, host: str) -> dict[str, Any]:
        """``host``'s variables merged as Ansible merges them (later wins, dictionaries replaced)."""

        def key(name: str) -> tuple[int, int, str]:
            prio = self.groups[name].vars.get("ansible_group_priority", 1)
            try:
                prio = int(prio)
            except (TypeError, ValueError):
                prio = 1
            return (self.depth(name), prio, name)

        merged: dict[str, Any] = {}
        for g in sorted((g for g in self.groups_of(host) if g in self.groups), key=key):
            merged.update(self.groups[g].vars)
        merged.update(self.host_vars[host])
        return merged


# -- host patterns ------------------------------------------------------------------------------------------

def expand_range(pattern: str) -> list[str]:
    """``evse[1:4]`` -> evse1..evse4, ``db[01:10:3]``, ``x[a:c]``: Ansible's host ranges (several allowed)."""
    m = _RANGE_RE.search(pattern)
    if not m:
        return [pattern]
    head, tail = pattern[:m.start()], pattern[m.end():]
    bounds = m.group(0)[1:-1].split(":")
    if len(bounds) not in (2, 3):
        raise ValueError("host range must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ValueError("host range must specify end value")
    try:
        istep = int(step)
    except ValueError:
        raise ValueError(f"host range step {step!r} is not a number") from None
    if istep < 1:
        raise ValueError("host range step must be 1 or more")
    if beg in string.ascii_letters and end in string.ascii_letters:
        i, j = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i > j:
            raise ValueError("host range must have begin <= end")
        seq = list(string.ascii_letters[i:j + 1:istep])
    else:
        try:
            ibeg, iend = int(beg), int(end)
        except ValueError:
            raise ValueError(f"host range [{m.group(0)[1:-1]}] is neither numbers nor single letters") from None
        width = len(beg) if beg.startswith("0") and len(beg) > 1 else 0
        if width and len(end) != width:
            raise ValueError("host range must specify equal-length begin and end formats")
        if (iend - ibeg) // istep >= MAX_RANGE:
            raise ValueError(f"host range gives more than {MAX_RANGE} hosts")
        seq = [str(n).zfill(width) for n in range(ibeg, iend + 1, istep)]
    out: list[str] = []
    for s in seq:
        out += expand_range(head + s + tail)
        if len(out) > MAX_RANGE:
            raise ValueError(f"host range gives more than {MAX_RANGE} hosts")
    return out


def split_port(pattern: str) -> tuple[str, int | None]:
    """``host:2222`` -> (host, 2222); a ``:`` inside a range's brackets is not a port."""
    depth, cut = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ":" and depth == 0:
            cut = i
    if cut >= 0 and pattern[cut + 1:].isdigit():
        head = pattern[:cut]
        if ":" not in _RANGE_RE.sub("", head):  # else an IPv6 address, not host:port
            return head, int(pattern[cut + 1:])
    return pattern, None


# -- reading ------------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, path: str):
        self.path = path
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
        self.groups["all"].children.append("ungrouped")
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_lines: dict[str, int | None] = {}
        self.listed: set[tuple[str, str]] = set()  # (group, host) pairs already in a group's list

    def fail(self, what: str, problem: str, line: int | None) -> ConfigError:
        return ConfigError.at(what, problem, file=self.path, line=line)

    def group(self, name: str, line: int | None) -> Group:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name) or ":" in name:
            raise self.fail(f"group {name!r}", "not a valid group name", line)
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = Group(name, line=line)
        return g

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        if child == "all":
            raise self.fail(f"group {parent}", "'all' cannot be a child group", line)
        p = self.group(parent, line)
        self.group(child, line)
        if child not in p.children:
            p.children.append(child)
        # a loop in children is an error for Ansible too
        seen, todo = set(), [child]
        while todo:
            g = todo.pop()
            if g == parent:
                raise self.fail(f"group {parent}", f"group {child!r} is its own ancestor (children loop)", line)
            if g not in seen:
                seen.add(g)
                todo += self.groups[g].children if g in self.groups else []

    def add_hosts(self, group: str, pattern: Any, variables: dict[str, Any], line: int | None) -> None:
        if not isinstance(pattern, str) or not pattern.strip():
            raise self.fail(f"group {group}", f"host pattern {pattern!r} is not a host name", line)
        base, port = split_port(pattern.strip())
        try:
            names = expand_range(base)
        except ValueError as exc:
            raise self.fail(f"host {pattern}", str(exc), line) from None
        g = self.group(group, line)
        for name in names:
            if not is_host_name(name):
                raise self.fail(f"host {name!r}", f"invalid host name: {HOST_NAME_RULE}", line)
            if name not in self.host_vars:
                self.host_vars[name] = {}
                self.host_lines[name] = line
            if port is not None:
                self.host_vars[name]["ansible_port"] = port
            self.host_vars[name].update(variables)
            if (group, name) not in self.listed:
                self.listed.add((group, name))
                g.hosts.append(name)

    def done(self) -> ParsedInventory:
        # Ansible: a top-level group is a child of all; a host in no group but all is in ungrouped
        for name in self.groups:
            if name != "all" and not any(name in g.children for g in self.groups.values()):
                self.groups["all"].children.append(name)
        for host in self.host_vars:
            if not any((n, host) in self.listed for n in self.groups if n not in ("all", "ungrouped")):
                if ("ungrouped", host) not in self.listed:
                    self.listed.add(("ungrouped", host))
                    self.groups["ungrouped"].hosts.append(host)
        self.groups["all"].hosts = []
        return ParsedInventory(self.path, self.groups, self.host_vars, self.host_lines)


def _line(node: Any, key: Any) -> int | None:
    if isinstance(node, CommentedMap):
        try:
            return node.lc.key(key)[0] + 1
        except (KeyError, TypeError):
            return node.lc.line + 1
    return None


MAX_NODES = 1_000_000  #: values a YAML inventory may expand to (aliases of aliases multiply: "billion laughs")


def read_yaml(text: str, path: str) -> ParsedInventory:
    data = parse_yaml(text, path, version=(1, 1))  # as Ansible (PyYAML): yes/no/on/off are booleans
    b = _Builder(path)
    budget = [MAX_NODES]

    def plain(value: Any, line: int | None = None) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise b.fail("(file)", f"expands to more than {MAX_NODES} values (aliases of aliases?)", line)
        if isinstance(value, dict):
            return {str(k): plain(v, line) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v, line) for v in value]
        return value
    if data is None:
        raise b.fail("(file)", "empty inventory", None)
    if not isinstance(data, dict):
        raise b.fail("(top level)", "a YAML inventory is a mapping of group names", 1)

    def parse_group(name: Any, body: Any, line: int | None) -> None:
        b.group(name, line)
        if body is None:
            return
        if not isinstance(body, dict):
            raise b.fail(f"group {name}", f"must be a mapping of hosts, children and vars, not {body!r}", line)
        for key, value in body.items():
            kline = _line(body, key)
            if key not in ("hosts", "children", "vars"):
                raise b.fail(f"group {name}", f"unknown key {key!r} (allowed: hosts, children, vars)", kline)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise b.fail(f"group {name}.{key}", f"must be a mapping, not {value!r}", kline)
            if key == "vars":
                b.group(name, line).vars.update(plain(value, kline))
            elif key == "children":
                for child, cbody in value.items():
                    cline = _line(value, child)
                    parse_group(child, cbody, cline)
                    b.add_child(name, child, cline)
            else:
                for host, hvars in value.items():
                    hline = _line(value, host)
                    if hvars is not None and not isinstance(hvars, dict):
                        raise b.fail(f"host {host}", f"variables must be a mapping, not {hvars!r}", hline)
                    b.add_hosts(name, host, plain(hvars or {}, hline), hline)

    for name, body in data.items():
        parse_group(name, body, _line(data, name))
    return b.done()


def _ini_value(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if value is ... or isinstance(value, (complex, bytes)):
        return text
    return value


_SECTION_RE = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_GROUPNAME_RE = re.compile(r"^([^:\]\s]+)\s*(?:[#;].*)?$")


def read_ini(text: str, path: str) -> ParsedInventory:
    b = _Builder(path)
    group, state = "ungrouped", "hosts"
    pending: dict[str, tuple[str, int, list[str]]] = {}  # group -> (state, line, parents)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = _SECTION_RE.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise b.fail(f"[{group}:{state}]", "unknown section type (allowed: children, vars)", lineno)
            if group not in b.groups and state == "vars" and group not in pending:
                pending[group] = ("vars", lineno, [])
            b.group(group, lineno)
            if group in pending and state != "vars":
                kind, _, parents = pending.pop(group)
                for parent in parents:
                    b.add_child(parent, group, lineno)
            continue
        if line.startswith("["):
            raise b.fail("(section)", f"invalid section header {line!r} (no spaces allowed)", lineno)
        if state == "hosts":
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise b.fail("(host line)", f"cannot parse {line!r}: {exc}", lineno) from None
            if tokens[0].endswith(":"):
                raise b.fail(f"host {tokens[0]}", "ends in ':' (reserved for a port)", lineno)
            variables = {}
            for tok in tokens[1:]:
                if "=" not in tok:
                    raise b.fail(f"host {tokens[0]}", f"expected key=value, got {tok!r}", lineno)
                k, v = tok.split("=", 1)
                variables[k] = _ini_value(v)
            b.add_hosts(group, tokens[0], variables, lineno)
        elif state == "vars":
            if "=" not in line:
                raise b.fail(f"[{group}:vars]", f"expected key=value, got {line!r}", lineno)
            k, v = (s.strip() for s in line.split("=", 1))
            b.groups[group].vars[k] = _ini_value(v)
        else:
            cm = _GROUPNAME_RE.match(line)
            if not cm:
                raise b.fail(f"[{group}:children]", f"expected a group name, got {line!r}", lineno)
            child = cm.group(1)
            if child in b.groups:
                b.add_child(group, child, lineno)
            elif child in pending:
                pending[child][2].append(group)
            else:
                pending[child] = ("children", lineno, [group])
    for name, (kind, lineno, parents) in pending.items():
        if kind == "vars":
            raise b.fail(f"[{name}:vars]", f"group {name!r} is not defined", lineno)
        raise b.fail(f"[{parents[-1]}:children]", f"includes undefined group {name!r}", lineno)
    return b.done()


def read_inventory(path: str | Path) -> ParsedInventory:
    """Parse an inventory file; YAML when it ends in .yml/.yaml/.json or starts like YAML, else INI."""
    p = Path(path)
    try:
        if not p.exists():
            raise ConfigError(f"{p}: no such inventory file")
        if not p.is_file():
            raise ConfigError(f"{p}: not an inventory file (a regular file is needed)")
        if p.stat().st_size > MAX_FILE:
            raise ConfigError(f"{p}: inventory larger than {MAX_FILE // 2**20} MiB")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read inventory: {exc.strerror or exc}") from None
    text = decode_text(data, p)
    if p.suffix in (".yml", ".yaml", ".json"):
        return read_yaml(text, str(p))
    if p.suffix in (".ini", ".cfg", ""):
        first = next((ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] not in "#;"), "")
        if first == "---" or (first.endswith(":") and not first.startswith("[")):
            return read_yaml(text, str(p))
        return read_ini(text, str(p))
    return read_ini(text, str(p))


# -- the lab's hosts ----------------------------------------------------------------------------------------

@dataclass
class InventoryHost:
    """One machine of the lab as the inventory gives it."""

    name: str
    role: str
    ssh_host: str
    ssh_port: int
    user: str
    key_file: str
    known_hosts: str  # checked strictly against this file (``labkit_known_hosts``, default ~/.ssh/known_hosts)
    sudo: bool
    #: data network ("cpo" / "evse") -> address the inventory gives (``labkit_<net>_address``); else found at up
    addresses: dict[str, str]
    line: int | None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _host(inv: ParsedInventory, name: str, role: str, base: Path) -> InventoryHost:
    v = inv.vars_of(name)

    def err(problem: str) -> ConfigError:
        return inv.error(f"host {name}", problem, host=name)

    def get(*keys: str) -> Any:
        for k in keys:
            if k in v:
                return v[k]
        return None

    conn = get("ansible_connection")
    if conn not in (None, "ssh", "paramiko", "smart"):
        raise err(f"ansible_connection={conn!r}: labkit reaches hosts over SSH only")
    for secret in ("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass"):
        if secret in v:
            raise err(f"{secret}: labkit logs in with keys only and reads no passwords from an inventory")
    addr = get("ansible_host", "ansible_ssh_host")
    addr = name if addr is None else addr
    if not isinstance(addr, str) or not _ADDR_RE.fullmatch(addr):
        raise err(f"ansible_host {addr!r} is not a host name or IPv4/IPv6 address")
    port = get("ansible_port", "ansible_ssh_port")
    port = 22 if port is None else port
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise err(f"ansible_port {port!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise err(f"ansible_port {port} is not a TCP port (1-65535)")
    user = get("ansible_user", "ansible_ssh_user")
    user = "root" if user is None else user
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise err(f"ansible_user {user!r} is not a user name")
    key = get("ansible_ssh_private_key_file", "ansible_private_key_file")
    key_file = ""
    if key is not None:
        if not isinstance(key, str) or not key or "\0" in key:
            raise err(f"ansible_ssh_private_key_file {key!r} is not a path")
        kp = Path(key).expanduser()
        if not kp.is_absolute():
            kp = base / kp  # as ssh -i: relative to the directory labkit runs in
        if not kp.is_file():
            raise err(f"ansible_ssh_private_key_file {key!r}: no such file")
        key_file = str(kp)
    kh = v.get("labkit_known_hosts", "~/.ssh/known_hosts")
    if not isinstance(kh, str) or not kh or "\0" in kh:
        raise err(f"labkit_known_hosts {kh!r} is not a path")
    khp = Path(kh).expanduser()
    khp = khp if khp.is_absolute() else base / khp
    if not khp.is_file():
        raise err(f"labkit_known_hosts {kh!r}: no such file (labkit checks every host key against it)")
    become_raw = get("ansible_become")
    become = None if become_raw is None else _bool(become_raw)
    if become_raw is not None and become is None:
        raise err(f"ansible_become {become_raw!r} is not a boolean")
    method = get("ansible_become_method")
    if become and method not in (None, "sudo"):
        raise err(f"ansible_become_method {method!r}: labkit uses sudo only")
    buser = get("ansible_become_user")
    if become and buser not in (None, "root"):
        raise err(f"ansible_become_user {buser!r}: labkit needs root")
    if user != "root" and become is False:
        raise err(f"ansible_user {user} is not root and ansible_become is false: labkit needs root on every host")
    sudo = user != "root" if become is None else become
    nets = {"cpo": ("cpo",), "gateway": ("cpo", "evse"), "evse": ("evse",)}[role]
    addresses = {}
    for net in ("cpo", "evse"):
        val = v.get(f"labkit_{net}_address")
        if val is None:
            continue
        if net not in nets:
            raise err(f"labkit_{net}_address: a {role} host is not on the {net} network")
        try:
            addresses[net] = str(ipaddress.IPv4Address(str(val)))
        except ValueError:
            raise err(f"labkit_{net}_address {val!r} is not an IPv4 address") from None
    return InventoryHost(name=name, role=role, ssh_host=addr, ssh_port=port, user=user, key_file=key_file,
                         known_hosts=str(khp), sudo=sudo, addresses=addresses, line=inv.host_lines.get(name))


def lab_hosts(inv: ParsedInventory, *, base: Path | None = None) -> list[InventoryHost]:
    """The lab's machines: one ``cpo``, one ``gateway``, one or more ``evse`` (cpo, gateway, then evse in
    inventory order). ``base``: where relative key paths start (default: the current directory, as ssh)."""
    base = base or Path.cwd()
    role_of: dict[str, str] = {}
    for role in ROLE_GROUPS:
        if role not in inv.groups:
            raise inv.error(f"group {role}", f"missing: the inventory needs the groups {', '.join(ROLE_GROUPS)}")
        members = inv.members(role)
        if not members:
            raise inv.error(f"group {role}", "has no hosts")
        for h in members:
            if h in role_of:
                raise inv.error(f"host {h}", f"is in the groups {role_of[h]} and {role}: one machine, one role",
                                host=h)
            role_of[h] = role
    for role in ("cpo", "gateway"):
        members = inv.members(role)
        if len(members) > 1:
            raise inv.error(f"group {role}", f"has {len(members)} hosts ({', '.join(members)}): exactly one is needed",
                            host=members[1])
    n_evse = len(inv.members("evse"))
    if n_evse > MAX_EVSE:
        raise inv.error("group evse", f"has {n_evse} hosts (at most {MAX_EVSE})")
    hosts = [_host(inv, h, role_of[h], base) for role in ROLE_GROUPS for h in inv.members(role)]
    seen: dict[tuple[str, int], str] = {}
    for h in hosts:
        other = seen.setdefault((h.ssh_host, h.ssh_port), h.name)
        if other != h.name:
            raise inv.error(f"host {h.name}", f"is the same machine as host {other} ({h.ssh_host} port {h.ssh_port}):"
                            " one machine, one host of the lab", host=h.name)
    return hosts


def load_lab_hosts(path: str | Path, *, base: Path | None = None) -> list[InventoryHost]:
    return lab_hosts(read_inventory(path), base=base)
