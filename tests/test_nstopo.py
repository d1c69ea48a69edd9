"""labkit.backends.nstopo, dry: the ``ip -batch`` input that places a 1-EVSE lab, pinned line by line.

These lists are what the netns backend runs (tests/test_netns.py brings real labs up with them) and what the
shaping tests' and the benchmarks' paths run without the management network (tests/shaping/shaping_topo.py,
benchmarks/sim_netns.py). A change here changes how a lab looks from outside: names, addresses, routes.
"""

from __future__ import annotations

import ipaddress

from labkit.backends import netns, nstopo
from labkit.model import LabSpec, build_lab

LAB = build_lab(LabSpec(name="t1", evse=1))
MGMT = ipaddress.IPv4Network("10.250.4.0/22")


def lab_topology() -> nstopo.Topology:
    return nstopo.Topology.for_lab(LAB, nstopo.Mgmt.for_lab(LAB, MGMT, nstopo.root_link("t1")))


def test_a_labs_namespaces_and_names():
    t = lab_topology()
    assert t.switch == "lk-t1-sw" and t.mgmt.root_link == "lkt1"
    assert t.all_namespaces == ["lk-t1-sw", "lk-t1-cpo", "lk-t1-gw", "lk-t1-evse1"]
    assert dict(t.mgmt.addresses) == {"cpo": MGMT[2], "gw": MGMT[3], "evse1": MGMT[4]}
    assert [t.host_ifaces(h) for h in LAB.hosts] == [{"cpo": "eth1"}, {"cpo": "eth1", "evse": "eth2"},
                                                      {"evse": "eth1"}]
    # the backend's names are these
    assert (netns.ns_name, netns.switch_ns, netns.root_link) == (nstopo.ns_name, nstopo.switch_ns, nstopo.root_link)
    assert nstopo.root_link("abcdefghijkl") == "lkabcdefghijkl"[:15]


def test_the_plan_of_a_1_evse_lab():
    batches = nstopo.plan(lab_topology())
    assert [(b.ns, b.args) for b in batches] == [
        (None, ["-batch", "-"]),
        (None, ["-batch", "-"]),
        ("lk-t1-sw", ["-n", "lk-t1-sw", "-batch", "-"]),
        ("lk-t1-cpo", ["-n", "lk-t1-cpo", "-batch", "-"]),
        ("lk-t1-gw", ["-n", "lk-t1-gw", "-batch", "-"]),
        ("lk-t1-evse1", ["-n", "lk-t1-evse1", "-batch", "-"]),
    ]
    create, veths, switch, cpo, gw, evse1 = (list(b.commands) for b in batches)
    assert create == [
        "netns add lk-t1-sw",
        "netns add lk-t1-cpo",
        "netns add lk-t1-gw",
        "netns add lk-t1-evse1",
        "link add name lkt1 type veth peer name uplink netns lk-t1-sw",
        "addr add 10.250.4.1/22 dev lkt1",
    ]
    assert veths == [
        "link add name m-cpo netns lk-t1-sw type veth peer name mgmt0 netns lk-t1-cpo",
        "link add name c-cpo netns lk-t1-sw type veth peer name eth1 netns lk-t1-cpo",
        "link add name m-gw netns lk-t1-sw type veth peer name mgmt0 netns lk-t1-gw",
        "link add name c-gw netns lk-t1-sw type veth peer name eth1 netns lk-t1-gw",
        "link add name e-gw netns lk-t1-sw type veth peer name eth2 netns lk-t1-gw",
        "link add name m-evse1 netns lk-t1-sw type veth peer name mgmt0 netns lk-t1-evse1",
        "link add name e-evse1 netns lk-t1-sw type veth peer name eth1 netns lk-t1-evse1",
        "link set lkt1 up",
    ]
    assert switch == [
        "link add cpo type bridge forward_delay 0", "link set cpo up",
        "link add evse type bridge forward_delay 0", "link set evse up",
        "link add mgmt type bridge forward_delay 0", "link set mgmt up",
        "link set dev uplink master mgmt", "link set dev uplink up",
        "link set lo up",
        "link set m-cpo master mgmt", "link set m-cpo up",
        "link set c-cpo master cpo", "link set c-cpo up",
        "link set m-gw master mgmt", "link set m-gw up",
        "link set c-gw master cpo", "link set c-gw up",
        "link set e-gw master evse", "link set e-gw up",
        "link set m-evse1 master mgmt", "link set m-evse1 up",
        "link set e-evse1 master evse", "link set e-evse1 up",
    ]
    assert cpo == [
        "link set lo up",
        "addr add 10.250.4.2/22 dev mgmt0", "link set mgmt0 up",
        "addr add 192.168.10.10/24 dev eth1", "link set eth1 up",
        "route add 192.168.20.0/24 via 192.168.10.1 dev eth1",
    ]
    assert gw == [
        "link set lo up",
        "addr add 10.250.4.3/22 dev mgmt0", "link set mgmt0 up",
        "addr add 192.168.10.1/24 dev eth1", "link set eth1 up",
        "addr add 192.168.20.1/24 dev eth2", "link set eth2 up",
    ]
    assert evse1 == [
        "link set lo up",
        "addr add 10.250.4.4/22 dev mgmt0", "link set mgmt0 up",
        "addr add 192.168.20.11/24 dev eth1", "link set eth1 up",
        "route add 192.168.10.0/24 via 192.168.20.1 dev eth1",
    ]
    assert batches[3].input == "\n".join(cpo) + "\n"


