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
    ('    both: {delay: "20 ms", jitter: "30 ms"}\n', 4, "profiles.p.both.jitter", "exceeds delay"),
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


RATE_RANGE = "(allowed: 1 kbit/s to 100 Gbit/s)"
DELAY_RANGE = "(allowed: 0 to 60 s, in whole microseconds)"


@pytest.mark.parametrize("body,field,message", [
    # physical bounds: what tc and the engine represent and what makes sense (labkit.profiles, RATE_MIN_BPS ...)
    ('rate: "1e30 bit/s"', "rate", f"'1e30 bit/s' is 1e+30 bit/s {RATE_RANGE}"),
    ('rate: "100.001 Gbit/s"', "rate", f"'100.001 Gbit/s' is 1.00001e+11 bit/s {RATE_RANGE}"),
    ('rate: "999 bit/s"', "rate", f"'999 bit/s' is 999 bit/s {RATE_RANGE}"),
    ('rate: "1e400 bit/s"', "rate", "not a finite rate"),
    ('delay: "1e12 ms"', "delay", f"'1e12 ms' is 1e+12 ms {DELAY_RANGE}"),
    ('delay: "60.000001 s"', "delay", f"'60.000001 s' is 60000.001 ms {DELAY_RANGE}"),
    ('delay: "12.3456 ms"', "delay", "'12.3456 ms' is not a whole number of microseconds, the unit tc takes "
                                     f"{DELAY_RANGE}"),
    ('delay: "1 s", jitter: "0.5 us"', "jitter", "not a whole number of microseconds"),
    ('delay: "10 ms", jitter: "61 s"', "jitter", DELAY_RANGE),
    ('loss: "100.5 %"', "loss", "a percentage must be from 0 to 100"),
    ('corrupt: "-1 %"', "corrupt", "a percentage must be from 0 to 100"),
    ('duplicate: "1e-9 %"', "duplicate", "below netem's resolution (allowed: 0, or 1e-06 to 100 %)"),
    ('delay: "50 s", jitter: "11 s"', "jitter", "delay 50000 ms + jitter span 11000 ms exceeds 60 s"),
    ('delay: "40 s", jitter: "6 s", distribution: normal', "jitter", "delay 40000 ms + jitter span 24000 ms "
                                                                     "exceeds 60 s"),
])
def test_physical_bounds(body, field, message):
    with pytest.raises(ConfigError) as exc:
        profiles_from("profiles:\n  p:\n    description: x\n    both: {" + body + "}\n", "mine.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"mine.yaml:4: profiles.p.both.{field}: "), msg
    assert message in msg, msg
    assert exc.value.exit_code == 2


def test_the_bounds_themselves_are_allowed():
    ps = profiles_from("""
        profiles:
          lo:
            description: the low ends
            uplink: {rate: "1 kbit/s", delay: "1 us", loss: "0.000001 %"}
            downlink: {rate: "100 Gbit/s", delay: "60 s"}
          hi:
            description: the high ends
            both: {delay: "30 s", jitter: "30 s", loss: "100 %"}
    """)
    assert ps.get("lo").uplink.rate_bps == 1000 and ps.get("lo").downlink.rate_bps == 100_000_000_000
    assert ps.get("lo").downlink.delay_ms == 60_000 and ps.get("lo").uplink.delay_ms == 0.001
    assert ps.get("hi").uplink.max_delay_ms == 60_000


@pytest.mark.parametrize("lines,line,field,message", [
    # an error about two fields points at the line of the field it is reported on, in block style too
    (['delay: "20 ms"', 'jitter: "30 ms"'], 6, "jitter", "jitter 30 ms exceeds delay 20 ms"),
    (['jitter: "30 ms"', 'delay: "20 ms"'], 5, "jitter", "jitter 30 ms exceeds delay 20 ms"),
    (['delay: "20 ms"', 'jitter: "6 ms"', "distribution: normal"], 6, "jitter", "normal jitter 6 ms (cut at 4 "
                                                                              "sigma) exceeds delay 20 ms"),
    (['delay: "20 ms"', "reorder: true"], 6, "reorder", "reorder needs jitter"),
    (['delay: "20 ms"', 'rate: "1e30 bit/s"'], 6, "rate", RATE_RANGE),
])
def test_errors_about_two_fields_point_at_the_field(lines, line, field, message):
    text = "profiles:\n  p:\n    description: x\n    uplink:\n" + "".join(f"      {ln}\n" for ln in lines)
    text += "    downlink: none\n"
    with pytest.raises(ConfigError) as exc:
        profiles_from(text, "mine.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"mine.yaml:{line}: profiles.p.uplink.{field}: "), msg
    assert message in msg, msg
