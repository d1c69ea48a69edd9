"""The steady-state goodput estimate against iperf3's own window figure (pure functions, synthetic intervals)."""

from labkit.bench.probes import iperf_client, iperf_figures, steady_goodput


def _intervals(rates_mbit: list[float], omitted: int) -> list[dict]:
    out, t = [], 0.0
    for i, r in enumerate(rates_mbit):
        if i == omitted:
            t = 0.0  # iperf3 restarts the clock after the omitted seconds
        out.append({"sum": {"start": t, "end": t + 1, "bytes": r * 1e6 / 8, "omitted": i < omitted}})
        t += 1
    return out


def _result(rates_mbit: list[float], omitted: int = 2, reverse: bool = True) -> dict:
    """An iperf3 -J result whose receiving side saw these per-second rates."""
    measured = rates_mbit[omitted:]
    rx = {"bits_per_second": sum(measured) * 1e6 / len(measured), "bytes": sum(measured) * 1e6 / 8}
    res = {"start": {"test_start": {"protocol": "TCP", "reverse": int(reverse), "duration": len(measured)}},
           "end": {"sum_received": rx, "sum_sent": {"bits_per_second": 0, "retransmits": 3}}}
    if reverse:  # the client receives: its own intervals
        res["intervals"] = _intervals(rates_mbit, omitted)
    else:  # the client sends: its intervals count writes; the receiver's are in the server's output
        res["intervals"] = _intervals([40.0] * len(rates_mbit), omitted)
        res["server_output_json"] = {"intervals": _intervals(rates_mbit, omitted)}
    return res


def test_steady_rate_matches_the_window_figure():
    fig = iperf_figures(_result([1, 5] + [19.13] * 20))
    assert abs(fig["goodput_bps"] - 19.13e6) < 1
    assert abs(fig["steady_bps"] - 19.13e6) < 1e3


def test_a_recovery_burst_at_the_start_inflates_the_window_figure_not_the_slope():
    # a hole at the end of the omitted seconds: held data is read in the first measured seconds
    fig = iperf_figures(_result([10, 0] + [33.0, 25.0] + [19.13] * 18))
    assert fig["goodput_bps"] > 20e6  # above a 20 Mbit/s link: iperf3's figure counted the backlog
    assert abs(fig["steady_bps"] - 19.13e6) < 0.01 * 19.13e6


def test_uplink_uses_the_receivers_intervals_not_the_senders_writes():
    fig = iperf_figures(_result([1, 2] + [2.87] * 20, reverse=False))
    assert abs(fig["steady_bps"] - 2.87e6) < 0.01 * 2.87e6  # not the sender's 40 Mbit/s of buffer writes
    no_server = _result([1, 2] + [2.87] * 20, reverse=False)
    del no_server["server_output_json"]
    assert steady_goodput(no_server) is None
    assert "--get-server-output" in iperf_client("10.0.0.1", seconds=10, omit=2, reverse=False)
    assert "--get-server-output" not in iperf_client("10.0.0.1", seconds=10, omit=2, reverse=True)


def test_a_stall_mid_window_lowers_both_figures():
    fig = iperf_figures(_result([1, 2] + [1.9] * 8 + [0.0] * 6 + [1.9] * 6))
    assert fig["steady_bps"] < 0.8 * 1.9e6 and fig["goodput_bps"] < 0.8 * 1.9e6


def test_too_few_intervals_give_no_estimate():
    assert steady_goodput(_result([5, 5, 5], omitted=2)) is None  # one measured second
    assert steady_goodput({"intervals": []}) is None
