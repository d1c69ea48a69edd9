"""The CLI: profiles table and show, and bad input that exits 2 before anything is touched."""

from labkit.cli import main


def test_profiles_table(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in ("vsat", "slow-amps", "nb-iot", "none"):
        assert name in out
    assert "added RTT" in out and "bottleneck" in out
    assert "112 kbit/s" in out  # slow-amps, in bits


def test_profiles_show(capsys):
    assert main(["profiles", "show", "slow-amps"]) == 0
    out = capsys.readouterr().out
    assert "uplink (EVSE -> CPO)" in out and "downlink (CPO -> EVSE):\n    unshaped" in out
    assert "112 kbit/s (112000 bit/s)" in out
    assert "netem limit 20925 delay 250000us" in out


def test_profiles_commands_read_labkit_profiles_like_every_other_command(capsys, tmp_path, monkeypatch):
    extra = tmp_path / "mine.yaml"
    extra.write_text("profiles:\n  mine:\n    description: test\n    family: custom\n    source: [test]\n"
                     "    uplink: {rate: 1 Mbit/s}\n    downlink: {rate: 2 Mbit/s}\n")
    monkeypatch.setenv("LABKIT_PROFILES", str(extra))
    assert main(["profiles", "show", "mine"]) == 0
    assert "1 Mbit/s (1000000 bit/s)" in capsys.readouterr().out
    assert main(["profiles"]) == 0
    assert "mine" in capsys.readouterr().out


def test_profiles_show_json(capsys):
    import json

    assert main(["profiles", "show", "lte", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "4g" and data["downlink"]["rate_bps"] == 20_000_000


def test_unknown_profile_exits_2(capsys):
    assert main(["profiles", "show", "Vsat"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'Vsat'" in err and "did you mean 'vsat'" in err


def test_shape_unknown_profile_exits_2_before_touching_the_lab(capsys, tmp_path):
    # no lab exists under this LABKIT_HOME: the profile error must come first
    assert main(["shape", "warp-drive"], env={"LABKIT_HOME": str(tmp_path)}) == 2
    assert "unknown profile 'warp-drive'" in capsys.readouterr().err
    assert not (tmp_path / "labs").exists()


def test_shape_bad_profiles_file_exits_2(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("profiles:\n  x:\n    description: bad\n    both: {rate: \"14kbps\"}\n")
    assert main(["shape", "x", "--profiles", str(bad)], env={"LABKIT_HOME": str(tmp_path)}) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: profiles.x.both.rate:" in err and "kilobytes per second" in err


def test_shape_needs_exactly_one_action(capsys, tmp_path):
    assert main(["shape"], env={"LABKIT_HOME": str(tmp_path)}) == 2
    assert main(["shape", "vsat", "--clear"], env={"LABKIT_HOME": str(tmp_path)}) == 2


def test_shape_without_a_lab_is_a_plain_error(capsys, tmp_path):
    assert main(["shape", "vsat", "--lab", "nolab"], env={"LABKIT_HOME": str(tmp_path)}) == 1
    assert "is not up" in capsys.readouterr().err
