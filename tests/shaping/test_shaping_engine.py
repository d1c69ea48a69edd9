"""The userspace engine's pure parts: netlink message parsing, delay sampling, lateness statistics."""

import random
import struct
import subprocess
import sys

import pytest

from labkit.nfq import netlink
from labkit.nfq.engine import Engine, Lateness, Queue


def _packet_msg(queue: int, pid: int, payload: bytes | None = None, tstamp: tuple[int, int] | None = None) -> bytes:
    attrs = netlink._attr(netlink.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 2) + b"\0")
    if tstamp is not None:
        attrs += netlink._attr(netlink.NFQA_TIMESTAMP, struct.pack("!QQ", *tstamp))
    if payload is not None:
        attrs += netlink._attr(netlink.NFQA_PAYLOAD, payload)
    body = struct.pack("=BB", 2, 0) + struct.pack("!H", queue) + attrs
    kind = (netlink.NFNL_SUBSYS_QUEUE << 8) | netlink.NFQNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parse_packets_meta_and_payload():
    data = _packet_msg(1, 42) + _packet_msg(0, 43, b"\x45" + b"\0" * 27)
    pkts = netlink.parse_packets(data)
    assert [(p.queue, p.id, p.payload) for p in pkts] == [(1, 42, None), (0, 43, b"\x45" + b"\0" * 27)]
    assert pkts[1].length == 28


def test_parse_kernel_timestamp():
    pkts = netlink.parse_packets(_packet_msg(0, 5, tstamp=(1_796_000_000, 123_456)) + _packet_msg(0, 6))
    assert [(p.id, p.tstamp_ns) for p in pkts] == [(5, 1_796_000_000_123_456_000), (6, 0)]


def test_parse_ignores_truncated_and_foreign_messages():
    good = _packet_msg(0, 7)
    foreign = struct.pack("=IHHII", 20, netlink.NLMSG_ERROR, 0, 0, 0) + b"\0" * 4
    assert [p.id for p in netlink.parse_packets(foreign + good + good[:10])] == [7]


def _queue(**kw) -> Queue:
    base = dict(num=0, direction="uplink", delay_ns=20_000_000, jitter_ns=5_000_000, distribution="uniform",
                reorder=False, loss=0.0, corrupt=0.0, duplicate=0.0, maxlen=100)
    base.update(kw)
    return Queue(**base)


def test_uniform_delays_stay_in_range():
    q = _queue()
    rng = random.Random(1)
    xs = [q.sample_delay_ns(rng) for _ in range(20000)]
    assert min(xs) >= 15_000_000 and max(xs) <= 25_000_000
    assert abs(sum(xs) / len(xs) - 20_000_000) < 100_000


def test_normal_delays_are_cut_at_four_sigma():
    q = _queue(distribution="normal", jitter_ns=4_000_000)
    rng = random.Random(2)
    xs = [q.sample_delay_ns(rng) for _ in range(50000)]
    assert min(xs) >= 4_000_000 and max(xs) <= 36_000_000
    mean = sum(xs) / len(xs)
    sd = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5
    assert abs(mean - 20_000_000) < 100_000 and abs(sd - 4_000_000) < 100_000


def test_no_jitter_is_exact():
    q = _queue(jitter_ns=0)
    assert q.sample_delay_ns(random.Random(0)) == 20_000_000


def test_lateness_summary():
    lat = Lateness()
    for us in [10] * 98 + [500, 20_000]:
        lat.add(us * 1000)
    s = lat.summary()
    assert s == {"n": 100, "median_ms": 0.01, "p99_ms": 0.5, "max_ms": 20.0}
    assert Lateness().summary()["median_ms"] is None


