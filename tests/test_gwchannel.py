"""labkit.gwchannel's pure part: which tc commands go to the batch channel as they are. The channels
themselves run for real in tests/test_netns.py (a lab's gateway over SSH) and in every schedule over SSH."""

from __future__ import annotations

import pytest

from labkit import gwchannel


@pytest.mark.parametrize("cmd, line", [
    ("tc class change dev eth1 parent 1: classid 1:10 htb rate 1000000bit ceil 1000000bit burst 1600b",
     "class change dev eth1 parent 1: classid 1:10 htb rate 1000000bit ceil 1000000bit burst 1600b"),
    ("tc qdisc change dev eth2 root handle 10: netem limit 41538 delay 100000us corrupt 0%",
     "qdisc change dev eth2 root handle 10: netem limit 41538 delay 100000us corrupt 0%"),
    ("tc qdisc change dev 'e th1' root pfifo limit 10", None),  # quoting: tc's batch reader would not undo it
    ("tc qdisc show dev eth1; reboot", None),
    ("ip link set eth1 down", None),
    ("tc", None),
])
def test_only_plain_tc_commands_go_to_the_batch(cmd, line):
    assert gwchannel.batch_line(cmd) == line
