"""labkit.clocks: the offset of a host's clock from exchanges stamped on both sides (pure), and measured for
real over SSH in tests/test_netns.py (a netns host shares this machine's clock: offset 0 within its
uncertainty) and tests/vagrant/test_vagrant_e2e.py (VMs keep their own clocks)."""

from __future__ import annotations

import pytest

from labkit import clocks


def test_the_shortest_round_trip_gives_the_offset_and_its_uncertainty():
    # the host is 2.5 s ahead; three exchanges, the middle one fastest (1 ms round trip)
    ex = [(100.000, 102.504, 100.010), (101.000, 103.5005, 101.001), (102.000, 104.507, 102.020)]
    off = clocks.best("h", ex)
    assert off.offset_s == pytest.approx(2.5)
    assert off.uncertainty_s == pytest.approx(0.0005)
    assert off.samples == 3 and off.measured_at == 101.0
    assert off.to_host(10.0) == pytest.approx(12.5) and off.from_host(12.5) == pytest.approx(10.0)


def test_a_host_behind_has_a_negative_offset():
    assert clocks.best("h", [(50.0, 40.001, 50.002)]).offset_s == pytest.approx(-10.0)


@pytest.mark.parametrize("ex", [[], [(2.0, 1.0, 1.0)]])
def test_nonsense_is_refused(ex):
    with pytest.raises(ValueError):
        clocks.best("h", ex)
