"""OCPP-J at the edges, against a real ``labkit csms`` with a raw WebSocket client (websockets, no ocpp
library): subprotocol negotiation, the rate limit, frames JSON parsers choke on, long message ids, station
identities OCPP does not allow, and a refused authorization in both scenarios."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.sim.conftest import run_fleet

UID = "c0ffee00-0000-1111-2222-333344445555"
HB = f'[2,"{UID}","Heartbeat",{{}}]'


def wait_status(csms, get, timeout_s: float = 5.0):
    """What ``get`` finds in the CSMS's status file once it finds something (the file is rewritten every s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = get(json.loads(csms.status.read_text()))
        except (OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    return None


async def handshake(url: str, subprotocols: list[str] | None) -> tuple[int, str | None, str | None, int, str]:
    """Connect, then wait for the server to close: (HTTP status, agreed subprotocol, the response's
    Sec-WebSocket-Protocol header, close code, close reason)."""
    async with connect(url, subprotocols=subprotocols, compression=None) as ws:
        status = ws.response.status_code
        header = ws.response.headers.get("Sec-WebSocket-Protocol")
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as exc:
            return status, ws.subprotocol, header, exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("the server did not close")


@pytest.mark.parametrize("offer", [["ocpp1.5"], None, ["ocpp1.6"]])
def test_no_common_subprotocol_completes_the_handshake_then_closes(csms_factory, offer):
    """OCPP-J 1.6 and 2.0.1 Part 4, 3.2 Server response: "If the CSMS does not agree to using one of the
    subprotocols offered by the client, it MUST complete the WebSocket handshake with a response without a
    Sec-WebSocket-Protocol header and then immediately close the WebSocket connection." (The CSMS here
    serves 2.0.1 only, so ocpp1.6 is not agreed either.)"""
    csms = csms_factory("--ocpp", "2.0.1")
    status, agreed, header, code, reason = asyncio.run(handshake(csms.url + "sp-1", offer))
    assert status == 101 and agreed is None and header is None
    assert code == 1002 and "no OCPP subprotocol agreed" in reason and "ocpp2.0.1" in reason
    rows = csms.rows()
    assert [(r["station_id"], r["outcome"], r["error_code"]) for r in rows] == [("sp-1", "refused", "NoSubprotocol")]
    assert wait_status(csms, lambda st: st.get("rejected_by_reason")) == {"NoSubprotocol": 1}


def test_the_stations_preferred_subprotocol_is_agreed(csms_factory):
    csms = csms_factory()

    async def go(offer: list[str]) -> str | None:
        async with connect(csms.url + "sp-2", subprotocols=offer, compression=None) as ws:
            await ws.send(HB)
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[0] == 3
            return ws.subprotocol

    assert asyncio.run(go(["ocpp2.0.1", "ocpp1.6"])) == "ocpp2.0.1"
    assert asyncio.run(go(["ocpp9", "ocpp1.6", "ocpp2.1"])) == "ocpp1.6"


def test_rate_limit_answers_what_it_accepted_then_a_call_error_then_closes(csms_factory):
    csms = csms_factory("--max-rate", "2", "--burst", "10")
    ids = [f"rl-{i:03d}" for i in range(15)]

    async def go() -> tuple[list, int, str]:
        replies = []
        async with connect(csms.url + "fast-1", subprotocols=["ocpp1.6"], compression=None) as ws:
            for uid in ids:  # all at once: the CSMS reads them one by one
                await ws.send(f'[2,"{uid}","Heartbeat",{{}}]')
            try:
                while True:
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            except ConnectionClosed as exc:
                return replies, exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("not closed")

    replies, code, reason = asyncio.run(go())
    assert [(r[0], r[1]) for r in replies[:10]] == [(3, uid) for uid in ids[:10]]
    assert len(replies) == 11
    assert replies[10][:3] == [4, ids[10], "GenericError"]
    assert "rate limit" in replies[10][3] and "2 messages/s" in replies[10][3] and "10" in replies[10][3]
    assert replies[10][4] == {"maxRatePerS": 2.0, "burst": 10}
    assert code == 1008 and "rate limit" in reason
    rows = [r for r in csms.rows() if r["station_id"] == "fast-1"]
    assert [r["outcome"] for r in rows] == ["ok"] * 10 + ["closed"]
    last = rows[-1]
    assert (last["action"], last["error_code"], last["message_id"]) == ("Heartbeat", "RateLimit", ids[10])
    assert int(last["resp_bytes"]) > 0 and float(last["handle_ms"]) >= 0


def test_rate_limit_is_explained_in_help():
    from click.testing import CliRunner

    from labkit.cli.sim import csms

    text = " ".join(CliRunner().invoke(csms, ["--help"]).output.split())
    assert "--max-rate messages per second on average" in text and "GenericError" in text and "1008" in text


async def exchange(url: str, subprotocol: str, frames: list[str]) -> list:
    async with connect(url, subprotocols=[subprotocol], compression=None, max_size=None) as ws:
        out = []
        for frame in frames:
            await ws.send(frame)
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return out


DEEP = "[" * 5000 + "]" * 5000
DEEP_IN_CALL = f'[2,"{UID}","Heartbeat",{{"a":{"[" * 5000 + "]" * 5000}}}]'
LONG_ID = "x" * 40 + "-too-long-for-ocpp"
NAN = f'[2,"{UID}","Heartbeat",{{"a":NaN}}]'
INF = f'[2,"{UID}","Heartbeat",{{"a":-Infinity}}]'


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_frames_a_parser_chokes_on_get_the_framework_error(csms_factory, version):
    """Nested deeper than the JSON parser goes (it used to kill the connection with 1011 and be recorded as
    ignored), NaN and Infinity (Python accepts them, JSON does not), a message id over 36 characters (the
    answer carries it as received, so the sender can match it): a CallError each, and the connection lives."""
    csms = csms_factory()
    code = "FormationViolation" if version == "1.6" else "RpcFrameworkError"
    frames = [DEEP, DEEP_IN_CALL, f'[2,"{LONG_ID}","Heartbeat",{{}}]', NAN, INF, HB]
    replies = asyncio.run(exchange(csms.url + "edge-1", f"ocpp{version}", frames))
    assert [r[:3] for r in replies[:5]] == [[4, "-1", code], [4, UID, code], [4, LONG_ID, code], [4, UID, code],
                                            [4, UID, code]]  # fmt: skip
    assert "nested too deeply" in replies[0][3] and "nested too deeply" in replies[1][3]
    assert "36" in replies[2][3] and "NaN" in replies[3][3] and "Infinity" in replies[4][3]
    assert replies[5][0] == 3  # the connection survived
    rows = [r for r in csms.rows() if r["station_id"] == "edge-1"]
    assert [(r["outcome"], r["error_code"], r["message_id"]) for r in rows] == [
        ("call_error", code, ""),
        ("call_error", code, UID),
        ("call_error", code, LONG_ID),
        ("call_error", code, UID),
        ("call_error", code, UID),
        ("ok", "", UID),
    ]


@pytest.mark.parametrize(
    "segment",
    ["cs%0A001", "cs%00x", "two%20words", "colon%3Ain", "caf%C3%A9", "tab%09", "x" * 49],
    ids=["newline", "nul", "space", "colon", "non-ascii", "tab", "49-chars"],
)
def test_identities_ocpp_does_not_allow_are_refused_at_the_handshake(csms_factory, segment):
    csms = csms_factory()

    async def go() -> int:
        try:
            async with connect(csms.url + segment, subprotocols=["ocpp1.6"], compression=None):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(go()) == 400
    text = csms.out.read_text()
    assert text.count("\n") == 2  # header and one row: nothing the identity held broke the line
    (row,) = csms.rows()
    assert (row["outcome"], row["error_code"]) == ("refused", "BadIdentity")
    assert row["station_id"].isprintable() and "\n" not in row["station_id"]


def test_the_longest_allowed_identity_and_every_allowed_character(csms_factory):
    csms = csms_factory()
    idents = ["A" * 48, "aZ09*-_=+|@.x"]

    async def go(ident: str) -> int:
        async with connect(csms.url + ident, subprotocols=["ocpp2.0.1"], compression=None) as ws:
            await ws.send(HB)
            return json.loads(await asyncio.wait_for(ws.recv(), 5))[0]

    assert [asyncio.run(go(i)) for i in idents] == [3, 3]
    assert {r["station_id"] for r in csms.rows()} == set(idents)


FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0", "--heartbeat", "0.2"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_thesis_station_does_not_start_when_authorize_is_refused(csms_factory, tmp_path, version):
    csms = csms_factory("--reject-id-tag", "LABKIT01")
    run = run_fleet(tmp_path, csms.url, "--stations", "2", "--ocpp", version, "--meter-values", "5", *FAST)
    assert run.rc == 0, run.stderr
    rejected = sorted(
        (e["station_id"], e["detail"], e["connection"]) for e in run.events if e["event"] == "authorize_rejected"
    )
    assert rejected == [("cs001", "Invalid", "1"), ("cs002", "Invalid", "1")]
    actions = {r["action"] for r in run.calls}
    assert "Authorize" in actions and not actions & {"StartTransaction", "MeterValues", "TransactionEvent"}
    assert run.status["authorize_rejected"] == 2 and run.status["stations_done"] == 2
    assert run.status["finished"] is True


def test_session_scenario_skips_a_refused_session(csms_factory, tmp_path):
    csms = csms_factory("--reject-id-tag", "LABKIT01", "--heartbeat-interval", "1")
    run = run_fleet(
        tmp_path,
        csms.url,
        "--stations",
        "1",
        "--scenario",
        "session",
        "--ocpp",
        "1.6",
        "--sessions",
        "2",
        "--think-time",
        "0.05",
        "--meter-interval",
        "0.1",
        "--charge-time",
        "0.3",
    )
    assert run.rc == 0, run.stderr
    assert [e["detail"] for e in run.events if e["event"] == "authorize_rejected"] == ["Invalid", "Invalid"]
    assert not {r["action"] for r in run.calls} & {"StartTransaction", "MeterValues", "StopTransaction"}
    rows = [r for r in csms.rows() if r["action"] == "StatusNotification"]
    assert len(rows) == 1 + 2 * 2  # Available, then Preparing and Available again for each refused session
