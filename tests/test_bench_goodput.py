"""The steady-state goodput estimate against iperf3's own window figure (pure functions, synthetic intervals)."""

from labkit.bench.probes import iperf_figures, steady_goodput


def _result(rates_mbit: list[float], omitted: int = 2) -> dict:
    intervals, t = [], 0.0
    for i, r in enumerate(rates_mbit):
        om = i < omitted
        if i == omitted:
            t = 0.0  # iperf3 restarts the clock after the omitted seconds
        intervals.append({"sum": {"start": t, "end": t + 1, "bytes": r * 1e6 / 8, "omitted": om}})
        t += 1
    measured = rates_mbit[omitted:]
    rx = {"bits_per_second": sum(measured) * 1e6 / len(measured), "bytes": sum(measured) * 1e6 / 8}
    return {"start": {"test_start": {"protocol": "TCP"}}, "intervals": intervals,
            "end": {"sum_received": rx, "sum_sent": {"bits_per_second": 0, "retransmits": 3}}}


def test_steady_rate_matches_the_window_figure():
    res = _result([1, 5] + [19.13] * 20)
    fig = iperf_figures(res)
    assert abs(fig["goodput_bps"] - 19.13e6) < 1
    assert abs(fig["steady_bps"] - 19.13e6) < 1e3


def test_a_recovery_burst_at_the_start_inflates_the_window_figure_not_the_slope():
    # a hole at the end of the omitted seconds: held data is read in the first measured seconds
    res = _result([10, 0] + [33.0, 25.0] + [19.13] * 18)
    fig = iperf_figures(res)
    assert fig["goodput_bps"] > 20e6  # above a 20 Mbit/s link: iperf3's figure counted the backlog
    assert abs(fig["steady_bps"] - 19.13e6) < 0.01 * 19.13e6


def test_too_few_intervals_give_no_estimate():
    assert steady_goodput(_result([5, 5, 5], omitted=2)) is None  # one measured second
    assert steady_goodput({"intervals": []}) is None
