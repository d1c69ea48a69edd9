"""labkit.machine's shared settings on an ordinary file standing in for a /proc/sys file (the real one is
exercised by every netns and docker lab): the value in force is what counts, not the bookkeeping."""

from __future__ import annotations

from labkit import machine
from labkit.labdir import LabDir


def _lab(name: str) -> LabDir:
    d = LabDir(name)
    d.create()
    d.record("shared-setting", path="x")
    return d


def test_a_setting_put_back_behind_labkits_back_is_applied_again(home, tmp_path):
    f = tmp_path / "tcp_allowed_congestion_control"
    f.write_text("reno bbr\n")
    add = lambda before: f"{before} cubic".strip()  # noqa: E731
    a, b = _lab("sa"), _lab("sb")
    with machine.machine_lock():
        assert machine.share_setting(a, str(f), "cubic", add)
    assert f.read_text().split() == ["reno", "bbr", "cubic"]
    f.write_text("reno bbr\n")  # someone else put the old value back while lab a is up
    with machine.machine_lock():
        assert machine.share_setting(b, str(f), "cubic", add)
    assert f.read_text().split() == ["reno", "bbr", "cubic"]  # the old code trusted its bookkeeping: "reno bbr"
    with machine.machine_lock():
        machine.release_setting(a, str(f))
    assert "cubic" in f.read_text().split()  # b still needs it
    with machine.machine_lock():
        machine.release_setting(b, str(f))
    assert f.read_text().split() == ["reno", "bbr"]