def test_in_order_schedule_never_overtakes():
    eng = Engine({"seed": 1, "queues": {"0": {"direction": "uplink", "delay_ms": 20, "jitter_ms": 10}}})
    q = eng.queues[0]
    for i in range(1000):
        eng._schedule(q, i * 100_000, i, 0, None)
    dues = [d for d, *_ in q.pending]
    assert dues == sorted(dues) and [p for _, p, *_ in q.pending] == list(range(1000))
    assert dues[0] >= 10_000_000


def test_config_copy_modes():
    eng = Engine({"queues": {"0": {"direction": "uplink", "delay_ms": 1},
                             "1": {"direction": "downlink", "delay_ms": 1, "duplicate_pct": 1}}})
    assert eng.queues[0].copy_mode == netlink.COPY_META
    assert eng.queues[1].copy_mode == netlink.COPY_PACKET
    assert eng.queues[1].duplicate == 0.01


def test_config_spin_and_arrival():
    q = {"0": {"direction": "uplink", "delay_ms": 1}}
    assert Engine({"queues": q}).spin_ns == 300_000  # the default: after an idle spell, wake 300 us early
    assert Engine({"queues": q, "spin_us": 0}).spin_ns == 0
    for bad in (-1, 6000, "300", True):
        with pytest.raises(ValueError, match=r"spin_us: .* \(allowed: 0 to 5000"):
            Engine({"queues": q, "spin_us": bad})
    with pytest.raises(ValueError, match="arrival: 'soon' .allowed: kernel, read"):
        Engine({"queues": q, "arrival": "soon"})


def test_the_engine_reports_the_parameters_it_runs():
    eng = Engine({"queues": {"1": {"direction": "downlink", "delay_ms": 12.345, "jitter_ms": 0.5,
                                   "distribution": "normal", "loss_pct": 33.333333, "corrupt_pct": 1,
                                   "maxlen": 2000}}})
    q = eng.queues[1]
    assert q.stats()["running"] == {"direction": "downlink", "delay_ns": 12_345_000, "jitter_ns": 500_000,
                                    "distribution": "normal", "reorder": False, "loss": 33.333333 / 100,
                                    "gemodel": None, "corrupt": 0.01, "duplicate": 0.0, "maxlen": 2000,
                                    "copy_mode": "packet"}


@pytest.mark.parametrize("queue,message", [
    ({"direction": "uplink", "delay_ms": 1, "distribution": "pareto"},
     r"queues.0.distribution: 'pareto' \(allowed: uniform, normal\)"),
    ({"direction": "sideways"}, r"queues.0.direction: 'sideways' \(allowed: uplink, downlink\)"),
    ({"direction": "uplink", "delay_ms": -1}, r"queues.0.delay_ms: -1 \(allowed: 0 to 3.6e\+06\)"),
    ({"direction": "uplink", "loss_pct": 150}, r"queues.0.loss_pct: 150 \(allowed: 0 to 100\)"),
    ({"direction": "uplink", "maxlen": 2**32}, r"queues.0.maxlen: 4294967296 \(allowed: 1 to 4294967295 packets\)"),
    ({"direction": "uplink", "reorder": "yes"}, r"queues.0.reorder: 'yes' \(allowed: true, false\)"),
    ({"direction": "uplink", "dealy_ms": 5}, r"queues.0: unknown setting\(s\) dealy_ms"),
])
def test_a_config_the_engine_cannot_serve_as_written_is_refused(queue, message):
    with pytest.raises(ValueError, match=message):
        Engine({"queues": {"0": queue}})


@pytest.mark.root
def test_real_time_is_not_handed_to_children():
    """The engine and the trace's change loop run at SCHED_FIFO; what they (or a process that ran them
    in-process, such as a test) start must not: a real-time shell that spins starves the machine."""
    code = ("import os, subprocess, sys; from labkit.nfq.engine import realtime; "
            "print(realtime(10), os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO); "
            "print(subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'], "
            "capture_output=True, text=True).stdout.strip() == str(os.SCHED_OTHER))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["fifo:10", "True", "True"], (r.stdout, r.stderr)