def test_without_management_and_with_names_of_its_own():
    """The shaping tests' and the benchmarks' path: no mgmt bridge, root link or mgmt0; their own names."""
    t = nstopo.Topology.prefixed(LAB, "smq", hosts={"evse1": "evse"},
                                 ifaces={"cpo": {"cpo": "smcq0"}, "gw": {"cpo": "smcq1", "evse": "smeq1"},
                                         "evse1": {"evse": "smeq0"}})
    create, veths, switch, cpo, gw, evse1 = (list(b.commands) for b in nstopo.plan(t))
    assert create == ["netns add smq-sw", "netns add smq-cpo", "netns add smq-gw", "netns add smq-evse"]
    assert veths == [
        "link add name c-cpo netns smq-sw type veth peer name smcq0 netns smq-cpo",
        "link add name c-gw netns smq-sw type veth peer name smcq1 netns smq-gw",
        "link add name e-gw netns smq-sw type veth peer name smeq1 netns smq-gw",
        "link add name e-evse1 netns smq-sw type veth peer name smeq0 netns smq-evse",
    ]
    assert switch == [
        "link add cpo type bridge forward_delay 0", "link set cpo up",
        "link add evse type bridge forward_delay 0", "link set evse up",
        "link set lo up",
        "link set c-cpo master cpo", "link set c-cpo up",
        "link set c-gw master cpo", "link set c-gw up",
        "link set e-gw master evse", "link set e-gw up",
        "link set e-evse1 master evse", "link set e-evse1 up",
    ]
    assert cpo == ["link set lo up", "addr add 192.168.10.10/24 dev smcq0", "link set smcq0 up",
                   "route add 192.168.20.0/24 via 192.168.10.1 dev smcq0"]
    assert gw == ["link set lo up", "addr add 192.168.10.1/24 dev smcq1", "link set smcq1 up",
                  "addr add 192.168.20.1/24 dev smeq1", "link set smeq1 up"]
    assert evse1 == ["link set lo up", "addr add 192.168.20.11/24 dev smeq0", "link set smeq0 up",
                     "route add 192.168.10.0/24 via 192.168.20.1 dev smeq0"]


def test_sysctls():
    assert nstopo.host_sysctls(LAB.gateway) == {"net/ipv6/conf/all/disable_ipv6": "1",
                                                "net/ipv6/conf/default/disable_ipv6": "1",
                                                "net/ipv4/ip_forward": "1"}
    assert nstopo.host_sysctls(LAB.cpo)["net/ipv4/ip_forward"] == "0"
    assert nstopo.host_sysctls(LAB.evses[0])["net/ipv4/ip_forward"] == "0"
    assert nstopo.sysctl_script(nstopo.SWITCH_SYSCTLS, nstopo.SWITCH_OPTIONAL) == (
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; "
        "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true; "
        "echo 0 > /proc/sys/net/bridge/bridge-nf-call-ip6tables 2>/dev/null || true")


def test_run_batches_hands_each_batch_to_ip_in_order():
    seen = []
    batches = nstopo.plan(lab_topology())
    nstopo.run_batches(batches, ip=lambda args, input: seen.append((args, input)))
    assert seen == [(b.args, b.input) for b in batches]
