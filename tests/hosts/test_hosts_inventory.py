"""Ansible inventories read as Ansible reads them (pure), mapped to roles, and refused on bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from labkit.errors import ConfigError
from labkit.hostsinventory import expand_range, lab_hosts, read_inventory, split_port

YAML_INV = """\
all:
  vars:
    ansible_user: lab
    ansible_ssh_private_key_file: id_lab
    labkit_known_hosts: known_hosts
    site: all
  children:
    cpo:
      hosts:
        csms:
          ansible_host: 10.0.0.10
          labkit_cpo_address: 192.168.10.10
    gateway:
      hosts:
        gw:
          ansible_host: 10.0.0.1
          ansible_port: 2222
          labkit_cpo_address: 192.168.10.1
          labkit_evse_address: 192.168.20.1
      vars:
        site: gw-group
    evse:
      vars:
        ansible_become: yes
        site: evse-group
      children:
        pis:
          hosts:
            pi[01:03]:
          vars:
            site: pis
    extra:
      hosts:
        pi02:
          site: host
"""

INI_INV = """\
# comments with # and ;
; the lab
[cpo]
csms ansible_host=10.0.0.10 labkit_cpo_address=192.168.10.10

[gateway]
gw:2222 ansible_host=10.0.0.1 labkit_cpo_address=192.168.10.1 labkit_evse_address=192.168.20.1

[gateway:vars]
site=gw-group

[evse:children]
pis

[evse:vars]
ansible_become=yes
site=evse-group

[pis]
pi[01:03]

[pis:vars]
site=pis

[extra]
pi02 site=host

