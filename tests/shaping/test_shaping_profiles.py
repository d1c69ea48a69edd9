"""Profiles: the shipped file, the expansion of 'both', and errors that name file, line and field."""

import pytest
from shaping_topo import profiles_from

from labkit.errors import ConfigError
from labkit.profiles import load_profiles

REALISTIC = ["none", "gprs", "edge", "3g", "4g", "lte-m", "nb-iot", "5g", "vsat", "leo", "dsl", "cable", "wifi"]
SLOW = ["slow-reference", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"]


def test_shipped_file_has_both_families():
    ps = load_profiles()
    for name in REALISTIC:
        assert ps.get(name).family == "realistic"
        assert ps.get(name).sources, name
    for name in SLOW:
        assert ps.get(name).family == "slow"


def test_slow_profiles_reproduce_slow_sh():
    ps = load_profiles()
    amps = ps.get("slow-amps")
    assert amps.uplink.rate_bps == 112_000  # tc "14kbps" = 14 kilobytes/s
    assert amps.uplink.delay_ms == 250
    assert not amps.downlink.shaped  # EVSE -> CPO only
    assert amps.added_rtt_ms == 250
    assert ps.get("slow-vsat").uplink.rate_bps == 40_000_000
    assert ps.get("slow-4g").uplink.rate_bps == 80_000_000
    assert ps.get("slow-3g").uplink.rate_bps == 8_000_000
    assert ps.get("slow-gprs").uplink.rate_bps == 400_000
    assert not ps.get("slow-reference").shaped
    for name in SLOW:
        p = ps.get(name)
        assert p.uplink.loss_pct == 0 and not p.downlink.shaped


def test_realistic_profiles_are_asymmetric_where_the_technology_is():
    ps = load_profiles()
    for name in ("gprs", "edge", "3g", "4g", "5g", "vsat", "leo", "dsl", "cable"):
        p = ps.get(name)
        assert p.downlink.rate_bps > p.uplink.rate_bps, name
    assert ps.get("vsat").added_rtt_ms >= 477  # physics of a geostationary hop, both ways


def test_aliases_and_unknown_names():
    ps = load_profiles()
    assert ps.get("lte").name == "4g"
    assert ps.get("geo").name == "vsat"
    with pytest.raises(ConfigError, match=r"profile: unknown profile 'Vsat' \(did you mean 'vsat'\?\)") as exc:
        ps.get("Vsat")
    assert exc.value.exit_code == 2
    assert "profiles.yaml" in str(exc.value)


def test_both_expands_to_identical_directions():
    ps = profiles_from("""
        profiles:
          sym:
            description: symmetric
            both: {rate: "1 Mbit/s", delay: "10 ms", loss: "1 %"}
    """)
    p = ps.get("sym")
    assert p.symmetric
    assert p.uplink == p.downlink
    assert p.uplink.rate_bps == 1_000_000 and p.uplink.loss_pct == 1.0
    assert p.added_rtt_ms == 20


def test_default_queue_is_one_bdp():
    ps = load_profiles()
    v = ps.get("slow-vsat").uplink
    assert v.queue_pkts == 1652  # 40 Mbit/s x 500 ms / 1514-byte frames
    assert ps.get("3g").uplink.queue_pkts == 32  # the floor (1 Mbit/s: 2 s would be 166)
    # slow links: 2 s of frames, at least 8, instead of 32 packets (32 would be 14 s at 26.8 kbit/s)
    assert ps.get("slow-amps").uplink.queue_pkts == 19  # 112 kbit/s x 2 s / 1514-byte frames
    assert ps.get("gprs").uplink.queue_pkts == 8
    assert ps.get("gprs").downlink.queue_pkts == 9


@pytest.mark.parametrize("body,line,field,message", [
    ('    both: {delay: "-5 ms"}\n', 4, "profiles.p.both.delay", "must not be negative"),
    ('    both: {loss: "150 %"}\n', 4, "profiles.p.both.loss", "from 0 to 100"),
    ('    both: {rate: "0 kbit/s"}\n', 4, "profiles.p.both.rate", "above zero"),
    ('    both: {rate: "14kbps"}\n', 4, "profiles.p.both.rate", "ambiguous"),
    ('    both: {rate: "14 furlongs/s"}\n', 4, "profiles.p.both.rate", "unknown rate unit"),
    ('    both: {delay: "20 ms", jitter: "30 ms"}\n', 4, "profiles.p.both", "exceeds delay"),
    ('    both: {delay: "20 ms", jitter: "2 ms", distribution: pareto}\n', 4, "profiles.p.both.distribution",
     "allowed: uniform, normal"),
    ('    both: {speed: "1 Mbit/s"}\n', 4, "profiles.p.both.speed", "unknown field"),
    ('    uplink: {rate: "1 Mbit/s"}\n', 2, "profiles.p", "'downlink' is missing"),
])
def test_errors_name_file_line_and_field(body, line, field, message):
    text = "profiles:\n  p:\n    description: x\n" + body
    with pytest.raises(ConfigError) as exc:
        profiles_from(text, "mine.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"mine.yaml:{line}: {field}: "), msg
    assert message in msg
    assert exc.value.exit_code == 2


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(ConfigError, match=r"^bad.yaml:3: YAML: "):
        profiles_from("profiles:\n  p:\n    description: a: b\n    both: none\n", "bad.yaml")
