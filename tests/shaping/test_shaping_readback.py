"""The read-back checked value by value, against real ``tc`` output captured on a kernel with sch_netem.

tests/shaping/data/tc-captures/iproute2-<version>.json hold what ``tc -j qdisc show`` and ``tc [-d] -j class
show`` printed after labkit's planned commands (and deliberately wrong ones) ran on Debian's 6.1 kernel with
iproute2 5.15.0 (Ubuntu 22.04's version), 6.1.0 (Debian 12's; Ubuntu 24.04's) and 6.15.0 (class output in
JSON, nanosecond delays). How they were made: tests/shaping/data/README.md. Each right case must verify clean
with both class forms; each wrong one must be refused with exactly the message in WRONG below.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from labkit import shaping, tc
from labkit.inventory import HostConn, Inventory
from labkit.profiles import Profile

DATA = Path(__file__).resolve().parent / "data" / "tc-captures"
VERSIONS = ("5.15.0", "6.1.0", "6.15.0")
DIRS = ("uplink", "downlink")


@cache
def capture(version: str) -> dict:
    return json.loads((DATA / f"iproute2-{version}.json").read_text())


def cases(kind: str) -> list:
    out = []
    for v in VERSIONS:
        for name, c in capture(v)["cases"].items():
            if (c["mutation"] is None) == (kind == "right"):
                out.append(pytest.param(v, name, id=f"{v}-{name}"))
    return out


def plan_of(case: dict) -> tc.Plan:
    return tc.plan(Profile.from_dict(case["profile"]), uplink_iface="eth1", downlink_iface="eth2",
                   engine=case["engine"])


def direction_problems(case: dict, plan: tc.Plan, class_key: str = "class_d") -> list[str]:
    problems = []
    for d in DIRS:
        read = case[d]
        problems += shaping.verify_direction(d, read["iface"], plan.layouts[d], shaping._json_or_text(read["qdisc"]),
                                             shaping._json_or_text(read[class_key]))
    return problems


#: what each deliberately wrong case must be refused with (the same under every version unless keyed by one)
WRONG: dict[str, list[str] | dict[str, list[str]]] = {
    "wrong-delay": ["uplink (eth1) netem delay: applied 200 ms, planned 300 ms"],
    # 2 us off: beyond the tick and the whole-us cut (before 6.9 tc ran 24998 us as 24997.952 us, read 24997)
    "wrong-delay-2us": {"5.15.0": ["uplink (eth1) netem delay: applied 24.997 ms, planned 25 ms"],
                        "6.1.0": ["uplink (eth1) netem delay: applied 24.997 ms, planned 25 ms"],
                        "6.15.0": ["uplink (eth1) netem delay: applied 24.998 ms, planned 25 ms"]},
    "wrong-jitter": ["uplink (eth1) netem jitter: applied 7 ms, planned 5 ms"],
    "no-jitter": ["downlink (eth2) netem jitter: applied 0 ms, planned 5 ms"],
    "wrong-loss": ["downlink (eth2) netem loss: applied 2 %, planned 1 %"],
    "no-loss": ["uplink (eth1) netem loss: applied 0 %, planned 1 %"],
    "wrong-corrupt": ["uplink (eth1) netem corrupt: applied 5 %, planned 0.5 %"],
    "wrong-duplicate": ["downlink (eth2) netem duplicate: applied 1 %, planned 2 %"],
    "wrong-limit": ["downlink (eth2) netem limit: applied 1000 packets, planned 3457 packets"],
    "default-limit": ["uplink (eth1) netem limit: applied 1000 packets, planned 1254 packets"],
    "no-order-rate": ["uplink (eth1) netem rate: applied none, planned 100 Gbit/s"],
    "wrong-htb-rate": ["uplink (eth1) htb rate: applied 800 kbit/s, planned 8 Mbit/s"],
    "wrong-ceil": ["downlink (eth2) htb ceil: applied 40 Mbit/s, planned 20 Mbit/s"],
    "wrong-burst": ["uplink (eth1) htb burst: applied 1600 bytes, planned 5000 bytes"],
    "wrong-cburst": ["uplink (eth1) htb cburst: applied 20000 bytes, planned 5000 bytes"],
    "wrong-quantum": ["uplink (eth1) htb quantum: applied 3028 bytes, planned 1514 bytes"],
    "wrong-htb-default": ["uplink (eth1) htb default class: applied 20, planned 10"],
    "missing-leaf": ["uplink (eth1) leaf qdisc of 1:10: applied none, planned netem 10:"],
    "pfifo-for-netem": ["uplink (eth1) leaf qdisc of 1:10: applied pfifo 10:, planned netem 10:"],
    "missing-qdisc": ["uplink (eth1) root qdisc: applied none, planned htb 1:"],
    "netem-without-htb": ["uplink (eth1) root qdisc: applied netem 10:, planned htb 1:"],
    "extra-on-unshaped": ["downlink (eth2) root qdisc: applied netem 10:, planned the interface's default "
                          "(unshaped)"],
    "root-netem-wrong-delay": ["uplink (eth1) netem delay: applied 101 ms, planned 100 ms"],
    "wrong-pfifo-limit": ["uplink (eth1) pfifo limit: applied 1000 packets, planned 40 packets"],
    "netem-for-pfifo": ["uplink (eth1) leaf qdisc of 1:10: applied netem 10:, planned pfifo 10:"],
}


def test_the_captures_are_what_the_readme_says():
    for v in VERSIONS:
        data = capture(v)
        assert data["tc_version"].startswith(f"tc utility, iproute2-{v}"), data["tc_version"]
        assert "6.1.0-50-amd64" in data["kernel"]
        # the kernel's packet-scheduler clock: 1000 ns per us, 64 ns per tick (PSCHED_TICK_US)
        assert data["psched"].split()[:2] == ["000003e8", "00000040"]
        assert list(data["cases"]) == list(capture(VERSIONS[0])["cases"])
    wrong = {n for n, c in capture(VERSIONS[0])["cases"].items() if c["mutation"]}
    assert wrong == set(WRONG)
    shipped = {n for n, c in capture(VERSIONS[0])["cases"].items() if c["mutation"] is None and "@" not in n}
    assert {"vsat", "slow-vsat", "gprs", "4g", "leo", "cap-odd", "cap-bounds", "cap-burst"} <= shipped


@pytest.mark.parametrize("version,name", cases("right"))
def test_planned_commands_are_the_captured_ones(version, name):
    case = capture(version)["cases"][name]
    ran = {d: [cmd for dd, _, cmd in case["commands"] if dd == d] for d in DIRS}
    assert plan_of(case).tc == ran, (f"tc.plan no longer gives the captured commands for {name}: capture again "
                                     f"(tests/shaping/data/README.md)")
    assert all(rc == 0 for _, rc, _ in case["commands"]) and case["stderr"] == ""


@pytest.mark.parametrize("version,name", cases("right"))
def test_right_values_pass(version, name):
    case = capture(version)["cases"][name]
    plan = plan_of(case)
    assert direction_problems(case, plan, "class_d") == []
    assert direction_problems(case, plan, "class") == []  # without -d: no quantum, the rest the same
    if case["engine"] == "netem":
        state = {"directions": {d: {"qdisc": shaping._json_or_text(case[d]["qdisc"]),
                                    "class": shaping._json_or_text(case[d]["class_d"])} for d in DIRS},
                 "rules": [], "forward_rules": [], "engine_process": {"status": None}}
        assert shaping.verify(plan, Profile.from_dict(case["profile"]), state) == []


@pytest.mark.parametrize("version,name", cases("wrong"))
def test_wrong_values_are_refused_with_the_right_message(version, name):
    case = capture(version)["cases"][name]
    want = WRONG[name]
    want = want[version] if isinstance(want, dict) else want
    assert all(rc == 0 for _, rc, _ in case["commands"]), case["commands"]
    assert direction_problems(case, plan_of(case)) == want


def test_what_differs_between_iproute2_versions():
    """The representations the tolerances in labkit.shaping stand on, as each version printed them."""
    old, deb, new = (capture(v)["cases"] for v in VERSIONS)
    # 5.15 and 6.1 print the same, byte for byte, for every case
    for name in old:
        for d in DIRS:
            for key in ("qdisc", "class", "class_d", "qdisc_text"):
                assert old[name][d][key] == deb[name][d][key], (name, d, key)
    # before 6.2, `tc -j class show` ignores -j: text, rates in units of the printed prefix, bursts after a
    # round trip through whole microseconds (3028 B at 26.8 kbit/s reads 3027 B) and 4Kb / 1Mb roundings
    assert deb["cap-odd"]["uplink"]["class"].startswith("class htb 1:10 root leaf 10: prio 0 rate 26800bit "
                                                        "ceil 26800bit burst 3027b cburst 3027b")
    assert "rate 1234Kbit" in deb["cap-odd"]["downlink"]["class"]  # 1234567 bit/s: 154320 byte/s, cut to 1234K
    assert "burst 4Kb" in deb["cap-burst"]["uplink"]["class"]  # 4100 bytes
    assert "burst 1Mb" in deb["cap-burst"]["downlink"]["class"]  # 1048625 bytes
    # 6.15 prints JSON: rates in byte/s (26801 bit/s -> 3350 byte/s), exact bursts
    cls = json.loads(new["cap-odd"]["uplink"]["class"])[0]
    assert (cls["rate"], cls["ceil"], cls["burst"], cls["cburst"], cls["leaf"]) == (3350, 3350, 3028, 3028, "0x10")
    assert json.loads(new["cap-burst"]["downlink"]["class"])[0]["burst"] == 1048625
    # delay: before 6.9 tc runs 12345 us as 64 ns ticks and prints whole us (12344); 6.15 prints 12345
    delay = {v: json.loads(capture(v)["cases"]["cap-odd"]["uplink"]["qdisc"])[1]["options"]["delay"] for v in VERSIONS}
    assert [(delay[v]["delay"], delay[v]["jitter"]) for v in VERSIONS] == [
        (0.012344, 0.000986), (0.012344, 0.000986), (0.012345, 0.000987)]
    # 1 us: one 64 ns tick short of a microsecond, so 0 before 6.9
    assert [json.loads(capture(v)["cases"]["cap-bounds"]["downlink"]["qdisc"])[1]["options"]["delay"]["delay"]
            for v in VERSIONS] == [0, 0, 1e-06]
    # the same in every version: %g seconds (1.234567 s -> 1.23457), loss as a fraction, rates in byte/s
    opts = json.loads(deb["cap-odd"]["downlink"]["qdisc"])[1]["options"]
    assert opts["delay"]["delay"] == 1.23457 and opts["loss-random"]["loss"] == 0.333333
    assert json.loads(deb["4g"]["uplink"]["qdisc"])[1]["options"]["rate"]["rate"] == 12_500_000_000
    assert json.loads(deb["cap-bounds"]["uplink"]["qdisc"])[1]["options"]["limit"] == 2_476_882_701


@pytest.mark.parametrize("text,low,high", [
    ("26800bit", 26800, 26800), ("1234Kbit", 1_234_000, 1_234_999), ("100Gbit", 100e9, 100e9 + 999_999_999),
    ("8Mbit", 8_000_000, 8_999_999),
])
def test_text_rates_are_ranges(text, low, high):
    assert shaping._text_rate(text)[:2] == (low, high)


@pytest.mark.parametrize("text,low,high", [
    ("3027b", 3027, 3027), ("3027b/1", 3027, 3027), ("4Kb", 4081, 4111), ("1Mb", 1048576 - 1023, 1048576 + 1023),
])
def test_text_sizes_are_ranges(text, low, high):
    assert shaping._text_size(text)[:2] == (low, high)


def _state_with_delay(case: dict, delay_s: float) -> list[str]:
    """The captured vsat uplink with its netem delay replaced by ``delay_s`` (seconds, as JSON prints it)."""
    qd = json.loads(case["uplink"]["qdisc"])
    qd[1]["options"]["delay"]["delay"] = delay_s
    lay = plan_of(case).layouts["uplink"]
    return shaping.verify_direction("uplink", "eth1", lay, qd, shaping._json_or_text(case["uplink"]["class_d"]))


def test_delay_tolerance_is_the_tick_and_the_print_precision_only():
    case = capture("6.1.0")["cases"]["vsat"]  # 300 ms planned
    assert _state_with_delay(case, 0.3) == []
    assert _state_with_delay(case, 0.299999) == []  # tc < 6.9: 64 ns ticks, whole microseconds down
    assert _state_with_delay(case, 0.299998) == ["uplink (eth1) netem delay: applied 299.998 ms, planned 300 ms"]
    assert _state_with_delay(case, 0.300001) == ["uplink (eth1) netem delay: applied 300.001 ms, planned 300 ms"]


class ReplayRemote:
    """A gateway that answers with a captured read-back once labkit's commands ran, and with an empty one after
    ``tc qdisc del``: what a kernel does when something else than the plan got applied."""

    def __init__(self, case: dict):
        self.case = case
        self.commands: list[str] = []
        self.applied = False

    def run(self, host, command, *, sudo=False, check=True, timeout=None):
        from shaping_topo import RunResult

        self.commands.append(command)
        if "lkprobe0" in command:
            return RunResult("", "", 0, command)  # the netem probe: this kernel has netem
        if command.startswith("tc qdisc add"):
            self.applied = True
        elif "tc qdisc del" in command:
            self.applied = False
        if command == "tc -V":
            return RunResult("tc utility, iproute2-6.1.0\n", "", 0, command)
        for d in DIRS:
            iface = self.case[d]["iface"]
            if command == f"tc -j qdisc show dev {iface}":
                return RunResult(self.case[d]["qdisc"] if self.applied else "[]\n", "", 0, command)
            if command == f"tc -d -j class show dev {iface}":
                return RunResult(self.case[d]["class_d"] if self.applied else "", "", 0, command)
        return RunResult("", "", 1 if command.startswith("cat ") else 0, command)

    def stop(self, host, name, *, sudo=False, timeout=5.0):
        return False


def _inventory() -> Inventory:
    gw = HostConn(name="gw", role="gateway", ssh_host="gw", ifaces={"cpo": "eth1", "evse": "eth2"})
    return Inventory(lab="t", backend="test", hosts=[gw])


def test_apply_refuses_a_wrong_read_back_and_clears_the_link(tmp_path):
    case = capture("6.1.0")["cases"]["wrong-delay"]  # vsat, with the uplink's netem at 200 ms
    remote = ReplayRemote(case)
    record = tmp_path / "shaping.json"
    record.write_text("{}")  # the profile before
    with pytest.raises(shaping.ShapingError) as exc:
        shaping.apply(remote, _inventory(), Profile.from_dict(case["profile"]), engine="netem", record=record)
    assert str(exc.value) == ("profile 'vsat' on gw does not read back as planned, the link was cleared: "
                              "uplink (eth1) netem delay: applied 200 ms, planned 300 ms")
    last_add = max(i for i, c in enumerate(remote.commands) if c.startswith("tc qdisc add"))
    assert any("tc qdisc del dev eth1 root" in c for c in remote.commands[last_add:])
    assert not remote.applied and not record.exists()


def test_apply_and_reverify_accept_the_right_read_back(tmp_path):
    case = capture("6.1.0")["cases"]["vsat"]
    remote = ReplayRemote(case)
    record = tmp_path / "shaping.json"
    state = shaping.apply(remote, _inventory(), Profile.from_dict(case["profile"]), engine="netem", record=record)
    assert state["verified"] and state["problems"] == [] and state["tc_version"].startswith("tc utility")
    assert json.loads(record.read_text())["profile"] == "vsat"
    n = len(remote.commands)
    again = shaping.reverify(remote, _inventory(), Profile.from_dict(case["profile"]))
    assert again["verified"] and again["engine"] == "netem"
    assert not any(c.startswith("tc qdisc") or "iptables -w -D" in c for c in remote.commands[n:])  # read only
    # the same read-back against another profile is refused, and nothing is changed
    other = Profile.from_dict(capture("6.1.0")["cases"]["slow-vsat"]["profile"])
    with pytest.raises(shaping.ShapingError, match=r"^profile 'slow-vsat' on gw: the link no longer holds what the "
                                                    r"profile plans \(nothing was changed\): uplink \(eth1\) htb rate: "
                                                    r"applied 3 Mbit/s, planned 40 Mbit/s; "):
        shaping.reverify(remote, _inventory(), other)
    assert remote.applied


def test_labkit_shape_exits_1_on_a_wrong_read_back(monkeypatch, capsys, tmp_path):
    from labkit.cli import main
    from labkit.cli import shape as cli_shape

    case = capture("6.15.0")["cases"]["wrong-loss"]  # cap-loss: downlink loss 2 % instead of 1 %
    profiles = tmp_path / "p.yaml"
    profiles.write_text((Path(__file__).parent / "data" / "capture-profiles.yaml").read_text())
    labdir = type("L", (), {"path": tmp_path, "lock": lambda self: __import__("contextlib").nullcontext()})()
    monkeypatch.setattr(cli_shape, "_lab", lambda lab: (labdir, _inventory()))
    remote = ReplayRemote(case)
    remote.close = lambda: None
    monkeypatch.setattr(cli_shape, "_remote", lambda inv: remote)
    assert main(["shape", "cap-loss", "--engine", "netem", "--profiles", str(profiles)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["labkit: error: profile 'cap-loss' on gw does not read back as planned, the link was cleared: "
                   "downlink (eth2) netem loss: applied 2 %, planned 1 %"]
    assert not (tmp_path / "shaping.json").exists()
    # --verify reads only: the wrong link is refused and left as it is
    remote.applied = True
    n = len(remote.commands)
    assert main(["shape", "cap-loss", "--verify", "--profiles", str(profiles)]) == 1
    assert "downlink (eth2) netem loss: applied 2 %, planned 1 %" in capsys.readouterr().err
    assert remote.applied and not any(c.startswith("tc qdisc") for c in remote.commands[n:])