[all:vars]
ansible_user=lab
ansible_ssh_private_key_file=id_lab
labkit_known_hosts=known_hosts
site=all
"""


@pytest.fixture
def keydir(tmp_path, monkeypatch):
    (tmp_path / "id_lab").write_text("not really a key\n")
    (tmp_path / "known_hosts").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("name,text", [("lab.yml", YAML_INV), ("lab.ini", INI_INV), ("hosts", INI_INV)])
def test_yaml_and_ini_read_alike(keydir, name, text):
    inv = read_inventory(write(keydir, name, text))
    assert list(inv.host_vars) == ["csms", "gw", "pi01", "pi02", "pi03"]
    assert inv.members("evse") == ["pi01", "pi02", "pi03"]
    # precedence: all < gateway/evse (depth 1) < pis (depth 2) < extra (depth 1, but host var wins)
    assert inv.vars_of("gw")["site"] == "gw-group" and inv.vars_of("gw")["ansible_port"] == 2222
    assert inv.vars_of("pi01")["site"] == "pis"
    assert inv.vars_of("pi02")["site"] == "host"
    assert inv.vars_of("csms")["site"] == "all"
    hosts = lab_hosts(inv)
    assert [(h.name, h.role) for h in hosts] == [("csms", "cpo"), ("gw", "gateway"), ("pi01", "evse"),
                                                  ("pi02", "evse"), ("pi03", "evse")]
    gw, pi = hosts[1], hosts[2]
    assert (gw.ssh_host, gw.ssh_port, gw.user, gw.sudo) == ("10.0.0.1", 2222, "lab", True)
    assert gw.addresses == {"cpo": "192.168.10.1", "evse": "192.168.20.1"}
    assert (pi.ssh_host, pi.ssh_port, pi.sudo, pi.addresses) == ("pi01", 22, True, {})
    assert gw.key_file == str(keydir / "id_lab") and gw.known_hosts == str(keydir / "known_hosts")


def test_group_priority_and_alphabetical_order(tmp_path):
    inv = read_inventory(write(tmp_path, "p.yml", """\
        evse:
          hosts: {e1: {ansible_host: 10.0.0.5}}
        b:
          hosts: {e1: }
          vars: {x: b}
        a:
          hosts: {e1: }
          vars: {x: a, ansible_group_priority: 5}
        c:
          hosts: {e1: }
          vars: {x: c}
        """))
    assert inv.vars_of("e1")["x"] == "a"  # priority 5 beats c, which beats b by name


def test_ranges():
    assert expand_range("evse[1:4]") == ["evse1", "evse2", "evse3", "evse4"]
    assert expand_range("db[01:10:3]x") == ["db01x", "db04x", "db07x", "db10x"]
    assert expand_range("n[a:c]-[1:2]") == ["na-1", "na-2", "nb-1", "nb-2", "nc-1", "nc-2"]
    assert expand_range("plain") == ["plain"]
    for bad in ("x[1:]", "x[01:100]", "x[c:a]", "x[1:2:0]", "x[1:2:3:4]"):
        with pytest.raises(ValueError):
            expand_range(bad)
    with pytest.raises(ValueError, match="more than 100000 hosts"):
        expand_range("x[1:1000][1:1000]")  # nested ranges multiply: refused before memory runs out
    with pytest.raises(ValueError, match="more than 100000 hosts"):
        expand_range("x[0:99999999999]")
    assert len(expand_range("x[1:1000:10]")) == 100
    assert split_port("evse[1:4]:2222") == ("evse[1:4]", 2222)
    assert split_port("evse[1:4]") == ("evse[1:4]", None)
    assert split_port("fe80::1") == ("fe80::1", None)


def test_ini_values_are_python_literals_like_ansibles(tmp_path):
    inv = read_inventory(write(tmp_path, "i.ini", """\
        [evse]
        e1 a=1 b="two words" c=[1,2] d=yes e=True
        """))
    assert inv.host_vars["e1"] == {"a": 1, "b": "two words", "c": [1, 2], "d": "yes", "e": True}


GOOD = {"cpo": "c ansible_host=10.0.0.10", "gateway": "g ansible_host=10.0.0.1", "evse": "e ansible_host=10.0.0.20"}


def ini(**sections: str) -> str:
    parts = {**GOOD, **sections}
    return "".join(f"[{k}]\n{v}\n" for k, v in parts.items() if v is not None) + KH


KH = "[all:vars]\nlabkit_known_hosts=known_hosts\n"


@pytest.mark.parametrize("text,expect", [
    (ini(cpo=None), r"^{f}: group cpo: missing"),
    ("[cpo]\nc\n[gateway]\n[evse]\ne\n", r"^{f}: group gateway: has no hosts"),
    (ini(evse="e ansible_host=10.0.0.20\ng"), r"^{f}:\d+: host g: is in the groups gateway and evse"),
    (ini(gateway="g ansible_host=10.0.0.1\ng2"), r"^{f}:\d+: group gateway: has 2 hosts \(g, g2\)"),
    (ini(evse="e ansible_host=10.0.0.1"), r"^{f}:6: host e: is the same machine as host g"),
    (ini(evse="e ansible_port=99999"), r"^{f}:6: host e: ansible_port 99999 is not a TCP port"),
    (ini(evse="e ansible_port=ssh"), r"^{f}:6: host e: ansible_port 'ssh' is not a number"),
    (ini(evse="e ansible_user='-oProxyCommand=x'"), r"host e: ansible_user '-oProxyCommand=x' is not a user"),
    (ini(evse="e ansible_host=-oProxyCommand=x"), r"host e: ansible_host '-oProxyCommand=x' is not a host"),
    (ini(evse="e ansible_ssh_private_key_file=/nonexistent/key"), r"host e: ansible_ssh_private_key_file .*no such"),
    (ini(evse="e ansible_password=secret"), r"host e: ansible_password: labkit logs in with keys only"),
    (ini(evse="e ansible_connection=docker"), r"host e: ansible_connection='docker'"),
    (ini(evse="e labkit_known_hosts=nowhere"), r"host e: labkit_known_hosts 'nowhere': no such file"),
    (ini(evse="e ansible_become=maybe"), r"host e: ansible_become 'maybe' is not a boolean"),
    (ini(evse="e ansible_user=pi ansible_become=no"), r"host e: ansible_user pi is not root and ansible_become"),
    (ini(evse="e labkit_cpo_address=192.168.10.5"), r"host e: labkit_cpo_address: a evse host is not on the cpo"),
    (ini(evse="e labkit_evse_address=192.168.20.300"), r"host e: labkit_evse_address '192.168.20.300' is not"),
    (ini(evse="../../etc/passwd"), r"^{f}:6: host '../../etc/passwd': invalid host name"),
    (ini(evse="e[1:]"), r"^{f}:6: host e\[1:\]: host range must specify end value"),
    (ini(evse="e:"), r"^{f}:6: host e:: ends in ':'"),
    (ini(evse='e a="unterminated'), r"^{f}:6: \(host line\): cannot parse"),
    (ini(evse="e novalue"), r"^{f}:6: host e: expected key=value, got 'novalue'"),
    (ini() + "[bad section]\n", r"^{f}:9: \(section\): invalid section header"),
    (ini() + "[evse:kids]\nx\n", r"^{f}:9: \[evse:kids\]: unknown section type"),
    (ini() + "[evse:children]\nnowhere\n", r"^{f}:10: \[evse:children\]: includes undefined group 'nowhere'"),
    (ini() + "[nowhere:vars]\na=1\n", r"^{f}:9: \[nowhere:vars\]: group 'nowhere' is not defined"),
    (ini() + "[a:children]\nb\n[b:children]\na\n", r"^{f}:12: group b: group 'a' is its own ancestor"),
])
def test_bad_ini_is_one_line(keydir, text, expect):
    path = write(keydir, "bad.ini", text)
    with pytest.raises(ConfigError) as exc:
        lab_hosts(read_inventory(path))
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in msg
    assert re.search(expect.format(f=re.escape(str(path))), msg), msg


@pytest.mark.parametrize("text,expect", [
    ("cpo:\n  hosts:\n    c:\n   bad: [\n", r"^{f}:\d+: YAML: "),
    ("- a\n- b\n", r"^{f}:1: \(top level\): a YAML inventory is a mapping"),
    ("", r"^{f}: \(file\): empty inventory"),
    ("cpo:\n  hosts: {c: }\n  host: {}\n", r"^{f}:3: group cpo: unknown key 'host'"),
    ("cpo:\n  hosts: [c]\n", r"^{f}:2: group cpo.hosts: must be a mapping"),
    ("cpo:\n  hosts:\n    c: 5\n", r"^{f}:3: host c: variables must be a mapping"),
    ("cpo:\n  hosts: {c: }\ngateway:\n  hosts: {g: }\nevse:\n  hosts:\n    'e;rm -rf /': \n",
     r"^{f}:7: host 'e;rm -rf /': invalid host name"),
    ("cpo:\n  hosts: {c: }\ngateway:\n  hosts: {c: }\nevse:\n  hosts: {e: }\n",
     r"^{f}:2: host c: is in the groups cpo and gateway"),
])
def test_bad_yaml_is_one_line(keydir, text, expect):
    path = write(keydir, "bad.yml", text)
    with pytest.raises(ConfigError) as exc:
        lab_hosts(read_inventory(path))
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    assert re.search(expect.format(f=re.escape(str(path))), str(exc.value)), str(exc.value)


def test_format_is_found_by_name_or_content(keydir):
    """.yml/.yaml/.json are YAML; a file without suffix (Ansible's 'hosts') is YAML when it reads like YAML."""
    yaml_text = "cpo:\n  hosts: {c: }\ngateway:\n  hosts: {g: }\nevse:\n  hosts: {e: }\n"
    for name, text in [("hosts", yaml_text), ("inv.json", '{"cpo": {"hosts": {"c": {}}}}'), ("hosts2", INI_INV)]:
        inv = read_inventory(write(keydir, name, text))
        assert "cpo" in inv.groups and inv.members("cpo") in (["c"], ["csms"]), name


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    text = "evse:\n  vars:\n" + "".join(f"    {ln}\n" for ln in lines)
    with pytest.raises(ConfigError, match=r"bomb.yml:2: \(file\): expands to more than 1000000 values"):
        read_inventory(write(tmp_path, "bomb.yml", text))


def test_unreadable_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.yml: no such inventory file$"):
        read_inventory(tmp_path / "missing.yml")
    with pytest.raises(ConfigError, match="not an inventory file"):
        read_inventory("/dev/zero")
    with pytest.raises(ConfigError, match="not an inventory file"):
        read_inventory(tmp_path)


def test_key_file_is_only_read(keydir):
    """A key file path is taken as given (relative to where labkit runs, like ssh -i) and never written."""
    before = (keydir / "id_lab").stat()
    hosts = lab_hosts(read_inventory(write(keydir, "lab.yml", YAML_INV)))
    after = (keydir / "id_lab").stat()
    assert {h.key_file for h in hosts} == {str(keydir / "id_lab")}
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


# -- cross-check against Ansible itself --------------------------------------------------------------------

def _ansible_inventory() -> str | None:
    """``$LABKIT_ANSIBLE_INVENTORY``, else the venv ``install.sh --dev`` makes, else one on PATH."""
    own = Path(__file__).resolve().parents[2] / ".venv-ansible" / "bin" / "ansible-inventory"
    return os.environ.get("LABKIT_ANSIBLE_INVENTORY") or (str(own) if own.exists() else None) \
        or shutil.which("ansible-inventory")


def ansible_list(path: Path, scratch: Path) -> dict:
    """``ansible-inventory -i PATH --list``, with no user configuration."""
    (scratch / "ansible.cfg").write_text("[defaults]\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(scratch / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(scratch / "ansible-tmp"), "ANSIBLE_HOME": str(scratch / "ansible-home")}
    out = subprocess.run([_ansible_inventory(), "-i", str(path), "--list"], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    return json.loads(out)


CROSS = [
    ("lab.yml", YAML_INV),
    ("lab.ini", INI_INV),
    ("ranges.ini", "top\n[evse]\ne[a:c]-[01:02] ansible_port=2200\n[gateway:children]\nevse\n"
                   "[gateway:vars]\nv='x y'\n"),
    ("nested.yml", "all:\n  hosts: {lone: {v: 1}}\n  children:\n    a:\n      children:\n        b:\n"
                   "          hosts: {h1: {v: 2}, 'h[2:3]': }\n          vars: {w: b}\n      vars: {w: a, v: 9}\n"),
]


@pytest.mark.skipif(_ansible_inventory() is None,
                    reason="ansible-inventory not installed (set LABKIT_ANSIBLE_INVENTORY to its path)")
@pytest.mark.parametrize("name,text", CROSS)
def test_matches_ansible_inventory_list(keydir, name, text):
    path = write(keydir, name, text)
    theirs = ansible_list(path, keydir)
    ours = read_inventory(path)
    # Ansible lists the variables of hosts that have any
    assert {h: v for h in ours.host_vars if (v := ours.vars_of(h))} == theirs["_meta"]["hostvars"]
    groups = {g for g in theirs if g not in ("_meta",)}
    for g in groups:
        assert sorted(theirs[g].get("hosts", [])) == sorted(ours.groups[g].hosts), g
        assert sorted(theirs[g].get("children", [])) == sorted(ours.groups[g].children), g
    # every group Ansible lists we know, and every group we know with hosts or children Ansible lists
    assert {g for g, grp in ours.groups.items() if grp.hosts or grp.children} <= groups


def test_a_large_inventory_reads_fast(keydir):
    """100,000 hosts from one range (the most a pattern may give): read and mapped in seconds, not hours."""
    import time

    t0 = time.monotonic()
    inv = read_inventory(write(keydir, "big.ini", "[cpo]\nc\n[gateway]\ng\n[evse]\ne[1:100000]\n[evse:vars]\n"
                                                   "ansible_host=10.0.0.1\n[all:vars]\nlabkit_known_hosts=known_hosts\n"))
    assert len(inv.members("evse")) == 100_000
    with pytest.raises(ConfigError, match=r"big.ini: group evse: has 100000 hosts \(at most 1000\)$"):
        lab_hosts(inv)
    assert time.monotonic() - t0 < 20
