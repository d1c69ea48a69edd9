"""The lab model: defaults, address plan, and validation of flags and lab files (no root needed)."""

import ipaddress

import pytest

from labkit.errors import ConfigError
from labkit.model import build_lab, load_spec


def test_defaults_follow_the_dissertation():
    lab = build_lab(load_spec())
    assert lab.name == "lab" and lab.spec.backend == "auto" and len(lab.evses) == 1
    assert lab.spec.networks.cpo == ipaddress.IPv4Network("192.168.10.0/24")
    assert lab.spec.networks.evse == ipaddress.IPv4Network("192.168.20.0/24")
    assert str(lab.cpo.address("cpo")) == "192.168.10.10"
    assert {k: str(v) for k, v in lab.gateway.addresses.items()} == {"cpo": "192.168.10.1", "evse": "192.168.20.1"}
    assert str(lab.evses[0].address("evse")) == "192.168.20.11"


def test_addresses_are_unique_for_many_evse():
    lab = build_lab(load_spec(overrides={"evse": 200, "networks.evse": "10.20.0.0/16"}))
    addrs = [str(a) for h in lab.hosts for a in h.addresses.values()]
    assert len(addrs) == len(set(addrs)) == 1 + 2 + 200
    assert [h.name for h in lab.evses][:3] == ["evse1", "evse2", "evse3"]


@pytest.mark.parametrize("overrides, expected", [
    ({"evse": 0}, "--evse: must be from 1 to 1000 (got 0)"),
    ({"evse": -3}, "--evse: must be from 1 to 1000 (got -3)"),
    ({"evse": 10**9}, "--evse: must be from 1 to 1000"),
    ({"evse": "many"}, "--evse: must be a whole number from 1 to 1000 (got 'many')"),
    ({"evse": 300}, "300 EVSE hosts do not fit networks.evse 192.168.20.0/24 (at most 244"),
    ({"backend": "lxc"}, "--backend: Input should be 'auto', 'netns', 'vagrant', 'docker' or 'hosts'"),
    ({"name": "My_Lab"}, "--name: invalid lab name 'My_Lab'"),
    ({"name": "averyveryverylongname"}, "--name: invalid lab name"),
    ({"networks.cpo": "192.168.20.0/24"}, "overlaps networks.evse"),
    ({"networks.evse": "192.168.20.1/24"}, "has host bits set"),
    ({"networks.evse": "not-a-net"}, "is not an IPv4 network"),
    ({"networks.mgmt": "192.168.10.128/25"}, "overlaps"),
    ({"networks.cpo": "10.0.0.0/30"}, "too small"),
])
def test_bad_flags_are_one_line_errors(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_spec(overrides=overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_lab_file_and_flag_override(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: cls\nevse: 4\nnetworks:\n  cpo: 10.1.0.0/24\n")
    spec = load_spec(f, {"evse": 2})
    assert spec.name == "cls" and spec.evse == 2 and str(spec.networks.cpo) == "10.1.0.0/24"


@pytest.mark.parametrize("text, expected", [
    ("evse: [1, 2\n", "lab.yaml:2: YAML:"),
    ("name: x\nevse: 3\nbogus: 1\n",
     "lab.yaml:3: bogus: unknown field (allowed: name, backend, evse, inventory, routes, accept_new_host_keys, "
     "networks, vagrant, docker)"),
    ("name: x\nnetworks:\n  cpo: 192.168.20.0/24\n", "lab.yaml:3: networks.cpo: networks.cpo 192.168.20.0/24 overlaps"),
    ("name: x\nnetworks:\n  cpo: 10.0.0.0/24\n  evse: 10.0.0.0/25\n",
     "lab.yaml:4: networks.evse: networks.cpo 10.0.0.0/24 overlaps networks.evse 10.0.0.0/25"),
    ("name: x\n\nevse: 900\n", "lab.yaml:3: evse: 900 EVSE hosts do not fit networks.evse"),
    ("", "lab.yaml:1: (top level): the lab file is empty"),
    ("# only a comment\n", "lab.yaml:1: (top level): the lab file is empty"),
    ("evse: 0\n", "lab.yaml:1: evse: must be from 1 to 1000 (got 0)"),
    ("- a\n- b\n", "lab.yaml:1: (top level): a lab file must be a mapping"),
    ("vagrant:\n  memory:\n    cpo: 64\n", "lab.yaml:2: vagrant.memory: Value error"),
])
def test_lab_file_errors_name_file_line_and_field(tmp_path, text, expected):
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_spec(f)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path)), msg
    assert expected.split(":", 1)[1].split("Value error")[0].strip() in msg, msg
    assert "\n" not in msg


def test_missing_lab_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_a_lab_file_that_is_not_utf8_is_one_line(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_bytes(b"name: x\nevse: 2\n# caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_spec(f)
    assert str(err.value) == f"{f}:3: (file): not UTF-8 text (byte 0xe9 at offset 21)"
